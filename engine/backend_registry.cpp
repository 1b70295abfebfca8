#include "engine/backend_registry.h"

#include <string>

#include "engine/error.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/fp16_storage_backend.h"

#ifdef REPSHARE_WITH_CUDA
#include <cuda_runtime_api.h>

#include "kernels/cuda/cuda_backend.h"
#endif

namespace repshare {

bool cuda_available(std::string* why) {
#ifdef REPSHARE_WITH_CUDA
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    if (why) *why = std::string("no CUDA device: ") + cudaGetErrorString(e);
    return false;
  }
  if (count == 0) {
    if (why) *why = "no CUDA device: none found";
    return false;
  }
  return true;
#else
  if (why) *why = "no CUDA device: this build has no CUDA backend (configured without nvcc)";
  return false;
#endif
}

bool tf32_available(std::string* why) {
  if (!cuda_available(why)) return false;
#ifdef REPSHARE_WITH_CUDA
  cudaDeviceProp prop;
  const cudaError_t e = cudaGetDeviceProperties(&prop, 0);
  if (e != cudaSuccess) {
    if (why) *why = std::string("no CUDA device properties: ") + cudaGetErrorString(e);
    return false;
  }
  if (prop.major < 8) {
    if (why)
      *why = std::string("no TF32 tensor cores: ") + prop.name + " is compute capability " +
             std::to_string(prop.major) + "." + std::to_string(prop.minor) + " (8.0+ has them)";
    return false;
  }
#endif
  return true;
}

std::unique_ptr<Backend> make_backend(const std::string& name, int threads,
                                      DType float_storage, bool tf32_products) {
  check(float_storage == DType::F32 || float_storage == DType::F16, ErrorKind::Argument,
        "float storage must be float32 or float16, got ", dtype_name(float_storage));
  check(!tf32_products || float_storage == DType::F32, ErrorKind::Argument,
        "tf32 products take fp32 storage, not fp16");
  check(!tf32_products || name != "cpu", ErrorKind::Argument,
        "tf32 is a CUDA precision (tensor-core GEMMs); the cpu backend computes in fp32");
  if (name == "cpu") {
    if (float_storage == DType::F16)
      return std::unique_ptr<Backend>(new Fp16StorageCpuBackend(threads));
    return std::unique_ptr<Backend>(new CpuBackend(threads));
  }
  if (name == "cuda") {
    std::string why;
    if (!cuda_available(&why)) fail(ErrorKind::Backend, "backend 'cuda': ", why);
#ifdef REPSHARE_WITH_CUDA
    return std::unique_ptr<Backend>(new CudaBackend(0, float_storage, tf32_products));
#endif
  }
  fail(ErrorKind::Argument, "unknown backend '", name, "' (expected cpu or cuda)");
}

}  // namespace repshare
