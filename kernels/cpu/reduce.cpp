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

// Contiguous reduction with 8 independent accumulators: vectorises, and for sums
// the partial sums keep the rounding error lower than one running total.
template <ReduceKind K>
float reduce_contiguous(const float* x, int64_t n) {
  float acc[8];
  for (float& a : acc) a = identity<K>();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] = combine<K>(acc[j], x[i + j]);
  for (; i < n; ++i) acc[0] = combine<K>(acc[0], x[i]);
  float r = acc[0];
  for (int j = 1; j < 8; ++j) r = combine<K>(r, acc[j]);
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

void CpuBackend::reduce(const ReduceParams& p, const Tensor& x, Tensor& y) {
  switch (p.kind) {
    case ReduceKind::Mean: return reduce_kernel<ReduceKind::Mean>(p, x.f32(), y.f32(), threads_);
    case ReduceKind::Sum: return reduce_kernel<ReduceKind::Sum>(p, x.f32(), y.f32(), threads_);
    case ReduceKind::Max: return reduce_kernel<ReduceKind::Max>(p, x.f32(), y.f32(), threads_);
    case ReduceKind::Min: return reduce_kernel<ReduceKind::Min>(p, x.f32(), y.f32(), threads_);
  }
}

}  // namespace repshare
