// Class names and labelled image lists for the evaluation data sets.
#pragma once

#include <string>
#include <vector>

namespace repshare {

// ImageNet-1k classes in index order (the sorted-synset order every classifier uses).
struct ClassIndex {
  std::vector<std::string> wnids;  // "n01440764"
  std::vector<std::string> names;  // "tench"
};

// Reads {"0": ["n01440764", "tench"], ...}; the keys must be exactly 0..N-1.
ClassIndex read_class_index_json(const std::string& path);

// One class name per line, in index order. Trailing blank lines are ignored; a
// blank line before the last name is an error (it would shift every later index).
std::vector<std::string> read_label_lines(const std::string& path);

struct LabelledImage {
  std::string path;  // resolved against the list's directory
  int label = -1;
};

// Lines "images/FILE, CLASS" with CLASS a 0-based index below num_classes
// (num_classes <= 0: no upper bound). Errors name the file and line.
std::vector<LabelledImage> read_labelled_images(const std::string& path, int num_classes = 0);

// COCO's 80 detection classes. Models output the contiguous index 0..79; COCO's
// annotations and evaluation use category ids 1..90, which have gaps.
constexpr int kCocoClasses = 80;
int coco_category_id(int contiguous_index);  // throws Argument outside 0..79
int coco_contiguous_index(int category_id);  // -1 for an id that is not a class
const char* coco_class_name(int contiguous_index);

}  // namespace repshare
