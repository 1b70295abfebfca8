#include "loaders/labels.h"

#include <nlohmann/json.hpp>
#include <sstream>

#include "engine/error.h"
#include "loaders/input_file.h"

namespace repshare {

namespace {

std::istringstream open_text(const std::string& path, const char* what) {
  return std::istringstream(read_input_file(path, what));
}

std::string trim(const std::string& s) {
  const char* ws = " \t\r\n";
  const size_t b = s.find_first_not_of(ws);
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(ws) - b + 1);
}

std::string directory_of(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? "" : path.substr(0, slash + 1);
}

// Parses a whole string as a non-negative int; false on anything else.
bool parse_index(const std::string& s, int* out) {
  if (s.empty() || s.size() > 9) return false;
  int v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  *out = v;
  return true;
}

// COCO 2017 category ids of the 80 classes, in the contiguous order detectors use
// (the ids skip 12, 26, 29, 30, 45, 66, 68, 69, 71 and 83, which the 2014 paper
// listed but the annotations never used). Source: instances_val2017.json.
struct CocoClass {
  int id;
  const char* name;
};
constexpr CocoClass kCoco[kCocoClasses] = {
    {1, "person"},         {2, "bicycle"},       {3, "car"},           {4, "motorcycle"},
    {5, "airplane"},       {6, "bus"},           {7, "train"},         {8, "truck"},
    {9, "boat"},           {10, "traffic light"}, {11, "fire hydrant"}, {13, "stop sign"},
    {14, "parking meter"}, {15, "bench"},        {16, "bird"},         {17, "cat"},
    {18, "dog"},           {19, "horse"},        {20, "sheep"},        {21, "cow"},
    {22, "elephant"},      {23, "bear"},         {24, "zebra"},        {25, "giraffe"},
    {27, "backpack"},      {28, "umbrella"},     {31, "handbag"},      {32, "tie"},
    {33, "suitcase"},      {34, "frisbee"},      {35, "skis"},         {36, "snowboard"},
    {37, "sports ball"},   {38, "kite"},         {39, "baseball bat"}, {40, "baseball glove"},
    {41, "skateboard"},    {42, "surfboard"},    {43, "tennis racket"}, {44, "bottle"},
    {46, "wine glass"},    {47, "cup"},          {48, "fork"},         {49, "knife"},
    {50, "spoon"},         {51, "bowl"},         {52, "banana"},       {53, "apple"},
    {54, "sandwich"},      {55, "orange"},       {56, "broccoli"},     {57, "carrot"},
    {58, "hot dog"},       {59, "pizza"},        {60, "donut"},        {61, "cake"},
    {62, "chair"},         {63, "couch"},        {64, "potted plant"}, {65, "bed"},
    {67, "dining table"},  {70, "toilet"},       {72, "tv"},           {73, "laptop"},
    {74, "mouse"},         {75, "remote"},       {76, "keyboard"},     {77, "cell phone"},
    {78, "microwave"},     {79, "oven"},         {80, "toaster"},      {81, "sink"},
    {82, "refrigerator"},  {84, "book"},         {85, "clock"},        {86, "vase"},
    {87, "scissors"},      {88, "teddy bear"},   {89, "hair drier"},   {90, "toothbrush"},
};

}  // namespace

ClassIndex read_class_index_json(const std::string& path) {
  std::istringstream f = open_text(path, "class index");
  nlohmann::json j;
  try {
    f >> j;
  } catch (const nlohmann::json::exception& e) {
    fail(ErrorKind::Malformed, "class index '", path, "' is not valid JSON: ", e.what());
  }
  check(j.is_object() && !j.empty(), ErrorKind::Malformed, "class index '", path,
        "' must be a non-empty object {\"0\": [wnid, name], ...}");
  ClassIndex index;
  index.wnids.resize(j.size());
  index.names.resize(j.size());
  std::vector<bool> seen(j.size(), false);
  for (auto it = j.begin(); it != j.end(); ++it) {
    int i = -1;
    check(parse_index(it.key(), &i) && i < static_cast<int>(j.size()), ErrorKind::Malformed,
          "class index '", path, "': key '", it.key(), "' is not an index below ", j.size());
    check(!seen[i], ErrorKind::Malformed, "class index '", path, "': key '", it.key(),
          "' repeats");
    const auto& v = it.value();
    check(v.is_array() && v.size() == 2 && v[0].is_string() && v[1].is_string(),
          ErrorKind::Malformed, "class index '", path, "': entry '", it.key(),
          "' must be [wnid, name]");
    seen[i] = true;
    index.wnids[i] = v[0].get<std::string>();
    index.names[i] = v[1].get<std::string>();
  }
  return index;  // N distinct keys all below N: every index is present
}

std::vector<std::string> read_label_lines(const std::string& path) {
  std::istringstream f = open_text(path, "label file");
  std::vector<std::string> names;
  int blank_line = 0;  // first blank line not yet followed by a name
  std::string line;
  for (int n = 1; std::getline(f, line); ++n) {
    const std::string name = trim(line);
    if (name.empty()) {
      if (blank_line == 0) blank_line = n;
      continue;
    }
    check(blank_line == 0, ErrorKind::Malformed, "label file '", path, "' line ", blank_line,
          ": blank line between class names");
    names.push_back(name);
  }
  check(!names.empty(), ErrorKind::Malformed, "label file '", path, "' has no class names");
  return names;
}

std::vector<LabelledImage> read_labelled_images(const std::string& path, int num_classes) {
  std::istringstream f = open_text(path, "image list");
  const std::string dir = directory_of(path);
  std::vector<LabelledImage> images;
  std::string line;
  for (int n = 1; std::getline(f, line); ++n) {
    if (trim(line).empty()) continue;
    const size_t comma = line.rfind(',');
    check(comma != std::string::npos, ErrorKind::Malformed, "image list '", path, "' line ", n,
          ": expected 'FILE, CLASS', got '", line, "'");
    const std::string file = trim(line.substr(0, comma));
    const std::string label = trim(line.substr(comma + 1));
    LabelledImage item;
    check(!file.empty(), ErrorKind::Malformed, "image list '", path, "' line ", n,
          ": empty file name");
    check(parse_index(label, &item.label), ErrorKind::Malformed, "image list '", path, "' line ",
          n, ": class '", label, "' is not a non-negative integer");
    check(num_classes <= 0 || item.label < num_classes, ErrorKind::Malformed, "image list '",
          path, "' line ", n, ": class ", item.label, " is not below ", num_classes);
    item.path = file[0] == '/' ? file : dir + file;
    images.push_back(std::move(item));
  }
  check(!images.empty(), ErrorKind::Malformed, "image list '", path, "' has no images");
  return images;
}

int coco_category_id(int contiguous_index) {
  check(contiguous_index >= 0 && contiguous_index < kCocoClasses, ErrorKind::Argument,
        "COCO class index ", contiguous_index, " is not in 0..", kCocoClasses - 1);
  return kCoco[contiguous_index].id;
}

int coco_contiguous_index(int category_id) {
  for (int i = 0; i < kCocoClasses; ++i) {
    if (kCoco[i].id == category_id) return i;
  }
  return -1;
}

const char* coco_class_name(int contiguous_index) {
  check(contiguous_index >= 0 && contiguous_index < kCocoClasses, ErrorKind::Argument,
        "COCO class index ", contiguous_index, " is not in 0..", kCocoClasses - 1);
  return kCoco[contiguous_index].name;
}

}  // namespace repshare
