// CpuBackend against naive reference loops written here in double precision:
// every entry point, on odd shapes (channels 1/3/13/17, sizes 1..33, strides 1-3,
// asymmetric pads, dilation, grouped and depthwise convs, every activation) and
// with 1, 2 and 3 threads (3 > cores checks the work split, not speed).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_kernels.h"

namespace repshare {
namespace {

// Where the CPU has AVX-512, its kernels are chosen at run time; tests that must
// also cover the AVX2 / OpenBLAS paths other CPUs take switch them off for a while.
class Avx512Allowed {
 public:
  explicit Avx512Allowed(bool on) { cpu::allow_avx512(on); }
  ~Avx512Allowed() { cpu::allow_avx512(true); }
};

using Vec = std::vector<float>;

Vec random_vec(size_t n, uint32_t seed, float lo = -1.f, float hi = 1.f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  Vec v(n);
  for (float& x : v) x = u(rng);
  return v;
}

Tensor view(Vec& v, Shape s) {
  Tensor t;
  t.shape = std::move(s);
  t.data = v.data();
  return t;
}

// max |got - want| / max(1, max |want|): absolute near zero, relative for big values.
double normalized_error(const Vec& got, const std::vector<double>& want) {
  EXPECT_EQ(got.size(), want.size());
  double err = 0, scale = 1;
  for (size_t i = 0; i < want.size(); ++i) {
    scale = std::max(scale, std::fabs(want[i]));
    if (std::isnan(want[i]) != std::isnan(got[i])) return INFINITY;
    if (!std::isnan(want[i])) err = std::max(err, std::fabs(got[i] - want[i]));
  }
  return err / scale;
}

double ref_act(const Activation& a, double x) {
  switch (a.kind) {
    case ActKind::None: return x;
    case ActKind::Relu: return x > 0 ? x : 0;
    case ActKind::Clip: return std::min<double>(std::max<double>(x, a.alpha), a.beta);
    case ActKind::Sigmoid: return 1 / (1 + std::exp(-x));
    case ActKind::Swish: return x / (1 + std::exp(-x));
    case ActKind::Tanh: return std::tanh(x);
    case ActKind::LeakyRelu: return x < 0 ? a.alpha * x : x;
    case ActKind::HardSigmoid: return std::min(1.0, std::max(0.0, a.alpha * x + a.beta));
    case ActKind::HardSwish: return x * std::min(1.0, std::max(0.0, x / 6 + 0.5));
    case ActKind::Elu: return x < 0 ? a.alpha * (std::exp(x) - 1) : x;
    case ActKind::Exp: return std::exp(x);
    case ActKind::Log: return std::log(x);
    case ActKind::Sqrt: return std::sqrt(x);
    case ActKind::Neg: return -x;
    case ActKind::Abs: return std::fabs(x);
    case ActKind::Reciprocal: return 1 / x;
    case ActKind::Softplus: return std::log1p(std::exp(x));
  }
  return NAN;
}

// Activations defined on all reals (the ones fused into convs and binaries).
std::vector<Activation> real_line_activations() {
  std::vector<Activation> acts;
  for (ActKind k : {ActKind::None, ActKind::Relu, ActKind::Clip, ActKind::Sigmoid,
                    ActKind::Swish, ActKind::Tanh, ActKind::LeakyRelu, ActKind::HardSigmoid,
                    ActKind::HardSwish, ActKind::Elu, ActKind::Exp, ActKind::Neg, ActKind::Abs,
                    ActKind::Softplus}) {
    Activation a;
    a.kind = k;
    if (k == ActKind::Clip) a.alpha = -0.25f, a.beta = 0.5f;
    if (k == ActKind::LeakyRelu || k == ActKind::Elu) a.alpha = 0.1f;
    if (k == ActKind::HardSigmoid) a.alpha = 0.2f, a.beta = 0.5f;
    acts.push_back(a);
  }
  return acts;
}

TEST(CpuKernels, AllocIsAlignedAndCopiesBytes) {
  CpuBackend be(2);
  for (size_t bytes : {1, 3, 64, 1000}) {
    void* p = be.alloc(bytes);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 64, 0u);
    be.free(p);
  }
  Vec src = random_vec(37, 1), dst(37), dst2(37);
  be.upload(dst.data(), src.data(), 37 * sizeof(float));
  be.copy(dst2.data(), dst.data(), 37 * sizeof(float));
  EXPECT_EQ(dst2, src);
}

// Sigmoid and swish give 0, never a subnormal, where the exact value is below
// float's normal range, on the AVX-512 and the AVX2 paths alike: subnormal SE
// gates turned every multiply with the gated weights into a microcode assist
// (`repshare run`: 5.8 -> 3.1 frames/s). NaN stays NaN.
TEST(CpuKernels, SigmoidAndSwishNeverReturnSubnormals) {
  Vec x(40, 0.f);
  for (size_t i = 0; i < x.size(); ++i) x[i] = -80.f - 1.f * static_cast<float>(i);  // -80 .. -119
  x[39] = NAN;
  for (const bool avx512 : {true, false}) {
    const Avx512Allowed isa(avx512);
    for (ActKind k : {ActKind::Sigmoid, ActKind::Swish}) {
      Vec y(x.size(), 1.f);
      cpu::activation_span(Activation{k, 0.f, 0.f}, x.data(), y.data(), static_cast<int64_t>(x.size()));
      for (size_t i = 0; i + 1 < x.size(); ++i)
        EXPECT_NE(std::fpclassify(y[i]), FP_SUBNORMAL)
            << act_name(k) << "(" << x[i] << ") = " << y[i] << " avx512 " << avx512;
      EXPECT_TRUE(std::isnan(y.back())) << act_name(k) << " avx512 " << avx512;
    }
  }
}

TEST(CpuKernels, ActivationEveryKind) {
  CpuBackend be(2);
  std::vector<Activation> acts = real_line_activations();
  for (ActKind k : {ActKind::Log, ActKind::Sqrt, ActKind::Reciprocal}) acts.push_back({k, 0, 0});
  for (const Activation& a : acts) {
    const bool positive = a.kind == ActKind::Log || a.kind == ActKind::Sqrt ||
                          a.kind == ActKind::Reciprocal;
    // 40007 elements: parallel blocks plus a scalar tail; extremes saturate exp.
    Vec x = random_vec(40007, 7, positive ? 0.01f : -12.f, positive ? 20.f : 12.f);
    if (!positive) {
      x[0] = -100.f, x[1] = 100.f, x[2] = 0.f, x[3] = -88.5f, x[4] = 88.5f;
      if (a.kind == ActKind::Exp) x[1] = x[4] = 80.f;  // stays finite
    }
    std::vector<double> want(x.size());
    for (size_t i = 0; i < x.size(); ++i) want[i] = ref_act(a, x[i]);
    Vec y(x.size());
    Tensor tx = view(x, {40007}), ty = view(y, {40007});
    be.activation(a, tx, ty);
    // Relative error for Exp (range spans e^80), absolute/normalised otherwise.
    double err = 0;
    for (size_t i = 0; i < x.size(); ++i)
      err = std::max(err, std::fabs(y[i] - want[i]) / std::max(1.0, std::fabs(want[i])));
    EXPECT_LT(err, 2e-6) << act_name(a.kind);
    be.activation(a, tx, tx);  // in place
    EXPECT_EQ(x, y) << act_name(a.kind);
  }
}

struct ConvCase {
  int64_t n, c_in, h, w, c_out, kh, kw, sh, sw, dh, dw, pt, pl, pb, pr, groups;
  bool bias;
};

std::vector<double> ref_conv(const Conv2dParams& p, const Vec& x, const Vec& w, const Vec* b) {
  std::vector<double> y(p.n * p.c_out * p.h_out * p.w_out);
  const int64_t cin_g = p.c_in / p.groups, cout_g = p.c_out / p.groups;
  for (int64_t n = 0; n < p.n; ++n)
    for (int64_t co = 0; co < p.c_out; ++co)
      for (int64_t oy = 0; oy < p.h_out; ++oy)
        for (int64_t ox = 0; ox < p.w_out; ++ox) {
          double acc = b ? (*b)[co] : 0.0;
          const int64_t g = co / cout_g;
          for (int64_t ci = 0; ci < cin_g; ++ci)
            for (int64_t ky = 0; ky < p.kh; ++ky)
              for (int64_t kx = 0; kx < p.kw; ++kx) {
                const int64_t iy = oy * p.stride_h - p.pad_top + ky * p.dil_h;
                const int64_t ix = ox * p.stride_w - p.pad_left + kx * p.dil_w;
                if (iy < 0 || iy >= p.h || ix < 0 || ix >= p.w) continue;
                acc += double(x[((n * p.c_in + g * cin_g + ci) * p.h + iy) * p.w + ix]) *
                       w[((co * cin_g + ci) * p.kh + ky) * p.kw + kx];
              }
          y[((n * p.c_out + co) * p.h_out + oy) * p.w_out + ox] = ref_act(p.act, acc);
        }
  return y;
}

// Shapes the AVX-512 kernels take (where the CPU has AVX-512), with every
// activation (some in registers, the rest on the stored tile) and with and without
// bias. Packed tiles (wide outputs): a pointwise conv with odd Cout and width, a
// stem-like dense conv through im2col (K = 27), K = 191 on a 16x16 map; their
// widths leave last tiles of 27, 29, 17, 0 and 3 columns, their Couts last row
// blocks of 5, 1, 4, 1 and 10 rows. Narrow (N < 256, or K > 192 below N = 768,
// with K x N <= 256 Ki):
// 14x14, 7x7, one pixel, 65 and 255 columns (a second tile of one column, a last
// vector of 15 lanes), K = 300 on 16x16; Couts leave 1, 5, 2, 3, 1 and 4 rows of a
// last block of 6.
TEST(CpuKernels, Conv2dAvx512PathEveryActivation) {
  struct Shape4 {
    int64_t c_in, h, w, c_out, k, stride;
  };
  const Shape4 shapes[] = {{64, 31, 37, 29, 1, 1},  {3, 70, 62, 13, 3, 2},
                           {5, 41, 41, 40, 1, 1},   {191, 16, 16, 25, 1, 1},
                           {7, 33, 35, 22, 1, 1},   {100, 14, 14, 37, 1, 1},
                           {320, 7, 7, 41, 1, 1},   {13, 1, 1, 8, 1, 1},
                           {40, 5, 13, 15, 1, 1},   {191, 15, 17, 25, 1, 1},
                           {300, 16, 16, 10, 1, 1}};
  int seed = 0;
  for (const Shape4& s : shapes) {
    for (const Activation& act : real_line_activations()) {
      for (bool bias : {true, false}) {
        Conv2dParams p;
        p.c_in = s.c_in, p.h = s.h, p.w = s.w, p.c_out = s.c_out, p.kh = p.kw = s.k;
        p.stride_h = p.stride_w = s.stride;
        p.pad_bottom = p.pad_right = s.k / 2;  // TF-SAME-like for the 3x3 s2 stem
        p.h_out = (s.h + p.pad_bottom - s.k) / s.stride + 1;
        p.w_out = (s.w + p.pad_right - s.k) / s.stride + 1;
        if (s.k == 1) p.pad_bottom = p.pad_right = 0, p.h_out = s.h, p.w_out = s.w;
        p.act = act;
        ++seed;
        Vec x = random_vec(p.c_in * p.h * p.w, 400 + seed);
        Vec w = random_vec(p.c_out * p.c_in * p.kh * p.kw, 500 + seed);
        Vec b = random_vec(p.c_out, 600 + seed);
        const std::vector<double> want = ref_conv(p, x, w, bias ? &b : nullptr);
        CpuBackend be(2);
        Vec ws(be.conv2d_workspace(p) / sizeof(float) + 1);
        Vec y(want.size(), NAN);
        Tensor tx = view(x, {1, p.c_in, p.h, p.w}), tw = view(w, {p.c_out, p.c_in, p.kh, p.kw});
        Tensor tb = view(b, {p.c_out}), ty = view(y, {1, p.c_out, p.h_out, p.w_out});
        be.conv2d(p, tx, tw, bias ? &tb : nullptr, ty, ws.data());
        EXPECT_LT(normalized_error(y, want), 1e-5)
            << "Cin " << s.c_in << " k " << s.k << " act " << act_name(act.kind) << " bias " << bias;
      }
    }
  }
}

TEST(CpuKernels, Conv2dAllPaths) {
  const std::vector<ConvCase> cases = {
      // pointwise (one SGEMM), including a 1x1 image and HW split across threads
      {1, 13, 5, 7, 17, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, true},
      {2, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, false},
      {1, 16, 37, 41, 24, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, true},
      {1, 96, 6, 6, 200, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, true},  // split along Cout
      // at most 32 inputs and 24 outputs or more: the AVX2 kernel where the CPU has no
      // AVX-512 (a last tile of one row, partial vectors, chunks of 512 columns)
      {1, 32, 13, 11, 25, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, true},
      {2, 5, 9, 9, 30, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, false},
      {1, 16, 40, 41, 96, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, true},
      // AVX-512 GEMM: 159 tiles of columns in chunks of unequal width (26/27 tiles)
      {1, 40, 61, 83, 30, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, true},
      // dense via im2col: stem-like s2 with TF-SAME pads, dilation, 1x1 s2, 1x1 with pad
      {1, 3, 15, 15, 13, 3, 3, 2, 2, 1, 1, 0, 0, 1, 1, 1, true},
      {2, 5, 7, 9, 3, 3, 3, 1, 1, 2, 2, 2, 1, 2, 3, 1, false},
      {1, 4, 9, 8, 5, 1, 1, 2, 2, 1, 1, 0, 0, 0, 0, 1, true},
      {1, 3, 5, 5, 2, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, true},
      {1, 17, 5, 7, 1, 2, 3, 3, 2, 1, 1, 1, 0, 0, 2, 1, true},
      // grouped, in-between and channel multiplier 2
      {1, 12, 7, 5, 9, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 3, true},
      // wide enough for the AVX-512 GEMM (where the CPU has it): grouped through
      // im2col, and a batch of 2 reusing the workspace
      {1, 12, 30, 30, 9, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 3, true},
      {2, 5, 28, 30, 7, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, false},
      {1, 3, 7, 7, 6, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 3, true},
      // depthwise: 3x3/5x5 at stride 1/2 (specialised), widths around the 8/16
      // blocks, asymmetric SAME pads, dilation, 4x2 kernel and stride 3 (generic)
      {1, 17, 15, 15, 17, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 17, true},
      {2, 3, 33, 33, 3, 3, 3, 2, 2, 1, 1, 0, 0, 1, 1, 3, true},
      {1, 3, 20, 37, 3, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 3, true},  // odd pad_left, stride 2
      {1, 2, 9, 40, 2, 5, 5, 2, 2, 1, 2, 1, 3, 2, 2, 2, true},   // dilated 5x5 stride 2
      {1, 13, 14, 14, 13, 5, 5, 2, 2, 1, 1, 1, 1, 2, 2, 13, true},
      {1, 5, 7, 7, 5, 5, 5, 1, 1, 1, 1, 2, 2, 2, 2, 5, false},
      {1, 1, 1, 1, 1, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, true},
      {1, 3, 31, 29, 3, 3, 3, 1, 1, 2, 2, 2, 2, 2, 2, 3, true},
      {1, 4, 12, 17, 4, 4, 2, 1, 2, 1, 1, 0, 1, 3, 0, 4, true},
      {1, 3, 11, 13, 3, 3, 3, 3, 3, 1, 1, 1, 1, 1, 1, 3, true},
      // tall and wide planes (an odd number of output rows, SAME pads at the
      // bottom), at stride 1 and 2, 3x3 and 5x5
      {1, 2, 157, 301, 2, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 2, true},
      {1, 2, 161, 300, 2, 5, 5, 2, 2, 1, 1, 1, 1, 2, 2, 2, true},
      {1, 2, 140, 250, 2, 3, 3, 2, 2, 1, 1, 0, 0, 1, 1, 2, false},
      // output rows 9-16 wide: one AVX-512 vector per row where the CPU has it
      // (16 and 13 rows: blocks of four and a remainder), 3x3 and 5x5, stride 1 and 2
      {1, 5, 16, 16, 5, 5, 5, 1, 1, 1, 1, 2, 2, 2, 2, 5, true},
      {1, 3, 31, 29, 3, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 3, false},
      {1, 4, 27, 25, 4, 5, 5, 2, 2, 1, 1, 1, 2, 2, 2, 4, true},
      {1, 2, 9, 11, 2, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 2, true},
      // 5x5, output rows 17-32 wide: two AVX-512 vectors per row (the second
      // partial), stride 1 and 2; 3x3 at that width stays on AVX2
      {1, 3, 14, 29, 3, 5, 5, 1, 1, 1, 1, 2, 2, 2, 2, 3, true},
      {1, 2, 31, 63, 2, 5, 5, 2, 2, 1, 1, 1, 2, 2, 2, 2, false},
      {1, 2, 10, 32, 2, 5, 5, 1, 1, 1, 1, 2, 2, 2, 2, 2, true},
      // maps at most 8 wide, 16 channels and more: 16 channels at a time where the
      // CPU has AVX-512 (a full block and a partial one, batch 2, stride 2)
      {2, 19, 7, 7, 19, 5, 5, 1, 1, 1, 1, 2, 2, 2, 2, 19, true},
      {1, 32, 9, 9, 32, 3, 3, 2, 2, 1, 1, 0, 0, 1, 1, 32, false},
      {1, 17, 15, 16, 17, 5, 5, 2, 2, 1, 1, 1, 2, 2, 2, 17, true},
  };
  const std::vector<Activation> acts = real_line_activations();
  int case_id = 0;
  for (const ConvCase& c : cases) {
    Conv2dParams p;
    p.n = c.n, p.c_in = c.c_in, p.h = c.h, p.w = c.w, p.c_out = c.c_out, p.kh = c.kh, p.kw = c.kw;
    p.stride_h = c.sh, p.stride_w = c.sw, p.dil_h = c.dh, p.dil_w = c.dw;
    p.pad_top = c.pt, p.pad_left = c.pl, p.pad_bottom = c.pb, p.pad_right = c.pr;
    p.groups = c.groups;
    p.h_out = (c.h + c.pt + c.pb - c.dh * (c.kh - 1) - 1) / c.sh + 1;
    p.w_out = (c.w + c.pl + c.pr - c.dw * (c.kw - 1) - 1) / c.sw + 1;
    p.act = acts[case_id % acts.size()];
    Vec x = random_vec(p.n * p.c_in * p.h * p.w, 100 + case_id);
    Vec w = random_vec(p.c_out * (p.c_in / p.groups) * p.kh * p.kw, 200 + case_id);
    Vec b = random_vec(p.c_out, 300 + case_id);
    const std::vector<double> want = ref_conv(p, x, w, c.bias ? &b : nullptr);
    // Every path twice where the CPU has AVX-512: with its GEMM, then with the
    // OpenBLAS one that other CPUs run.
    for (const bool avx512 : {true, false})
    for (int threads : {1, 2, 3}) {
      const Avx512Allowed isa(avx512);
      CpuBackend be(threads);
      // Workspace with a guard band that must survive the call.
      const size_t ws_floats = be.conv2d_workspace(p) / sizeof(float);
      Vec ws(ws_floats + 64, 12345.f);
      Vec y(want.size(), NAN);
      Tensor tx = view(x, {p.n, p.c_in, p.h, p.w}), tw = view(w, {p.c_out, p.c_in / p.groups, p.kh, p.kw});
      Tensor tb = view(b, {p.c_out}), ty = view(y, {p.n, p.c_out, p.h_out, p.w_out});
      be.conv2d(p, tx, tw, c.bias ? &tb : nullptr, ty, ws.data());
      EXPECT_LT(normalized_error(y, want), 1e-5)
          << "case " << case_id << " threads " << threads << " act " << act_name(p.act.kind)
          << " avx512 " << (avx512 && cpu::has_avx512());
      for (size_t i = ws_floats; i < ws.size(); ++i) ASSERT_EQ(ws[i], 12345.f) << "case " << case_id;
    }
    ++case_id;
  }
}

// Depthwise convs on small maps taken 16 channels at a time give the bits of the
// plane-by-plane kernels (each channel alone is a 1-channel conv, which takes them),
// with every activation and the fused channel means.
TEST(CpuKernels, DepthwiseChannelBlocksEqualPlaneByPlane) {
  struct Case { int64_t c, h, w, k, s, pt, pb; };
  const std::vector<Case> cases = {{37, 7, 7, 5, 1, 2, 2}, {16, 14, 14, 3, 2, 0, 1},
                                   {20, 4, 4, 3, 1, 1, 1}, {33, 15, 13, 5, 2, 1, 2}};
  int seed = 90;
  for (const Case& c : cases) {
    for (const Activation& act : real_line_activations()) {
      Conv2dParams p;
      p.c_in = p.c_out = p.groups = c.c, p.h = c.h, p.w = c.w, p.kh = p.kw = c.k;
      p.stride_h = p.stride_w = c.s;
      p.pad_top = p.pad_left = c.pt, p.pad_bottom = p.pad_right = c.pb;
      p.h_out = (c.h + c.pt + c.pb - c.k) / c.s + 1;
      p.w_out = (c.w + c.pt + c.pb - c.k) / c.s + 1;
      p.act = act;
      const int64_t hw_in = p.h * p.w, hw_out = p.h_out * p.w_out;
      Vec x = random_vec(c.c * hw_in, ++seed), w = random_vec(c.c * c.k * c.k, ++seed);
      Vec b = random_vec(c.c, ++seed);
      CpuBackend be(2);
      Vec ws(be.conv2d_workspace(p) / sizeof(float) + 1), y(c.c * hw_out), mean(c.c);
      Tensor tx = view(x, {1, c.c, p.h, p.w}), tw = view(w, {c.c, 1, c.k, c.k});
      Tensor tb = view(b, {c.c}), ty = view(y, {1, c.c, p.h_out, p.w_out});
      Tensor tm = view(mean, {1, c.c, 1, 1});
      be.conv2d_channel_mean(p, tx, tw, &tb, ty, tm, ws.data());
      Conv2dParams one = p;
      one.c_in = one.c_out = one.groups = 1;
      for (int64_t ch = 0; ch < c.c; ++ch) {
        Vec x1(x.begin() + ch * hw_in, x.begin() + (ch + 1) * hw_in);
        Vec w1(w.begin() + ch * c.k * c.k, w.begin() + (ch + 1) * c.k * c.k), b1{b[ch]};
        Vec ws1(be.conv2d_workspace(one) / sizeof(float) + 1), y1(hw_out), m1(1);
        Tensor tx1 = view(x1, {1, 1, p.h, p.w}), tw1 = view(w1, {1, 1, c.k, c.k});
        Tensor tb1 = view(b1, {1}), ty1 = view(y1, {1, 1, p.h_out, p.w_out});
        Tensor tm1 = view(m1, {1, 1, 1, 1});
        be.conv2d_channel_mean(one, tx1, tw1, &tb1, ty1, tm1, ws1.data());
        ASSERT_EQ(y1, Vec(y.begin() + ch * hw_out, y.begin() + (ch + 1) * hw_out))
            << "c " << c.c << " k " << c.k << " s " << c.s << " act " << act_name(act.kind)
            << " channel " << ch;
        ASSERT_EQ(m1[0], mean[ch]) << "channel " << ch;
      }
    }
  }
}

// conv2d_residual gives the bits of conv2d followed by an elementwise add, on both
// GEMM paths (AVX-512 where the CPU has it, and OpenBLAS), with partial tiles and
// last row blocks of every size class, through im2col, groups and batch 2, and
// through the default (depthwise). Fusing the skip connection changes no result.
TEST(CpuKernels, Conv2dResidualEqualsConvThenAdd) {
  struct Case { int64_t n, c_in, h, w, c_out, k, groups; };
  const std::vector<Case> cases = {
      {1, 40, 33, 35, 22, 1, 1}, {1, 24, 37, 29, 13, 1, 1}, {1, 16, 19, 21, 40, 1, 1},
      {2, 32, 9, 7, 30, 1, 1},   {2, 17, 9, 7, 29, 1, 1},   {1, 672, 7, 7, 40, 1, 1},
      {1, 5, 21, 23, 7, 3, 1},   {1, 6, 11, 9, 9, 3, 3},    {1, 13, 15, 15, 13, 3, 13}};
  int seed = 80;
  for (const Case& c : cases) {
    Conv2dParams p;
    p.n = c.n, p.c_in = c.c_in, p.h = c.h, p.w = c.w, p.c_out = c.c_out, p.kh = p.kw = c.k;
    p.groups = c.groups;
    p.pad_top = p.pad_left = p.pad_bottom = p.pad_right = c.k / 2;
    p.h_out = c.h, p.w_out = c.w;
    const int64_t out = p.n * p.c_out * p.h_out * p.w_out;
    Vec x = random_vec(p.n * p.c_in * p.h * p.w, ++seed);
    Vec w = random_vec(p.c_out * p.c_in / p.groups * p.kh * p.kw, ++seed);
    Vec b = random_vec(p.c_out, ++seed), r = random_vec(out, ++seed);
    for (bool avx512 : {true, false}) {
      const Avx512Allowed isa(avx512);
      for (bool bias : {true, false}) {
        CpuBackend be(2);
        Vec ws(be.conv2d_workspace(p) / sizeof(float) + 1), y1(out), y2(out);
        Tensor tx = view(x, {p.n, p.c_in, p.h, p.w});
        Tensor tw = view(w, {p.c_out, p.c_in / p.groups, p.kh, p.kw}), tb = view(b, {p.c_out});
        const Shape ys{p.n, p.c_out, p.h_out, p.w_out};
        Tensor tr = view(r, ys), ty1 = view(y1, ys), ty2 = view(y2, ys);
        be.conv2d(p, tx, tw, bias ? &tb : nullptr, ty1, ws.data());
        for (int64_t i = 0; i < out; ++i) y1[i] += r[i];
        be.conv2d_residual(p, tx, tw, bias ? &tb : nullptr, tr, ty2, ws.data());
        EXPECT_EQ(y1, y2) << "Cin " << c.c_in << " Cout " << c.c_out << " k " << c.k << " groups "
                          << c.groups << " avx512 " << avx512 << " bias " << bias;
      }
    }
  }
}

// The fused squeeze-excitation pool gives the bits of conv2d followed by reduce:
// fusing it (fuse_channel_mean) changes no result.
TEST(CpuKernels, Conv2dChannelMeanEqualsConvThenReduce) {
  struct Case { int64_t n, c, h, w, k, s; };
  for (const Case& c : std::vector<Case>{{1, 13, 15, 15, 3, 1}, {2, 5, 33, 31, 5, 2}, {1, 3, 7, 7, 5, 1}}) {
    Conv2dParams p;
    p.n = c.n, p.c_in = p.c_out = p.groups = c.c, p.h = c.h, p.w = c.w, p.kh = p.kw = c.k;
    p.stride_h = p.stride_w = c.s;
    p.pad_top = p.pad_left = c.k / 2, p.pad_bottom = p.pad_right = c.k / 2;
    p.h_out = (c.h + 2 * (c.k / 2) - c.k) / c.s + 1;
    p.w_out = (c.w + 2 * (c.k / 2) - c.k) / c.s + 1;
    p.act.kind = ActKind::Swish;
    const int64_t planes = p.n * p.c_out, hw = p.h_out * p.w_out;
    Vec x = random_vec(p.n * p.c_in * p.h * p.w, 71), w = random_vec(p.c_out * p.kh * p.kw, 72);
    Vec b = random_vec(p.c_out, 73);
    for (int threads : {1, 2}) {
      CpuBackend be(threads);
      Vec ws(be.conv2d_workspace(p) / sizeof(float) + 1), y1(planes * hw), y2(planes * hw);
      Vec m1(planes), m2(planes);
      Tensor tx = view(x, {p.n, p.c_in, p.h, p.w}), tw = view(w, {p.c_out, 1, p.kh, p.kw});
      Tensor tb = view(b, {p.c_out}), ty1 = view(y1, {p.n, p.c_out, p.h_out, p.w_out});
      Tensor ty2 = view(y2, {p.n, p.c_out, p.h_out, p.w_out}), tm1 = view(m1, {p.n, p.c_out, 1, 1});
      Tensor tm2 = view(m2, {p.n, p.c_out, 1, 1});
      be.conv2d(p, tx, tw, &tb, ty1, ws.data());
      ReduceParams r;
      r.kind = ReduceKind::Mean, r.outer = planes, r.reduce = hw, r.inner = 1;
      be.reduce(r, ty1, tm1);
      be.conv2d_channel_mean(p, tx, tw, &tb, ty2, tm2, ws.data());
      EXPECT_EQ(y1, y2) << "c " << c.c << " threads " << threads;
      EXPECT_EQ(m1, m2) << "c " << c.c << " threads " << threads;
    }
  }
}

// 1x1 convs the AVX2 kernel (or, where the CPU has it, the AVX-512 one) takes give
// the same bits on 1, 2 and 3 threads: each output is summed in one order however
// the product is split (OpenBLAS's sums change with the split).
TEST(CpuKernels, SmallPointwiseConvBitsDoNotDependOnThreads) {
  Conv2dParams p;
  p.c_in = 24, p.c_out = 144, p.h = p.h_out = 57, p.w = p.w_out = 61;
  p.act.kind = ActKind::Swish;
  Vec x = random_vec(p.c_in * p.h * p.w, 61), w = random_vec(p.c_out * p.c_in, 62);
  Vec b = random_vec(p.c_out, 63);
  Vec first;
  for (int threads : {1, 2, 3}) {
    CpuBackend be(threads);
    Vec ws(be.conv2d_workspace(p) / sizeof(float) + 1), y(p.c_out * p.h * p.w);
    Tensor tx = view(x, {1, p.c_in, p.h, p.w}), tw = view(w, {p.c_out, p.c_in, 1, 1});
    Tensor tb = view(b, {p.c_out}), ty = view(y, {1, p.c_out, p.h, p.w});
    be.conv2d(p, tx, tw, &tb, ty, ws.data());
    if (first.empty()) first = y;
    EXPECT_EQ(y, first) << threads << " threads";
  }
}

// pointwise_depthwise_conv2d, a few channels per thread at a time, gives the bits of
// the 1x1 conv and then the depthwise conv with its means (Backend's composition),
// on both GEMM paths and 1-3 threads: channel counts that are not multiples of the
// blocks (13, 37, 100), a plane of 16,770 (blocks of 8 channels, as D0's 256x256),
// a 1x1 map, 7x7 maps (16 channels at a time where the CPU has AVX-512),
// stride 2 with SAME pads, batches of 2 and 3, no means, K = 320 (OpenBLAS and
// the composition where the CPU has no AVX-512); the workspace holds a block per
// thread, not the whole product.
TEST(CpuKernels, PointwiseDepthwiseChannelBlocksEqualTheComposition) {
  struct Case {
    int64_t n, c_in, c, h, w, k, s, pt, pb;
    bool mean;
  };
  const std::vector<Case> cases = {
      {1, 7, 13, 9, 11, 3, 1, 1, 1, true},    {1, 16, 96, 130, 129, 3, 2, 0, 1, true},
      {2, 24, 20, 1, 1, 3, 1, 1, 1, true},    {3, 40, 37, 7, 7, 5, 1, 2, 2, true},
      {1, 24, 100, 14, 14, 5, 2, 1, 2, true}, {2, 5, 37, 20, 17, 5, 2, 1, 2, false},
      {1, 320, 40, 8, 8, 3, 1, 1, 1, true}};
  const Activation swish = [] {
    Activation a;
    a.kind = ActKind::Swish;
    return a;
  }();
  int seed = 400;
  for (const Case& c : cases) {
    Conv2dParams pw, dw;
    pw.n = c.n, pw.c_in = c.c_in, pw.c_out = c.c, pw.h = pw.h_out = c.h, pw.w = pw.w_out = c.w;
    pw.act = real_line_activations()[seed % 14];
    dw.n = c.n, dw.c_in = dw.c_out = dw.groups = c.c, dw.h = c.h, dw.w = c.w, dw.kh = dw.kw = c.k;
    dw.stride_h = dw.stride_w = c.s;
    dw.pad_top = dw.pad_left = c.pt, dw.pad_bottom = dw.pad_right = c.pb;
    dw.h_out = (c.h + c.pt + c.pb - c.k) / c.s + 1;
    dw.w_out = (c.w + c.pt + c.pb - c.k) / c.s + 1;
    dw.act = swish;
    const Shape xs{c.n, c.c_in, c.h, c.w}, ys{c.n, c.c, dw.h_out, dw.w_out}, ms{c.n, c.c, 1, 1};
    Vec x = random_vec(xs.numel(), ++seed), w_pw = random_vec(c.c * c.c_in, ++seed);
    Vec b_pw = random_vec(c.c, ++seed), w_dw = random_vec(c.c * c.k * c.k, ++seed);
    Vec b_dw = random_vec(c.c, ++seed);
    Tensor tx = view(x, xs), twp = view(w_pw, {c.c, c.c_in, 1, 1}), tbp = view(b_pw, {c.c});
    Tensor twd = view(w_dw, {c.c, 1, c.k, c.k}), tbd = view(b_dw, {c.c});
    for (const bool avx512 : {true, false})
      for (int threads : {1, 2, 3}) {
        SCOPED_TRACE("case " + std::to_string(seed) + ", threads " + std::to_string(threads) +
                     ", avx512 " + std::to_string(avx512 && cpu::has_avx512()));
        const Avx512Allowed isa(avx512);
        CpuBackend be(threads);
        const size_t fused_floats = be.pointwise_depthwise_conv2d_workspace(pw, dw) / sizeof(float);
        Vec ws(fused_floats + 64, 12345.f);  // a guard band that must survive the call
        Vec ws2(be.Backend::pointwise_depthwise_conv2d_workspace(pw, dw) / sizeof(float));
        Vec y(ys.numel(), NAN), y2(ys.numel(), NAN), m(ms.numel(), NAN), m2(ms.numel(), NAN);
        Tensor ty = view(y, ys), ty2 = view(y2, ys), tm = view(m, ms), tm2 = view(m2, ms);
        be.pointwise_depthwise_conv2d(pw, dw, tx, twp, &tbp, twd, &tbd, ty, c.mean ? &tm : nullptr,
                                      ws.data());
        be.Backend::pointwise_depthwise_conv2d(pw, dw, tx, twp, &tbp, twd, &tbd, ty2,
                                               c.mean ? &tm2 : nullptr, ws2.data());
        EXPECT_EQ(y, y2);
        if (c.mean) {
          EXPECT_EQ(m, m2);
        }
        for (size_t i = fused_floats; i < ws.size(); ++i) ASSERT_EQ(ws[i], 12345.f);
        if (c.h * c.w > 16384) {  // a block of 12 channels per thread, not all 96
          EXPECT_LT(fused_floats, static_cast<size_t>(c.c * c.h * c.w / 2));
        }
      }
  }
}

// BroadcastParams for NumPy broadcasting of shapes a and b (right-aligned).
BroadcastParams broadcast(std::vector<int64_t> a, std::vector<int64_t> b, BinaryOp op) {
  BroadcastParams p;
  p.op = op;
  p.rank = static_cast<int>(std::max(a.size(), b.size()));
  a.insert(a.begin(), p.rank - a.size(), 1);
  b.insert(b.begin(), p.rank - b.size(), 1);
  int64_t sa = 1, sb = 1;
  p.numel = 1;
  for (int d = p.rank - 1; d >= 0; --d) {
    p.out_dims[d] = std::max(a[d], b[d]);
    p.a_strides[d] = a[d] == 1 ? 0 : sa;
    p.b_strides[d] = b[d] == 1 ? 0 : sb;
    sa *= a[d], sb *= b[d];
    p.numel *= p.out_dims[d];
  }
  return p;
}

TEST(CpuKernels, BinaryBroadcastEveryOp) {
  const std::vector<std::pair<std::vector<int64_t>, std::vector<int64_t>>> shapes = {
      {{2, 3, 5, 7}, {2, 3, 5, 7}}, {{2, 3, 5, 7}, {2, 3, 1, 1}}, {{1, 3, 1, 7}, {2, 3, 5, 7}},
      {{2, 13, 17, 19}, {1}},       {{5, 1}, {1, 7}},             {{1}, {3, 1, 13}},
      {{4, 64, 33}, {4, 64, 33}},   {{17}, {3, 17}},
      // rows longer than one work piece (4,096): same-shape (one row after
      // coalescing), a broadcast operand, and a broadcast scalar
      {{3, 40, 70, 9}, {3, 40, 70, 9}}, {{2, 9001}, {9001}}, {{1}, {3, 5000}}};
  const std::vector<Activation> acts = real_line_activations();
  int id = 0;
  for (BinaryOp op : {BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div, BinaryOp::Pow,
                      BinaryOp::Max, BinaryOp::Min}) {
    for (const auto& s : shapes) {
      BroadcastParams p = broadcast(s.first, s.second, op);
      p.act = acts[id % acts.size()];
      int64_t na = 1, nb = 1;
      for (int64_t d : s.first) na *= d;
      for (int64_t d : s.second) nb *= d;
      // Pow and Div on positive numbers keep the reference finite.
      const bool positive = op == BinaryOp::Pow || op == BinaryOp::Div;
      Vec a = random_vec(na, 400 + id, positive ? 0.5f : -2.f, 2.f);
      Vec b = random_vec(nb, 500 + id, positive ? 0.5f : -2.f, 2.f);
      std::vector<double> want(p.numel);
      for (int64_t i = 0; i < p.numel; ++i) {
        int64_t rem = i, ia = 0, ib = 0;
        for (int d = p.rank - 1; d >= 0; --d) {
          const int64_t idx = rem % p.out_dims[d];
          rem /= p.out_dims[d];
          ia += idx * p.a_strides[d];
          ib += idx * p.b_strides[d];
        }
        const double x = a[ia], z = b[ib];
        double r = 0;
        switch (op) {
          case BinaryOp::Add: r = x + z; break;
          case BinaryOp::Sub: r = x - z; break;
          case BinaryOp::Mul: r = x * z; break;
          case BinaryOp::Div: r = x / z; break;
          case BinaryOp::Pow: r = std::pow(x, z); break;
          case BinaryOp::Max: r = std::max(x, z); break;
          case BinaryOp::Min: r = std::min(x, z); break;
        }
        want[i] = ref_act(p.act, r);
      }
      CpuBackend be(2);
      Vec y(p.numel);
      Tensor ta = view(a, Shape(s.first)), tb = view(b, Shape(s.second)), ty = view(y, {p.numel});
      be.binary(p, ta, tb, ty);
      EXPECT_LT(normalized_error(y, want), 1e-5) << "op " << int(op) << " shape case " << id % shapes.size();
      ++id;
    }
  }
}

TEST(CpuKernels, ChannelAffine) {
  ChannelAffineParams p;
  p.n = 2, p.c = 13, p.inner = 35;
  p.act.kind = ActKind::Swish;
  Vec x = random_vec(p.n * p.c * p.inner, 1), s = random_vec(p.c, 2), t = random_vec(p.c, 3);
  std::vector<double> want(x.size());
  for (int64_t i = 0; i < int64_t(x.size()); ++i) {
    const int64_t c = i / p.inner % p.c;
    want[i] = ref_act(p.act, double(x[i]) * s[c] + t[c]);
  }
  CpuBackend be(2);
  Vec y(x.size());
  Tensor tx = view(x, {2, 13, 5, 7}), ts = view(s, {13}), tt = view(t, {13}), ty = view(y, {2, 13, 5, 7});
  be.channel_affine(p, tx, ts, tt, ty);
  EXPECT_LT(normalized_error(y, want), 1e-6);
}

// Per-image gates on activations (n == outer), and one gate for every row of
// folded projection weights (n == 1), large enough to split between threads.
TEST(CpuKernels, SqueezeExcitationBothTargets) {
  struct Case {
    int64_t n, c, c_se, outer, inner;
    bool biases;
  };
  for (const Case& k : {Case{3, 13, 5, 3, 35, true}, Case{1, 1152, 48, 320, 1, true},
                        Case{2, 40, 10, 2, 1, false}}) {
    SqueezeExcitationParams p;
    p.n = k.n, p.c = k.c, p.c_se = k.c_se, p.outer = k.outer, p.inner = k.inner;
    p.act_reduce.kind = ActKind::Swish;
    p.act_expand.kind = ActKind::Sigmoid;
    Vec mean = random_vec(k.n * k.c, 1, -2.f, 2.f), wr = random_vec(k.c_se * k.c, 2);
    Vec br = random_vec(k.c_se, 3), we = random_vec(k.c * k.c_se, 4), bexp = random_vec(k.c, 5);
    Vec target = random_vec(k.outer * k.c * k.inner, 6);
    std::vector<double> gate(k.n * k.c), want(target.size());
    for (int64_t img = 0; img < k.n; ++img) {
      std::vector<double> hidden(k.c_se);
      for (int64_t j = 0; j < k.c_se; ++j) {
        double s = k.biases ? br[j] : 0.0;
        for (int64_t i = 0; i < k.c; ++i) s += double(wr[j * k.c + i]) * mean[img * k.c + i];
        hidden[j] = ref_act(p.act_reduce, s);
      }
      for (int64_t ch = 0; ch < k.c; ++ch) {
        double s = k.biases ? bexp[ch] : 0.0;
        for (int64_t j = 0; j < k.c_se; ++j) s += double(we[ch * k.c_se + j]) * hidden[j];
        gate[img * k.c + ch] = ref_act(p.act_expand, s);
      }
    }
    for (size_t i = 0; i < want.size(); ++i) {
      const int64_t row = static_cast<int64_t>(i) / k.inner, o = row / k.c, ch = row % k.c;
      want[i] = target[i] * gate[(k.n == 1 ? 0 : o) * k.c + ch];
    }
    for (int threads : {1, 2, 3}) {
      CpuBackend be(threads);
      Vec y(target.size(), NAN);
      std::vector<uint8_t> ws(be.squeeze_excitation_workspace(p));
      Tensor tm = view(mean, {k.n, k.c, 1, 1}), twr = view(wr, {k.c_se, k.c, 1, 1});
      Tensor tbr = view(br, {k.c_se}), twe = view(we, {k.c, k.c_se, 1, 1}), tbe = view(bexp, {k.c});
      Tensor tt = view(target, {k.outer, k.c, k.inner}), ty = view(y, {k.outer, k.c, k.inner});
      be.squeeze_excitation(p, tm, twr, k.biases ? &tbr : nullptr, twe, k.biases ? &tbe : nullptr,
                            tt, ty, ws.data());
      EXPECT_LT(normalized_error(y, want), 1e-5) << "c " << k.c << ", " << threads << " threads";
    }
  }
}

TEST(CpuKernels, Pool2dMaxAndAverage) {
  struct PoolCase { int64_t h, w, kh, kw, sh, sw, dh, dw, pt, pl, pb, pr; bool ceil; };
  const std::vector<PoolCase> cases = {
      {15, 15, 3, 3, 2, 2, 1, 1, 0, 0, 1, 1, false},  // maxpool k3 s2 TF SAME
      {7, 5, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, true},     // ceil_mode: last window past the pad
      {1, 1, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, false},
      {9, 8, 2, 3, 1, 2, 2, 1, 1, 0, 2, 1, false},    // dilation, asymmetric pads
      {6, 6, 6, 6, 1, 1, 1, 1, 0, 0, 0, 0, false},    // global
      // Max 3 wide, stride 2 across: the vector path (rows of 8 outputs and a tail)
      {64, 64, 3, 3, 2, 2, 1, 1, 0, 0, 1, 1, false},  // D0's BiFPN downsampling
      {21, 37, 3, 3, 1, 2, 2, 1, 1, 1, 1, 1, false},  // vertical stride 1, dilation 2
      {33, 35, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, true},   // ceil_mode
      {9, 18, 3, 3, 2, 2, 1, 1, 0, 0, 0, 0, false},   // no pads: the right border unused
  };
  int id = 0;
  for (const PoolCase& c : cases) {
    for (PoolKind kind : {PoolKind::Max, PoolKind::Average}) {
      for (bool include_pad : {false, true}) {
        Pool2dParams p;
        p.kind = kind, p.n = 2, p.c = 3, p.h = c.h, p.w = c.w, p.kh = c.kh, p.kw = c.kw;
        p.stride_h = c.sh, p.stride_w = c.sw, p.dil_h = c.dh, p.dil_w = c.dw;
        p.pad_top = c.pt, p.pad_left = c.pl, p.pad_bottom = c.pb, p.pad_right = c.pr;
        p.count_include_pad = include_pad;
        const int64_t span_h = c.h + c.pt + c.pb - c.dh * (c.kh - 1) - 1;
        const int64_t span_w = c.w + c.pl + c.pr - c.dw * (c.kw - 1) - 1;
        p.h_out = (c.ceil ? (span_h + c.sh - 1) / c.sh : span_h / c.sh) + 1;
        p.w_out = (c.ceil ? (span_w + c.sw - 1) / c.sw : span_w / c.sw) + 1;
        Vec x = random_vec(p.n * p.c * p.h * p.w, 600 + id++);
        std::vector<double> want;
        for (int64_t pl = 0; pl < p.n * p.c; ++pl)
          for (int64_t oy = 0; oy < p.h_out; ++oy)
            for (int64_t ox = 0; ox < p.w_out; ++ox) {
              double mx = -INFINITY, sum = 0;
              int64_t inside = 0, padded = 0;
              for (int64_t ky = 0; ky < p.kh; ++ky)
                for (int64_t kx = 0; kx < p.kw; ++kx) {
                  const int64_t iy = oy * p.stride_h - p.pad_top + ky * p.dil_h;
                  const int64_t ix = ox * p.stride_w - p.pad_left + kx * p.dil_w;
                  if (iy < p.h + p.pad_bottom && ix < p.w + p.pad_right) ++padded;
                  if (iy < 0 || iy >= p.h || ix < 0 || ix >= p.w) continue;
                  ++inside;
                  mx = std::max<double>(mx, x[(pl * p.h + iy) * p.w + ix]);
                  sum += x[(pl * p.h + iy) * p.w + ix];
                }
              want.push_back(kind == PoolKind::Max ? mx : sum / (include_pad ? padded : inside));
            }
        CpuBackend be(2);
        Vec y(want.size());
        Tensor tx = view(x, {p.n, p.c, p.h, p.w}), ty = view(y, {p.n, p.c, p.h_out, p.w_out});
        be.pool2d(p, tx, ty);
        EXPECT_LT(normalized_error(y, want), 1e-6) << "case " << id;
      }
    }
  }
}

TEST(CpuKernels, ReduceEveryKind) {
  for (ReduceKind kind : {ReduceKind::Mean, ReduceKind::Sum, ReduceKind::Max, ReduceKind::Min}) {
    for (auto dims : std::vector<std::vector<int64_t>>{{13, 49, 1}, {3, 17, 5}, {1, 1, 7}, {2, 12544, 1}}) {
      ReduceParams p;
      p.kind = kind, p.outer = dims[0], p.reduce = dims[1], p.inner = dims[2];
      Vec x = random_vec(p.outer * p.reduce * p.inner, 700);
      std::vector<double> want(p.outer * p.inner);
      for (int64_t o = 0; o < p.outer; ++o)
        for (int64_t i = 0; i < p.inner; ++i) {
          double acc = kind == ReduceKind::Max ? -INFINITY : kind == ReduceKind::Min ? INFINITY : 0;
          for (int64_t r = 0; r < p.reduce; ++r) {
            const double v = x[(o * p.reduce + r) * p.inner + i];
            acc = kind == ReduceKind::Max ? std::max(acc, v) : kind == ReduceKind::Min ? std::min(acc, v) : acc + v;
          }
          want[o * p.inner + i] = kind == ReduceKind::Mean ? acc / p.reduce : acc;
        }
      CpuBackend be(2);
      Vec y(want.size());
      Tensor tx = view(x, {p.outer, p.reduce, p.inner}), ty = view(y, {p.outer, p.inner});
      be.reduce(p, tx, ty);
      EXPECT_LT(normalized_error(y, want), 1e-5) << int(kind) << " reduce " << p.reduce;
    }
  }
}

TEST(CpuKernels, GemmTransposesBiasAndBatch) {
  struct GemmCase { int64_t batch, m, n, k; bool ta, tb; int64_t bias_rows, bias_cols; bool shared_b; };
  const std::vector<GemmCase> cases = {
      {1, 1, 1000, 1280, false, true, 1, 1000, false},  // classifier: x * W^T + b
      {1, 13, 17, 5, true, false, 13, 17, false},   {1, 7, 3, 9, true, true, 7, 1, false},
      {1, 5, 300, 11, false, false, 1, 1, false},   {3, 4, 5, 6, false, false, 0, 0, false},
      {4, 9, 7, 3, false, true, 1, 7, true},        {1, 64, 96, 33, false, false, 64, 96, false},
      // matrix-vector shapes (sgemv paths), every transpose combination
      {1, 1, 7, 5, true, false, 0, 0, false},       {1, 1, 300, 40, false, false, 1, 300, false},
      {1, 1, 9, 6, true, true, 1, 9, false},        {1, 600, 1, 4, true, true, 600, 1, false},
      {1, 6, 1, 4, false, false, 0, 0, false},      {1, 200, 1, 96, false, true, 1, 1, false},
      {1, 6, 1, 4, true, false, 6, 1, false}};
  int id = 0;
  for (const GemmCase& c : cases) {
    GemmParams p;
    p.batch = c.batch, p.m = c.m, p.n = c.n, p.k = c.k, p.trans_a = c.ta, p.trans_b = c.tb;
    p.alpha = 0.75f, p.beta = id % 2 ? 1.f : -0.5f;
    p.a_batch_stride = c.m * c.k, p.b_batch_stride = c.shared_b ? 0 : c.k * c.n, p.c_batch_stride = c.m * c.n;
    p.bias_rows = c.bias_rows, p.bias_cols = c.bias_cols;
    p.act = real_line_activations()[id % 9];
    Vec a = random_vec(c.batch * c.m * c.k, 800 + id), b = random_vec((c.shared_b ? 1 : c.batch) * c.k * c.n, 900 + id);
    Vec bias = random_vec(std::max<int64_t>(1, c.bias_rows * c.bias_cols), 1000 + id);
    std::vector<double> want(c.batch * c.m * c.n);
    for (int64_t bt = 0; bt < c.batch; ++bt)
      for (int64_t i = 0; i < c.m; ++i)
        for (int64_t j = 0; j < c.n; ++j) {
          double acc = 0;
          for (int64_t l = 0; l < c.k; ++l) {
            const double av = a[bt * p.a_batch_stride + (c.ta ? l * c.m + i : i * c.k + l)];
            const double bv = b[bt * p.b_batch_stride + (c.tb ? j * c.k + l : l * c.n + j)];
            acc += av * bv;
          }
          acc *= p.alpha;
          if (c.bias_rows) acc += p.beta * bias[(c.bias_rows == 1 ? 0 : i) * c.bias_cols + (c.bias_cols == 1 ? 0 : j)];
          want[(bt * c.m + i) * c.n + j] = ref_act(p.act, acc);
        }
    for (int threads : {1, 2}) {
      CpuBackend be(threads);
      Vec y(want.size());
      Tensor ta = view(a, {c.batch, c.m, c.k}), tb = view(b, {c.k, c.n}), tbias = view(bias, {c.bias_rows, c.bias_cols});
      Tensor ty = view(y, {c.batch, c.m, c.n});
      be.gemm(p, ta, tb, c.bias_rows ? &tbias : nullptr, ty);
      EXPECT_LT(normalized_error(y, want), 1e-5) << "case " << id << " threads " << threads;
    }
    ++id;
  }
}

// --- Resize: a direct port of onnx/reference/ops/op_resize.py (1-D interpolation
// with neighbours picked by distance on an edge-padded array, rows then columns).
double ref_input_coordinate(const ResizeParams& p, double x, double scale, int64_t in, int64_t out,
                            double roi0, double roi1, bool& outside) {
  outside = false;
  const double out_f = scale * in;  // the reference's float output width
  switch (p.coord) {
    case CoordMode::HalfPixel: return (x + 0.5) / scale - 0.5;
    case CoordMode::HalfPixelSymmetric:
      return in / 2.0 * (1 - out / out_f) + (x + 0.5) / scale - 0.5;
    case CoordMode::PytorchHalfPixel: return out > 1 ? (x + 0.5) / scale - 0.5 : 0.0;
    case CoordMode::AlignCorners: return out_f == 1 ? 0.0 : x * (in - 1) / (out_f - 1);
    case CoordMode::Asymmetric: return x / scale;
    case CoordMode::TfHalfPixelForNn: return (x + 0.5) / scale;
    case CoordMode::TfCropAndResize: {
      double r = out_f == 1 ? (roi1 - roi0) * (in - 1) / 2 : x * (roi1 - roi0) * (in - 1) / (out_f - 1);
      r += roi0 * (in - 1);
      outside = r < 0 || r > in - 1;
      return r;
    }
  }
  return 0;
}

double ref_interpolate_1d(const ResizeParams& p, const std::vector<double>& data, double scale,
                          int64_t out, double x, double roi0, double roi1) {
  const int64_t in = data.size();
  bool outside;
  const double xo = ref_input_coordinate(p, x, scale, in, out, roi0, roi1, outside);
  if (outside) return p.extrapolation_value;
  const double ratio = xo == std::floor(xo) ? 1.0 : xo - std::floor(xo);
  std::vector<double> coeffs;
  if (p.mode == ResizeMode::Nearest) {
    bool right = true;
    if (ratio != 1.0) {
      switch (p.nearest) {
        case NearestMode::RoundPreferFloor: right = ratio > 0.5; break;
        case NearestMode::RoundPreferCeil: right = ratio >= 0.5; break;
        case NearestMode::Floor: right = false; break;
        case NearestMode::Ceil: right = true; break;
      }
    }
    coeffs = {right ? 0.0 : 1.0, right ? 1.0 : 0.0};
  } else if (p.mode == ResizeMode::Linear) {
    coeffs = {1 - ratio, ratio};
  } else {
    const double A = p.cubic_a, r = ratio;
    coeffs = {((A * (r + 1) - 5 * A) * (r + 1) + 8 * A) * (r + 1) - 4 * A,
              ((A + 2) * r - (A + 3)) * r * r + 1,
              ((A + 2) * (1 - r) - (A + 3)) * (1 - r) * (1 - r) + 1,
              ((A * (2 - r) - 5 * A) * (2 - r) + 8 * A) * (2 - r) - 4 * A};
  }
  const int64_t n = coeffs.size(), pad = (n + 1) / 2;
  std::vector<double> padded;
  for (int64_t i = -pad; i < in + pad; ++i) padded.push_back(data[std::min(std::max<int64_t>(i, 0), in - 1)]);
  std::vector<int64_t> idx(padded.size());
  for (size_t i = 0; i < idx.size(); ++i) idx[i] = i;
  // Distances in input coordinates: the reference's x + pad rounds away the last
  // bit of x (1 + 2^-52 + 1 == 2), which would pick the wrong neighbour pair.
  auto dist = [&](int64_t i) { return std::fabs(xo - double(i - pad)); };
  std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) { return dist(a) < dist(b); });
  idx.resize(n);
  std::sort(idx.begin(), idx.end());
  if (p.exclude_outside) {
    double sum = 0;
    for (int64_t i = 0; i < n; ++i) {
      if (idx[i] - pad < 0 || idx[i] - pad >= in) coeffs[i] = 0;
      sum += coeffs[i];
    }
    for (double& c : coeffs) c /= sum;
  }
  double r = 0;
  for (int64_t i = 0; i < n; ++i) r += coeffs[i] * padded[idx[i]];
  return r;
}

std::vector<double> ref_resize(const ResizeParams& p, const Vec& x) {
  std::vector<double> y;
  for (int64_t o = 0; o < p.outer; ++o)
    for (int64_t oy = 0; oy < p.h_out; ++oy)
      for (int64_t ox = 0; ox < p.w_out; ++ox) {
        std::vector<double> rows(p.h);
        for (int64_t iy = 0; iy < p.h; ++iy) {
          std::vector<double> line(x.begin() + (o * p.h + iy) * p.w, x.begin() + (o * p.h + iy + 1) * p.w);
          rows[iy] = ref_interpolate_1d(p, line, p.scale_w, p.w_out, ox, p.roi[1], p.roi[3]);
        }
        y.push_back(ref_interpolate_1d(p, rows, p.scale_h, p.h_out, oy, p.roi[0], p.roi[2]));
      }
  return y;
}

TEST(CpuKernels, ResizeEveryModeAgainstOnnxReferencePort) {
  struct Size { int64_t h, w, h_out, w_out; };
  const std::vector<Size> sizes = {{4, 4, 8, 8}, {5, 7, 3, 4}, {3, 5, 7, 13}, {1, 3, 1, 6}, {6, 4, 6, 4}};
  int id = 0;
  for (ResizeMode mode : {ResizeMode::Nearest, ResizeMode::Linear, ResizeMode::Cubic})
    for (CoordMode coord : {CoordMode::HalfPixel, CoordMode::PytorchHalfPixel, CoordMode::AlignCorners,
                            CoordMode::Asymmetric, CoordMode::TfHalfPixelForNn, CoordMode::TfCropAndResize,
                            CoordMode::HalfPixelSymmetric})
      for (const Size& s : sizes) {
        ResizeParams p;
        p.mode = mode, p.coord = coord, p.outer = 3;
        p.nearest = static_cast<NearestMode>(id % 4);
        p.h = s.h, p.w = s.w, p.h_out = s.h_out, p.w_out = s.w_out;
        // Scales as a layer derives them from `sizes`; one case with a scale whose
        // product is not the size (floor(0.7 * 5) = 3), as `scales` inputs allow.
        p.scale_h = float(s.h_out) / s.h, p.scale_w = float(s.w_out) / s.w;
        if (s.h == 5) p.scale_h = 0.7f;
        // exclude_outside renormalises interpolation weights; nearest has none.
        p.exclude_outside = mode != ResizeMode::Nearest && id % 3 == 0;
        p.cubic_a = id % 2 ? -0.75f : -0.5f;
        p.extrapolation_value = 10.f;
        if (coord == CoordMode::TfCropAndResize) {
          const float roi[4] = {0.2f, -0.1f, 0.9f, 1.2f};
          std::copy(roi, roi + 4, p.roi);
        }
        Vec x = random_vec(p.outer * p.h * p.w, 1100 + id);
        const std::vector<double> want = ref_resize(p, x);
        CpuBackend be(2);
        Vec y(want.size());
        Tensor tx = view(x, {p.outer, p.h, p.w}), ty = view(y, {p.outer, p.h_out, p.w_out});
        be.resize(p, tx, ty);
        EXPECT_LT(normalized_error(y, want), 1e-5)
            << "mode " << int(mode) << " coord " << int(coord) << " nearest " << int(p.nearest) << " size "
            << s.h << "x" << s.w << "->" << s.h_out << "x" << s.w_out << " exclude " << p.exclude_outside;
        ++id;
      }
}

// Rows wider than one 256-column chunk; nearest 2x upsampling (BiFPN's) takes the
// paired-columns and repeated-rows paths, in both chunks, and odd or
// non-doubling widths and half-pixel rounding the general gather.
TEST(CpuKernels, ResizeWideRowsUseColumnChunks) {
  struct Case { ResizeMode mode; CoordMode coord; int64_t h_out, w_out; };
  const std::vector<Case> cases = {{ResizeMode::Linear, CoordMode::HalfPixel, 6, 300},
                                   {ResizeMode::Nearest, CoordMode::Asymmetric, 6, 300},
                                   {ResizeMode::Nearest, CoordMode::Asymmetric, 7, 299},
                                   {ResizeMode::Nearest, CoordMode::HalfPixel, 6, 300},
                                   {ResizeMode::Nearest, CoordMode::Asymmetric, 9, 450}};
  for (const Case& c : cases) {
    ResizeParams p;
    p.mode = c.mode, p.coord = c.coord, p.nearest = NearestMode::Floor;
    p.outer = 2, p.h = 3, p.w = 150, p.h_out = c.h_out, p.w_out = c.w_out;
    p.scale_h = float(c.h_out) / p.h, p.scale_w = float(c.w_out) / p.w;
    Vec x = random_vec(p.outer * p.h * p.w, 1200);
    const std::vector<double> want = ref_resize(p, x);
    CpuBackend be(2);
    Vec y(want.size());
    Tensor tx = view(x, {2, 3, 150}), ty = view(y, {2, c.h_out, c.w_out});
    be.resize(p, tx, ty);
    EXPECT_LT(normalized_error(y, want), 1e-5) << int(c.mode) << " " << c.h_out << "x" << c.w_out;
  }
}

TEST(CpuKernels, StridedCopyTransposeSliceConcat) {
  CpuBackend be(2);
  // Transpose [2,3,4,5] -> [2,4,5,3] (perm 0,2,3,1).
  Vec x = random_vec(120, 1300), y(120);
  CopyParams t;
  t.rank = 4;
  const int64_t dims[4] = {2, 4, 5, 3}, in_strides[4] = {60, 5, 1, 20}, out_strides[4] = {60, 15, 3, 1};
  std::copy(dims, dims + 4, t.dims), std::copy(in_strides, in_strides + 4, t.in_strides);
  std::copy(out_strides, out_strides + 4, t.out_strides);
  Tensor tx = view(x, {2, 3, 4, 5}), ty = view(y, {2, 4, 5, 3});
  be.strided_copy(t, tx, ty);
  for (int a = 0; a < 2; ++a)
    for (int b = 0; b < 3; ++b)
      for (int c = 0; c < 4; ++c)
        for (int d = 0; d < 5; ++d)
          ASSERT_EQ(y[((a * 4 + c) * 5 + d) * 3 + b], x[((a * 3 + b) * 4 + c) * 5 + d]);
  // Slice x[:, 1:3, ::2, 1:] into the channels 2..3 of a [2, 5, 2, 4] concat output.
  Vec out(2 * 5 * 2 * 4, -7.f);
  CopyParams s;
  s.rank = 4;
  const int64_t sd[4] = {2, 2, 2, 4}, si[4] = {60, 20, 10, 1}, so[4] = {40, 8, 4, 1};
  std::copy(sd, sd + 4, s.dims), std::copy(si, si + 4, s.in_strides), std::copy(so, so + 4, s.out_strides);
  s.in_offset = 20 + 1, s.out_offset = 2 * 8;
  Tensor tout = view(out, {2, 5, 2, 4});
  be.strided_copy(s, tx, tout);
  for (int a = 0; a < 2; ++a)
    for (int c = 0; c < 5; ++c)
      for (int h = 0; h < 2; ++h)
        for (int w = 0; w < 4; ++w) {
          const float want = (c == 2 || c == 3) ? x[((a * 3 + c - 1) * 4 + 2 * h) * 5 + w + 1] : -7.f;
          ASSERT_EQ(out[((a * 5 + c) * 2 + h) * 4 + w], want) << a << c << h << w;
        }
}

TEST(CpuKernels, PadEveryModeWithCrops) {
  struct PadCase { std::vector<int64_t> dims, begin, end; };
  const std::vector<PadCase> cases = {
      {{2, 3, 5, 7}, {0, 0, 1, 2}, {0, 0, 2, 1}},
      {{3, 4}, {2, 3}, {3, 2}},
      {{1, 2, 4, 6}, {0, 1, -1, 2}, {0, -1, 1, -2}},  // crops on some axes
      {{5}, {7, }, {6}},                                // wider than the axis: repeats
      {{1, 1}, {2, 1}, {1, 2}}};
  for (PadMode mode : {PadMode::Constant, PadMode::Reflect, PadMode::Edge, PadMode::Wrap}) {
    for (const PadCase& c : cases) {
      if (mode == PadMode::Reflect && c.dims.back() == 1 && c.dims.size() == 2) continue;
      PadParams p;
      p.mode = mode, p.rank = c.dims.size(), p.value = 2.5f;
      int64_t n_in = 1, n_out = 1;
      for (int d = 0; d < p.rank; ++d) {
        p.in_dims[d] = c.dims[d];
        p.pad_begin[d] = c.begin[d];
        p.out_dims[d] = c.dims[d] + c.begin[d] + c.end[d];
        n_in *= p.in_dims[d], n_out *= p.out_dims[d];
      }
      Vec x = random_vec(n_in, 1400);
      std::vector<double> want(n_out);
      for (int64_t o = 0; o < n_out; ++o) {
        int64_t rem = o, in_idx = 0, stride = 1;
        bool constant = false;
        for (int d = p.rank - 1; d >= 0; --d) {
          int64_t i = rem % p.out_dims[d] - p.pad_begin[d];
          rem /= p.out_dims[d];
          const int64_t n = p.in_dims[d];
          if (i < 0 || i >= n) {
            if (mode == PadMode::Constant) constant = true;
            if (mode == PadMode::Edge) i = std::min(std::max<int64_t>(i, 0), n - 1);
            if (mode == PadMode::Wrap) i = ((i % n) + n) % n;
            // numpy reflect: mirror about the edges (edge not repeated) until inside.
            while (mode == PadMode::Reflect && (i < 0 || i >= n)) i = i < 0 ? -i : 2 * (n - 1) - i;
          }
          in_idx += i * stride;
          stride *= n;
        }
        want[o] = constant ? p.value : x[in_idx];
      }
      CpuBackend be(2);
      Vec y(n_out);
      Tensor tx = view(x, {n_in}), ty = view(y, {n_out});
      be.pad(p, tx, ty);
      EXPECT_LT(normalized_error(y, want), 1e-7) << "mode " << int(mode) << " rank " << p.rank;
    }
  }
}

TEST(CpuKernels, SoftmaxAndLogSoftmax) {
  for (bool log : {false, true}) {
    for (auto dims : std::vector<std::vector<int64_t>>{{2, 1000, 1}, {3, 13, 7}, {1, 1, 5}}) {
      SoftmaxParams p;
      p.outer = dims[0], p.axis = dims[1], p.inner = dims[2], p.log = log;
      Vec x = random_vec(p.outer * p.axis * p.inner, 1500, -30.f, 30.f);
      std::vector<double> want(x.size());
      for (int64_t o = 0; o < p.outer; ++o)
        for (int64_t i = 0; i < p.inner; ++i) {
          double sum = 0;
          for (int64_t a = 0; a < p.axis; ++a) sum += std::exp(double(x[(o * p.axis + a) * p.inner + i]));
          for (int64_t a = 0; a < p.axis; ++a) {
            const int64_t k = (o * p.axis + a) * p.inner + i;
            want[k] = log ? x[k] - std::log(sum) : std::exp(double(x[k])) / sum;
          }
        }
      CpuBackend be(2);
      Vec y(x.size());
      Tensor tx = view(x, {p.outer, p.axis, p.inner}), ty = view(y, {p.outer, p.axis, p.inner});
      be.softmax(p, tx, ty);
      EXPECT_LT(normalized_error(y, want), 1e-5) << "log " << log << " axis " << p.axis;
    }
  }
}

TEST(CpuKernels, WeightedSumOneToFourInputs) {
  for (int count = 1; count <= kMaxFusionInputs; ++count) {
    WeightedSumParams p;
    p.count = count, p.numel = 64 * 33 * 17 + 3;
    p.act.kind = count % 2 ? ActKind::Swish : ActKind::None;
    std::vector<Vec> xs;
    std::vector<Tensor> ts;
    for (int i = 0; i < count; ++i) {
      p.weights[i] = 0.3f * (i + 1);
      xs.push_back(random_vec(p.numel, 1600 + i));
    }
    for (Vec& v : xs) ts.push_back(view(v, {p.numel}));
    std::vector<const Tensor*> ptrs;
    for (const Tensor& t : ts) ptrs.push_back(&t);
    std::vector<double> want(p.numel);
    for (int64_t j = 0; j < p.numel; ++j) {
      double acc = 0;
      for (int i = 0; i < count; ++i) acc += double(p.weights[i]) * xs[i][j];
      want[j] = ref_act(p.act, acc);
    }
    CpuBackend be(2);
    Vec y(p.numel);
    Tensor ty = view(y, {p.numel});
    be.weighted_sum(p, ptrs.data(), ty);
    EXPECT_LT(normalized_error(y, want), 1e-6) << count;
  }
}

}  // namespace
}  // namespace repshare
