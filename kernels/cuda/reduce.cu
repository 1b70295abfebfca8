// Mean / Sum / Max / Min over the middle axis of an [outer, reduce, inner] view.
#include <cfloat>

#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_storage.cuh"
#include "kernels/cuda/cuda_util.h"
#include "kernels/cuda/row_reduce.cuh"

namespace repshare {
namespace {

__device__ __forceinline__ float reduce_init(ReduceKind k) {
  return k == ReduceKind::Max ? -FLT_MAX : k == ReduceKind::Min ? FLT_MAX : 0.f;
}

__device__ __forceinline__ float reduce_step(ReduceKind k, float acc, float v) {
  return k == ReduceKind::Max ? fmaxf(acc, v) : k == ReduceKind::Min ? fminf(acc, v) : acc + v;
}

__device__ __forceinline__ float reduce_finish(ReduceKind k, float acc, int count) {
  return k == ReduceKind::Mean ? acc / count : acc;
}

// inner == 1 (global pooling over a contiguous row, the common case), rows of at
// most kWarpRow: one warp per row (row_reduce.cuh's order).
template <typename T>
__global__ void reduce_rows_kernel(ReduceKind kind, const T* __restrict__ x, T* __restrict__ y,
                                   int rows, int len) {
  const int warp = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (warp >= rows) return;  // whole warps leave together: the shuffles below are safe
  const T* row = x + static_cast<size_t>(warp) * len;
  float acc = reduce_init(kind);
  for (int j = lane; j < len; j += 32) acc = reduce_step(kind, acc, cuda::as_float(row[j]));
  acc = cuda::warp_combine(acc, [kind](float a, float b) { return reduce_step(kind, a, b); });
  if (lane == 0) y[warp] = cuda::stored<T>(reduce_finish(kind, acc, len));
}

// inner == 1, longer rows: a block of kLongRowBlock threads per row.
template <typename T>
__global__ void __launch_bounds__(cuda::kLongRowBlock)
    reduce_long_rows_kernel(ReduceKind kind, const T* __restrict__ x, T* __restrict__ y,
                            int len) {
  __shared__ float partials[32];
  const T* row = x + static_cast<size_t>(blockIdx.x) * len;
  const float acc = cuda::block_combine_row(
      len, [row](int j) { return cuda::as_float(row[j]); }, cuda::KeepNothing(),
      reduce_init(kind), [kind](float a, float b) { return reduce_step(kind, a, b); }, partials);
  if (threadIdx.x == 0) y[blockIdx.x] = cuda::stored<T>(reduce_finish(kind, acc, len));
}

// inner > 1: one thread per output; neighbouring threads read neighbouring inner
// elements, so every step of the loop is a coalesced load.
template <typename T>
__global__ void reduce_strided_kernel(ReduceKind kind, const T* __restrict__ x, T* __restrict__ y,
                                      int len, int inner, int total) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= total) return;
  const int o = i / inner, in = i % inner;
  const T* col = x + static_cast<size_t>(o) * len * inner + in;
  float acc = reduce_init(kind);
  for (int j = 0; j < len; ++j)
    acc = reduce_step(kind, acc, cuda::as_float(col[static_cast<size_t>(j) * inner]));
  y[i] = cuda::stored<T>(reduce_finish(kind, acc, len));
}

}  // namespace

void CudaBackend::reduce(const ReduceParams& p, const Tensor& x, Tensor& y) {
  cuda::to_int(p.outer * p.reduce * p.inner, "reduce", "input numel");
  const int total = cuda::to_int(p.outer * p.inner, "reduce", "output numel");
  const int len = cuda::to_int(p.reduce, "reduce", "reduced length");
  check(len > 0, ErrorKind::Shape, "cuda reduce: empty reduced axis");
  if (total == 0) return;
  const int inner = cuda::to_int(p.inner, "reduce", "inner");
  cuda::with_storage(y.dtype, "reduce", [&](auto tag) {
    using T = decltype(tag);
    if (inner == 1 && len > cuda::kWarpRow) {
      reduce_long_rows_kernel<T><<<static_cast<unsigned>(total), cuda::kLongRowBlock, 0,
                                   stream_>>>(p.kind, cuda::data<T>(x), cuda::data<T>(y), len);
      after_launch("reduce_long_rows_kernel");
    } else if (inner == 1) {
      const int warps_per_block = cuda::kBlock / 32;
      const unsigned blocks =
          static_cast<unsigned>((total + warps_per_block - 1) / warps_per_block);
      reduce_rows_kernel<T><<<blocks, cuda::kBlock, 0, stream_>>>(p.kind, cuda::data<T>(x),
                                                                  cuda::data<T>(y), total, len);
      after_launch("reduce_rows_kernel");
    } else {
      reduce_strided_kernel<T><<<cuda::blocks_for(total), cuda::kBlock, 0, stream_>>>(
          p.kind, cuda::data<T>(x), cuda::data<T>(y), len, inner, total);
      after_launch("reduce_strided_kernel");
    }
  });
}

}  // namespace repshare
