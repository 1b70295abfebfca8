// gram_accumulate with cuBLAS's float64 syrk.
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_util.h"

namespace repshare {

void CudaBackend::gram_accumulate(int64_t n, int64_t cols, const double* x, double* k) {
  if (n == 0 || cols == 0) return;
  const char* op = "gram_accumulate";
  const int ni = cuda::to_int(n, op, "n"), ci = cuda::to_int(cols, op, "cols");
  // cuBLAS is column-major: row-major x [n, cols] is column-major x^T [cols, n]
  // with leading dimension cols, so x x^T = (x^T)^T (x^T) is syrk with op T; and
  // the row-major upper triangle of k is the column-major lower one.
  const double one = 1.0;
  before_library_call();
  REPSHARE_CUBLAS(cublasDsyrk(cublas_, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_T, ni, ci, &one, x, ci,
                              &one, k, ni));
  after_library_call();
}

}  // namespace repshare
