#include <cstring>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_kernels.h"

namespace repshare {

void CpuBackend::channel_gather(const ChannelGatherParams& p, const Tensor& x,
                                const Tensor& index, Tensor& y) {
  const float* xd = x.f32();
  const int64_t* idx = index.i64();
  float* yd = y.f32();
  const int64_t planes = p.n * p.c_out;
#pragma omp parallel for num_threads(threads_) schedule(static) \
    if (planes * p.inner >= cpu::kMinParallelWork)
  for (int64_t plane = 0; plane < planes; ++plane) {
    const int64_t n = plane / p.c_out, t = plane % p.c_out;
    std::memcpy(yd + plane * p.inner, xd + (n * p.c_in + idx[t]) * p.inner,
                p.inner * sizeof(float));
  }
}

}  // namespace repshare
