// EfficientDet post-processing: anchors, box decoding, top-k, NMS and soft-NMS,
// replicating effdet 0.4.1 (anchors.py, bench.py, soft_nms.py) so that the engine's
// detections equal DetBenchPredict's on the same network outputs.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "engine/tensor.h"

namespace repshare {

// Every post-processing parameter in one place; defaults are effdet's
// tf_efficientdet_d0 config.
struct DetectionConfig {
  int min_level = 3;
  int max_level = 7;
  int num_scales = 3;  // octave scales 2^(i / num_scales)
  // (x, y) size multipliers per anchor shape. effdet 0.4.1's default config (the
  // one tf_efficientdet_d0 uses) lists them as tuples, not as the ratios 1, 2, 0.5
  // of the paper: sqrt(2) would give 1.414 / 0.707 instead of 1.4 / 0.7.
  // Doubles because effdet computes anchors in float64 before rounding to float32.
  std::vector<std::array<double, 2>> aspect_ratios = {{1.0, 1.0}, {1.4, 0.7}, {0.7, 1.4}};
  double anchor_scale = 4.0;
  int image_height = 512;
  int image_width = 512;
  int num_classes = 90;
  int max_detection_points = 5000;  // top-k logits over all levels before NMS
  double iou_threshold = 0.5;  // hard NMS: suppress IoU > threshold (compared in double)
  int max_detections = 100;
  // effdet drops nothing before NMS; its COCO evaluator drops scores < 0.001
  // (to_coco_detections in tasks/coco_eval.h does the same).
  bool soft_nms = false;  // effdet's Gaussian soft-NMS (slow in effdet, not here)
  float soft_nms_sigma = 0.5f;
  float soft_nms_score_threshold = 0.001f;

  int num_levels() const { return max_level - min_level + 1; }
  int anchors_per_location() const {
    return num_scales * static_cast<int>(aspect_ratios.size());
  }
};

// COCO category id of a network class index: effdet's 90 classes are the COCO ids
// 1..90 (with their gaps) shifted by one.
inline int detection_category_id(int class_index) { return class_index + 1; }

// One detection in input (or, with an ImageFrame, original) image pixels.
struct Detection {
  float x_min = 0, y_min = 0, x_max = 0, y_max = 0;
  float score = 0;
  int category_id = 0;
};

// How the network input relates to the original image (effdet's img_info):
// scale = original pixels per input pixel; width/height = original image size.
// Boxes are clipped to the scaled image inside the input, then multiplied by scale.
struct ImageFrame {
  float scale = 1.0f;
  float width = 0, height = 0;
};

// Feature map (height, width) per level min_level..max_level: each level halves
// the previous one rounding up, as effdet's get_feat_sizes.
std::vector<std::array<int, 2>> feature_sizes(const DetectionConfig& config);

// Anchors [num_anchors][ymin, xmin, ymax, xmax] in input pixels, ordered by level,
// then row, column, then octave scale and aspect ratio (effdet's Anchors.boxes).
std::vector<std::array<float, 4>> generate_anchors(const DetectionConfig& config);

// Candidates selected for NMS: boxes [x_min, y_min, x_max, y_max], scores after the
// sigmoid and class indices (0-based).
struct DetectionCandidates {
  std::vector<std::array<float, 4>> boxes;
  std::vector<float> scores;
  std::vector<int> classes;
};

// Per-class hard NMS with torchvision.ops.batched_nms semantics (the per-class
// path torchvision takes for more than 1,000 boxes): a box is suppressed by a
// higher-scored kept box of its class when IoU > iou_threshold. Returns indices
// of kept candidates by descending score (ties: lower index first).
std::vector<int> batched_nms(const DetectionCandidates& c, double iou_threshold);

// effdet's batched Gaussian soft-NMS: repeatedly keeps the highest score and
// multiplies every other score by exp(-IoU^2 / sigma), dropping those that fall
// to score_threshold or below. Classes are separated as effdet does, by offsetting
// boxes per class. Returns kept indices in keep order and their decayed scores.
struct SoftNmsResult {
  std::vector<int> indices;
  std::vector<float> scores;
};
SoftNmsResult batched_soft_nms(const DetectionCandidates& c, float sigma, float score_threshold);

class DetectionPostprocess {
 public:
  explicit DetectionPostprocess(DetectionConfig config);

  const DetectionConfig& config() const { return config_; }
  const std::vector<std::array<float, 4>>& anchors() const { return anchors_; }

  // class_outputs[l]: [1, A*num_classes, H_l, W_l], box_outputs[l]: [1, A*4, H_l, W_l],
  // host float32, levels min_level..max_level in order. Reproduces effdet's
  // _post_process (top-k over all logits) and generate_detections. Returns at most
  // max_detections, best first (effdet pads to max_detections with zero rows).
  std::vector<Detection> run(const std::vector<Tensor>& class_outputs,
                             const std::vector<Tensor>& box_outputs,
                             const ImageFrame* frame = nullptr) const;

  // The top-k step alone: decoded candidates for NMS.
  DetectionCandidates select_candidates(const std::vector<Tensor>& class_outputs,
                                        const std::vector<Tensor>& box_outputs,
                                        const ImageFrame* frame) const;

 private:
  void check_outputs(const std::vector<Tensor>& outputs, int64_t per_anchor,
                     const char* what) const;

  DetectionConfig config_;
  std::vector<std::array<int, 2>> feature_sizes_;
  std::vector<std::array<float, 4>> anchors_;
};

}  // namespace repshare
