// Channel affine (an unfolded BatchNorm): y[n, c, i] = act(x * scale[c] + shift[c]).
#include "kernels/cpu/activation_math.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_util.h"

namespace repshare {
namespace {

__global__ void channel_affine_kernel(Activation act, const float* x, const float* scale,
                                      const float* shift, float* y, int channels, int inner,
                                      int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const int c = (i / inner) % channels;
  y[i] = apply_activation(act, x[i] * scale[c] + shift[c]);
}

}  // namespace

void CudaBackend::channel_affine(const ChannelAffineParams& p, const Tensor& x,
                                 const Tensor& scale, const Tensor& shift, Tensor& y) {
  const int n = cuda::to_int(p.n * p.c * p.inner, "channel_affine", "n*c*inner");
  if (n == 0) return;
  channel_affine_kernel<<<cuda::blocks_for(n), cuda::kBlock, 0, stream_>>>(
      p.act, x.f32(), scale.f32(), shift.f32(), y.f32(), cuda::to_int(p.c, "channel_affine", "c"),
      cuda::to_int(p.inner, "channel_affine", "inner"), n);
  after_launch("channel_affine_kernel");
}

}  // namespace repshare
