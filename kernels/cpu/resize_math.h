// ONNX Resize's coordinate transformation, shared by the CPU reference
// (kernels/cpu/resize.cpp) and the CUDA kernel (kernels/cuda/resize.cu) so both
// map output pixels to the same input coordinates. Written after
// onnx/reference/ops/op_resize.py; computed in double so rounding ties in nearest
// mode land where ONNX puts them. align_corners and tf_crop_and_resize use the
// reference's output length, scale * input (not the integer size): the two agree
// when Resize gives `sizes`, and the node tests that give `scales` (0.6 * 4 = 2.4
// -> 2 outputs) expect the scaled length. C++14-clean.
#pragma once

#include <cmath>

#include "engine/backend.h"
#include "kernels/cpu/activation_math.h"  // REPSHARE_HOST_DEVICE

namespace repshare {

// Input coordinate of output index x along one axis of `in` -> `out` elements
// resized by `scale` (output / input); roi_start/roi_end for tf_crop_and_resize.
REPSHARE_HOST_DEVICE double resize_input_coordinate(CoordMode coord, double x, double in,
                                                    double out, double scale, double roi_start,
                                                    double roi_end) {
  const double scaled_length = scale * in;
  switch (coord) {
    case CoordMode::HalfPixel: return (x + 0.5) / scale - 0.5;
    case CoordMode::HalfPixelSymmetric: {
      // Centres the (possibly non-integer) scaled canvas on the integer output.
      const double adjustment = out / scaled_length;
      const double offset = in / 2.0 * (1.0 - adjustment);
      return offset + (x + 0.5) / scale - 0.5;
    }
    case CoordMode::PytorchHalfPixel: return out > 1 ? (x + 0.5) / scale - 0.5 : 0.0;
    case CoordMode::AlignCorners:
      return scaled_length == 1.0 ? 0.0 : x * (in - 1.0) / (scaled_length - 1.0);
    case CoordMode::Asymmetric: return x / scale;
    case CoordMode::TfHalfPixelForNn: return (x + 0.5) / scale;
    case CoordMode::TfCropAndResize:
      if (scaled_length == 1.0) return 0.5 * (roi_start + roi_end) * (in - 1.0);
      return roi_start * (in - 1.0) + x * (roi_end - roi_start) * (in - 1.0) / (scaled_length - 1.0);
  }
  return 0.0;
}

constexpr int kResizeMaxTaps = 4;

REPSHARE_HOST_DEVICE int resize_taps_of(ResizeMode m) {
  return m == ResizeMode::Nearest ? 1 : m == ResizeMode::Linear ? 2 : 4;
}

// One axis of a resize: `in` -> `out` elements.
struct ResizeAxis {
  int64_t in, out;
  double scale, roi_start, roi_end;
};

// The input elements one output element reads along one axis, and their weights.
struct ResizeTaps {
  int64_t index[kResizeMaxTaps];  // clamped into [0, in), as the reference's edge padding
  float weight[kResizeMaxTaps];
  bool outside;  // tf_crop_and_resize: the output takes extrapolation_value
};

// Taps of output index o: 1 (nearest, by p.nearest), 2 (linear) or 4 (cubic with
// p.cubic_a, renormalised inside the input when p.exclude_outside).
REPSHARE_HOST_DEVICE ResizeTaps resize_axis_taps(const ResizeParams& p, const ResizeAxis& a,
                                                 int64_t o) {
  ResizeTaps t;
  t.outside = false;
  const double x = resize_input_coordinate(p.coord, static_cast<double>(o),
                                           static_cast<double>(a.in), static_cast<double>(a.out),
                                           a.scale, a.roi_start, a.roi_end);
  if (p.coord == CoordMode::TfCropAndResize && (x < 0.0 || x > static_cast<double>(a.in - 1))) {
    t.outside = true;
    return t;
  }
  const double x0 = floor(x), r = x - x0;
  const int64_t base = static_cast<int64_t>(x0);
  int64_t raw[kResizeMaxTaps] = {0, 0, 0, 0};
  double c[kResizeMaxTaps] = {0.0, 0.0, 0.0, 0.0};
  const int n = resize_taps_of(p.mode);
  switch (p.mode) {
    case ResizeMode::Nearest: {
      bool up = false;  // take base + 1 instead of base
      if (r > 0.0) {
        switch (p.nearest) {
          case NearestMode::RoundPreferFloor: up = r > 0.5; break;
          case NearestMode::RoundPreferCeil: up = r >= 0.5; break;
          case NearestMode::Floor: up = false; break;
          case NearestMode::Ceil: up = true; break;
        }
      }
      raw[0] = base + (up ? 1 : 0);
      c[0] = 1.0;
      break;
    }
    case ResizeMode::Linear:
      raw[0] = base;
      raw[1] = base + 1;
      c[0] = 1.0 - r;
      c[1] = r;
      break;
    case ResizeMode::Cubic: {
      const double A = p.cubic_a, s = 1.0 - r;
      for (int i = 0; i < 4; ++i) raw[i] = base - 1 + i;
      c[0] = ((A * (r + 1) - 5 * A) * (r + 1) + 8 * A) * (r + 1) - 4 * A;
      c[1] = ((A + 2) * r - (A + 3)) * r * r + 1;
      c[2] = ((A + 2) * s - (A + 3)) * s * s + 1;
      c[3] = ((A * (s + 1) - 5 * A) * (s + 1) + 8 * A) * (s + 1) - 4 * A;
      break;
    }
  }
  if (p.exclude_outside && n > 1) {
    double sum = 0.0;
    for (int i = 0; i < n; ++i) {
      if (raw[i] < 0 || raw[i] >= a.in) c[i] = 0.0;
      sum += c[i];
    }
    for (int i = 0; i < n; ++i) c[i] /= sum;
  }
  for (int i = 0; i < n; ++i) {
    t.index[i] = raw[i] < 0 ? 0 : raw[i] >= a.in ? a.in - 1 : raw[i];
    t.weight[i] = static_cast<float>(c[i]);
  }
  return t;
}

}  // namespace repshare
