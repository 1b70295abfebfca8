#ifdef __AVX2__
#include <immintrin.h>
#endif

#include "kernels/cpu/activation_math.h"
#include "kernels/cpu/avx512_math.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/exp_poly.h"

namespace repshare {
namespace cpu {
namespace {

#ifdef __AVX2__
// exp(x) by kernels/cpu/exp_poly.h; n is rounded by adding 1.5*2^23, which leaves
// it in the low mantissa bits (cheaper than round + convert), and 2^n is built in
// the exponent bits. Inputs beyond +-87.3 saturate (exp leaves float's range).
inline __m256 exp256(__m256 x) {
  using namespace exp_poly;
  x = _mm256_min_ps(x, _mm256_set1_ps(kMax));
  x = _mm256_max_ps(x, _mm256_set1_ps(kMin));
  const __m256 magic = _mm256_set1_ps(12582912.f);  // 1.5 * 2^23
  const __m256 t = _mm256_fmadd_ps(x, _mm256_set1_ps(kLog2e), magic);
  const __m256 n = _mm256_sub_ps(t, magic);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Hi), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Lo), r);
  __m256 p = _mm256_set1_ps(kPoly[0]);
  for (int i = 1; i < 6; ++i) p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kPoly[i]));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.f)));
  // (n << 23) + (127 << 23): the bits of t above the 23 shifted ones fall off.
  const __m256i pow2n = _mm256_add_epi32(_mm256_slli_epi32(_mm256_castps_si256(t), 23),
                                         _mm256_set1_epi32(127 << 23));
  return _mm256_mul_ps(p, _mm256_castsi256_ps(pow2n));
}

// 1 / (1 + exp(-x)) with the reciprocal estimate refined by one Newton step
// (~2 ulp) instead of a division, which is the slowest instruction here.
inline __m256 sigmoid256(__m256 x) {
  const __m256 one = _mm256_set1_ps(1.f);
  const __m256 d = _mm256_add_ps(one, exp256(_mm256_sub_ps(_mm256_setzero_ps(), x)));
  const __m256 r = _mm256_rcp_ps(d);
  return _mm256_mul_ps(r, _mm256_fnmadd_ps(d, r, _mm256_set1_ps(2.f)));
}

template <ActKind K>
inline __m256 act256(__m256 v, __m256 alpha, __m256 beta) {
  const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.f);
  switch (K) {
    case ActKind::None: return v;
    case ActKind::Relu: return _mm256_max_ps(v, zero);
    case ActKind::Clip: return _mm256_min_ps(_mm256_max_ps(v, alpha), beta);
    case ActKind::Sigmoid:  // NaN in, NaN out (exp256's clamps drop it)
      return _mm256_blendv_ps(sigmoid256(v), v, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    case ActKind::Swish: return _mm256_mul_ps(v, sigmoid256(v));
    case ActKind::LeakyRelu:
      return _mm256_blendv_ps(v, _mm256_mul_ps(v, alpha), _mm256_cmp_ps(v, zero, _CMP_LT_OQ));
    case ActKind::HardSigmoid:
      return _mm256_min_ps(_mm256_max_ps(_mm256_fmadd_ps(v, alpha, beta), zero), one);
    case ActKind::HardSwish: {
      const __m256 hs = _mm256_fmadd_ps(v, _mm256_set1_ps(1.f / 6.f), _mm256_set1_ps(0.5f));
      return _mm256_mul_ps(v, _mm256_min_ps(_mm256_max_ps(hs, zero), one));
    }
    default: return v;  // not instantiated for the other kinds
  }
}
#endif

template <ActKind K>
void span_kernel(const Activation& act, const float* x, float* y, int64_t n, float bias) {
  int64_t i = 0;
#ifdef __AVX2__
  const __m256 alpha = _mm256_set1_ps(act.alpha), beta = _mm256_set1_ps(act.beta);
  const __m256 b = _mm256_set1_ps(bias);
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(y + i, act256<K>(_mm256_add_ps(_mm256_loadu_ps(x + i), b), alpha, beta));
  // The tail as one masked vector: short rows (7x7 maps, 14-wide depthwise rows)
  // would otherwise spend most of their time in scalar expf.
  if (i < n) {
    const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n - i)),
                                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    const __m256 v = _mm256_add_ps(_mm256_maskload_ps(x + i, mask), b);
    _mm256_maskstore_ps(y + i, mask, act256<K>(v, alpha, beta));
    return;
  }
#endif
  for (; i < n; ++i) y[i] = apply_activation(K, act.alpha, act.beta, x[i] + bias);
}

#if defined(__x86_64__)
// The same with 16 lanes where the CPU has AVX-512: swish 0.55 -> 0.43 ns per
// value on one thread here (not 2x: the exp polynomial is ALU-bound and 512-bit
// code runs at a lower clock). The tail is one masked vector.
template <ActKind K>
REPSHARE_AVX512 void span_kernel_avx512(const Activation& act, const float* x, float* y,
                                        int64_t n, float bias) {
  const __m512 b = _mm512_set1_ps(bias);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm512_storeu_ps(y + i, avx512::act<K>(_mm512_add_ps(_mm512_loadu_ps(x + i), b), act));
  if (i < n) {
    const __mmask16 m = avx512::lanes(n - i);
    _mm512_mask_storeu_ps(y + i, m, avx512::act<K>(_mm512_add_ps(_mm512_maskz_loadu_ps(m, x + i), b), act));
  }
}

bool span_avx512(const Activation& act, const float* x, float* y, int64_t n, float bias) {
  if (!has_avx512() || !avx512::has_vector_form(act.kind)) return false;
  avx512::with_vector_form(act, [&](auto kind) {
    span_kernel_avx512<decltype(kind)::value>(act, x, y, n, bias);
  });
  return true;
}
#endif

// Kinds without a vector form: exact libm math, one element at a time.
void span_scalar(const Activation& act, const float* x, float* y, int64_t n, float bias) {
  for (int64_t i = 0; i < n; ++i) y[i] = apply_activation(act, x[i] + bias);
}

}  // namespace

void activation_span(const Activation& act, const float* x, float* y, int64_t n, float bias) {
  if (act.kind == ActKind::None && bias == 0.f && x == y) return;
#if defined(__x86_64__)
  if (span_avx512(act, x, y, n, bias)) return;
#endif
  switch (act.kind) {
    case ActKind::None: return span_kernel<ActKind::None>(act, x, y, n, bias);
    case ActKind::Relu: return span_kernel<ActKind::Relu>(act, x, y, n, bias);
    case ActKind::Clip: return span_kernel<ActKind::Clip>(act, x, y, n, bias);
    case ActKind::Sigmoid: return span_kernel<ActKind::Sigmoid>(act, x, y, n, bias);
    case ActKind::Swish: return span_kernel<ActKind::Swish>(act, x, y, n, bias);
    case ActKind::LeakyRelu: return span_kernel<ActKind::LeakyRelu>(act, x, y, n, bias);
    case ActKind::HardSigmoid: return span_kernel<ActKind::HardSigmoid>(act, x, y, n, bias);
    case ActKind::HardSwish: return span_kernel<ActKind::HardSwish>(act, x, y, n, bias);
    default: return span_scalar(act, x, y, n, bias);
  }
}

}  // namespace cpu

void CpuBackend::activation(const Activation& a, const Tensor& x, Tensor& y) {
  const int64_t n = x.numel();
  const float* in = x.f32();
  float* out = y.f32();
  // Blocks of 16 KiB per task: enough to amortise the call, small enough to balance.
  constexpr int64_t kBlock = 4096;
  const int64_t blocks = (n + kBlock - 1) / kBlock;
#pragma omp parallel for num_threads(threads_) schedule(static) if (n >= cpu::kMinParallelWork)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t lo = blk * kBlock;
    cpu::activation_span(a, in + lo, out + lo, std::min(kBlock, n - lo));
  }
}

}  // namespace repshare
