// Softmax / LogSoftmax over the middle axis of an [outer, axis, inner] view.
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_storage.cuh"
#include "kernels/cuda/cuda_util.h"

namespace repshare {
namespace {

// One thread per (outer, inner) column: max, then the sum of exponentials, then
// the outputs. Neighbouring threads take neighbouring inner positions, so every
// pass is coalesced when inner > 1. (Softmax is off the hot path of these models:
// the classifier's 1000 logits once per image.)
template <typename T>
__global__ void softmax_kernel(const T* __restrict__ x, T* __restrict__ y, int axis, int inner,
                               bool log_softmax, int total) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= total) return;
  const size_t base = static_cast<size_t>(i / inner) * axis * inner + i % inner;
  const T* xc = x + base;
  T* yc = y + base;
  float m = cuda::as_float(xc[0]);
  for (int j = 1; j < axis; ++j) m = fmaxf(m, cuda::as_float(xc[static_cast<size_t>(j) * inner]));
  float sum = 0.f;
  for (int j = 0; j < axis; ++j)
    sum += expf(cuda::as_float(xc[static_cast<size_t>(j) * inner]) - m);
  if (log_softmax) {
    const float log_sum = logf(sum);
    for (int j = 0; j < axis; ++j) {
      const size_t at = static_cast<size_t>(j) * inner;
      yc[at] = cuda::stored<T>(cuda::as_float(xc[at]) - m - log_sum);
    }
  } else {
    const float inv = 1.f / sum;
    for (int j = 0; j < axis; ++j) {
      const size_t at = static_cast<size_t>(j) * inner;
      yc[at] = cuda::stored<T>(expf(cuda::as_float(xc[at]) - m) * inv);
    }
  }
}

}  // namespace

void CudaBackend::softmax(const SoftmaxParams& p, const Tensor& x, Tensor& y) {
  const char* op = "softmax";
  cuda::to_int(p.outer * p.axis * p.inner, op, "numel");
  const int total = cuda::to_int(p.outer * p.inner, op, "outer*inner");
  const int axis = cuda::to_int(p.axis, op, "axis length");
  if (total == 0 || axis == 0) return;
  const int inner = cuda::to_int(p.inner, op, "inner");
  cuda::with_storage(y.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    softmax_kernel<T><<<cuda::blocks_for(total), cuda::kBlock, 0, stream_>>>(
        cuda::data<T>(x), cuda::data<T>(y), axis, inner, p.log, total);
  });
  after_launch("softmax_kernel");
}

}  // namespace repshare
