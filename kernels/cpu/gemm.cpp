#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_kernels.h"

namespace repshare {
namespace {

// C[r0:r1, c0:c1] = act(C + beta * bias), bias broadcast as GemmParams describes.
void gemm_epilogue(const GemmParams& p, const float* bias, float* c, int64_t r0, int64_t r1,
                   int64_t c0, int64_t c1) {
  for (int64_t i = r0; i < r1; ++i) {
    float* row = c + i * p.n;
    if (bias && p.bias_cols == 1) {  // one value per row: fold it into the activation pass
      cpu::activation_span(p.act, row + c0, row + c0, c1 - c0,
                           p.beta * bias[p.bias_rows == 1 ? 0 : i]);
      continue;
    }
    if (bias) {
      const float* brow = bias + (p.bias_rows == 1 ? 0 : i) * p.bias_cols;
      for (int64_t j = c0; j < c1; ++j) row[j] += p.beta * brow[j];
    }
    cpu::activation_span(p.act, row + c0, row + c0, c1 - c0);
  }
}

}  // namespace

void CpuBackend::gemm(const GemmParams& p, const Tensor& a, const Tensor& b, const Tensor* bias,
                      Tensor& y) {
  const float* bd = bias && p.bias_rows > 0 && p.bias_cols > 0 ? bias->f32() : nullptr;
  auto args_for = [&](int64_t batch) {
    cpu::SgemmArgs g;
    g.m = p.m;
    g.n = p.n;
    g.k = p.k;
    g.trans_a = p.trans_a;
    g.trans_b = p.trans_b;
    g.alpha = p.alpha;
    g.a = a.f32() + batch * p.a_batch_stride;
    g.lda = p.trans_a ? p.m : p.k;
    g.b = b.f32() + batch * p.b_batch_stride;
    g.ldb = p.trans_b ? p.k : p.n;
    g.c = y.f32() + batch * p.c_batch_stride;
    g.ldc = p.n;
    return g;
  };
  // Many small products (attention-like MatMuls): one whole product per thread.
  if (p.batch >= threads_ && p.batch > 1) {
#pragma omp parallel for num_threads(threads_) schedule(static) if (p.batch * p.m * p.n * p.k >= cpu::kMinParallelWork)
    for (int64_t i = 0; i < p.batch; ++i) {
      const cpu::SgemmArgs g = args_for(i);
      cpu::sgemm_block(g, 0, p.m, 0, p.n);
      gemm_epilogue(p, bd, g.c, 0, p.m, 0, p.n);
    }
    return;
  }
  for (int64_t i = 0; i < p.batch; ++i) {
    const cpu::SgemmArgs g = args_for(i);
    cpu::parallel_sgemm(threads_, g, [&](int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
      gemm_epilogue(p, bd, g.c, r0, r1, c0, c1);
    });
  }
}

}  // namespace repshare
