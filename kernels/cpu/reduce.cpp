#ifdef __AVX2__
#include <immintrin.h>
#endif

#include <algorithm>
#include <limits>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_kernels.h"

namespace repshare {
namespace {

template <ReduceKind K>
inline float combine(float acc, float v) {
  switch (K) {
    case ReduceKind::Max: return std::max(acc, v);
    case ReduceKind::Min: return std::min(acc, v);
    default: return acc + v;
  }
}

template <ReduceKind K>
float identity() {
  switch (K) {
    case ReduceKind::Max: return -std::numeric_limits<float>::infinity();
    case ReduceKind::Min: return std::numeric_limits<float>::infinity();
    default: return 0.f;
  }
}

#ifdef __AVX2__
template <ReduceKind K>
inline __m256 combine8(__m256 acc, __m256 v) {
  switch (K) {
    case ReduceKind::Max: return _mm256_max_ps(acc, v);
    case ReduceKind::Min: return _mm256_min_ps(acc, v);
    default: return _mm256_add_ps(acc, v);
  }
}
#endif

// Contiguous reduction with 32 independent partial results (four vectors): hides
// the add latency (global average pools are ~3 M elements per B0 run), and for sums
// keeps the rounding error lower than one running total.
template <ReduceKind K>
float reduce_contiguous(const float* x, int64_t n) {
  float r = identity<K>();
  int64_t i = 0;
#ifdef __AVX2__
  const __m256 init = _mm256_set1_ps(identity<K>());
  __m256 acc[4] = {init, init, init, init};
  for (; i + 32 <= n; i += 32)
    for (int j = 0; j < 4; ++j) acc[j] = combine8<K>(acc[j], _mm256_loadu_ps(x + i + 8 * j));
  for (; i + 8 <= n; i += 8) acc[0] = combine8<K>(acc[0], _mm256_loadu_ps(x + i));
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, combine8<K>(combine8<K>(acc[0], acc[1]), combine8<K>(acc[2], acc[3])));
  for (float v : lanes) r = combine<K>(r, v);
#endif
  for (; i < n; ++i) r = combine<K>(r, x[i]);
  return r;
}

template <ReduceKind K>
void reduce_kernel(const ReduceParams& p, const float* x, float* y, int threads) {
  const float norm = K == ReduceKind::Mean ? 1.f / static_cast<float>(p.reduce) : 1.f;
  const int64_t work = p.outer * p.reduce * p.inner;
  if (p.inner == 1) {
#pragma omp parallel for num_threads(threads) schedule(static) if (work >= cpu::kMinParallelWork)
    for (int64_t o = 0; o < p.outer; ++o) y[o] = reduce_contiguous<K>(x + o * p.reduce, p.reduce) * norm;
    return;
  }
  // Rows of `inner` elements accumulated into the output row.
#pragma omp parallel for num_threads(threads) schedule(static) if (work >= cpu::kMinParallelWork)
  for (int64_t o = 0; o < p.outer; ++o) {
    float* yo = y + o * p.inner;
    const float* xo = x + o * p.reduce * p.inner;
    std::fill(yo, yo + p.inner, identity<K>());
    for (int64_t r = 0; r < p.reduce; ++r)
      for (int64_t i = 0; i < p.inner; ++i) yo[i] = combine<K>(yo[i], xo[r * p.inner + i]);
    if (norm != 1.f)
      for (int64_t i = 0; i < p.inner; ++i) yo[i] *= norm;
  }
}

}  // namespace

float cpu::sum_contiguous(const float* x, int64_t n) { return reduce_contiguous<ReduceKind::Sum>(x, n); }

void CpuBackend::reduce(const ReduceParams& p, const Tensor& x, Tensor& y) {
  switch (p.kind) {
    case ReduceKind::Mean: return reduce_kernel<ReduceKind::Mean>(p, x.f32(), y.f32(), threads_);
    case ReduceKind::Sum: return reduce_kernel<ReduceKind::Sum>(p, x.f32(), y.f32(), threads_);
    case ReduceKind::Max: return reduce_kernel<ReduceKind::Max>(p, x.f32(), y.f32(), threads_);
    case ReduceKind::Min: return reduce_kernel<ReduceKind::Min>(p, x.f32(), y.f32(), threads_);
  }
}

}  // namespace repshare
