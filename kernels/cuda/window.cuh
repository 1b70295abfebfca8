// Windows over an input plane: the walk over a window's taps inside the image
// (convolutions and pools alike), and a pooling window in 32-bit sizes with its max,
// shared by pool2d.cu and weighted_sum.cu's resampled inputs (a BiFPN max-pool
// folded into its fusion must give pool2d's bits).
#pragma once

#include <cfloat>

#include "engine/backend.h"
#include "kernels/cuda/cuda_storage.cuh"
#include "kernels/cuda/cuda_util.h"

namespace repshare {
namespace cuda {

// Calls tap(input offset iy * w + ix, tap index ky * kw + kx) for the taps of the
// window starting at (iy0, ix0) that fall inside the h x w plane, row by row.
template <typename Tap>
__device__ __forceinline__ void for_each_tap(int iy0, int ix0, int kh, int kw, int dil_h,
                                             int dil_w, int h, int w, Tap tap) {
  for (int ky = 0; ky < kh; ++ky) {
    const int iy = iy0 + ky * dil_h;
    if (iy < 0 || iy >= h) continue;
    for (int kx = 0; kx < kw; ++kx) {
      const int ix = ix0 + kx * dil_w;
      if (ix < 0 || ix >= w) continue;
      tap(iy * w + ix, ky * kw + kx);
    }
  }
}

struct Pool32 {
  int h, w, kh, kw, stride_h, stride_w, dil_h, dil_w, pad_top, pad_left, pad_bottom, pad_right;
  int h_out, w_out;
  bool count_include_pad;
};

inline Pool32 pool32(const Pool2dParams& p, const char* op) {
  Pool32 q;
  q.h = to_int(p.h, op, "h");
  q.w = to_int(p.w, op, "w");
  q.kh = to_int(p.kh, op, "kh");
  q.kw = to_int(p.kw, op, "kw");
  q.stride_h = to_int(p.stride_h, op, "stride_h");
  q.stride_w = to_int(p.stride_w, op, "stride_w");
  q.dil_h = to_int(p.dil_h, op, "dil_h");
  q.dil_w = to_int(p.dil_w, op, "dil_w");
  q.pad_top = to_int(p.pad_top, op, "pad_top");
  q.pad_left = to_int(p.pad_left, op, "pad_left");
  q.pad_bottom = to_int(p.pad_bottom, op, "pad_bottom");
  q.pad_right = to_int(p.pad_right, op, "pad_right");
  q.h_out = to_int(p.h_out, op, "h_out");
  q.w_out = to_int(p.w_out, op, "w_out");
  q.count_include_pad = p.count_include_pad;
  to_int(p.n * p.c * p.h * p.w, op, "input numel");
  return q;
}

// The max over output (oy, ox)'s window of one input plane, padding ignored
// (-FLT_MAX when the window holds no input; NaN inputs dropped, as fmaxf does).
template <typename T>
__device__ __forceinline__ float window_max(const Pool32& p, const T* __restrict__ plane, int oy,
                                            int ox) {
  float acc = -FLT_MAX;
  for_each_tap(oy * p.stride_h - p.pad_top, ox * p.stride_w - p.pad_left, p.kh, p.kw, p.dil_h,
               p.dil_w, p.h, p.w,
               [&](int at, int) { acc = fmaxf(acc, as_float(plane[at])); });
  return acc;
}

}  // namespace cuda
}  // namespace repshare
