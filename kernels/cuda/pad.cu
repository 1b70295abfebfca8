// Pad: output index o maps to input index o - pad_begin per axis; outside the
// input the mode decides (Constant: value; Reflect/Edge/Wrap as numpy.pad).
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_storage.cuh"
#include "kernels/cuda/cuda_util.h"

namespace repshare {
namespace {

struct Pad32 {
  PadMode mode;
  int rank;
  int in_dims[kMaxRank];
  int out_dims[kMaxRank];
  int pad_begin[kMaxRank];
  float value;
};

// Maps i (any integer) into [0, n) for Reflect/Edge/Wrap; n > 0.
__device__ __forceinline__ int fold_index(PadMode mode, int i, int n) {
  if (i >= 0 && i < n) return i;
  switch (mode) {
    case PadMode::Edge: return i < 0 ? 0 : n - 1;
    case PadMode::Wrap: {
      const int r = i % n;
      return r < 0 ? r + n : r;
    }
    case PadMode::Reflect: {
      // numpy 'reflect' repeats the mirror for pads wider than the axis: a
      // triangle wave of period 2(n-1).
      if (n == 1) return 0;
      const int period = 2 * (n - 1);
      int r = i % period;
      if (r < 0) r += period;
      return r < n ? r : period - r;
    }
    case PadMode::Constant: break;
  }
  return -1;
}

template <typename T>
__global__ void pad_kernel(Pad32 p, const T* __restrict__ x, T* __restrict__ y, int total) {
  const int o = blockIdx.x * blockDim.x + threadIdx.x;
  if (o >= total) return;
  int rest = o, in = 0, in_stride = 1;
  for (int d = p.rank - 1; d >= 0; --d) {
    int idx = rest % p.out_dims[d] - p.pad_begin[d];
    rest /= p.out_dims[d];
    if (idx < 0 || idx >= p.in_dims[d]) {
      if (p.mode == PadMode::Constant) {
        y[o] = cuda::stored<T>(p.value);
        return;
      }
      idx = fold_index(p.mode, idx, p.in_dims[d]);
    }
    in += idx * in_stride;
    in_stride *= p.in_dims[d];
  }
  y[o] = x[in];
}

}  // namespace

void CudaBackend::pad(const PadParams& p, const Tensor& x, Tensor& y) {
  const char* op = "pad";
  check(p.rank >= 0 && p.rank <= kMaxRank, ErrorKind::Unsupported, "cuda pad: rank ", p.rank);
  Pad32 q = {};
  q.mode = p.mode;
  q.rank = p.rank;
  q.value = p.value;
  int64_t in_total = 1, out_total = 1;
  for (int d = 0; d < p.rank; ++d) {
    q.in_dims[d] = cuda::to_int(p.in_dims[d], op, "input dimension");
    q.out_dims[d] = cuda::to_int(p.out_dims[d], op, "output dimension");
    q.pad_begin[d] = cuda::to_signed_int(p.pad_begin[d], op, "pad_begin");
    in_total *= p.in_dims[d];
    out_total *= p.out_dims[d];
  }
  cuda::to_int(in_total, op, "input numel");
  const int n = cuda::to_int(out_total, op, "output numel");
  if (n == 0) return;
  check(in_total > 0 || p.mode == PadMode::Constant, ErrorKind::Shape,
        "cuda pad: reflect/edge/wrap padding of an empty tensor");
  cuda::with_storage(y.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    pad_kernel<T><<<cuda::blocks_for(n), cuda::kBlock, 0, stream_>>>(q, cuda::data<T>(x),
                                                                     cuda::data<T>(y), n);
  });
  after_launch("pad_kernel");
}

}  // namespace repshare
