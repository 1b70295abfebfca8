// ONNX Resize on the last two axes, the same computation as kernels/cpu/resize.cpp
// (itself written after onnx/reference/ops/op_resize.py): each output coordinate
// maps to an input coordinate, whose neighbours (1 nearest, 2 linear, 4 cubic;
// indices clamped to the edge) are weighted by the mode's coefficients. The
// coordinates are computed in double, like the CPU reference, so that rounding
// ties in nearest mode resolve identically on both backends.
#include "kernels/cpu/resize_math.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_util.h"

namespace repshare {
namespace {

constexpr int kMaxTaps = 4;

struct AxisTaps {
  int index[kMaxTaps];  // clamped into [0, in)
  float weight[kMaxTaps];
  bool outside;  // tf_crop_and_resize: the output takes extrapolation_value
};

struct AxisSpec {
  int in, out;
  double scale, roi_start, roi_end;
};

struct Resize32 {
  ResizeMode mode;
  CoordMode coord;
  NearestMode nearest;
  double cubic_a;
  bool exclude_outside;
  float extrapolation_value;
  AxisSpec y, x;
};

__device__ double input_coordinate(const Resize32& p, const AxisSpec& a, int o) {
  return resize_input_coordinate(p.coord, static_cast<double>(o), static_cast<double>(a.in),
                                 static_cast<double>(a.out), a.scale, a.roi_start, a.roi_end);
}

__host__ __device__ int taps_of(ResizeMode m) {
  return m == ResizeMode::Nearest ? 1 : m == ResizeMode::Linear ? 2 : 4;
}

__device__ AxisTaps axis_taps(const Resize32& p, const AxisSpec& a, int o) {
  AxisTaps t;
  t.outside = false;
  const double x = input_coordinate(p, a, o);
  if (p.coord == CoordMode::TfCropAndResize && (x < 0.0 || x > static_cast<double>(a.in - 1))) {
    t.outside = true;
    return t;
  }
  const double x0 = floor(x), r = x - x0;
  const int base = static_cast<int>(x0);
  int raw[kMaxTaps];
  double c[kMaxTaps];
  const int n = taps_of(p.mode);
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
    t.index[i] = min(max(raw[i], 0), a.in - 1);
    t.weight[i] = static_cast<float>(c[i]);
  }
  return t;
}

// One thread per output element. The taps are recomputed per element (a few
// double operations) instead of tabulated: the kernel allocates nothing.
__global__ void resize_kernel(Resize32 p, const float* __restrict__ x, float* __restrict__ y,
                              int total) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= total) return;
  const int ox = i % p.x.out;
  const int oy = (i / p.x.out) % p.y.out;
  const int plane = i / (p.x.out * p.y.out);
  const AxisTaps row = axis_taps(p, p.y, oy);
  const AxisTaps col = axis_taps(p, p.x, ox);
  if (row.outside || col.outside) {
    y[i] = p.extrapolation_value;
    return;
  }
  const float* in = x + static_cast<size_t>(plane) * p.y.in * p.x.in;
  const int taps = taps_of(p.mode);
  // Rows first, then across them, in the CPU reference's order.
  float acc = 0.f;
  for (int r = 0; r < taps; ++r) {
    const float* irow = in + row.index[r] * p.x.in;
    float line = 0.f;
    for (int c = 0; c < taps; ++c) line += col.weight[c] * irow[col.index[c]];
    acc += row.weight[r] * line;
  }
  y[i] = acc;
}

}  // namespace

void CudaBackend::resize(const ResizeParams& p, const Tensor& x, Tensor& y) {
  const char* op = "resize";
  Resize32 q;
  q.mode = p.mode;
  q.coord = p.coord;
  q.nearest = p.nearest;
  q.cubic_a = p.cubic_a;
  q.exclude_outside = p.exclude_outside;
  q.extrapolation_value = p.extrapolation_value;
  q.y = AxisSpec{cuda::to_int(p.h, op, "h"), cuda::to_int(p.h_out, op, "h_out"), p.scale_h,
                 p.roi[0], p.roi[2]};
  q.x = AxisSpec{cuda::to_int(p.w, op, "w"), cuda::to_int(p.w_out, op, "w_out"), p.scale_w,
                 p.roi[1], p.roi[3]};
  cuda::to_int(p.outer * p.h * p.w, op, "input numel");
  const int total = cuda::to_int(p.outer * p.h_out * p.w_out, op, "output numel");
  if (total == 0) return;
  check(p.h > 0 && p.w > 0, ErrorKind::Shape, "cuda resize: empty input plane");
  resize_kernel<<<cuda::blocks_for(total), cuda::kBlock, 0, stream_>>>(q, x.f32(), y.f32(), total);
  after_launch("resize_kernel");
}

}  // namespace repshare
