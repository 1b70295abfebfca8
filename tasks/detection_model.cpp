// Detection models end to end: what the sidecar says about preprocessing and
// post-processing, which outputs feed the post-processing, and the Detector that
// strings letterbox, network and post-processing together.
#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "engine/error.h"
#include "tasks/classification.h"
#include "tasks/detection.h"

namespace repshare {
namespace {

nlohmann::json parse_sidecar(const ModelInfo& info) {
  if (info.sidecar_json.empty()) return nlohmann::json::object();
  try {
    return nlohmann::json::parse(info.sidecar_json);
  } catch (const nlohmann::json::exception& e) {
    fail(ErrorKind::Malformed, "sidecar of model '", info.name, "': ", e.what());
  }
}

// Input height and width of an NCHW model; 0 when the input is not 4-D.
std::array<int, 2> input_size(const ModelInfo& info) {
  if (info.input_shape.rank() != 4) return {0, 0};
  return {static_cast<int>(info.input_shape[2]), static_cast<int>(info.input_shape[3])};
}

// The sidecar's list under `key`, or prefix + level for each level.
std::vector<std::string> level_outputs(const ModelInfo& info, const nlohmann::json& sidecar,
                                       const char* key, const char* prefix,
                                       const DetectionConfig& config) {
  std::vector<std::string> names;
  if (sidecar.contains(key)) {
    for (const auto& n : sidecar[key]) names.push_back(n.get<std::string>());
  } else {
    for (int level = config.min_level; level <= config.max_level; ++level)
      names.push_back(prefix + std::to_string(level));
  }
  check(static_cast<int>(names.size()) == config.num_levels(), ErrorKind::Malformed,
        "sidecar of model '", info.name, "' lists ", names.size(), " ", key, " for ",
        config.num_levels(), " levels");
  for (const std::string& n : names) {
    check(std::find(info.outputs.begin(), info.outputs.end(), n) != info.outputs.end(),
          ErrorKind::Argument, "model '", info.name, "' has no output '", n,
          "': a detection model needs class and box outputs per level P", config.min_level, "..P",
          config.max_level, " (an EfficientDet exported by scripts/export_efficientdet.py)",
          missing_sidecar_note(info));
  }
  return names;
}

}  // namespace

DetectionConfig detection_config_for(const ModelInfo& info) {
  DetectionConfig c;
  const std::array<int, 2> input = input_size(info);
  if (input[0] > 0) {
    c.image_height = input[0];
    c.image_width = input[1];
  }
  const nlohmann::json j = parse_sidecar(info);
  try {
    if (j.contains("num_classes")) c.num_classes = j["num_classes"].get<int>();
    if (j.contains("anchors")) {
      const auto& a = j["anchors"];
      c.min_level = a.value("min_level", c.min_level);
      c.max_level = a.value("max_level", c.max_level);
      c.num_scales = a.value("num_scales", c.num_scales);
      c.anchor_scale = a.value("anchor_scale", c.anchor_scale);
      if (a.contains("aspect_ratios")) {
        c.aspect_ratios.clear();
        for (const auto& r : a["aspect_ratios"])
          c.aspect_ratios.push_back({r.at(0).get<double>(), r.at(1).get<double>()});
      }
      if (a.contains("image_size")) {  // effdet's (height, width)
        c.image_height = a["image_size"].at(0).get<int>();
        c.image_width = a["image_size"].at(1).get<int>();
      }
    }
    if (j.contains("postprocess")) {
      const auto& p = j["postprocess"];
      c.max_detection_points = p.value("max_detection_points", c.max_detection_points);
      c.max_detections = p.value("max_det_per_image", c.max_detections);
      c.iou_threshold = p.value("nms_iou", c.iou_threshold);
      c.soft_nms = p.value("soft_nms", c.soft_nms);
    }
  } catch (const nlohmann::json::exception& e) {
    fail(ErrorKind::Malformed, "detection entries of the sidecar of model '", info.name,
         "': ", e.what());
  }
  check(input[0] == 0 || (c.image_height == input[0] && c.image_width == input[1]),
        ErrorKind::Malformed, "sidecar of model '", info.name, "': anchors for a ",
        c.image_height, "x", c.image_width, " image, but the input is ", info.input_shape.str());
  return c;
}

DetectPreprocess detect_preprocess_for(const ModelInfo& info) {
  DetectPreprocess p;
  const std::array<int, 2> input = input_size(info);
  check(input[0] == input[1], ErrorKind::Unsupported, "model '", info.name, "': input ",
        info.input_shape.str(), " is not square, which effdet's letterbox needs");
  if (input[0] > 0) p.target = input[0];
  const nlohmann::json j = parse_sidecar(info);
  try {
    if (j.contains("preprocess")) {
      const auto& pp = j["preprocess"];
      p.target = read_size(pp, "resize", info, p.target);
      if (pp.contains("interpolation"))
        p.interp = parse_interp(pp["interpolation"].get<std::string>());
      read_normalisation(pp, info, p.mean, p.std);
      if (pp.contains("fill")) {
        check(pp["fill"] == "mean", ErrorKind::Unsupported, "model '", info.name,
              "': preprocess fill ", pp["fill"].dump(), " (only \"mean\" is implemented)");
      }
    }
  } catch (const nlohmann::json::exception& e) {
    fail(ErrorKind::Malformed, "preprocess entry of model '", info.name, "': ", e.what());
  }
  // effdet fills with its mean colour, tuple(int(round(255 * m)) for m in mean).
  for (int c = 0; c < 3; ++c)
    p.fill[c] = static_cast<uint8_t>(std::lround(255.0 * static_cast<double>(p.mean[c])));
  check(input[0] == 0 || p.target == input[0], ErrorKind::Malformed, "model '", info.name,
        "': preprocess resize ", p.target, " does not fill the input ", info.input_shape.str());
  return p;
}

ImageFrame image_frame(const Letterbox& box) {
  ImageFrame f;
  f.scale = static_cast<float>(1.0 / box.scale);
  f.width = static_cast<float>(box.image_width);
  f.height = static_cast<float>(box.image_height);
  return f;
}

DetectionHead::DetectionHead(const ModelInfo& info, DetectionConfig config, Backend& backend)
    : postprocess_(std::move(config), backend) {
  const nlohmann::json j = parse_sidecar(info);
  class_outputs_ = level_outputs(info, j, "class_outputs", "class_p", postprocess_.config());
  box_outputs_ = level_outputs(info, j, "box_outputs", "box_p", postprocess_.config());
}

std::vector<std::string> DetectionHead::outputs() const {
  std::vector<std::string> all = class_outputs_;
  all.insert(all.end(), box_outputs_.begin(), box_outputs_.end());
  return all;
}

std::vector<Detection> DetectionHead::run(const Executor& network, const ImageFrame* frame) {
  const auto outputs = [&](const std::vector<std::string>& names) {
    std::vector<Tensor> tensors;
    for (const std::string& n : names) tensors.push_back(network.output(n));
    return tensors;
  };
  return postprocess_.run(outputs(class_outputs_), outputs(box_outputs_), frame);
}

Detector::Detector(const Model& model, Backend& backend, DetectionConfig config)
    : head_(model.info, std::move(config), backend),
      preprocess_(detect_preprocess_for(model.info)),
      session_(model, backend, head_.outputs(), Session::Outputs::StayOnBackend) {}

std::vector<Detection> Detector::detect(const Image& img) {
  check(img.width > 0 && img.height > 0, ErrorKind::Malformed, "image of size ", img.width, "x",
        img.height, " has no pixels");
  const ImageFrame frame = image_frame(preprocessor_.detect(img, preprocess_, session_.host_input()));
  session_.run_queued();  // the head's downloads wait for the network too
  return head_.run(session_.executor(), &frame);
}

}  // namespace repshare
