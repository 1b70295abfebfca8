// cuDNN for dense convolutions (REPSHARE_CUDNN=ON builds): one CudnnConv per
// distinct convolution, set up while the executor plans (conv2d_workspace) and
// reused by every run, so the run loop creates no descriptors. Included only by
// CUDA-side sources (cuda_backend.cpp, conv2d.cu).
#pragma once

#ifdef REPSHARE_WITH_CUDNN
#include <cudnn.h>

#include <array>
#include <cstdint>

#include "engine/backend.h"

namespace repshare {

// The cache key of a convolution: every field that changes the descriptors (an
// array, so that finding a set-up in the run loop allocates nothing).
using CudnnKey = std::array<int64_t, 14>;
CudnnKey cudnn_key(const Conv2dParams& p);

class CudnnConv {
 public:
  // Descriptors for NCHW tensors in `storage` with fp32 accumulation: tensor-core
  // math where tensor_ops (float16, or float32 with TF32 products), else FMA math
  // (float32 without TF32: results stay within the CPU reference's fp32
  // tolerances); and the fastest algorithm cuDNN's heuristics offer within a
  // workspace cap. Throws Error(Backend) naming the cuDNN status.
  CudnnConv(cudnnHandle_t handle, const Conv2dParams& p, DType storage, bool tensor_ops);
  ~CudnnConv();
  CudnnConv(const CudnnConv&) = delete;
  CudnnConv& operator=(const CudnnConv&) = delete;

  size_t workspace_bytes() const { return workspace_bytes_; }
  // y = conv(x, w) without bias or activation.
  void forward(cudnnHandle_t handle, const void* x, const void* w, void* y,
               void* workspace) const;

 private:
  cudnnTensorDescriptor_t x_ = nullptr, y_ = nullptr;
  cudnnFilterDescriptor_t w_ = nullptr;
  cudnnConvolutionDescriptor_t conv_ = nullptr;
  cudnnConvolutionFwdAlgo_t algo_ = CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM;
  size_t workspace_bytes_ = 0;
};

void check_cudnn(cudnnStatus_t s, const char* call);
#define REPSHARE_CUDNN(call) ::repshare::check_cudnn((call), #call)

}  // namespace repshare
#endif  // REPSHARE_WITH_CUDNN
