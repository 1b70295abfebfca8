// Channel affine (an unfolded BatchNorm): y[n, c, i] = act(x * scale[c] + shift[c]).
#include "kernels/cpu/activation_math.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_storage.cuh"
#include "kernels/cuda/cuda_util.h"

namespace repshare {
namespace {

template <typename T>
__global__ void channel_affine_kernel(Activation act, const T* x, const T* scale, const T* shift,
                                      T* y, int channels, int inner, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const int c = (i / inner) % channels;
  y[i] = cuda::stored<T>(apply_activation(
      act, cuda::as_float(x[i]) * cuda::as_float(scale[c]) + cuda::as_float(shift[c])));
}

}  // namespace

void CudaBackend::channel_affine(const ChannelAffineParams& p, const Tensor& x,
                                 const Tensor& scale, const Tensor& shift, Tensor& y) {
  const int n = cuda::to_int(p.n * p.c * p.inner, "channel_affine", "n*c*inner");
  if (n == 0) return;
  const int c = cuda::to_int(p.c, "channel_affine", "c");
  const int inner = cuda::to_int(p.inner, "channel_affine", "inner");
  cuda::with_storage(y.dtype, "channel_affine", [&](auto tag) {
    using T = decltype(tag);
    channel_affine_kernel<T><<<cuda::blocks_for(n), cuda::kBlock, 0, stream_>>>(
        p.act, cuda::data<T>(x), cuda::data<T>(scale), cuda::data<T>(shift), cuda::data<T>(y), c,
        inner, n);
  });
  after_launch("channel_affine_kernel");
}

}  // namespace repshare
