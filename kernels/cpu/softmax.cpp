#include <algorithm>
#include <cmath>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_kernels.h"

namespace repshare {

// Exact expf: softmax feeds probabilities and scores, and is never a hot spot here.
void CpuBackend::softmax(const SoftmaxParams& p, const Tensor& x, Tensor& y) {
  const float* xd = x.f32();
  float* yd = y.f32();
  const int64_t lines = p.outer * p.inner;
  if (p.axis == 0) return;
#pragma omp parallel for num_threads(threads_) schedule(static) if (lines * p.axis >= cpu::kMinParallelWork)
  for (int64_t line = 0; line < lines; ++line) {
    const int64_t o = line / p.inner, i = line % p.inner;
    const float* xl = xd + o * p.axis * p.inner + i;
    float* yl = yd + o * p.axis * p.inner + i;
    const int64_t s = p.inner;
    float mx = xl[0];
    for (int64_t a = 1; a < p.axis; ++a) mx = std::max(mx, xl[a * s]);
    float sum = 0.f;
    for (int64_t a = 0; a < p.axis; ++a) {
      const float e = std::exp(xl[a * s] - mx);
      sum += e;
      if (!p.log) yl[a * s] = e;
    }
    if (p.log) {
      const float shift = mx + std::log(sum);
      for (int64_t a = 0; a < p.axis; ++a) yl[a * s] = xl[a * s] - shift;
    } else {
      const float inv = 1.f / sum;
      for (int64_t a = 0; a < p.axis; ++a) yl[a * s] *= inv;
    }
  }
}

}  // namespace repshare
