#include <algorithm>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_kernels.h"

namespace repshare {

void CpuBackend::weighted_sum(const WeightedSumParams& p, const Tensor* const* xs, Tensor& y) {
  float* yd = y.f32();
  constexpr int64_t kBlock = 4096;  // stays in L1 between the accumulation and the activation
  const int64_t blocks = (p.numel + kBlock - 1) / kBlock;
#pragma omp parallel for num_threads(threads_) schedule(static) if (p.numel >= cpu::kMinParallelWork)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t lo = blk * kBlock, n = std::min(kBlock, p.numel - lo);
    float* out = yd + lo;
    const float* x0 = xs[0]->f32() + lo;
    const float w0 = p.weights[0];
    for (int64_t i = 0; i < n; ++i) out[i] = w0 * x0[i];
    for (int k = 1; k < p.count; ++k) {
      const float* xk = xs[k]->f32() + lo;
      const float wk = p.weights[k];
      for (int64_t i = 0; i < n; ++i) out[i] += wk * xk[i];
    }
    cpu::activation_span(p.act, out, out, n);
  }
}

}  // namespace repshare
