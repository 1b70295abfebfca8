// IEEE 754 binary16 ("half") <-> binary32 on the host, for backends that store
// float tensors as fp16 (Backend::float_storage): weights are converted once when
// they are registered, and the CPU's convert kernel uses the same two functions.
// float_to_half rounds to nearest, ties to even, as CUDA's __float2half_rn does:
// finite values of magnitude >= 65520 become infinity, NaN stays NaN (quiet, sign
// and top payload bits kept), values below 2^-24 / 2 become signed zero.
// half_to_float is exact; a NaN comes out quiet (as x86's F16C widens it).
#pragma once

#include <cstdint>
#include <cstring>

namespace repshare {

inline uint16_t float_to_half(float f) {
  uint32_t x;
  std::memcpy(&x, &f, sizeof x);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t abs = x & 0x7fffffffu;
  if (abs >= 0x7f800000u)  // infinity, or NaN (forced quiet so it cannot become infinity)
    return sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u | ((abs >> 13) & 0x3ffu) : 0u);
  if (abs >= 0x477ff000u) return sign | 0x7c00u;  // 65520 is halfway to 2^16: ties go up
  const uint32_t exponent = abs >> 23;
  uint32_t mantissa = abs & 0x7fffffu;
  uint32_t shift, h;
  if (exponent >= 113) {  // a normal half: 2^-14 <= |f|
    shift = 13;
    h = ((exponent - 112) << 10) | (mantissa >> shift);
  } else {  // a subnormal half (or zero): |f| / 2^-24 rounded
    shift = 126 - exponent;  // >= 14
    if (exponent == 0) return sign;  // float subnormals are far below 2^-25
    mantissa |= 0x800000u;
    if (shift > 24) return sign;  // below 2^-25: rounds to zero
    h = mantissa >> shift;
  }
  const uint32_t rest = mantissa & ((1u << shift) - 1), halfway = 1u << (shift - 1);
  if (rest > halfway || (rest == halfway && (h & 1u))) ++h;  // may carry into the exponent
  return static_cast<uint16_t>(sign | h);
}

inline float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  uint32_t mantissa = h & 0x3ffu;
  uint32_t x;
  if (exponent == 0x1f) {
    x = sign | 0x7f800000u | (mantissa ? 0x400000u | (mantissa << 13) : 0u);
  } else if (exponent != 0) {
    x = sign | ((exponent + 112) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {
    x = sign;
  } else {  // subnormal half: normalise
    uint32_t e = 113;
    while (!(mantissa & 0x400u)) {
      mantissa <<= 1;
      --e;
    }
    x = sign | (e << 23) | ((mantissa & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &x, sizeof f);
  return f;
}

}  // namespace repshare
