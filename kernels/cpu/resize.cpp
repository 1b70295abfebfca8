// ONNX Resize on the last two axes, written after onnx/reference/ops/op_resize.py:
// each output coordinate maps to an input coordinate x (coordinate transformation),
// whose neighbours (1 nearest, 2 linear, 4 cubic; indices clamped to the edge as
// the reference's edge padding does) are weighted by the mode's coefficients.
// The coordinate transformation is kernels/cpu/resize_math.h, shared with CUDA.
#include <algorithm>
#include <cmath>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/resize_math.h"

namespace repshare {
namespace {

constexpr int kMaxTaps = 4;

struct AxisTaps {
  int64_t index[kMaxTaps];  // clamped into [0, in)
  float weight[kMaxTaps];
  bool outside = false;  // tf_crop_and_resize: the output takes extrapolation_value
};

struct AxisSpec {
  int64_t in = 0, out = 0;
  double scale = 1.0;
  double roi_start = 0.0, roi_end = 1.0;
};

double input_coordinate(const ResizeParams& p, const AxisSpec& a, int64_t o) {
  return resize_input_coordinate(p.coord, static_cast<double>(o), static_cast<double>(a.in),
                                 static_cast<double>(a.out), a.scale, a.roi_start, a.roi_end);
}

int taps_of(ResizeMode m) { return m == ResizeMode::Nearest ? 1 : m == ResizeMode::Linear ? 2 : 4; }

void cubic_coeffs(double r, double A, double c[4]) {
  const double s = 1.0 - r;
  c[0] = ((A * (r + 1) - 5 * A) * (r + 1) + 8 * A) * (r + 1) - 4 * A;
  c[1] = ((A + 2) * r - (A + 3)) * r * r + 1;
  c[2] = ((A + 2) * s - (A + 3)) * s * s + 1;
  c[3] = ((A * (s + 1) - 5 * A) * (s + 1) + 8 * A) * (s + 1) - 4 * A;
}

AxisTaps axis_taps(const ResizeParams& p, const AxisSpec& a, int64_t o) {
  AxisTaps t;
  const double x = input_coordinate(p, a, o);
  if (p.coord == CoordMode::TfCropAndResize && (x < 0.0 || x > static_cast<double>(a.in - 1))) {
    t.outside = true;
    return t;
  }
  const double x0 = std::floor(x), r = x - x0;
  const int64_t base = static_cast<int64_t>(x0);
  int64_t raw[kMaxTaps];
  double c[kMaxTaps];
  int n = taps_of(p.mode);
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
    case ResizeMode::Cubic:
      for (int i = 0; i < 4; ++i) raw[i] = base - 1 + i;
      cubic_coeffs(r, p.cubic_a, c);
      break;
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
    t.index[i] = std::min(std::max<int64_t>(raw[i], 0), a.in - 1);
    t.weight[i] = static_cast<float>(c[i]);
  }
  return t;
}

}  // namespace

void CpuBackend::resize(const ResizeParams& p, const Tensor& x, Tensor& y) {
  const float* xd = x.f32();
  float* yd = y.f32();
  const AxisSpec ay{p.h, p.h_out, p.scale_h, p.roi[0], p.roi[2]};
  const AxisSpec ax{p.w, p.w_out, p.scale_w, p.roi[1], p.roi[3]};
  const int taps = taps_of(p.mode);
  // Column taps are computed once per plane for a chunk of columns and kept on the
  // stack (kernels allocate nothing), then reused by every output row.
  constexpr int64_t kChunk = 256;
#pragma omp parallel for num_threads(threads_) schedule(static) if (p.outer * p.h_out * p.w_out * taps * taps >= cpu::kMinParallelWork)
  for (int64_t plane = 0; plane < p.outer; ++plane) {
    const float* in = xd + plane * p.h * p.w;
    float* out = yd + plane * p.h_out * p.w_out;
    AxisTaps cols[kChunk];
    for (int64_t c0 = 0; c0 < p.w_out; c0 += kChunk) {
      const int64_t c1 = std::min(p.w_out, c0 + kChunk);
      for (int64_t ox = c0; ox < c1; ++ox) cols[ox - c0] = axis_taps(p, ax, ox);
      for (int64_t oy = 0; oy < p.h_out; ++oy) {
        const AxisTaps row = axis_taps(p, ay, oy);
        float* orow = out + oy * p.w_out;
        if (p.mode == ResizeMode::Nearest && !row.outside &&
            p.coord != CoordMode::TfCropAndResize) {  // a gather from one input row
          const float* irow = in + row.index[0] * p.w;
          for (int64_t ox = c0; ox < c1; ++ox) orow[ox] = irow[cols[ox - c0].index[0]];
          continue;
        }
        for (int64_t ox = c0; ox < c1; ++ox) {
          const AxisTaps& col = cols[ox - c0];
          if (row.outside || col.outside) {
            orow[ox] = p.extrapolation_value;
            continue;
          }
          // Rows first, then across them, as the reference interpolates.
          float acc = 0.f;
          for (int i = 0; i < taps; ++i) {
            const float* irow = in + row.index[i] * p.w;
            float line = 0.f;
            for (int j = 0; j < taps; ++j) line += col.weight[j] * irow[col.index[j]];
            acc += row.weight[i] * line;
          }
          orow[ox] = acc;
        }
      }
    }
  }
}

}  // namespace repshare
