// Sharing adapter: y[n, t, i] = x[n, index[t], i].
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_util.h"

namespace repshare {
namespace {

__global__ void channel_gather_kernel(const float* x, const int64_t* index, float* y, int c_in,
                                      int c_out, int inner, int total) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= total) return;
  const int pos = i % inner;
  const int plane = i / inner;
  const int t = plane % c_out, n = plane / c_out;
  y[i] = x[(n * c_in + static_cast<int>(index[t])) * inner + pos];
}

}  // namespace

void CudaBackend::channel_gather(const ChannelGatherParams& p, const Tensor& x,
                                 const Tensor& index, Tensor& y) {
  const int total = cuda::to_int(p.n * p.c_out * p.inner, "channel_gather", "numel");
  cuda::to_int(p.n * p.c_in * p.inner, "channel_gather", "input numel");
  if (total == 0) return;
  channel_gather_kernel<<<cuda::blocks_for(total), cuda::kBlock, 0, stream_>>>(
      x.f32(), index.i64(), y.f32(), static_cast<int>(p.c_in), static_cast<int>(p.c_out),
      static_cast<int>(p.inner), total);
  after_launch("channel_gather_kernel");
}

}  // namespace repshare
