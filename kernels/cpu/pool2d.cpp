#include <algorithm>
#include <limits>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_kernels.h"

namespace repshare {
namespace {

// Taps k in [0, taps) with start + k * dil inside [lo, hi): returns [first, last).
inline void tap_range(int64_t start, int64_t dil, int64_t taps, int64_t lo, int64_t hi,
                      int64_t& first, int64_t& last) {
  first = start >= lo ? 0 : (lo - start + dil - 1) / dil;
  last = start >= hi ? 0 : std::min(taps, (hi - start + dil - 1) / dil);
  if (last < first) last = first;
}

}  // namespace

void CpuBackend::pool2d(const Pool2dParams& p, const Tensor& x, Tensor& y) {
  const float* xd = x.f32();
  float* yd = y.f32();
  const int64_t planes = p.n * p.c;
  const bool is_max = p.kind == PoolKind::Max;
  // Output columns whose whole window is inside the image need no clipping:
  // ox in [ox_in0, ox_in1). Only the border columns pay for tap_range's divisions.
  const int64_t span_w = (p.kw - 1) * p.dil_w;
  const int64_t ox_in0 = std::min(p.w_out, (p.pad_left + p.stride_w - 1) / p.stride_w);
  const int64_t ox_in1 = std::max(
      ox_in0, std::min(p.w_out, p.w - 1 - span_w + p.pad_left >= 0
                                    ? (p.w - 1 - span_w + p.pad_left) / p.stride_w + 1
                                    : 0));
#pragma omp parallel for num_threads(threads_) schedule(static) if (planes * p.h_out * p.w_out * p.kh * p.kw >= cpu::kMinParallelWork)
  for (int64_t plane = 0; plane < planes; ++plane) {
    const float* in = xd + plane * p.h * p.w;
    float* out = yd + plane * p.h_out * p.w_out;
    for (int64_t oy = 0; oy < p.h_out; ++oy) {
      const int64_t y0 = oy * p.stride_h - p.pad_top;
      int64_t ky0, ky1, pky0, pky1;
      tap_range(y0, p.dil_h, p.kh, 0, p.h, ky0, ky1);
      tap_range(y0, p.dil_h, p.kh, -p.pad_top, p.h + p.pad_bottom, pky0, pky1);
      float* orow = out + oy * p.w_out;
      // Interior columns, one tap at a time across the row: the output row is the
      // accumulator, so successive columns are independent (a max/add chain per
      // output would be latency-bound).
      std::fill(orow + ox_in0, orow + ox_in1, is_max ? std::numeric_limits<float>::lowest() : 0.f);
      for (int64_t ky = ky0; ky < ky1; ++ky) {
        const float* row = in + (y0 + ky * p.dil_h) * p.w - p.pad_left;
        for (int64_t kx = 0; kx < p.kw; ++kx) {
          const float* r = row + kx * p.dil_w;
          if (is_max) {
            for (int64_t ox = ox_in0; ox < ox_in1; ++ox)
              orow[ox] = std::max(orow[ox], r[ox * p.stride_w]);
          } else {
            for (int64_t ox = ox_in0; ox < ox_in1; ++ox) orow[ox] += r[ox * p.stride_w];
          }
        }
      }
      if (!is_max) {
        const int64_t count = (p.count_include_pad ? pky1 - pky0 : ky1 - ky0) * p.kw;
        const float inv = count > 0 ? 1.f / static_cast<float>(count) : 0.f;
        for (int64_t ox = ox_in0; ox < ox_in1; ++ox) orow[ox] *= inv;
      }
      // Border columns: windows clipped to the image.
      auto border_column = [&](int64_t ox) {
        const int64_t x0 = ox * p.stride_w - p.pad_left;
        int64_t kx0, kx1;
        tap_range(x0, p.dil_w, p.kw, 0, p.w, kx0, kx1);
        float acc = is_max ? std::numeric_limits<float>::lowest() : 0.f;
        for (int64_t ky = ky0; ky < ky1; ++ky) {
          const float* row = in + (y0 + ky * p.dil_h) * p.w + x0;
          if (is_max) {
            for (int64_t kx = kx0; kx < kx1; ++kx) acc = std::max(acc, row[kx * p.dil_w]);
          } else {
            for (int64_t kx = kx0; kx < kx1; ++kx) acc += row[kx * p.dil_w];
          }
        }
        if (!is_max) {
          int64_t count = (ky1 - ky0) * (kx1 - kx0);
          if (p.count_include_pad) {
            int64_t pkx0, pkx1;
            tap_range(x0, p.dil_w, p.kw, -p.pad_left, p.w + p.pad_right, pkx0, pkx1);
            count = (pky1 - pky0) * (pkx1 - pkx0);
          }
          acc = count > 0 ? acc / static_cast<float>(count) : 0.f;
        }
        orow[ox] = acc;
      };
      for (int64_t ox = 0; ox < ox_in0; ++ox) border_column(ox);
      for (int64_t ox = ox_in1; ox < p.w_out; ++ox) border_column(ox);
    }
  }
}

}  // namespace repshare
