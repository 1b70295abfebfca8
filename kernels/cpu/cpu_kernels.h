// Helpers shared by the CPU kernel files (not part of the Backend interface):
// the vectorised activation epilogue and the OpenMP-partitioned SGEMM that
// conv2d and gemm are built on.
#pragma once

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "engine/backend.h"

namespace repshare {
namespace cpu {

// y[i] = act(x[i] + bias) for i < n; y may alias x. Vectorised (AVX2 where the
// build enables it) for the activations the models use; exact scalar math for the
// rest. Sigmoid/Swish use a polynomial exp with ~1e-7 relative error.
void activation_span(const Activation& act, const float* x, float* y, int64_t n,
                     float bias = 0.f);

// The activations the GEMM epilogues (sgemm_avx2.cpp, sgemm_avx512.cpp) and the
// 16-channel depthwise kernels apply in registers; the others are left to
// activation_span after the store.
inline bool has_vector_form(ActKind k) {
  return k == ActKind::None || k == ActKind::Relu || k == ActKind::Clip || k == ActKind::Sigmoid ||
         k == ActKind::Swish;
}

// Calls f(std::integral_constant<ActKind, K>()) with K = a.kind where it has a
// vector form, else K = None (the caller then applies a itself): the one switch
// from an activation to the kernels templated on it.
template <class F>
inline void with_vector_form(const Activation& a, F&& f) {
  switch (a.kind) {
    case ActKind::Relu:
      return f(std::integral_constant<ActKind, ActKind::Relu>());
    case ActKind::Clip:
      return f(std::integral_constant<ActKind, ActKind::Clip>());
    case ActKind::Sigmoid:
      return f(std::integral_constant<ActKind, ActKind::Sigmoid>());
    case ActKind::Swish:
      return f(std::integral_constant<ActKind, ActKind::Swish>());
    default:
      return f(std::integral_constant<ActKind, ActKind::None>());
  }
}

// fp32 <-> fp16 over n values on up to `threads` threads, bit for bit
// engine/half.h's float_to_half / half_to_float (vectorised with F16C on x86).
void floats_to_halves(const float* in, uint16_t* out, int64_t n, int threads);
void halves_to_floats(const uint16_t* in, float* out, int64_t n, int threads);

// Sum of x[0, n) in the order of CpuBackend::reduce (ReduceSum / ReduceMean over
// a contiguous run), so code that fuses a reduction gives the same bits.
float sum_contiguous(const float* x, int64_t n);

// Work below this many multiply-adds runs on one thread: an OpenMP fork costs
// about as much as that many FLOPs here.
constexpr int64_t kMinParallelWork = 1 << 15;

// C = alpha * op(A) * op(B) (row-major, beta 0), then epilogue(row0, row1, col0,
// col1) on the block of C each thread just produced, while it is still in cache.
//
// OpenBLAS is pinned to one thread (CpuBackend's constructor) and the product is
// split here across OpenMP threads along n (the spatial axis of a convolution) or,
// when n is too narrow to split, along m. On the 2-core AVX2 machine (shared, load
// ~10, OMP_WAIT_POLICY=passive) this ran the EfficientNet-B0 pointwise shapes 1.3x
// to 5x faster than one call with OpenBLAS's own 2 threads (BM_BlasThreading* in
// bench/bench_ops.cpp), and the bias/activation epilogue runs on cache-hot data.
struct SgemmArgs {
  int64_t m = 0, n = 0, k = 0;
  bool trans_a = false, trans_b = false;
  float alpha = 1.f;
  const float* a = nullptr;
  int64_t lda = 0;
  const float* b = nullptr;
  int64_t ldb = 0;
  float* c = nullptr;
  int64_t ldc = 0;
};

inline void sgemm_block(const SgemmArgs& g, int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
  if (r1 <= r0 || c1 <= c0) return;
  const float* a = g.a + (g.trans_a ? r0 : r0 * g.lda);
  const float* b = g.b + (g.trans_b ? c0 * g.ldb : c0);
  if (g.k == 0) {
    for (int64_t r = r0; r < r1; ++r) std::fill(g.c + r * g.ldc + c0, g.c + r * g.ldc + c1, 0.f);
    return;
  }
  // Matrix-vector shapes (squeeze-excitation convs on 1x1 maps, the classifier
  // with batch 1) go to sgemv: sgemm would pack the whole matrix on every call.
  if (c1 - c0 == 1) {  // one column of C: op(A)[r0:r1, :] * op(B)[:, c0]
    cblas_sgemv(CblasRowMajor, g.trans_a ? CblasTrans : CblasNoTrans,
                static_cast<int>(g.trans_a ? g.k : r1 - r0), static_cast<int>(g.trans_a ? r1 - r0 : g.k),
                g.alpha, a, static_cast<int>(g.lda), b, g.trans_b ? 1 : static_cast<int>(g.ldb), 0.f,
                g.c + r0 * g.ldc + c0, static_cast<int>(g.ldc));
    return;
  }
  if (r1 - r0 == 1) {  // one row of C: op(B)[:, c0:c1]^T * op(A)[r0, :]
    cblas_sgemv(CblasRowMajor, g.trans_b ? CblasNoTrans : CblasTrans,
                static_cast<int>(g.trans_b ? c1 - c0 : g.k), static_cast<int>(g.trans_b ? g.k : c1 - c0),
                g.alpha, b, static_cast<int>(g.ldb), a, g.trans_a ? static_cast<int>(g.lda) : 1, 0.f,
                g.c + r0 * g.ldc + c0, 1);
    return;
  }
  cblas_sgemm(CblasRowMajor, g.trans_a ? CblasTrans : CblasNoTrans,
              g.trans_b ? CblasTrans : CblasNoTrans, static_cast<int>(r1 - r0),
              static_cast<int>(c1 - c0), static_cast<int>(g.k), g.alpha, a,
              static_cast<int>(g.lda), b, static_cast<int>(g.ldb), 0.f, g.c + r0 * g.ldc + c0,
              static_cast<int>(g.ldc));
}

template <class Epilogue>
void parallel_sgemm(int threads, const SgemmArgs& g, Epilogue&& epilogue) {
  const int64_t work = g.m * g.n * std::max<int64_t>(g.k, 1);
  int parts = work < kMinParallelWork ? 1 : threads;
  // Split n in multiples of 16 columns (two AVX2 vectors, OpenBLAS's n-unroll)
  // unless m is the wider side; never hand a thread an empty block.
  const bool split_n = g.n >= g.m || g.n >= 64 * parts;
  const int64_t extent = split_n ? g.n : g.m;
  const int64_t quantum = split_n ? 16 : 8;
  parts = static_cast<int>(std::min<int64_t>(parts, (extent + quantum - 1) / quantum));
  if (parts <= 1) {
    sgemm_block(g, 0, g.m, 0, g.n);
    epilogue(int64_t{0}, g.m, int64_t{0}, g.n);
    return;
  }
  const int64_t chunk = ((extent + parts - 1) / parts + quantum - 1) / quantum * quantum;
#pragma omp parallel for num_threads(parts) schedule(static, 1)
  for (int part = 0; part < parts; ++part) {
    const int64_t lo = std::min(extent, part * chunk), hi = std::min(extent, lo + chunk);
    if (split_n) {
      sgemm_block(g, 0, g.m, lo, hi);
      epilogue(int64_t{0}, g.m, lo, hi);
    } else {
      sgemm_block(g, lo, hi, 0, g.n);
      epilogue(lo, hi, int64_t{0}, g.n);
    }
  }
}

// Row-major C[m, n] = act(A[m, k] B[k, n] + bias[m]) (+ residual, m x n like C, act
// then None; bias and residual may be null) by sgemm_avx2.cpp's kernel: 1x1 convs
// with at most 32 input channels and at least 24 outputs where the CPU has no
// AVX-512 (avx2_sgemm_applies says which; the kernel takes any shape). Each output
// is summed from its bias in k order, so its bits do not depend on the split.
bool avx2_sgemm_applies(int64_t m, int64_t k, int64_t n);
void avx2_sgemm(int threads, int64_t m, int64_t k, int64_t n, const float* a, const float* b,
                const float* bias, const Activation& act, const float* residual, float* c);

// Whether the AVX-512 kernels run: this CPU has AVX-512 (F and DQ) and they are
// allowed. They are chosen at run time; the build itself targets AVX2.
// allow_avx512(false) makes every kernel take its AVX2 / OpenBLAS path (tests
// compare both; takes effect for the calls after it).
bool has_avx512();
void allow_avx512(bool on);

// Row-major C[m, n] = act(A[m, k] B[k, n] + bias[m]) (bias may be null) by the
// AVX-512 kernels of sgemm_avx512.cpp (packed tiles on wide maps, A and B read in
// place on narrow ones and for 12 rows or fewer), where avx512_sgemm_applies(): this
// CPU has AVX-512. `scratch` holds avx512_sgemm_scratch_floats(threads, m, k, n)
// floats (packed A and B panels; none where nothing is packed).
bool avx512_sgemm_applies(int64_t m, int64_t k, int64_t n);
int64_t avx512_sgemm_scratch_floats(int threads, int64_t m, int64_t k, int64_t n);
// With `residual` (m x n like C; act must then be None), C = A B + bias + residual,
// the residual added in registers before the one store; null for none.
void avx512_sgemm(int threads, int64_t m, int64_t k, int64_t n, const float* a, const float* b,
                  const float* bias, const Activation& act, const float* residual, float* c,
                  float* scratch);

}  // namespace cpu
}  // namespace repshare
