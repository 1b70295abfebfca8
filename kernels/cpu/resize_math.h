// ONNX Resize's coordinate transformation, shared by the CPU reference
// (kernels/cpu/resize.cpp) and the CUDA kernel (kernels/cuda/resize.cu) so both
// map output pixels to the same input coordinates. Written after
// onnx/reference/ops/op_resize.py; computed in double so rounding ties in nearest
// mode land where ONNX puts them. align_corners and tf_crop_and_resize use the
// reference's output length, scale * input (not the integer size): the two agree
// when Resize gives `sizes`, and the node tests that give `scales` (0.6 * 4 = 2.4
// -> 2 outputs) expect the scaled length. C++14-clean.
#pragma once

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

}  // namespace repshare
