// Standalone activation: y = act(x) elementwise; y may alias x.
#include "kernels/cpu/activation_math.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_storage.cuh"
#include "kernels/cuda/cuda_util.h"

namespace repshare {
namespace {

template <typename T>
__global__ void activation_kernel(Activation act, const T* x, T* y, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = cuda::stored<T>(apply_activation(act, cuda::as_float(x[i])));
}

}  // namespace

void CudaBackend::activation(const Activation& a, const Tensor& x, Tensor& y) {
  const int n = cuda::to_int(x.numel(), "activation", "numel");
  if (n == 0) return;
  cuda::with_storage(y.dtype, "activation", [&](auto tag) {
    using T = decltype(tag);
    activation_kernel<T><<<cuda::blocks_for(n), cuda::kBlock, 0, stream_>>>(
        a, cuda::data<T>(x), cuda::data<T>(y), n);
  });
  after_launch("activation_kernel");
}

}  // namespace repshare
