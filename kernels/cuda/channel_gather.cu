// Sharing adapter: y[n, t, i] = x[n, index[t], i].
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_storage.cuh"
#include "kernels/cuda/cuda_util.h"

namespace repshare {
namespace {

template <typename T>
__global__ void channel_gather_kernel(const T* x, const int64_t* index, T* y, int c_in, int c_out,
                                      int inner, int total) {
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
  cuda::with_storage(y.dtype, "channel_gather", [&](auto tag) {
    using T = decltype(tag);
    channel_gather_kernel<T><<<cuda::blocks_for(total), cuda::kBlock, 0, stream_>>>(
        cuda::data<T>(x), index.i64(), cuda::data<T>(y), static_cast<int>(p.c_in),
        static_cast<int>(p.c_out), static_cast<int>(p.inner), total);
  });
  after_launch("channel_gather_kernel");
}

}  // namespace repshare
