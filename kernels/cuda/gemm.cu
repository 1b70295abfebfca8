// Batched GEMM through cuBLAS, then bias and activation in one epilogue kernel; a
// single output row (a classifier at batch 1) in one kernel of its own.
#include "kernels/cpu/activation_math.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_storage.cuh"
#include "kernels/cuda/cuda_util.h"
#include "kernels/cuda/row_reduce.cuh"

namespace repshare {
namespace {

// c[b, i, j] = act(c + beta * bias(i, j)) with bias(i, j) as GemmParams defines it
// (bias null: only the activation).
template <typename T>
__global__ void gemm_epilogue_kernel(Activation act, const T* __restrict__ bias, float beta,
                                     int bias_rows, int bias_cols, T* c, int m, int n,
                                     int c_batch_stride, int total) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= total) return;
  const int col = i % n, row = (i / n) % m, b = i / (m * n);
  T* out = c + static_cast<size_t>(b) * c_batch_stride + row * n + col;
  float v = cuda::as_float(*out);
  if (bias)
    v += beta * cuda::as_float(
                    bias[(bias_rows == 1 ? 0 : row) * bias_cols + (bias_cols == 1 ? 0 : col)]);
  *out = cuda::stored<T>(apply_activation(act, v));
}

// One output row (m = 1, batch 1: a classifier's logits):
// y[j] = act(alpha * a . op(B)[:, j] + beta * bias(0, j)) in one launch, where cuBLAS
// and the epilogue took two, one after the other. A warp per output: its lanes
// stride along k (B's row j where B is transposed, as a classifier's weights are,
// so the reads are coalesced; else its column j), then a shuffle sum.
template <typename T>
__global__ void gemm_row_kernel(Activation act, const T* __restrict__ a,
                                const T* __restrict__ b, bool trans_b,
                                const T* __restrict__ bias, int bias_cols, float alpha,
                                float beta, int n, int k, T* __restrict__ y) {
  const int j = (blockIdx.x * blockDim.x + threadIdx.x) / 32, lane = threadIdx.x % 32;
  if (j >= n) return;  // a whole warp: blockDim is a multiple of 32
  float s = 0.f;
  // Unrolled for loads in flight (a classifier: 1,000 warps of 40 loads); the sum
  // keeps its order.
#pragma unroll 8
  for (int kk = lane; kk < k; kk += 32) {
    const T bv =
        trans_b ? b[static_cast<size_t>(j) * k + kk] : b[static_cast<size_t>(kk) * n + j];
    s += cuda::as_float(a[kk]) * cuda::as_float(bv);
  }
  s = cuda::warp_combine(s, [](float x, float z) { return x + z; });
  if (lane == 0) {
    float v = alpha * s;
    if (bias) v += beta * cuda::as_float(bias[bias_cols == 1 ? 0 : j]);
    y[j] = cuda::stored<T>(apply_activation(act, v));
  }
}

}  // namespace

void cuda::gemm_strided_batched(cublasHandle_t handle, DType storage, DType c_storage,
                                cublasOperation_t op_a, cublasOperation_t op_b, int m, int n,
                                int k, float alpha, const void* a, int lda, long long stride_a,
                                const void* b, int ldb, long long stride_b, float beta, void* c,
                                int ldc, long long stride_c, int batch) {
  const cudaDataType_t type = library_type(storage), c_type = library_type(c_storage);
  // cuBLAS 11 takes a compute type of its own; 10.2's (JetPack 4) a data type.
#if CUBLAS_VER_MAJOR >= 11
  const cublasComputeType_t compute = CUBLAS_COMPUTE_32F;
#else
  const cudaDataType_t compute = CUDA_R_32F;
#endif
  REPSHARE_CUBLAS(cublasGemmStridedBatchedEx(handle, op_a, op_b, m, n, k, &alpha, a, type, lda,
                                             stride_a, b, type, ldb, stride_b, &beta, c, c_type,
                                             ldc, stride_c, batch, compute, CUBLAS_GEMM_DEFAULT));
}

void CudaBackend::gemm(const GemmParams& p, const Tensor& a, const Tensor& b, const Tensor* bias,
                       Tensor& y) {
  const char* op = "gemm";
  const int batch = cuda::to_int(p.batch, op, "batch");
  const int m = cuda::to_int(p.m, op, "m"), n = cuda::to_int(p.n, op, "n");
  const int k = cuda::to_int(p.k, op, "k");
  const int c_stride = cuda::to_int(p.c_batch_stride, op, "c_batch_stride");
  const int total = cuda::to_int(p.batch * p.m * p.n, op, "output numel");
  if (total == 0) return;
  // Row-major C[m,n] is column-major C^T[n,m] = op(B)^T . op(A)^T, and a row-major
  // matrix read column-major is its transpose: so cuBLAS gets B then A, each
  // transposed exactly when GemmParams says so, with their row-major row lengths
  // as leading dimensions.
  const cublasOperation_t op_b = p.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_a = p.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  const int ld_b = p.trans_b ? k : n;
  const int ld_a = p.trans_a ? m : k;
  const size_t element = dtype_size(y.dtype);
  const bool has_bias = bias && p.bias_rows > 0 && p.bias_cols > 0;
  if (batch == 1 && m == 1 && k > 0) {
    const int bias_cols = cuda::to_int(p.bias_cols, op, "bias_cols");
    cuda::with_storage(y.dtype, op, [&](auto tag) {
      using T = decltype(tag);
      const int threads = cuda::to_int(32 * p.n, op, "threads (a warp per output)");
      gemm_row_kernel<T><<<cuda::blocks_for(threads), cuda::kBlock, 0, stream_>>>(
          p.act, cuda::data<T>(a), cuda::data<T>(b), p.trans_b,
          has_bias ? cuda::data<T>(*bias) : nullptr, bias_cols, p.alpha, p.beta, n, k,
          cuda::data<T>(y));
    });
    after_launch("gemm_row_kernel");
    return;
  }
  if (k == 0) {
    // An empty product is 0; cuBLAS would also scale by beta = 0, but says nothing
    // about reading A and B, so the zeros are written here.
    for (int bi = 0; bi < batch; ++bi)
      REPSHARE_CUDA(cudaMemsetAsync(static_cast<char*>(y.data) + element * bi * c_stride, 0,
                                    element * m * n, stream_));
  } else {
    before_library_call();
    cuda::gemm_strided_batched(cublas_, y.dtype, y.dtype, op_b, op_a, n, m, k, p.alpha, b.data,
                               ld_b, p.b_batch_stride, a.data, ld_a, p.a_batch_stride, 0.f,
                               y.data, n, p.c_batch_stride, batch);
    after_library_call();
  }
  if (has_bias || p.act.kind != ActKind::None) {
    const int bias_rows = cuda::to_int(p.bias_rows, op, "bias_rows");
    const int bias_cols = cuda::to_int(p.bias_cols, op, "bias_cols");
    cuda::with_storage(y.dtype, op, [&](auto tag) {
      using T = decltype(tag);
      gemm_epilogue_kernel<T><<<cuda::blocks_for(total), cuda::kBlock, 0, stream_>>>(
          p.act, has_bias ? cuda::data<T>(*bias) : nullptr, p.beta, bias_rows, bias_cols,
          cuda::data<T>(y), m, n, c_stride, total);
    });
    after_launch("gemm_epilogue_kernel");
  }
}

}  // namespace repshare
