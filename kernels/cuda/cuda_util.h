// Error checking and launch helpers shared by the CUDA backend's sources (host
// code only, so cuda_backend.cpp can include it too).
#pragma once

#include <climits>
#include <cstdint>

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "engine/error.h"

namespace repshare {
namespace cuda {

inline void check_cuda(cudaError_t e, const char* call) {
  if (e != cudaSuccess)
    fail(ErrorKind::Backend, "CUDA: ", call, " failed: ", cudaGetErrorName(e), ": ",
         cudaGetErrorString(e));
}

inline void check_cublas(cublasStatus_t s, const char* call) {
  if (s != CUBLAS_STATUS_SUCCESS)
    fail(ErrorKind::Backend, "cuBLAS: ", call, " failed: ", cublasGetStatusName(s), ": ",
         cublasGetStatusString(s));
}

// The kernels index with 32-bit ints (64-bit division is emulated on GPUs and
// slows the index math several times); every size is checked to fit first.
inline int to_int(int64_t v, const char* op, const char* what) {
  if (v < 0 || v > INT_MAX)
    fail(ErrorKind::Unsupported, "cuda ", op, ": ", what, " = ", v,
         " does not fit the 32-bit indexing of the CUDA kernels");
  return static_cast<int>(v);
}

// Same for values that may be negative (strides of a reversed Slice, crops).
inline int to_signed_int(int64_t v, const char* op, const char* what) {
  if (v < INT_MIN || v > INT_MAX)
    fail(ErrorKind::Unsupported, "cuda ", op, ": ", what, " = ", v,
         " does not fit the 32-bit indexing of the CUDA kernels");
  return static_cast<int>(v);
}

constexpr int kBlock = 256;
// One thread per element; n > 0 (callers return early on empty tensors, since a
// grid of zero blocks is a launch error).
inline unsigned blocks_for(int n) { return static_cast<unsigned>((n + kBlock - 1) / kBlock); }

}  // namespace cuda
}  // namespace repshare

// Names the failing call in the error: REPSHARE_CUDA(cudaMemcpyAsync(...)).
#define REPSHARE_CUDA(call) ::repshare::cuda::check_cuda((call), #call)
#define REPSHARE_CUBLAS(call) ::repshare::cuda::check_cublas((call), #call)
