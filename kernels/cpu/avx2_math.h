// AVX2 vector math shared by the kernels the build targets AVX2 for: the
// activation pass (activation.cpp) and the small-K 1x1 conv GEMM's epilogue
// (sgemm_avx2.cpp), so both apply an activation with the same bits.
#pragma once

#ifdef __AVX2__
#include <immintrin.h>

#include <cstdint>

#include "engine/backend.h"
#include "kernels/cpu/exp_poly.h"

namespace repshare {
namespace cpu {
namespace avx2 {

// exp(x) by kernels/cpu/exp_poly.h; n is rounded by adding 1.5*2^23, which leaves
// it in the low mantissa bits (cheaper than round + convert), and 2^n is built in
// the exponent bits. Inputs beyond +-87.3 saturate (exp leaves float's range).
inline __m256 exp(__m256 x) {
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
  const __m256i pow2n =
      _mm256_add_epi32(_mm256_slli_epi32(_mm256_castps_si256(t), 23), _mm256_set1_epi32(127 << 23));
  return _mm256_mul_ps(p, _mm256_castsi256_ps(pow2n));
}

// 1 / (1 + exp(-x)) with the reciprocal estimate refined by one Newton step
// (~2 ulp) instead of a division, which is the slowest instruction here.
inline __m256 sigmoid(__m256 x) {
  const __m256 one = _mm256_set1_ps(1.f);
  const __m256 d = _mm256_add_ps(one, exp(_mm256_sub_ps(_mm256_setzero_ps(), x)));
  const __m256 r = _mm256_rcp_ps(d);
  return _mm256_mul_ps(r, _mm256_fnmadd_ps(d, r, _mm256_set1_ps(2.f)));
}

template <ActKind K>
inline __m256 act(__m256 v, __m256 alpha, __m256 beta) {
  const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.f);
  switch (K) {
    case ActKind::None:
      return v;
    case ActKind::Relu:
      return _mm256_max_ps(v, zero);
    case ActKind::Clip:
      return _mm256_min_ps(_mm256_max_ps(v, alpha), beta);
    case ActKind::Sigmoid:  // NaN in, NaN out (exp's clamps drop it)
      return _mm256_blendv_ps(sigmoid(v), v, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    case ActKind::Swish:
      return _mm256_mul_ps(v, sigmoid(v));
    case ActKind::LeakyRelu:
      return _mm256_blendv_ps(v, _mm256_mul_ps(v, alpha), _mm256_cmp_ps(v, zero, _CMP_LT_OQ));
    case ActKind::HardSigmoid:
      return _mm256_min_ps(_mm256_max_ps(_mm256_fmadd_ps(v, alpha, beta), zero), one);
    case ActKind::HardSwish: {
      const __m256 hs = _mm256_fmadd_ps(v, _mm256_set1_ps(1.f / 6.f), _mm256_set1_ps(0.5f));
      return _mm256_mul_ps(v, _mm256_min_ps(_mm256_max_ps(hs, zero), one));
    }
    default:
      return v;  // not instantiated for the other kinds
  }
}
// The first `count` of a vector's 8 lanes, as a mask for maskload / maskstore.
inline __m256i lanes(int64_t count) {
  const int c = static_cast<int>(count < 0 ? 0 : (count > 8 ? 8 : count));
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(c), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

}  // namespace avx2
}  // namespace cpu
}  // namespace repshare
#endif
