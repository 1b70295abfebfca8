// Batched GEMM through cuBLAS, then bias and activation in one epilogue kernel.
#include "kernels/cpu/activation_math.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_util.h"

namespace repshare {
namespace {

// c[b, i, j] = act(c + beta * bias(i, j)) with bias(i, j) as GemmParams defines it
// (bias null: only the activation).
__global__ void gemm_epilogue_kernel(Activation act, const float* __restrict__ bias,
                                     float beta, int bias_rows, int bias_cols, float* c, int m,
                                     int n, int c_batch_stride, int total) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= total) return;
  const int col = i % n, row = (i / n) % m, b = i / (m * n);
  float* out = c + static_cast<size_t>(b) * c_batch_stride + row * n + col;
  float v = *out;
  if (bias)
    v += beta * bias[(bias_rows == 1 ? 0 : row) * bias_cols + (bias_cols == 1 ? 0 : col)];
  *out = apply_activation(act, v);
}

}  // namespace

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
  const float zero = 0.f;
  if (k == 0) {
    // An empty product is 0; cuBLAS would also scale by beta = 0, but says nothing
    // about reading A and B, so the zeros are written here.
    for (int bi = 0; bi < batch; ++bi)
      REPSHARE_CUDA(cudaMemsetAsync(y.f32() + static_cast<size_t>(bi) * c_stride, 0,
                                    sizeof(float) * m * n, stream_));
  } else {
    REPSHARE_CUBLAS(cublasSgemmStridedBatched(cublas_, op_b, op_a, n, m, k, &p.alpha, b.f32(),
                                              ld_b, p.b_batch_stride, a.f32(), ld_a,
                                              p.a_batch_stride, &zero, y.f32(), n,
                                              p.c_batch_stride, batch));
  }
  const bool has_bias = bias && p.bias_rows > 0 && p.bias_cols > 0;
  if (has_bias || p.act.kind != ActKind::None) {
    gemm_epilogue_kernel<<<cuda::blocks_for(total), cuda::kBlock, 0, stream_>>>(
        p.act, has_bias ? bias->f32() : nullptr, p.beta,
        cuda::to_int(p.bias_rows, op, "bias_rows"), cuda::to_int(p.bias_cols, op, "bias_cols"),
        y.f32(), m, n, c_stride, total);
    after_launch("gemm_epilogue_kernel");
  }
}

}  // namespace repshare
