// Max / average pooling over 2-D windows of NCHW input.
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_storage.cuh"
#include "kernels/cuda/cuda_util.h"
#include "kernels/cuda/window.cuh"

namespace repshare {
namespace {

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
__global__ void pool2d_kernel(cuda::Pool32 p, const T* __restrict__ x, T* __restrict__ y,
                              int total) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= total) return;
  const int ox = i % p.w_out;
  const int oy = (i / p.w_out) % p.h_out;
  const int plane = i / (p.w_out * p.h_out);
  const T* xp = x + static_cast<size_t>(plane) * p.h * p.w;
  if (kMax) {
    y[i] = cuda::stored<T>(cuda::window_max(p, xp, oy, ox));
    return;
  }
  const int iy0 = oy * p.stride_h - p.pad_top;
  const int ix0 = ox * p.stride_w - p.pad_left;
  float acc = 0.f;
  int inside = 0;
  cuda::for_each_tap(iy0, ix0, p.kh, p.kw, p.dil_h, p.dil_w, p.h, p.w, [&](int at, int) {
    acc += cuda::as_float(xp[at]);
    ++inside;
  });
  // count_include_pad counts the taps inside the padded extent, not kh*kw: a
  // window that runs past the bottom/right padding (ceil_mode) is clipped.
  const int divisor =
      p.count_include_pad
          ? taps_inside(iy0, p.kh, p.dil_h, -p.pad_top, p.h + p.pad_bottom) *
                taps_inside(ix0, p.kw, p.dil_w, -p.pad_left, p.w + p.pad_right)
          : inside;
  y[i] = cuda::stored<T>(divisor > 0 ? acc / divisor : 0.f);
}

}  // namespace

void CudaBackend::pool2d(const Pool2dParams& p, const Tensor& x, Tensor& y) {
  const char* op = "pool2d";
  const cuda::Pool32 q = cuda::pool32(p, op);
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
