// fp16 <-> fp32 conversion: engine/half.h (the host side of fp16 mode) against an
// independent reference, and the CPU backend's convert kernel. The CUDA kernel is
// compared with this one in tests/test_backend_ops.cpp.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "engine/error.h"
#include "engine/half.h"
#include "kernels/cpu/cpu_backend.h"

namespace repshare {
namespace {

// The value of a finite half from its fields, in double (exact).
double half_value(uint16_t h) {
  const int exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ff;
  const double magnitude = exponent == 0 ? std::ldexp(mantissa, -24)
                                         : std::ldexp(1024 + mantissa, exponent - 25);
  return (h & 0x8000) ? -magnitude : magnitude;
}

// Nearest half to f by search over the ordered positive halves, ties to the even
// encoding; 65536 (past the largest half) stands for infinity.
uint16_t reference_to_half(float f) {
  const uint16_t sign = std::signbit(f) ? 0x8000 : 0;
  if (std::isnan(f)) return 0x7e00;  // compared as "some NaN" by the caller
  const double a = std::fabs(double(f));
  if (std::isinf(f)) return sign | 0x7c00;
  uint16_t lo = 0, hi = 0x7c00;  // half_value is increasing on [0, 0x7bff]; 0x7c00 = 65536
  auto value = [](uint16_t h) { return h == 0x7c00 ? 65536.0 : half_value(h); };
  if (a >= 65536.0) return sign | 0x7c00;
  while (hi - lo > 1) {  // value(lo) <= a < value(hi)
    const uint16_t mid = static_cast<uint16_t>((lo + hi) / 2);
    (value(mid) <= a ? lo : hi) = mid;
  }
  const double below = a - value(lo), above = value(hi) - a;
  const uint16_t h = below < above ? lo : above < below ? hi : ((lo & 1) ? hi : lo);
  return sign | h;
}

float bits_to_float(uint32_t x) {
  float f;
  std::memcpy(&f, &x, sizeof f);
  return f;
}

TEST(HalfConversion, EveryHalfWidensExactlyAndRoundTrips) {
  for (uint32_t i = 0; i < 0x10000; ++i) {
    const uint16_t h = static_cast<uint16_t>(i);
    const float f = half_to_float(h);
    const bool is_nan = ((h >> 10) & 0x1f) == 0x1f && (h & 0x3ff);
    if (is_nan) {
      ASSERT_TRUE(std::isnan(f)) << std::hex << h;
      const uint16_t back = float_to_half(f);
      EXPECT_EQ(back & 0x7c00, 0x7c00) << std::hex << h;
      EXPECT_NE(back & 0x3ff, 0) << "NaN " << std::hex << h << " became infinity";
      EXPECT_EQ(back & 0x8000, h & 0x8000);
      continue;
    }
    if (((h >> 10) & 0x1f) == 0x1f) {
      EXPECT_TRUE(std::isinf(f)) << std::hex << h;
    } else {
      ASSERT_EQ(double(f), half_value(h)) << std::hex << h;
    }
    ASSERT_EQ(float_to_half(f), h) << std::hex << h;
  }
}

// Floats that probe every rounding case: specials, each midpoint between
// neighbouring halves (exact in float: halves have 11 significant bits) and its
// two float neighbours, NaNs quiet and signalling, and random floats over every
// exponent that reaches a half and beyond.
std::vector<float> probe_values() {
  std::vector<float> values = {0.f, -0.f, 65504.f, 65519.99f, 65520.f, -65520.f, 1e10f,
                               std::numeric_limits<float>::infinity(),
                               -std::numeric_limits<float>::infinity(),
                               std::numeric_limits<float>::denorm_min(), 5.9604645e-8f,
                               2.9802322e-8f, 2.9802326e-8f, 6.1035156e-5f, 6.1035152e-5f};
  for (uint16_t h = 0; h < 0x7bff; ++h) {
    const float mid = static_cast<float>((half_value(h) + half_value(h + 1)) / 2);
    values.push_back(mid);
    values.push_back(std::nextafter(mid, 0.f));
    values.push_back(std::nextafter(mid, 1e9f));
    values.push_back(-mid);
  }
  std::mt19937 gen(3);
  for (int i = 0; i < 200000; ++i) {
    const uint32_t exponent = 95 + gen() % 50, mantissa = gen() & 0x7fffff;
    values.push_back(bits_to_float(((gen() & 1u) << 31) | (exponent << 23) | mantissa));
  }
  return values;
}

TEST(HalfConversion, RoundsToNearestEvenLikeTheReference) {
  for (float f : probe_values()) ASSERT_EQ(float_to_half(f), reference_to_half(f)) << f;
}

Tensor view(std::vector<float>& v) {
  Tensor t;
  t.shape = Shape{static_cast<int64_t>(v.size())};
  t.data = v.data();
  return t;
}

Tensor view(std::vector<uint16_t>& v) {
  Tensor t;
  t.shape = Shape{static_cast<int64_t>(v.size())};
  t.dtype = DType::F16;
  t.data = v.data();
  return t;
}

uint32_t float_bits(float f) {
  uint32_t x;
  std::memcpy(&x, &f, sizeof x);
  return x;
}

// The kernel (vectorised where the CPU has F16C, on 2 threads) gives engine/half.h's
// bits both ways, for every probe value, NaNs (quiet, signalling, negative) and
// every half; also inside an inference, where the CPU backend flushes float
// subnormals (half subnormals are normal floats and must survive).
TEST(ConvertKernel, CpuKernelEqualsTheScalarConversionsBitForBit) {
  CpuBackend cpu(2);
  std::vector<float> x = probe_values();
  for (uint32_t nan : {0x7fc00000u, 0xffc00001u, 0x7f800001u, 0x7fa5a5a5u, 0xff812345u})
    x.push_back(bits_to_float(nan));
  std::vector<uint16_t> half(x.size());
  std::vector<uint16_t> every(0x10000);
  for (uint32_t i = 0; i < every.size(); ++i) every[i] = static_cast<uint16_t>(i);
  std::vector<float> widened(every.size());
  for (bool in_inference : {false, true}) {
    Tensor tx = view(x), th = view(half), te = view(every), tw = view(widened);
    auto run = [&] {
      cpu.convert(tx, th);
      cpu.convert(te, tw);
    };
    if (in_inference)
      cpu.run_inference(run);
    else
      run();
    for (size_t i = 0; i < x.size(); ++i)
      ASSERT_EQ(half[i], float_to_half(x[i])) << "value " << i << " " << std::hex
                                              << float_bits(x[i]) << " in inference "
                                              << in_inference;
    for (size_t i = 0; i < every.size(); ++i)
      ASSERT_EQ(float_bits(widened[i]), float_bits(half_to_float(every[i])))
          << "half " << std::hex << i << " in inference " << in_inference;
  }
}

TEST(ConvertKernel, RefusesOtherDtypesAndSizes) {
  CpuBackend cpu(1);
  std::vector<float> x(4), y(5);
  std::vector<uint16_t> h(4);
  Tensor tx = view(x), ty = view(y), th = view(h);
  try {
    cpu.convert(tx, ty);
    FAIL() << "4 elements into 5";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Shape);
  }
  Tensor ti = th;
  ti.dtype = DType::I64;
  ti.shape = Shape{2};
  Tensor tx2 = tx;
  tx2.shape = Shape{2};
  try {
    cpu.convert(tx2, ti);
    FAIL() << "float32 to int64";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Unsupported);
    EXPECT_NE(std::string(e.what()).find("int64"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace repshare
