// AVX-512 vector math shared by the kernels that run it where the CPU has it
// (cpu::has_avx512()): the convolution GEMM's epilogue (sgemm_avx512.cpp), the
// activation pass (activation.cpp) and the narrow-row depthwise conv (conv2d.cpp).
// The build targets AVX2; these functions carry their own target attribute and
// are only called behind has_avx512().
#pragma once

#if defined(__x86_64__)
#include <immintrin.h>

#include <cstdint>
#include <type_traits>

#include "engine/backend.h"
#include "kernels/cpu/exp_poly.h"

#define REPSHARE_AVX512 __attribute__((target("avx512f,avx512dq,fma")))
// GCC 12's AVX-512 headers start masked intrinsics from _mm512_undefined_ps(),
// which -Wmaybe-uninitialized reports at every inlined use (GCC bug 105593).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace repshare {
namespace cpu {
namespace avx512 {

// exp(-x) by kernels/cpu/exp_poly.h, as activation.cpp computes exp for AVX2, 16
// lanes at a time, in fewer instructions (swish is ALU-bound: D0 applies it to
// 35 M values per image): the negation goes into the reduction, n is rounded by
// adding 1.5 * 2^23 (one FMA, where a multiply and vrndscaleps took three uops)
// and 2^n is vscalefps. Swish, one thread, 16 K values: 0.45-0.58 -> 0.40-0.52 ns
// (six alternating runs, 11-12% less each); largest relative error over
// [-100, 100] 2.5e-7 -> 2.8e-7; 1e30 and +-inf as before.
REPSHARE_AVX512 inline __m512 exp_neg(__m512 x) {
  using namespace exp_poly;
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-kMax)), _mm512_set1_ps(-kMin));
  const __m512 magic = _mm512_set1_ps(12582912.f);  // 1.5 * 2^23
  const __m512 n = _mm512_sub_ps(_mm512_fmadd_ps(x, _mm512_set1_ps(-kLog2e), magic), magic);
  __m512 r = _mm512_fnmsub_ps(n, _mm512_set1_ps(kLn2Hi), x);  // -x - n ln2, in two parts
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Lo), r);
  __m512 p = _mm512_set1_ps(kPoly[0]);
  for (int i = 1; i < 6; ++i) p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kPoly[i]));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.f)));
  return _mm512_scalef_ps(p, n);
}

// 1 / (1 + exp(-x)), the reciprocal estimate refined by one Newton step; 0 where
// the exact value is subnormal (x below -87.3), as the AVX2 form gives (vrcpps
// flushes, vrcp14ps does not). Subnormal gates made the squeeze-excitation's gated
// weights subnormal, and every multiply with them a microcode assist: `repshare
// run` on real images (D0 -> B0) fell from 5.8 to 3.1 frames/s.
REPSHARE_AVX512 inline __m512 sigmoid(__m512 x) {
  const __m512 d = _mm512_add_ps(_mm512_set1_ps(1.f), exp_neg(x));
  const __m512 r = _mm512_rcp14_ps(d);
  const __mmask16 normal = _mm512_cmp_ps_mask(x, _mm512_set1_ps(exp_poly::kMin), _CMP_NLT_UQ);
  return _mm512_maskz_mul_ps(normal, r, _mm512_fnmadd_ps(d, r, _mm512_set1_ps(2.f)));
}

// The first `count` of a vector's 16 lanes (none for count <= 0, all from 16 on).
inline __mmask16 lanes(int64_t count) {
  return count >= 16 ? 0xffff : count <= 0 ? 0 : static_cast<__mmask16>((1u << count) - 1);
}

// Clip is ReLU6 in EfficientNet-Lite: min in alpha, max in beta.
template <ActKind K>
REPSHARE_AVX512 inline __m512 act(__m512 v, const Activation& a) {
  if (K == ActKind::Relu) return _mm512_max_ps(v, _mm512_setzero_ps());
  if (K == ActKind::Clip)
    return _mm512_min_ps(_mm512_max_ps(v, _mm512_set1_ps(a.alpha)), _mm512_set1_ps(a.beta));
  if (K == ActKind::Sigmoid)  // NaN in, NaN out (the clamps inside drop it)
    return _mm512_mask_mov_ps(sigmoid(v), _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), v);
  if (K == ActKind::Swish) return _mm512_mul_ps(v, sigmoid(v));
  return v;
}

}  // namespace avx512
}  // namespace cpu
}  // namespace repshare
#endif
