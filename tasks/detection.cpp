#include "tasks/detection.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "engine/arena.h"
#include "engine/error.h"
#include "kernels/cpu/detection_math.h"

namespace repshare {

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
  check(config.anchor_scale > 0 && std::isfinite(config.anchor_scale), ErrorKind::Argument,
        "detection config: anchor scale ", config.anchor_scale, " is not positive");
  for (const auto& r : config.aspect_ratios)
    check(r[0] > 0 && r[1] > 0 && std::isfinite(r[0]) && std::isfinite(r[1]), ErrorKind::Argument,
          "detection config: aspect ratio (", r[0], ", ", r[1], ") is not positive");
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
      const float iou = box_iou(top_box.data(), boxes[remaining[r]].data());
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

DetectionPostprocess::DetectionPostprocess(DetectionConfig config, Backend& backend)
    : config_(std::move(config)),
      backend_(backend),
      feature_sizes_(feature_sizes(config_)),
      anchors_(generate_anchors(config_)) {
  check(config_.num_classes >= 1 && config_.max_detection_points >= 1 &&
            config_.max_detections >= 1,
        ErrorKind::Argument,
        "detection config: num_classes, max_detection_points and max_detections must be >= 1");
  check(config_.iou_threshold > 0 && config_.iou_threshold <= 1, ErrorKind::Argument,
        "detection config: NMS IoU threshold ", config_.iou_threshold, " is not in (0, 1]");
  check(config_.num_levels() <= kMaxDetectionLevels, ErrorKind::Unsupported, "detection config: ",
        config_.num_levels(), " levels (at most ", kMaxDetectionLevels, ")");
  DetectionSelectParams& sp = select_params_;
  sp.levels = config_.num_levels();
  for (int l = 0; l < sp.levels; ++l)
    sp.positions[l] = int64_t{feature_sizes_[l][0]} * feature_sizes_[l][1];
  sp.anchors_per_location = config_.anchors_per_location();
  sp.classes = config_.num_classes;
  const int64_t anchor_count = static_cast<int64_t>(anchors_.size());
  sp.k = std::min<int64_t>(config_.max_detection_points, anchor_count * sp.classes);
  nms_params_.count = sp.k;
  nms_params_.iou_threshold = config_.iou_threshold;
  nms_params_.max_keep = std::min<int64_t>(config_.max_detections, sp.k);

  // Every tensor and workspace at its own aligned offset of one allocation.
  size_t offset = 0;
  auto place = [&](Tensor& t, Shape shape, DType dtype) {
    t.shape = std::move(shape);
    t.dtype = dtype;
    t.data = reinterpret_cast<void*>(offset);  // made a pointer once allocated
    offset = align_up(offset + t.bytes(), kArenaAlignment);
  };
  place(anchors_t_, Shape{anchor_count, 4}, DType::F32);
  place(boxes_t_, Shape{sp.k, 4}, DType::F32);
  place(scores_t_, Shape{sp.k}, DType::F32);
  place(classes_t_, Shape{sp.k}, DType::I64);
  place(keep_t_, Shape{std::max<int64_t>(nms_params_.max_keep, 1)}, DType::I64);
  const size_t select_at = offset;
  offset = align_up(offset + backend_.detection_select_workspace(sp), kArenaAlignment);
  const size_t nms_at = offset;
  offset = align_up(offset + backend_.nms_workspace(nms_params_), kArenaAlignment);
  buffer_bytes_ = offset;
  // Host arrays first: no destructor frees buffer_ if one of them throws.
  host_boxes_ = HostArray<float>(backend_, static_cast<size_t>(4 * sp.k));
  host_scores_ = HostArray<float>(backend_, static_cast<size_t>(sp.k));
  host_classes_ = HostArray<int64_t>(backend_, static_cast<size_t>(sp.k));
  host_keep_ = HostArray<int64_t>(backend_, static_cast<size_t>(keep_t_.numel()));
  buffer_ = backend_.alloc(buffer_bytes_);
  char* base = static_cast<char*>(buffer_);
  for (Tensor* t : {&anchors_t_, &boxes_t_, &scores_t_, &classes_t_, &keep_t_})
    t->data = base + reinterpret_cast<size_t>(t->data);
  select_workspace_ = base + select_at;
  nms_workspace_ = base + nms_at;
  try {
    backend_.upload(anchors_t_.data, anchors_.data(), anchors_t_.bytes());
  } catch (...) {  // no destructor runs for a constructor that throws
    backend_.free(buffer_);
    throw;
  }
}

DetectionPostprocess::~DetectionPostprocess() { backend_.free(buffer_); }

void DetectionPostprocess::check_outputs(const std::vector<Tensor>& outputs, int64_t per_anchor,
                                         const char* what) const {
  check(static_cast<int>(outputs.size()) == config_.num_levels(), ErrorKind::Shape, what,
        " outputs: got ", outputs.size(), " levels, expected ", config_.num_levels(), " (P",
        config_.min_level, "..P", config_.max_level, ")");
  for (size_t l = 0; l < outputs.size(); ++l) {
    const Shape expected{1, config_.anchors_per_location() * per_anchor, feature_sizes_[l][0],
                         feature_sizes_[l][1]};
    // float16 in fp16 mode: the network keeps them in its storage (Executor in_storage).
    check((outputs[l].dtype == DType::F32 || outputs[l].dtype == DType::F16) &&
              outputs[l].data != nullptr,
          ErrorKind::Shape, what, " output of P", config_.min_level + l,
          " is not float32 or float16 data");
    check(outputs[l].shape == expected, ErrorKind::Shape, what, " output of P",
          config_.min_level + l, " has shape ", outputs[l].shape.str(), ", expected ",
          expected.str());
  }
}

DetectionSelectParams DetectionPostprocess::select_params(
    const std::vector<Tensor>& class_outputs, const std::vector<Tensor>& box_outputs,
    const ImageFrame* frame) const {
  check_outputs(class_outputs, config_.num_classes, "class");
  check_outputs(box_outputs, 4, "box");
  DetectionSelectParams p = select_params_;
  if (frame) {
    check(frame->scale > 0 && frame->width > 0 && frame->height > 0, ErrorKind::Argument,
          "image frame: scale ", frame->scale, " and size ", frame->width, "x", frame->height,
          " must be positive");
    // effdet clips to the scaled image inside the input: img_size / img_scale.
    p.clip = true;
    p.clip_w = frame->width / frame->scale;
    p.clip_h = frame->height / frame->scale;
  }
  return p;
}

void DetectionPostprocess::select(const DetectionSelectParams& p,
                                  const std::vector<Tensor>& class_outputs,
                                  const std::vector<Tensor>& box_outputs) {
  const Tensor* cls[kMaxDetectionLevels];
  const Tensor* box[kMaxDetectionLevels];
  for (size_t l = 0; l < class_outputs.size(); ++l) {
    cls[l] = &class_outputs[l];
    box[l] = &box_outputs[l];
  }
  backend_.detection_select(p, cls, box, anchors_t_, boxes_t_, scores_t_, classes_t_,
                            select_workspace_);
}

void DetectionPostprocess::queue_hard_nms(const DetectionSelectParams& p,
                                          const std::vector<Tensor>& class_outputs,
                                          const std::vector<Tensor>& box_outputs) {
  select(p, class_outputs, box_outputs);
  backend_.nms(nms_params_, boxes_t_, classes_t_, keep_t_, nms_workspace_);
  backend_.download_queued(host_keep_.data(), keep_t_.data, keep_t_.bytes());
  queue_candidate_downloads();
}

void DetectionPostprocess::queue_candidate_downloads() {
  backend_.download_queued(host_boxes_.data(), boxes_t_.data, boxes_t_.bytes());
  backend_.download_queued(host_scores_.data(), scores_t_.data, scores_t_.bytes());
  backend_.download_queued(host_classes_.data(), classes_t_.data, classes_t_.bytes());
}

void DetectionPostprocess::download_candidates() {
  queue_candidate_downloads();
  backend_.synchronize();
}

DetectionCandidates DetectionPostprocess::host_candidates() const {
  DetectionCandidates c;
  for (size_t i = 0; i < host_classes_.size() && host_classes_[i] >= 0; ++i) {
    c.boxes.push_back({host_boxes_[4 * i], host_boxes_[4 * i + 1], host_boxes_[4 * i + 2],
                       host_boxes_[4 * i + 3]});
    c.scores.push_back(host_scores_[i]);
    c.classes.push_back(static_cast<int>(host_classes_[i]));
  }
  return c;
}

DetectionCandidates DetectionPostprocess::select_candidates(
    const std::vector<Tensor>& class_outputs, const std::vector<Tensor>& box_outputs,
    const ImageFrame* frame) {
  select(select_params(class_outputs, box_outputs, frame), class_outputs, box_outputs);
  download_candidates();
  return host_candidates();
}

std::vector<Detection> DetectionPostprocess::run(const std::vector<Tensor>& class_outputs,
                                                 const std::vector<Tensor>& box_outputs,
                                                 const ImageFrame* frame) {
  const DetectionSelectParams p = select_params(class_outputs, box_outputs, frame);
  const float scale = frame ? frame->scale : 1.0f;
  std::vector<Detection> detections;
  auto add = [&](size_t i, float score) {
    const float* b = &host_boxes_[4 * i];
    detections.push_back({b[0] * scale, b[1] * scale, b[2] * scale, b[3] * scale, score,
                          detection_category_id(static_cast<int>(host_classes_[i]))});
  };
  if (config_.soft_nms) {
    select(p, class_outputs, box_outputs);
    download_candidates();
    const SoftNmsResult soft = batched_soft_nms(host_candidates(), config_.soft_nms_sigma,
                                                config_.soft_nms_score_threshold);
    const size_t keep = std::min(soft.indices.size(), static_cast<size_t>(config_.max_detections));
    for (size_t j = 0; j < keep; ++j) add(static_cast<size_t>(soft.indices[j]), soft.scores[j]);
    return detections;
  }
  RecordingKey key;  // check_outputs: each holds config_.num_levels() <= kMaxDetectionLevels
  for (size_t l = 0; l < class_outputs.size(); ++l) {
    key.outputs[l] = class_outputs[l].data;
    key.outputs[kMaxDetectionLevels + l] = box_outputs[l].data;
  }
  key.clip = p.clip;
  key.clip_w = p.clip_w;
  key.clip_h = p.clip_h;
  if (key == last_run_ && !(key == recorded_for_)) {  // the second run with these
    recorded_for_ = key;
    recorded_.reset();
    try {  // null where the backend does not record
      recorded_ = backend_.record([&] { queue_hard_nms(p, class_outputs, box_outputs); });
    } catch (const Error&) {  // call by call, as the first run, and not tried again
    }
  }
  if (recorded_ && key == recorded_for_)
    recorded_->replay();
  else
    queue_hard_nms(p, class_outputs, box_outputs);
  last_run_ = key;
  backend_.synchronize();
  for (size_t j = 0; j < host_keep_.size() && host_keep_[j] >= 0; ++j) {
    const size_t i = static_cast<size_t>(host_keep_[j]);
    add(i, host_scores_[i]);
  }
  return detections;
}

}  // namespace repshare
