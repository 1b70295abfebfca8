// y = x between the F32 edges of an executor and fp16 storage (round to nearest
// even, as engine/half.h on the CPU).
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_storage.cuh"
#include "kernels/cuda/cuda_util.h"

namespace repshare {
namespace {

template <typename From, typename To>
__global__ void convert_kernel(const From* __restrict__ x, To* __restrict__ y, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = cuda::stored<To>(cuda::as_float(x[i]));
}

}  // namespace

void CudaBackend::convert(const Tensor& x, Tensor& y) {
  const int n = cuda::to_int(x.numel(), "convert", "numel");
  check(y.numel() == x.numel(), ErrorKind::Shape, "cuda convert: ", x.numel(), " elements into ",
        y.numel());
  if (n == 0) return;
  cuda::with_storage(x.dtype, "convert", [&](auto from) {
    cuda::with_storage(y.dtype, "convert", [&](auto to) {
      using From = decltype(from);
      using To = decltype(to);
      convert_kernel<From, To><<<cuda::blocks_for(n), cuda::kBlock, 0, stream_>>>(
          cuda::data<From>(x), cuda::data<To>(y), n);
    });
  });
  after_launch("convert_kernel");
}

}  // namespace repshare
