// BiFPN fusion: y = act(sum_i weights[i] * xs[i]), each input read as it is or
// through its folded max-pool / nearest-upsampling (weighted_sum_resampled). The
// per-element arithmetic is fusion_inputs.cuh's, which conv2d.cu's depthwise
// kernels share.
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_storage.cuh"
#include "kernels/cuda/cuda_util.h"
#include "kernels/cuda/fusion_inputs.cuh"

namespace repshare {
namespace {

template <typename T>
__global__ void weighted_sum_kernel(cuda::FusionInputs<T> in, T* y, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = cuda::fused_value(in, i);
}

}  // namespace

void CudaBackend::weighted_sum(const WeightedSumParams& p, const Tensor* const* xs, Tensor& y) {
  const FusionResample none[kMaxFusionInputs] = {};
  weighted_sum_resampled(p, none, xs, y, nullptr);
}

size_t CudaBackend::weighted_sum_resampled_workspace(const WeightedSumParams&,
                                                     const FusionResample*) const {
  return 0;  // windows are read in place
}

void CudaBackend::weighted_sum_resampled(const WeightedSumParams& p,
                                         const FusionResample* resample, const Tensor* const* xs,
                                         Tensor& y, void*) {
  const char* op = "weighted_sum";
  const int n = cuda::to_int(p.numel, op, "numel");
  cuda::with_storage(y.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    // y is [.., h_out, w_out].
    const cuda::FusionInputs<T> in =
        cuda::fusion_inputs<T>(p, resample, xs, y.dim_r(1), y.dim_r(0), op);
    if (n == 0) return;
    weighted_sum_kernel<T><<<cuda::blocks_for(n), cuda::kBlock, 0, stream_>>>(
        in, cuda::data<T>(y), n);
    after_launch("weighted_sum_kernel");
  });
}

}  // namespace repshare
