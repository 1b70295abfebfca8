// The float storage types of the CUDA kernels. Every kernel that reads or writes
// float tensors is a template on T: float (fp32 mode) or __half (fp16 mode: fp16
// storage, fp32 arithmetic). Loads go through as_float and stores through
// stored<T>, so the arithmetic between them is the same code in both modes;
// with_storage() launches the instantiation a tensor's dtype asks for, and
// with_storages() that of a conv's inputs and output.
#pragma once

#include <cuda_fp16.h>
#include <library_types.h>

#include "engine/error.h"
#include "engine/tensor.h"

namespace repshare {
namespace cuda {

__device__ __forceinline__ float as_float(float v) { return v; }
__device__ __forceinline__ float as_float(__half v) { return __half2float(v); }

template <typename T>
__device__ __forceinline__ T stored(float v);
template <>
__device__ __forceinline__ float stored<float>(float v) { return v; }
template <>
__device__ __forceinline__ __half stored<__half>(float v) { return __float2half_rn(v); }

template <typename T>
T* data(const Tensor& t) {
  return static_cast<T*>(t.data);
}

// Calls f(T()) with T the storage type of `dtype`: float or __half.
template <typename F>
void with_storage(DType dtype, const char* op, F&& f) {
  if (dtype == DType::F32)
    f(float());
  else if (dtype == DType::F16)
    f(__half());
  else
    fail(ErrorKind::Unsupported, "cuda ", op, ": ", dtype_name(dtype), " tensors");
}

// Calls f(T(), Y()) with T the storage type of a kernel's inputs (`in`) and Y that
// of its output (`out`): the same type, or __half inputs into a float output (a conv
// whose output the caller reads: Backend::conv2d_stores_f32).
template <typename F>
void with_storages(DType in, DType out, const char* op, F&& f) {
  if (in == DType::F16 && out == DType::F32)
    f(__half(), float());
  else if (in == out)
    with_storage(in, op, [&](auto tag) { f(tag, tag); });
  else
    fail(ErrorKind::Unsupported, "cuda ", op, ": ", dtype_name(in), " inputs into a ",
         dtype_name(out), " output");
}

// cuBLAS / cuDNN's name for a storage dtype.
inline cudaDataType_t library_type(DType dtype) {
  return dtype == DType::F16 ? CUDA_R_16F : CUDA_R_32F;
}

}  // namespace cuda
}  // namespace repshare
