// The start of a 1x1 conv's output before cuBLAS adds its product to it (beta = 1):
// its bias plus residual, rounded to storage, written by a kernel that runs before
// the GEMM anyway (separable_conv2d's depthwise kernel, squeeze_excitation_conv2d's
// gate kernel), so that no epilogue launch follows the GEMM.
#pragma once

#include "kernels/cuda/cuda_storage.cuh"

namespace repshare {
namespace cuda {

template <typename T, typename Y>
struct ConvStart {
  const T* bias;      // [channels], or null
  const T* residual;  // y's shape, or null
  Y* y;               // [.., channels, inner]
  int channels, inner, total;  // total 0: nothing to start
  // Element i's start; store() writes it (a kernel filling several elements per thread
  // computes them all before storing any, cuda::for_each_value).
  __device__ __forceinline__ float value(int i) const {
    float v = bias ? as_float(bias[(i / inner) % channels]) : 0.f;
    if (residual) v += as_float(residual[i]);
    return v;
  }
  __device__ __forceinline__ void store(int i, float v) const { y[i] = stored<Y>(v); }
  __device__ __forceinline__ void fill(int i) const { store(i, value(i)); }
};

}  // namespace cuda
}  // namespace repshare
