// Standalone activation: y = act(x) elementwise; y may alias x.
#include "kernels/cpu/activation_math.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_util.h"

namespace repshare {
namespace {

__global__ void activation_kernel(Activation act, const float* x, float* y, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = apply_activation(act, x[i]);
}

}  // namespace

void CudaBackend::activation(const Activation& a, const Tensor& x, Tensor& y) {
  const int n = cuda::to_int(x.numel(), "activation", "numel");
  if (n == 0) return;
  activation_kernel<<<cuda::blocks_for(n), cuda::kBlock, 0, stream_>>>(a, x.f32(), y.f32(), n);
  after_launch("activation_kernel");
}

}  // namespace repshare
