// Softmax / LogSoftmax over the middle axis of an [outer, axis, inner] view.
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_util.h"

namespace repshare {
namespace {

// One thread per (outer, inner) column: max, then the sum of exponentials, then
// the outputs. Neighbouring threads take neighbouring inner positions, so every
// pass is coalesced when inner > 1. (Softmax is off the hot path of these models:
// the classifier's 1000 logits once per image.)
__global__ void softmax_kernel(const float* __restrict__ x, float* __restrict__ y, int axis,
                               int inner, bool log_softmax, int total) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= total) return;
  const size_t base = static_cast<size_t>(i / inner) * axis * inner + i % inner;
  const float* xc = x + base;
  float* yc = y + base;
  float m = xc[0];
  for (int j = 1; j < axis; ++j) m = fmaxf(m, xc[static_cast<size_t>(j) * inner]);
  float sum = 0.f;
  for (int j = 0; j < axis; ++j) sum += expf(xc[static_cast<size_t>(j) * inner] - m);
  if (log_softmax) {
    const float log_sum = logf(sum);
    for (int j = 0; j < axis; ++j) {
      const size_t at = static_cast<size_t>(j) * inner;
      yc[at] = xc[at] - m - log_sum;
    }
  } else {
    const float inv = 1.f / sum;
    for (int j = 0; j < axis; ++j) {
      const size_t at = static_cast<size_t>(j) * inner;
      yc[at] = expf(xc[at] - m) * inv;
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
  softmax_kernel<<<cuda::blocks_for(total), cuda::kBlock, 0, stream_>>>(
      x.f32(), y.f32(), axis, cuda::to_int(p.inner, op, "inner"), p.log, total);
  after_launch("softmax_kernel");
}

}  // namespace repshare
