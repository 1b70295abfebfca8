// Error checking and launch helpers shared by the CUDA backend's sources (host
// code only, so cuda_backend.cpp can include it too).
#pragma once

#include <climits>
#include <cstdint>

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "engine/error.h"
#include "engine/tensor.h"

namespace repshare {
namespace cuda {

inline void check_cuda(cudaError_t e, const char* call) {
  if (e != cudaSuccess)
    fail(ErrorKind::Backend, "CUDA: ", call, " failed: ", cudaGetErrorName(e), ": ",
         cudaGetErrorString(e));
}

// cuBLAS names its status codes from 11.6 (CUDA 11.4 update 2) on; JetPack 4's
// CUDA 10.2 (Jetson Nano) gets the number.
#if defined(CUBLAS_VER_MAJOR) && (CUBLAS_VER_MAJOR > 11 || (CUBLAS_VER_MAJOR == 11 && CUBLAS_VER_MINOR >= 6))
#define REPSHARE_CUBLAS_STATUS_NAMES 1
#endif

inline void check_cublas(cublasStatus_t s, const char* call) {
  if (s == CUBLAS_STATUS_SUCCESS) return;
#ifdef REPSHARE_CUBLAS_STATUS_NAMES
  fail(ErrorKind::Backend, "cuBLAS: ", call, " failed: ", cublasGetStatusName(s), ": ",
       cublasGetStatusString(s));
#else
  fail(ErrorKind::Backend, "cuBLAS: ", call, " failed: status ", static_cast<int>(s));
#endif
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

// C = alpha * op(A) . op(B) + beta * C for `batch` column-major matrices at fixed
// strides, A and B in `storage` (F32 or F16), C in `c_storage` (the same, or F32
// from F16 operands: conv2d_stores_f32), with fp32 accumulation: the one cuBLAS
// call of the GEMM-shaped convolutions and Gemm in both modes (kernels/cuda/gemm.cu).
void gemm_strided_batched(cublasHandle_t handle, DType storage, DType c_storage,
                          cublasOperation_t op_a,
                          cublasOperation_t op_b, int m, int n, int k, float alpha, const void* a,
                          int lda, long long stride_a, const void* b, int ldb, long long stride_b,
                          float beta, void* c, int ldc, long long stride_c, int batch);

constexpr int kBlock = 256;
// One thread per element; n > 0 (callers return early on empty tensors, since a
// grid of zero blocks is a launch error).
inline unsigned blocks_for(int n) {
  return static_cast<unsigned>((int64_t{n} + kBlock - 1) / kBlock);  // n near INT_MAX too
}

}  // namespace cuda
}  // namespace repshare

// Names the failing call in the error: REPSHARE_CUDA(cudaMemcpyAsync(...)).
#define REPSHARE_CUDA(call) ::repshare::cuda::check_cuda((call), #call)
#define REPSHARE_CUBLAS(call) ::repshare::cuda::check_cublas((call), #call)
