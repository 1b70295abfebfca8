// Backends by name, for the command line (--backend cpu|cuda) and the tests.
#pragma once

#include <memory>
#include <string>

#include "engine/backend.h"

namespace repshare {

// "cpu" (threads <= 0: all cores) or "cuda" (threads ignored). float_storage F16
// is fp16 mode (Backend::float_storage): on CUDA fp16 kernels, on the CPU its
// simulation (kernels/cpu/fp16_storage_backend.h). tf32_products: CUDA's TF32 mode
// (Backend::tf32_products), fp32 storage only. Throws Error(Backend) when "cuda"
// is asked for and there is no usable GPU, or the binary was built without the
// CUDA backend; Error(Argument) for other names and for TF32 on the CPU or with fp16.
std::unique_ptr<Backend> make_backend(const std::string& name, int threads = 0,
                                      DType float_storage = DType::F32,
                                      bool tf32_products = false);

// True when this build has the CUDA backend and a CUDA device is visible. Never
// throws; *why (optional) receives the reason when it returns false.
bool cuda_available(std::string* why = nullptr);

// cuda_available, and the GPU has TF32 tensor cores (compute capability 8.0+) for
// make_backend's tf32_products. Never throws.
bool tf32_available(std::string* why = nullptr);

}  // namespace repshare
