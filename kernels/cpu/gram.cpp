#include <cblas.h>

#include "kernels/cpu/cpu_backend.h"

namespace repshare {

// The one BLAS call that gets the backend's threads from OpenBLAS itself: a
// float64 syrk is one big call, not a graph of small ones split across OpenMP.
void CpuBackend::gram_accumulate(int64_t n, int64_t cols, const double* x, double* k) {
  if (n == 0 || cols == 0) return;
  openblas_set_num_threads(threads_);
  cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, static_cast<int>(n), static_cast<int>(cols),
              1.0, x, static_cast<int>(cols), 1.0, k, static_cast<int>(n));
  openblas_set_num_threads(1);
}

}  // namespace repshare
