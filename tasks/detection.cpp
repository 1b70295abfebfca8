#include "tasks/detection.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <utility>

#include "engine/error.h"

namespace repshare {
namespace {

// IoU of two [x_min, y_min, x_max, y_max] boxes in float, in the operation order
// of torchvision's CPU nms kernel and effdet's pairwise_iou (areas from the box,
// intersection clamped at 0, 0 when nothing intersects).
float box_iou(const std::array<float, 4>& a, const std::array<float, 4>& b) {
  const float area_a = (a[2] - a[0]) * (a[3] - a[1]);
  const float area_b = (b[2] - b[0]) * (b[3] - b[1]);
  const float w = std::max(0.0f, std::min(a[2], b[2]) - std::max(a[0], b[0]));
  const float h = std::max(0.0f, std::min(a[3], b[3]) - std::max(a[1], b[1]));
  const float inter = w * h;
  return inter > 0 ? inter / (area_a + area_b - inter) : 0.0f;
}

// Indices of `scores` ordered by descending score, ties by index: torch's stable
// descending sort, and the order a reproducible run needs.
std::vector<int> order_by_score(const std::vector<float>& scores, std::vector<int> indices) {
  std::stable_sort(indices.begin(), indices.end(),
                   [&](int a, int b) { return scores[a] > scores[b]; });
  return indices;
}

float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

}  // namespace

std::vector<std::array<int, 2>> feature_sizes(const DetectionConfig& config) {
  check(config.min_level >= 1 && config.max_level >= config.min_level && config.max_level <= 12,
        ErrorKind::Argument, "detection config: levels ", config.min_level, "..",
        config.max_level, " are not 1 <= min_level <= max_level <= 12");
  check(config.image_height > 0 && config.image_width > 0, ErrorKind::Argument,
        "detection config: image size ", config.image_height, "x", config.image_width,
        " is not positive");
  std::array<int, 2> size = {config.image_height, config.image_width};
  std::vector<std::array<int, 2>> sizes;
  for (int level = 1; level <= config.max_level; ++level) {
    size = {(size[0] - 1) / 2 + 1, (size[1] - 1) / 2 + 1};
    if (level >= config.min_level) sizes.push_back(size);
  }
  return sizes;
}

std::vector<std::array<float, 4>> generate_anchors(const DetectionConfig& config) {
  check(config.num_scales >= 1 && !config.aspect_ratios.empty(), ErrorKind::Argument,
        "detection config: needs at least one scale and one aspect ratio");
  const std::vector<std::array<int, 2>> sizes = feature_sizes(config);
  std::vector<std::array<float, 4>> anchors;
  for (const std::array<int, 2>& feat : sizes) {
    const double stride_y = static_cast<double>(config.image_height) / feat[0];
    const double stride_x = static_cast<double>(config.image_width) / feat[1];
    // np.arange(stride / 2, image_size, stride) has ceil((size - stride/2) / stride)
    // points, which equals the feature size for every size effdet supports.
    const int rows = static_cast<int>(std::ceil((config.image_height - stride_y / 2) / stride_y));
    const int cols = static_cast<int>(std::ceil((config.image_width - stride_x / 2) / stride_x));
    check(rows == feat[0] && cols == feat[1], ErrorKind::Unsupported, "detection config: image ",
          config.image_height, "x", config.image_width, " gives an anchor grid ", rows, "x", cols,
          " unlike its ", feat[0], "x", feat[1], " feature map");
    // Half sizes per anchor shape, in effdet's (octave scale, aspect ratio) order.
    std::vector<std::array<double, 2>> half_sizes;
    for (int octave = 0; octave < config.num_scales; ++octave) {
      const double octave_scale = std::pow(2.0, static_cast<double>(octave) / config.num_scales);
      for (const std::array<double, 2>& aspect : config.aspect_ratios) {
        half_sizes.push_back({config.anchor_scale * stride_y * octave_scale * aspect[1] / 2.0,
                              config.anchor_scale * stride_x * octave_scale * aspect[0] / 2.0});
      }
    }
    for (int row = 0; row < rows; ++row) {
      const double y = stride_y / 2 + row * stride_y;
      for (int col = 0; col < cols; ++col) {
        const double x = stride_x / 2 + col * stride_x;
        for (const std::array<double, 2>& half : half_sizes) {
          anchors.push_back({static_cast<float>(y - half[0]), static_cast<float>(x - half[1]),
                             static_cast<float>(y + half[0]), static_cast<float>(x + half[1])});
        }
      }
    }
  }
  return anchors;
}

std::vector<int> batched_nms(const DetectionCandidates& c, double iou_threshold, int max_keep) {
  // Per-class greedy NMS visits each class's boxes by descending score and keeps a
  // box unless a kept box of its class overlaps it. Visiting all boxes in one
  // global descending order makes the same decisions (suppression never crosses
  // classes, and each class still sees its own boxes in order), and the boxes kept
  // come out best first, so the walk can stop at max_keep: later boxes score
  // lower than every box kept. Each box meets only the kept boxes of its class.
  std::vector<int> all(c.scores.size());
  for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<int>(i);
  std::map<int, std::vector<int>> kept_by_class;
  std::vector<int> kept;
  for (int i : order_by_score(c.scores, std::move(all))) {
    if (max_keep >= 0 && static_cast<int>(kept.size()) >= max_keep) break;
    std::vector<int>& same_class = kept_by_class[c.classes[i]];
    bool suppressed = false;
    for (int j : same_class)
      if (box_iou(c.boxes[j], c.boxes[i]) > iou_threshold) {
        suppressed = true;
        break;
      }
    if (suppressed) continue;
    same_class.push_back(i);
    kept.push_back(i);
  }
  return kept;
}

SoftNmsResult batched_soft_nms(const DetectionCandidates& c, float sigma, float score_threshold) {
  SoftNmsResult result;
  if (c.scores.empty()) return result;
  // effdet keeps classes apart by shifting each class's boxes by
  // class * (max coordinate + 1); done in float32 as there, since the shift
  // rounds the coordinates and so the IoUs that drive the decay.
  float max_coordinate = c.boxes[0][0];
  for (const std::array<float, 4>& b : c.boxes) {
    for (float v : b) max_coordinate = std::max(max_coordinate, v);
  }
  std::vector<std::array<float, 4>> boxes(c.boxes.size());
  for (size_t i = 0; i < boxes.size(); ++i) {
    const float offset = static_cast<float>(c.classes[i]) * (max_coordinate + 1.0f);
    for (int k = 0; k < 4; ++k) boxes[i][k] = c.boxes[i][k] + offset;
  }
  std::vector<int> remaining(c.scores.size());
  for (size_t i = 0; i < remaining.size(); ++i) remaining[i] = static_cast<int>(i);
  std::vector<float> scores = c.scores;  // decayed score of each remaining box
  while (!remaining.empty()) {
    size_t top = 0;
    for (size_t r = 1; r < remaining.size(); ++r) {
      if (scores[r] > scores[top]) top = r;  // first maximum, as torch.argmax
    }
    result.indices.push_back(remaining[top]);
    result.scores.push_back(scores[top]);
    const std::array<float, 4> top_box = boxes[remaining[top]];
    size_t next = 0;
    for (size_t r = 0; r < remaining.size(); ++r) {
      const float iou = box_iou(top_box, boxes[remaining[r]]);
      const float decayed = scores[r] * std::exp(-(iou * iou) / sigma);
      if (r == top || !(decayed > score_threshold)) continue;
      remaining[next] = remaining[r];
      scores[next] = decayed;
      ++next;
    }
    remaining.resize(next);
    scores.resize(next);
  }
  return result;
}

DetectionPostprocess::DetectionPostprocess(DetectionConfig config)
    : config_(std::move(config)),
      feature_sizes_(feature_sizes(config_)),
      anchors_(generate_anchors(config_)) {
  check(config_.num_classes >= 1 && config_.max_detection_points >= 1 &&
            config_.max_detections >= 1,
        ErrorKind::Argument,
        "detection config: num_classes, max_detection_points and max_detections must be >= 1");
}

void DetectionPostprocess::check_outputs(const std::vector<Tensor>& outputs, int64_t per_anchor,
                                         const char* what) const {
  check(static_cast<int>(outputs.size()) == config_.num_levels(), ErrorKind::Shape, what,
        " outputs: got ", outputs.size(), " levels, expected ", config_.num_levels(), " (P",
        config_.min_level, "..P", config_.max_level, ")");
  for (size_t l = 0; l < outputs.size(); ++l) {
    const Shape expected{1, config_.anchors_per_location() * per_anchor, feature_sizes_[l][0],
                         feature_sizes_[l][1]};
    check(outputs[l].dtype == DType::F32 && outputs[l].data != nullptr, ErrorKind::Shape, what,
          " output of P", config_.min_level + l, " is not host float32 data");
    check(outputs[l].shape == expected, ErrorKind::Shape, what, " output of P",
          config_.min_level + l, " has shape ", outputs[l].shape.str(), ", expected ",
          expected.str());
  }
}

DetectionCandidates DetectionPostprocess::select_candidates(
    const std::vector<Tensor>& class_outputs, const std::vector<Tensor>& box_outputs,
    const ImageFrame* frame) const {
  check_outputs(class_outputs, config_.num_classes, "class");
  check_outputs(box_outputs, 4, "box");
  const int64_t classes = config_.num_classes;
  const int64_t per_location = config_.anchors_per_location();

  // Top-k over every logit in effdet's flattened order: level, row, column, anchor,
  // class (its permute(0, 2, 3, 1).reshape(-1, num_classes)). A min-heap keeps the k
  // best (value desc, flat index asc) while the tensors are read in memory order;
  // once it is full, a logit below its worst cannot enter, and that one comparison
  // is all most of D0's 4.4 million logits cost.
  using Entry = std::pair<float, int64_t>;  // logit, flat index
  const auto better = [](const Entry& a, const Entry& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  const int64_t total_logits = static_cast<int64_t>(anchors_.size()) * classes;
  const size_t k =
      static_cast<size_t>(std::min<int64_t>(config_.max_detection_points, total_logits));
  // Candidates at or above `worst` are gathered; when 4k have piled up, the best k
  // are kept and `worst` rises to the k-th. Every logit then costs one comparison
  // and the selections O(k) each, instead of a heap update per improvement.
  if (k == 0) return {};
  std::vector<Entry> top;
  top.reserve(4 * k + 1);
  float worst = -std::numeric_limits<float>::infinity();
  auto keep_best = [&] {
    if (top.size() <= k) return;
    std::nth_element(top.begin(), top.begin() + (k - 1), top.end(), better);
    top.resize(k);
    worst = top[k - 1].first;  // the k-th best (ties at it still compare by index)
  };
  int64_t level_base = 0;  // flat index of the level's first anchor
  for (size_t l = 0; l < class_outputs.size(); ++l) {
    const int64_t positions = int64_t{feature_sizes_[l][0]} * feature_sizes_[l][1];
    const float* logits = class_outputs[l].f32();
    for (int64_t channel = 0; channel < per_location * classes; ++channel) {
      const int64_t anchor = channel / classes, cls = channel % classes;
      const float* row = logits + channel * positions;
      for (int64_t pos = 0; pos < positions; ++pos) {
        if (!(row[pos] >= worst)) continue;  // NaN logits are never candidates
        top.push_back({row[pos], ((level_base + pos * per_location + anchor) * classes) + cls});
        if (top.size() >= 4 * k) keep_best();
      }
    }
    level_base += positions * per_location;
  }
  keep_best();
  std::sort(top.begin(), top.end(), better);  // best first, as torch.topk(sorted=True)

  // Where each level's anchors start, to address the box tensors.
  std::vector<int64_t> level_first(class_outputs.size() + 1, 0);
  for (size_t l = 0; l < class_outputs.size(); ++l) {
    level_first[l + 1] =
        level_first[l] + int64_t{feature_sizes_[l][0]} * feature_sizes_[l][1] * per_location;
  }
  // effdet clips to the scaled image inside the input: img_size / img_scale.
  float clip_w = 0, clip_h = 0;
  if (frame) {
    check(frame->scale > 0 && frame->width > 0 && frame->height > 0, ErrorKind::Argument,
          "image frame: scale ", frame->scale, " and size ", frame->width, "x", frame->height,
          " must be positive");
    clip_w = frame->width / frame->scale;
    clip_h = frame->height / frame->scale;
  }

  DetectionCandidates c;
  for (const Entry& e : top) {
    const int64_t anchor_index = e.second / classes;
    const size_t l = static_cast<size_t>(
        std::upper_bound(level_first.begin(), level_first.end(), anchor_index) -
        level_first.begin() - 1);
    const int64_t in_level = anchor_index - level_first[l];
    const int64_t positions = int64_t{feature_sizes_[l][0]} * feature_sizes_[l][1];
    const int64_t pos = in_level / per_location, anchor = in_level % per_location;
    const float* deltas = box_outputs[l].f32();
    const float ty = deltas[(anchor * 4 + 0) * positions + pos];
    const float tx = deltas[(anchor * 4 + 1) * positions + pos];
    const float th = deltas[(anchor * 4 + 2) * positions + pos];
    const float tw = deltas[(anchor * 4 + 3) * positions + pos];
    // effdet's decode_box_outputs, TF order (ty, tx, th, tw), in float32.
    const std::array<float, 4>& a = anchors_[anchor_index];
    const float y_center_a = (a[0] + a[2]) / 2, x_center_a = (a[1] + a[3]) / 2;
    const float ha = a[2] - a[0], wa = a[3] - a[1];
    const float w = std::exp(tw) * wa, h = std::exp(th) * ha;
    const float y_center = ty * ha + y_center_a, x_center = tx * wa + x_center_a;
    std::array<float, 4> box = {x_center - w / 2, y_center - h / 2, x_center + w / 2,
                                y_center + h / 2};
    if (frame) {
      const float limits[4] = {clip_w, clip_h, clip_w, clip_h};
      for (int i = 0; i < 4; ++i) box[i] = std::min(std::max(box[i], 0.0f), limits[i]);
    }
    c.boxes.push_back(box);
    c.scores.push_back(sigmoid(e.first));
    c.classes.push_back(static_cast<int>(e.second % classes));
  }
  return c;
}

std::vector<Detection> DetectionPostprocess::run(const std::vector<Tensor>& class_outputs,
                                                 const std::vector<Tensor>& box_outputs,
                                                 const ImageFrame* frame) const {
  const DetectionCandidates c = select_candidates(class_outputs, box_outputs, frame);
  std::vector<int> kept;
  std::vector<float> scores = c.scores;
  if (config_.soft_nms) {
    const SoftNmsResult soft =
        batched_soft_nms(c, config_.soft_nms_sigma, config_.soft_nms_score_threshold);
    kept = soft.indices;
    for (size_t i = 0; i < kept.size(); ++i) scores[kept[i]] = soft.scores[i];
  } else {
    kept = batched_nms(c, config_.iou_threshold, config_.max_detections);
  }
  if (static_cast<int>(kept.size()) > config_.max_detections) kept.resize(config_.max_detections);
  const float scale = frame ? frame->scale : 1.0f;
  std::vector<Detection> detections;
  detections.reserve(kept.size());
  for (int i : kept) {
    const std::array<float, 4>& b = c.boxes[i];
    detections.push_back({b[0] * scale, b[1] * scale, b[2] * scale, b[3] * scale, scores[i],
                          detection_category_id(c.classes[i])});
  }
  return detections;
}

}  // namespace repshare
