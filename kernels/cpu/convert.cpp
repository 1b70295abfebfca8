#include "engine/error.h"
#include "engine/half.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_kernels.h"

namespace repshare {

// The CPU computes in fp32 only; this kernel exists for the executor's edges on a
// backend in fp16 mode (and so that the conversion is tested against CUDA's).
void CpuBackend::convert(const Tensor& x, Tensor& y) {
  const int64_t n = x.numel();
  check(y.numel() == n, ErrorKind::Shape, "convert: ", n, " elements into ", y.numel());
  if (x.dtype == DType::F32 && y.dtype == DType::F16) {
    const float* in = x.f32();
    uint16_t* out = static_cast<uint16_t*>(y.data);
#pragma omp parallel for num_threads(threads_) schedule(static) if (n >= cpu::kMinParallelWork)
    for (int64_t i = 0; i < n; ++i) out[i] = float_to_half(in[i]);
  } else if (x.dtype == DType::F16 && y.dtype == DType::F32) {
    const uint16_t* in = static_cast<const uint16_t*>(x.data);
    float* out = y.f32();
#pragma omp parallel for num_threads(threads_) schedule(static) if (n >= cpu::kMinParallelWork)
    for (int64_t i = 0; i < n; ++i) out[i] = half_to_float(in[i]);
  } else {
    check(x.dtype == y.dtype && x.dtype != DType::I64, ErrorKind::Unsupported, "convert: ",
          dtype_name(x.dtype), " to ", dtype_name(y.dtype));
    copy(y.data, x.data, x.bytes());
  }
}

}  // namespace repshare
