// Cephes expf in vector form (kernels/cpu/activation.cpp for AVX2,
// kernels/cpu/sgemm_avx512.cpp for AVX-512): x = n ln2 + r with |r| <= ln2 / 2,
// ln2 split in two so that n * kLn2Hi is exact, then a degree-5 polynomial for
// exp(r): exp(r) ~ 1 + r + r^2 (kPoly[0] r^5 + ... + kPoly[5]). ~1e-7 relative.
#pragma once

namespace repshare {
namespace cpu {
namespace exp_poly {

constexpr float kMax = 88.3762626647949f;   // exp overflows above
constexpr float kMin = -87.3365447505531f;  // 2^n stays a normal float above
constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2Hi = 0.693359375f;
constexpr float kLn2Lo = -2.12194440e-4f;
constexpr float kPoly[6] = {1.9875691500E-4f, 1.3981999507E-3f, 8.3334519073E-3f,
                            4.1665795894E-2f, 1.6666665459E-1f, 5.0000001201E-1f};

}  // namespace exp_poly
}  // namespace cpu
}  // namespace repshare
