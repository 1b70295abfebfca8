#include "kernels/cpu/cpu_backend.h"

#include <cblas.h>
#include <omp.h>
#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif

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
  saved_fp_modes_.resize(static_cast<size_t>(threads_));
}

namespace {

// The calling thread's floating-point control word, and the same with subnormal
// inputs and results flushed to zero: MXCSR's DAZ and FTZ bits on x86, FPCR's FZ on
// AArch64 (which flushes both).
#if defined(__x86_64__) || defined(__i386__)
using FpMode = unsigned;
FpMode fp_mode() { return _mm_getcsr(); }
void set_fp_mode(FpMode m) { _mm_setcsr(m); }
constexpr FpMode kFlushSubnormals = 0x8040;  // FTZ (bit 15) | DAZ (bit 6)
#elif defined(__aarch64__)
using FpMode = uint64_t;
FpMode fp_mode() {
  uint64_t m;
  asm volatile("mrs %0, fpcr" : "=r"(m));
  return m;
}
void set_fp_mode(FpMode m) { asm volatile("msr fpcr, %0" : : "r"(m)); }
constexpr FpMode kFlushSubnormals = FpMode(1) << 24;  // FZ
#else
using FpMode = unsigned;
FpMode fp_mode() { return 0; }
void set_fp_mode(FpMode) {}
constexpr FpMode kFlushSubnormals = 0;
#endif

}  // namespace

void CpuBackend::run_inference(const std::function<void()>& steps) {
  // Each thread of the team keeps its own mode; libgomp serves every parallel
  // region of this size with the same threads, so setting it once per inference
  // holds for all the kernels' regions (and OpenBLAS runs single-threaded on them).
  std::vector<uint64_t>& saved = saved_fp_modes_;
#pragma omp parallel num_threads(threads_)
  {
    const size_t t = static_cast<size_t>(omp_get_thread_num());
    saved[t] = fp_mode();
    set_fp_mode(static_cast<FpMode>(saved[t]) | kFlushSubnormals);
  }
  struct Restore {  // also when a step throws
    const std::vector<uint64_t>& saved;
    int threads;
    ~Restore() {
#pragma omp parallel num_threads(threads)
      set_fp_mode(static_cast<FpMode>(saved[static_cast<size_t>(omp_get_thread_num())]));
    }
  } restore{saved, threads_};
  steps();
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
