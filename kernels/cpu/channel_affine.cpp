#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_kernels.h"

namespace repshare {

void CpuBackend::channel_affine(const ChannelAffineParams& p, const Tensor& x,
                                const Tensor& scale, const Tensor& shift, Tensor& y) {
  const float *xd = x.f32(), *sd = scale.f32(), *td = shift.f32();
  float* yd = y.f32();
  const int64_t planes = p.n * p.c;
#pragma omp parallel for num_threads(threads_) schedule(static) if (planes * p.inner >= cpu::kMinParallelWork)
  for (int64_t plane = 0; plane < planes; ++plane) {
    const int64_t c = plane % p.c;
    const float s = sd[c];
    const float* xi = xd + plane * p.inner;
    float* yi = yd + plane * p.inner;
    for (int64_t i = 0; i < p.inner; ++i) yi[i] = xi[i] * s;
    cpu::activation_span(p.act, yi, yi, p.inner, td[c]);
  }
}

}  // namespace repshare
