#include "kernels/cpu/cpu_backend.h"

#include <cblas.h>
#include <omp.h>

#include <cstdlib>
#include <cstring>

#include "engine/arena.h"
#include "engine/error.h"

namespace repshare {

CpuBackend::CpuBackend(int threads) : threads_(threads > 0 ? threads : omp_get_max_threads()) {
  // OpenBLAS (pthread build) would start its own pool next to OpenMP's and the two
  // would spin against each other on 2 cores; the kernels split GEMMs across OpenMP
  // threads themselves (cpu::parallel_sgemm) and call OpenBLAS single-threaded.
  // On a loaded machine run with OMP_WAIT_POLICY=passive: libgomp's default spinning
  // made EfficientNet-B0 with 2 threads ~4x slower at load ~12 (it can only be set
  // in the environment, before libgomp starts).
  openblas_set_num_threads(1);
}

void* CpuBackend::alloc(size_t bytes) {
  // aligned_alloc wants a size that is a multiple of the alignment.
  void* p = std::aligned_alloc(kArenaAlignment, align_up(bytes == 0 ? 1 : bytes, kArenaAlignment));
  if (!p) fail(ErrorKind::Backend, "cpu: out of memory allocating ", bytes, " bytes");
  return p;
}

void CpuBackend::free(void* p) { std::free(p); }

void CpuBackend::upload(void* dst, const void* src, size_t bytes) {
  if (bytes) std::memcpy(dst, src, bytes);
}

void CpuBackend::download(void* dst, const void* src, size_t bytes) {
  if (bytes) std::memcpy(dst, src, bytes);
}

void CpuBackend::copy(void* dst, const void* src, size_t bytes) {
  if (bytes && dst != src) std::memmove(dst, src, bytes);
}

}  // namespace repshare
