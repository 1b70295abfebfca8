// Squeeze-excitation's two small fully connected layers and its gate in one call:
// per image a [c_se x c] and a [c x c_se] matrix-vector product (at most ~0.1 M
// multiply-adds in these models: not worth a BLAS call each), then target * gate
// (for the folded projection weights of B0's last blocks, 0.37 M values).
#include <algorithm>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_kernels.h"

namespace repshare {
namespace {

float dot(const float* a, const float* b, int64_t n) {
  float s = 0.f;
#pragma omp simd reduction(+ : s)
  for (int64_t k = 0; k < n; ++k) s += a[k] * b[k];
  return s;
}

}  // namespace

size_t CpuBackend::squeeze_excitation_workspace(const SqueezeExcitationParams& p) const {
  return static_cast<size_t>(p.n * (p.c_se + p.c)) * sizeof(float);
}

void CpuBackend::squeeze_excitation(const SqueezeExcitationParams& p, const Tensor& mean,
                                    const Tensor& w_reduce, const Tensor* b_reduce,
                                    const Tensor& w_expand, const Tensor* b_expand,
                                    const Tensor& target, Tensor& y, void* workspace) {
  float* hidden = static_cast<float*>(workspace);
  float* gate = hidden + p.n * p.c_se;
  const float* wr = w_reduce.f32();
  const float* we = w_expand.f32();
  const float* t = target.f32();
  float* out = y.f32();
  // One parallel region for the whole call, though the layers are small: run
  // serially between two parallel convs, the other thread outlives its spin and
  // sleeps, and waking it for the next conv cost more than this whole call (B0:
  // 33 us per block serial, against ~10 us here).
  const int64_t work = p.n * 2 * p.c * p.c_se + p.outer * p.c * p.inner;
  constexpr int64_t kGateBlock = 64;  // channels per piece of the expand layer
#pragma omp parallel num_threads(threads_) if (work >= cpu::kMinParallelWork)
  {
    for (int64_t img = 0; img < p.n; ++img) {
      const float* m = mean.f32() + img * p.c;
      float* h = hidden + img * p.c_se;
      float* g = gate + img * p.c;
#pragma omp for schedule(static)
      for (int64_t j = 0; j < p.c_se; ++j)
        h[j] = dot(wr + j * p.c, m, p.c) + (b_reduce ? b_reduce->f32()[j] : 0.f);
#pragma omp single
      cpu::activation_span(p.act_reduce, h, h, p.c_se);
#pragma omp for schedule(static)
      for (int64_t first = 0; first < p.c; first += kGateBlock) {
        const int64_t end = std::min(p.c, first + kGateBlock);
        for (int64_t ch = first; ch < end; ++ch)
          g[ch] = dot(we + ch * p.c_se, h, p.c_se) + (b_expand ? b_expand->f32()[ch] : 0.f);
        // The vectorised forms the convs' epilogues used: a scalar expf per gate
        // cost more than the products.
        cpu::activation_span(p.act_expand, g + first, g + first, end - first);
      }
    }
    if (p.inner == 1) {
      // Folded projection weights [c_out, c]: each row times the gate, elementwise.
#pragma omp for schedule(static)
      for (int64_t o = 0; o < p.outer; ++o) {
        const float* g = gate + (p.n == 1 ? 0 : o) * p.c;
        const float* in = t + o * p.c;
        float* row = out + o * p.c;
        for (int64_t ch = 0; ch < p.c; ++ch) row[ch] = in[ch] * g[ch];
      }
    } else {
      // Activations [n, c, inner]: each plane times its channel's gate.
#pragma omp for collapse(2) schedule(static)
      for (int64_t o = 0; o < p.outer; ++o)
        for (int64_t ch = 0; ch < p.c; ++ch) {
          const float s = gate[(p.n == 1 ? 0 : o) * p.c + ch];
          const float* in = t + (o * p.c + ch) * p.inner;
          float* plane = out + (o * p.c + ch) * p.inner;
          for (int64_t i = 0; i < p.inner; ++i) plane[i] = in[i] * s;
        }
    }
  }
}

}  // namespace repshare
