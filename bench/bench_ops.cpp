// Per-op CPU kernel timings at EfficientNet-B0 / EfficientDet-D0 shapes (batch 1).
// Each case takes the thread count as its argument; GFLOP/s counts a multiply-add
// as 2 FLOPs. The BlasThreading cases compare the backend's choice (OpenBLAS
// single-threaded, GEMM split across OpenMP threads) with OpenBLAS's own threads.
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <cstdint>
#include <random>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_kernels.h"

namespace repshare {
namespace {

struct Buffer {
  std::vector<float> data;
  Tensor t;
  explicit Buffer(Shape s, uint32_t seed = 1) {
    t.shape = std::move(s);
    data.resize(t.numel());
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> u(-1.f, 1.f);
    for (float& x : data) x = u(rng);
    t.data = data.data();
  }
};

void set_gflops(benchmark::State& state, double flops) {
  state.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

Conv2dParams conv(int64_t c_in, int64_t hw, int64_t c_out, int64_t k, int64_t stride, bool depthwise) {
  Conv2dParams p;
  p.c_in = c_in, p.h = p.w = hw, p.c_out = c_out, p.kh = p.kw = k;
  p.stride_h = p.stride_w = stride;
  p.groups = depthwise ? c_in : 1;
  // TF "SAME" pads, as the timm tf_ and automl models resolve them.
  const int64_t out = (hw + stride - 1) / stride;
  const int64_t total = std::max<int64_t>(0, (out - 1) * stride + k - hw);
  p.pad_top = p.pad_left = total / 2;
  p.pad_bottom = p.pad_right = total - total / 2;
  p.h_out = p.w_out = out;
  p.act.kind = ActKind::Swish;
  return p;
}

void run_conv(benchmark::State& state, Conv2dParams p) {
  CpuBackend be(static_cast<int>(state.range(0)));
  Buffer x({1, p.c_in, p.h, p.w}), w({p.c_out, p.c_in / p.groups, p.kh, p.kw}), b({p.c_out});
  Buffer y({1, p.c_out, p.h_out, p.w_out});
  std::vector<float> ws(be.conv2d_workspace(p) / sizeof(float) + 1);
  for (auto _ : state) be.conv2d(p, x.t, w.t, &b.t, y.t, ws.data());
  set_gflops(state, 2.0 * p.c_out * p.h_out * p.w_out * (p.c_in / p.groups) * p.kh * p.kw);
}

// MBConv's expansion (c_in -> c, 1x1) and its depthwise conv with the means, as the
// CPU's one call (a few channels per thread: product and depthwise conv in L2) or
// as Backend's composition (the whole product, then the depthwise conv).
void BM_PointwiseDepthwise(benchmark::State& state, int64_t c_in, int64_t hw, int64_t c, int64_t k,
                           int64_t stride, bool composition) {
  CpuBackend be(static_cast<int>(state.range(0)));
  const Conv2dParams pw = conv(c_in, hw, c, 1, 1, false), dw = conv(c, hw, c, k, stride, true);
  Buffer x({1, c_in, hw, hw}), w_pw({c, c_in, 1, 1}), b_pw({c}), w_dw({c, 1, k, k}), b_dw({c});
  Buffer y({1, c, dw.h_out, dw.w_out}), mean({1, c, 1, 1});
  const size_t bytes = composition ? be.Backend::pointwise_depthwise_conv2d_workspace(pw, dw)
                                   : be.pointwise_depthwise_conv2d_workspace(pw, dw);
  std::vector<float> ws(bytes / sizeof(float) + 1);
  for (auto _ : state) {
    if (composition)
      be.Backend::pointwise_depthwise_conv2d(pw, dw, x.t, w_pw.t, &b_pw.t, w_dw.t, &b_dw.t, y.t,
                                             &mean.t, ws.data());
    else
      be.pointwise_depthwise_conv2d(pw, dw, x.t, w_pw.t, &b_pw.t, w_dw.t, &b_dw.t, y.t, &mean.t,
                                    ws.data());
  }
  state.counters["workspace MiB"] = static_cast<double>(bytes) / (1 << 20);
}
void BM_ConvPointwise96to24At56(benchmark::State& s) { run_conv(s, conv(96, 56, 24, 1, 1, false)); }
void BM_ConvPointwise16to96At112(benchmark::State& s) { run_conv(s, conv(16, 112, 96, 1, 1, false)); }
void BM_ConvPointwise1152to320At7(benchmark::State& s) { run_conv(s, conv(1152, 7, 320, 1, 1, false)); }
// Lite0's blocks 9 and 10 projection (narrow tiles, 19 row blocks of 6) and its head.
void BM_ConvPointwise672to112At14(benchmark::State& s) { run_conv(s, conv(672, 14, 112, 1, 1, false)); }
void BM_ConvPointwise320to1280At7(benchmark::State& s) { run_conv(s, conv(320, 7, 1280, 1, 1, false)); }
void BM_ConvSqueezeExcite96to4At1(benchmark::State& s) { run_conv(s, conv(96, 1, 4, 1, 1, false)); }
void BM_ConvDepthwise3x3s1At112x32(benchmark::State& s) { run_conv(s, conv(32, 112, 32, 3, 1, true)); }
void BM_ConvDepthwise3x3s2At112x96(benchmark::State& s) { run_conv(s, conv(96, 112, 96, 3, 2, true)); }
void BM_ConvDepthwise5x5s2At56x144(benchmark::State& s) { run_conv(s, conv(144, 56, 144, 5, 2, true)); }
void BM_ConvDepthwise5x5s1At14x672(benchmark::State& s) { run_conv(s, conv(672, 14, 672, 5, 1, true)); }
void BM_ConvStem3x3s2At224(benchmark::State& s) { run_conv(s, conv(3, 224, 32, 3, 2, false)); }
void BM_ConvDense3x3At64x64(benchmark::State& s) { run_conv(s, conv(64, 64, 64, 3, 1, false)); }

void BM_GemmClassifier1280to1000(benchmark::State& state) {
  CpuBackend be(static_cast<int>(state.range(0)));
  GemmParams p;
  p.m = 1, p.n = 1000, p.k = 1280, p.trans_b = true, p.beta = 1.f, p.bias_rows = 1, p.bias_cols = 1000;
  Buffer a({1, 1280}), b({1000, 1280}), bias({1, 1000}), y({1, 1000});
  for (auto _ : state) be.gemm(p, a.t, b.t, &bias.t, y.t);
  set_gflops(state, 2.0 * p.m * p.n * p.k);
}

void BM_ResizeNearest2xAt32x64ch(benchmark::State& state) {
  CpuBackend be(static_cast<int>(state.range(0)));
  ResizeParams p;
  p.outer = 64, p.h = p.w = 32, p.h_out = p.w_out = 64, p.scale_h = p.scale_w = 2.f;
  p.coord = CoordMode::Asymmetric;
  p.nearest = NearestMode::Floor;
  Buffer x({64, 32, 32}), y({64, 64, 64});
  for (auto _ : state) be.resize(p, x.t, y.t);
  state.SetBytesProcessed(state.iterations() * (x.t.bytes() + y.t.bytes()));
}

void BM_MaxPool3x3s2At64x64ch(benchmark::State& state) {
  CpuBackend be(static_cast<int>(state.range(0)));
  Pool2dParams p;
  p.c = 64, p.h = p.w = 64, p.kh = p.kw = 3, p.stride_h = p.stride_w = 2;
  p.pad_bottom = p.pad_right = 1, p.h_out = p.w_out = 32;
  Buffer x({1, 64, 64, 64}), y({1, 64, 32, 32});
  for (auto _ : state) be.pool2d(p, x.t, y.t);
  state.SetBytesProcessed(state.iterations() * (x.t.bytes() + y.t.bytes()));
}

void BM_SwishAt112x32ch(benchmark::State& state) {
  CpuBackend be(static_cast<int>(state.range(0)));
  Activation a;
  a.kind = ActKind::Swish;
  Buffer x({1, 32, 112, 112}), y({1, 32, 112, 112});
  for (auto _ : state) be.activation(a, x.t, y.t);
  state.SetItemsProcessed(state.iterations() * x.t.numel());
}

void BM_SqueezeExciteMulAt56x144ch(benchmark::State& state) {
  CpuBackend be(static_cast<int>(state.range(0)));
  BroadcastParams p;
  p.op = BinaryOp::Mul, p.rank = 4, p.numel = 144 * 56 * 56;
  const int64_t dims[4] = {1, 144, 56, 56}, sa[4] = {0, 56 * 56, 56, 1}, sb[4] = {0, 1, 0, 0};
  std::copy(dims, dims + 4, p.out_dims), std::copy(sa, sa + 4, p.a_strides), std::copy(sb, sb + 4, p.b_strides);
  Buffer a({1, 144, 56, 56}), b({1, 144, 1, 1}), y({1, 144, 56, 56});
  for (auto _ : state) be.binary(p, a.t, b.t, y.t);
  state.SetBytesProcessed(state.iterations() * (a.t.bytes() + y.t.bytes()));
}

void BM_GlobalAveragePoolAt7x1280ch(benchmark::State& state) {
  CpuBackend be(static_cast<int>(state.range(0)));
  ReduceParams p;
  p.outer = 1280, p.reduce = 49;
  Buffer x({1280, 49}), y({1280});
  for (auto _ : state) be.reduce(p, x.t, y.t);
  state.SetBytesProcessed(state.iterations() * x.t.bytes());
}

// Y[m, n] = W[m, k] X[k, n] at B0 pointwise shapes: the backend's OpenMP split
// (openblas 1 thread) versus one call with OpenBLAS's own 2 threads. Both include
// a Swish epilogue, as the conv does.
void run_sgemm_threading(benchmark::State& state, bool blas_threads) {
  const int64_t m = state.range(0), k = state.range(1), n = state.range(2);
  CpuBackend be(2);  // pins OpenBLAS to 1 thread
  Buffer w({m, k}), x({k, n}), y({m, n});
  Activation swish;
  swish.kind = ActKind::Swish;
  cpu::SgemmArgs g;
  g.m = m, g.n = n, g.k = k, g.a = w.data.data(), g.lda = k, g.b = x.data.data(), g.ldb = n;
  g.c = y.data.data(), g.ldc = n;
  if (blas_threads) openblas_set_num_threads(2);
  for (auto _ : state) {
    if (blas_threads) {
      cpu::sgemm_block(g, 0, m, 0, n);
#pragma omp parallel for num_threads(2)
      for (int64_t r = 0; r < m; ++r) cpu::activation_span(swish, g.c + r * n, g.c + r * n, n);
    } else {
      cpu::parallel_sgemm(2, g, [&](int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
        for (int64_t r = r0; r < r1; ++r) cpu::activation_span(swish, g.c + r * n + c0, g.c + r * n + c0, c1 - c0);
      });
    }
  }
  openblas_set_num_threads(1);
  set_gflops(state, 2.0 * m * n * k);
}
void BM_BlasThreadingOpenMpSplit(benchmark::State& s) { run_sgemm_threading(s, false); }
void BM_BlasThreadingOpenBlasOwn(benchmark::State& s) { run_sgemm_threading(s, true); }

void sgemm_shapes(benchmark::internal::Benchmark* b) {
  // {Cout, Cin, HW}: B0 expand/project convs from 112x112 down to 7x7, and the head.
  for (auto s : std::vector<std::vector<int64_t>>{{96, 16, 12544}, {24, 96, 3136}, {144, 24, 3136},
                                                  {240, 40, 784}, {80, 240, 196}, {480, 80, 196},
                                                  {1152, 192, 49}, {320, 1152, 49}, {1280, 320, 49}})
    b->Args(s);
}

}  // namespace

#define BY_THREADS Arg(1)->Arg(2)->Unit(benchmark::kMicrosecond)->UseRealTime()
// B0's and D0's first expansions (3x3 stride 2 after 112x112 and 256x256), B0's second.
BENCHMARK_CAPTURE(BM_PointwiseDepthwise, 16to96At112s2, 16, 112, 96, 3, 2, false)->BY_THREADS;
BENCHMARK_CAPTURE(BM_PointwiseDepthwise, 16to96At112s2Composition, 16, 112, 96, 3, 2, true)
    ->BY_THREADS;
BENCHMARK_CAPTURE(BM_PointwiseDepthwise, 16to96At256s2, 16, 256, 96, 3, 2, false)->BY_THREADS;
BENCHMARK_CAPTURE(BM_PointwiseDepthwise, 16to96At256s2Composition, 16, 256, 96, 3, 2, true)
    ->BY_THREADS;
BENCHMARK_CAPTURE(BM_PointwiseDepthwise, 24to144At56, 24, 56, 144, 3, 1, false)->BY_THREADS;
BENCHMARK_CAPTURE(BM_PointwiseDepthwise, 24to144At56Composition, 24, 56, 144, 3, 1, true)
    ->BY_THREADS;
BENCHMARK(BM_ConvPointwise96to24At56)->BY_THREADS;
BENCHMARK(BM_ConvPointwise16to96At112)->BY_THREADS;
BENCHMARK(BM_ConvPointwise1152to320At7)->BY_THREADS;
BENCHMARK(BM_ConvPointwise672to112At14)->BY_THREADS;
BENCHMARK(BM_ConvPointwise320to1280At7)->BY_THREADS;
BENCHMARK(BM_ConvSqueezeExcite96to4At1)->BY_THREADS;
BENCHMARK(BM_ConvDepthwise3x3s1At112x32)->BY_THREADS;
BENCHMARK(BM_ConvDepthwise3x3s2At112x96)->BY_THREADS;
BENCHMARK(BM_ConvDepthwise5x5s2At56x144)->BY_THREADS;
BENCHMARK(BM_ConvDepthwise5x5s1At14x672)->BY_THREADS;
BENCHMARK(BM_ConvStem3x3s2At224)->BY_THREADS;
BENCHMARK(BM_ConvDense3x3At64x64)->BY_THREADS;
BENCHMARK(BM_GemmClassifier1280to1000)->BY_THREADS;
BENCHMARK(BM_ResizeNearest2xAt32x64ch)->BY_THREADS;
BENCHMARK(BM_MaxPool3x3s2At64x64ch)->BY_THREADS;
BENCHMARK(BM_SwishAt112x32ch)->BY_THREADS;
BENCHMARK(BM_SqueezeExciteMulAt56x144ch)->BY_THREADS;
BENCHMARK(BM_GlobalAveragePoolAt7x1280ch)->BY_THREADS;
BENCHMARK(BM_BlasThreadingOpenMpSplit)->Apply(sgemm_shapes)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_BlasThreadingOpenBlasOwn)->Apply(sgemm_shapes)->Unit(benchmark::kMicrosecond)->UseRealTime();

}  // namespace repshare
