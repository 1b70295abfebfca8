// Per-candidate arithmetic of EfficientDet's post-processing, shared by the CPU
// reference (kernels/cpu/detection.cpp) and the CUDA kernels (kernels/cuda/
// detection.cu, compiled by nvcc as __host__ __device__). It follows effdet 0.4.1
// in float32, operation for operation, so that both backends' detections equal
// effdet's. C++14-clean, C math functions only.
#pragma once

#include <math.h>
#include <stdint.h>

#include "kernels/cpu/activation_math.h"  // REPSHARE_HOST_DEVICE

namespace repshare {

// A logit's rank key: larger logits get larger keys (IEEE order made unsigned:
// flip every bit of a negative float, the sign bit of a positive one). -0 and +0
// compare equal, so they share a key. NaN gets 0, below every number (-inf's key
// is 0x007FFFFF), so NaN is never selected.
REPSHARE_HOST_DEVICE uint32_t logit_key(float v, uint32_t bits) {
  if (v != v) return 0u;
  if (v == 0.0f) bits = 0u;
  return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}

// Where logit `memory_index` of one level's class map [A*C, positions] stands in
// effdet's flattened order (level, row, column, anchor, class):
// permute(0, 2, 3, 1).reshape(-1, num_classes) after the levels before it.
REPSHARE_HOST_DEVICE int64_t flat_logit_index(int64_t memory_index, int64_t positions,
                                              int64_t anchors_per_location, int64_t classes,
                                              int64_t level_first_anchor) {
  const int64_t channel = memory_index / positions, pos = memory_index % positions;
  const int64_t anchor = channel / classes, cls = channel % classes;
  return (level_first_anchor + pos * anchors_per_location + anchor) * classes + cls;
}

// effdet's decode_box_outputs (TF order ty, tx, th, tw) against an anchor
// [y_min, x_min, y_max, x_max]: box [x_min, y_min, x_max, y_max], clipped to
// [0, clip_w] x [0, clip_h] when clip (the scaled image inside the input).
REPSHARE_HOST_DEVICE void decode_box(const float* anchor, float ty, float tx, float th, float tw,
                                     bool clip, float clip_w, float clip_h, float* box) {
  const float y_center_a = (anchor[0] + anchor[2]) / 2, x_center_a = (anchor[1] + anchor[3]) / 2;
  const float ha = anchor[2] - anchor[0], wa = anchor[3] - anchor[1];
  const float w = expf(tw) * wa, h = expf(th) * ha;
  const float y_center = ty * ha + y_center_a, x_center = tx * wa + x_center_a;
  box[0] = x_center - w / 2;
  box[1] = y_center - h / 2;
  box[2] = x_center + w / 2;
  box[3] = y_center + h / 2;
  if (!clip) return;
  const float limits[4] = {clip_w, clip_h, clip_w, clip_h};
  for (int i = 0; i < 4; ++i) box[i] = fminf(fmaxf(box[i], 0.0f), limits[i]);
}

// The score effdet reports: its sigmoid, 1 / (1 + exp(-x)) as torch computes it.
REPSHARE_HOST_DEVICE float detection_score(float logit) { return 1.0f / (1.0f + expf(-logit)); }

// IoU of two [x_min, y_min, x_max, y_max] boxes in float, in the operation order
// of torchvision's CPU nms kernel and effdet's pairwise_iou (areas from the box,
// intersection clamped at 0, 0 when nothing intersects).
REPSHARE_HOST_DEVICE float box_iou(const float* a, const float* b) {
  const float area_a = (a[2] - a[0]) * (a[3] - a[1]);
  const float area_b = (b[2] - b[0]) * (b[3] - b[1]);
  const float w = fmaxf(0.0f, fminf(a[2], b[2]) - fmaxf(a[0], b[0]));
  const float h = fmaxf(0.0f, fminf(a[3], b[3]) - fmaxf(a[1], b[1]));
  const float inter = w * h;
  return inter > 0 ? inter / (area_a + area_b - inter) : 0.0f;
}

// Hard NMS's test: suppressed when the IoU exceeds the threshold, compared in
// double as torchvision compares its float IoU with a Python float.
REPSHARE_HOST_DEVICE bool suppresses(const float* kept, const float* box, double iou_threshold) {
  return static_cast<double>(box_iou(kept, box)) > iou_threshold;
}

}  // namespace repshare
