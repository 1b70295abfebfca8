// Elementwise binary op with NumPy broadcasting and a fused activation.
#include "kernels/cpu/activation_math.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_storage.cuh"
#include "kernels/cuda/cuda_util.h"

namespace repshare {
namespace {

// BroadcastParams with 32-bit sizes (see cuda::to_int).
struct Broadcast32 {
  bool no_broadcast;  // a and b both laid out like y: skip the index arithmetic
  int rank;
  int out_dims[kMaxRank];
  int a_strides[kMaxRank];
  int b_strides[kMaxRank];
};

__device__ __forceinline__ float binary_op(BinaryOp op, float a, float b) {
  switch (op) {
    case BinaryOp::Add: return a + b;
    case BinaryOp::Sub: return a - b;
    case BinaryOp::Mul: return a * b;
    case BinaryOp::Div: return a / b;
    case BinaryOp::Pow: return powf(a, b);
    case BinaryOp::Max: return fmaxf(a, b);
    case BinaryOp::Min: return fminf(a, b);
  }
  return a;
}

template <typename T>
__global__ void binary_kernel(Broadcast32 p, BinaryOp op, Activation act, const T* a, const T* b,
                              T* y, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  int ia = i, ib = i;
  if (!p.no_broadcast) {
    int rest = i;
    ia = 0;
    ib = 0;
    for (int d = p.rank - 1; d >= 0; --d) {
      const int idx = rest % p.out_dims[d];
      rest /= p.out_dims[d];
      ia += idx * p.a_strides[d];
      ib += idx * p.b_strides[d];
    }
  }
  y[i] = cuda::stored<T>(
      apply_activation(act, binary_op(op, cuda::as_float(a[ia]), cuda::as_float(b[ib]))));
}

}  // namespace

void CudaBackend::binary(const BroadcastParams& p, const Tensor& a, const Tensor& b, Tensor& y) {
  check(p.rank >= 0 && p.rank <= kMaxRank, ErrorKind::Unsupported, "cuda binary: rank ", p.rank);
  const int n = cuda::to_int(p.numel, "binary", "numel");
  if (n == 0) return;
  Broadcast32 q = {};
  q.rank = p.rank;
  q.no_broadcast = true;
  int64_t contiguous_stride = 1;
  for (int d = p.rank - 1; d >= 0; --d) {
    q.out_dims[d] = cuda::to_int(p.out_dims[d], "binary", "output dimension");
    q.a_strides[d] = cuda::to_int(p.a_strides[d], "binary", "stride of a");
    q.b_strides[d] = cuda::to_int(p.b_strides[d], "binary", "stride of b");
    if (p.out_dims[d] != 1 &&
        (p.a_strides[d] != contiguous_stride || p.b_strides[d] != contiguous_stride))
      q.no_broadcast = false;
    contiguous_stride *= p.out_dims[d];
  }
  cuda::with_storage(y.dtype, "binary", [&](auto tag) {
    using T = decltype(tag);
    binary_kernel<T><<<cuda::blocks_for(n), cuda::kBlock, 0, stream_>>>(
        q, p.op, p.act, cuda::data<T>(a), cuda::data<T>(b), cuda::data<T>(y), n);
  });
  after_launch("binary_kernel");
}

}  // namespace repshare
