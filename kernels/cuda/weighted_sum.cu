// BiFPN fusion: y = act(sum_i weights[i] * xs[i]).
#include "kernels/cpu/activation_math.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_storage.cuh"
#include "kernels/cuda/cuda_util.h"

namespace repshare {
namespace {

// Passed by value: the input pointers travel in the launch's parameter space.
template <typename T>
struct FusionInputs {
  const T* x[kMaxFusionInputs];
  float w[kMaxFusionInputs];
  int count;
};

template <typename T>
__global__ void weighted_sum_kernel(FusionInputs<T> in, Activation act, T* y, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  float s = 0.f;
  for (int k = 0; k < in.count; ++k) s += in.w[k] * cuda::as_float(in.x[k][i]);
  y[i] = cuda::stored<T>(apply_activation(act, s));
}

}  // namespace

void CudaBackend::weighted_sum(const WeightedSumParams& p, const Tensor* const* xs, Tensor& y) {
  check(p.count >= 1 && p.count <= kMaxFusionInputs, ErrorKind::Unsupported,
        "cuda weighted_sum: ", p.count, " inputs (1..", kMaxFusionInputs, " supported)");
  const int n = cuda::to_int(p.numel, "weighted_sum", "numel");
  if (n == 0) return;
  cuda::with_storage(y.dtype, "weighted_sum", [&](auto tag) {
    using T = decltype(tag);
    FusionInputs<T> in = {};
    in.count = p.count;
    for (int k = 0; k < p.count; ++k) {
      in.x[k] = cuda::data<T>(*xs[k]);
      in.w[k] = p.weights[k];
    }
    weighted_sum_kernel<T><<<cuda::blocks_for(n), cuda::kBlock, 0, stream_>>>(in, p.act,
                                                                             cuda::data<T>(y), n);
  });
  after_launch("weighted_sum_kernel");
}

}  // namespace repshare
