// Generic strided copy (Transpose, Concat, Slice, Split):
// y[out_offset + sum idx*out_strides] = x[in_offset + sum idx*in_strides].
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_storage.cuh"
#include "kernels/cuda/cuda_util.h"

namespace repshare {
namespace {

struct Copy32 {
  int rank;
  int dims[kMaxRank];
  int in_strides[kMaxRank];
  int out_strides[kMaxRank];
};

// Strides may be negative (a Slice with a negative step). Threads walk the index space in row-major order of dims; the last axis is
// usually the contiguous one on at least one side, so one side is coalesced.
template <typename T>
__global__ void strided_copy_kernel(Copy32 p, const T* __restrict__ x, T* __restrict__ y,
                                    int total) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= total) return;
  int rest = i, in = 0, out = 0;
  for (int d = p.rank - 1; d >= 0; --d) {
    const int idx = rest % p.dims[d];
    rest /= p.dims[d];
    in += idx * p.in_strides[d];
    out += idx * p.out_strides[d];
  }
  y[out] = x[in];
}

}  // namespace

void CudaBackend::strided_copy(const CopyParams& p, const Tensor& x, Tensor& y) {
  const char* op = "strided_copy";
  check(p.rank >= 0 && p.rank <= kMaxRank, ErrorKind::Unsupported, "cuda strided_copy: rank ",
        p.rank);
  Copy32 q = {};
  q.rank = p.rank;
  int64_t total = 1;
  for (int d = 0; d < p.rank; ++d) {
    q.dims[d] = cuda::to_int(p.dims[d], op, "dimension");
    q.in_strides[d] = cuda::to_signed_int(p.in_strides[d], op, "input stride");
    q.out_strides[d] = cuda::to_signed_int(p.out_strides[d], op, "output stride");
    total *= p.dims[d];
  }
  const int n = cuda::to_int(total, op, "numel");
  if (n == 0) return;
  // The offsets are applied to the pointers on the host: the kernel's int index
  // math then only spans the copied window.
  cuda::with_storage(y.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    strided_copy_kernel<T><<<cuda::blocks_for(n), cuda::kBlock, 0, stream_>>>(
        q, cuda::data<T>(x) + p.in_offset, cuda::data<T>(y) + p.out_offset, n);
  });
  after_launch("strided_copy_kernel");
}

}  // namespace repshare
