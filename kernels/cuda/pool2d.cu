// Max / average pooling over 2-D windows of NCHW input.
#include <cfloat>

#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_storage.cuh"
#include "kernels/cuda/cuda_util.h"

namespace repshare {
namespace {

struct Pool32 {
  int h, w, kh, kw, stride_h, stride_w, dil_h, dil_w, pad_top, pad_left, pad_bottom, pad_right;
  int h_out, w_out;
  bool count_include_pad;
};

// Taps t < k of a window starting at `start` (step `dil`) that fall in [lo, hi).
__device__ __forceinline__ int taps_inside(int start, int k, int dil, int lo, int hi) {
  int count = 0;
  for (int t = 0; t < k; ++t) {
    const int v = start + t * dil;
    count += (v >= lo && v < hi) ? 1 : 0;
  }
  return count;
}

template <bool kMax, typename T>
__global__ void pool2d_kernel(Pool32 p, const T* __restrict__ x, T* __restrict__ y, int total) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= total) return;
  const int ox = i % p.w_out;
  const int oy = (i / p.w_out) % p.h_out;
  const int plane = i / (p.w_out * p.h_out);
  const T* xp = x + static_cast<size_t>(plane) * p.h * p.w;
  const int iy0 = oy * p.stride_h - p.pad_top;
  const int ix0 = ox * p.stride_w - p.pad_left;
  float acc = kMax ? -FLT_MAX : 0.f;
  int inside = 0;
  for (int ky = 0; ky < p.kh; ++ky) {
    const int iy = iy0 + ky * p.dil_h;
    if (iy < 0 || iy >= p.h) continue;
    for (int kx = 0; kx < p.kw; ++kx) {
      const int ix = ix0 + kx * p.dil_w;
      if (ix < 0 || ix >= p.w) continue;
      const float v = cuda::as_float(xp[iy * p.w + ix]);
      acc = kMax ? fmaxf(acc, v) : acc + v;
      ++inside;
    }
  }
  if (!kMax) {
    // count_include_pad counts the taps inside the padded extent, not kh*kw: a
    // window that runs past the bottom/right padding (ceil_mode) is clipped.
    const int divisor =
        p.count_include_pad
            ? taps_inside(iy0, p.kh, p.dil_h, -p.pad_top, p.h + p.pad_bottom) *
                  taps_inside(ix0, p.kw, p.dil_w, -p.pad_left, p.w + p.pad_right)
            : inside;
    acc = divisor > 0 ? acc / divisor : 0.f;
  }
  y[i] = cuda::stored<T>(acc);
}

}  // namespace

void CudaBackend::pool2d(const Pool2dParams& p, const Tensor& x, Tensor& y) {
  const char* op = "pool2d";
  Pool32 q;
  q.h = cuda::to_int(p.h, op, "h");
  q.w = cuda::to_int(p.w, op, "w");
  q.kh = cuda::to_int(p.kh, op, "kh");
  q.kw = cuda::to_int(p.kw, op, "kw");
  q.stride_h = cuda::to_int(p.stride_h, op, "stride_h");
  q.stride_w = cuda::to_int(p.stride_w, op, "stride_w");
  q.dil_h = cuda::to_int(p.dil_h, op, "dil_h");
  q.dil_w = cuda::to_int(p.dil_w, op, "dil_w");
  q.pad_top = cuda::to_int(p.pad_top, op, "pad_top");
  q.pad_left = cuda::to_int(p.pad_left, op, "pad_left");
  q.pad_bottom = cuda::to_int(p.pad_bottom, op, "pad_bottom");
  q.pad_right = cuda::to_int(p.pad_right, op, "pad_right");
  q.h_out = cuda::to_int(p.h_out, op, "h_out");
  q.w_out = cuda::to_int(p.w_out, op, "w_out");
  q.count_include_pad = p.count_include_pad;
  cuda::to_int(p.n * p.c * p.h * p.w, op, "input numel");
  const int total = cuda::to_int(p.n * p.c * p.h_out * p.w_out, op, "output numel");
  if (total == 0) return;
  cuda::with_storage(y.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    if (p.kind == PoolKind::Max)
      pool2d_kernel<true, T><<<cuda::blocks_for(total), cuda::kBlock, 0, stream_>>>(
          q, cuda::data<T>(x), cuda::data<T>(y), total);
    else
      pool2d_kernel<false, T><<<cuda::blocks_for(total), cuda::kBlock, 0, stream_>>>(
          q, cuda::data<T>(x), cuda::data<T>(y), total);
  });
  after_launch("pool2d_kernel");
}

}  // namespace repshare
