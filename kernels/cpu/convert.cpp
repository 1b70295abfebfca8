#include "engine/error.h"
#include "engine/half.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_kernels.h"

#if defined(__F16C__)
#include <immintrin.h>
#endif

namespace repshare {
namespace cpu {
namespace {

// x86's F16C instructions convert 8 values at a time with the rounding and NaN
// handling of engine/half.h (nearest even; NaN stays NaN, quieted, payload's top
// bits kept); the tail and other CPUs take the scalar functions.
void narrow_span(const float* in, uint16_t* out, int64_t n) {
  int64_t i = 0;
#if defined(__F16C__)
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(in + i), _MM_FROUND_TO_NEAREST_INT));
#endif
  for (; i < n; ++i) out[i] = float_to_half(in[i]);
}

void widen_span(const uint16_t* in, float* out, int64_t n) {
  int64_t i = 0;
#if defined(__F16C__)
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(out + i,
                     _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(in + i))));
#endif
  for (; i < n; ++i) out[i] = half_to_float(in[i]);
}

constexpr int64_t kPiece = 1 << 14;  // values per piece of work between threads

}  // namespace

void floats_to_halves(const float* in, uint16_t* out, int64_t n, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static) if (n >= kMinParallelWork)
  for (int64_t first = 0; first < n; first += kPiece)
    narrow_span(in + first, out + first, std::min(kPiece, n - first));
}

void halves_to_floats(const uint16_t* in, float* out, int64_t n, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static) if (n >= kMinParallelWork)
  for (int64_t first = 0; first < n; first += kPiece)
    widen_span(in + first, out + first, std::min(kPiece, n - first));
}

}  // namespace cpu

// The CPU computes in fp32; this kernel serves the executor's edges in fp16 mode
// (the fp16 simulation) and is what CUDA's convert is compared with.
void CpuBackend::convert(const Tensor& x, Tensor& y) {
  const int64_t n = x.numel();
  check(y.numel() == n, ErrorKind::Shape, "convert: ", n, " elements into ", y.numel());
  if (x.dtype == DType::F32 && y.dtype == DType::F16) {
    cpu::floats_to_halves(x.f32(), static_cast<uint16_t*>(y.data), n, threads_);
  } else if (x.dtype == DType::F16 && y.dtype == DType::F32) {
    cpu::halves_to_floats(static_cast<const uint16_t*>(x.data), y.f32(), n, threads_);
  } else {
    check(x.dtype == y.dtype && x.dtype != DType::I64, ErrorKind::Unsupported, "convert: ",
          dtype_name(x.dtype), " to ", dtype_name(y.dtype));
    copy(y.data, x.data, x.bytes());
  }
}

}  // namespace repshare
