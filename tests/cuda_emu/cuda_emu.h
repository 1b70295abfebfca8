// Force-included (g++ -include) into every CUDA source of the emulated build
// (REPSHARE_CUDA_EMU, see tests/cuda_emu/README.md): the .cu files, their launches
// rewritten by translate.pl, compile as C++ and their kernels run on the CPU,
// one block at a time, each CUDA thread a fiber that switches only at barriers.
// This header gives kernel code what nvcc would: the qualifiers, threadIdx and
// friends, __syncthreads, warp shuffles, atomics, wmma's fragments and the launch
// itself.
#pragma once

#include <cuda_runtime.h>
#include <cuda_fp16.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>

#include "tests/cuda_emu/emu_api.h"

#undef __global__
#undef __device__
#undef __host__
#undef __forceinline__
#undef __shared__
#undef __launch_bounds__
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
// One OS thread runs a block's fibers, and blocks one after the other: a function's
// static is what the block's threads share.
#define __shared__ static
#define __launch_bounds__(...)

#define threadIdx (::cuda_emu::thread_idx())
#define blockIdx (::cuda_emu::block_idx())
#define blockDim (::cuda_emu::block_dim())
#define gridDim (::cuda_emu::grid_dim())

inline void __syncthreads() { ::cuda_emu::sync_block(__builtin_return_address(0)); }

template <typename T>
inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  static_assert(std::is_trivially_copyable<T>::value && sizeof(T) <= 8, "shuffle of T");
  T out = v;
  ::cuda_emu::shuffle_down(mask, &v, &out, sizeof(T), delta, width);
  return out;
}

// Blocks run on one OS thread and fibers switch only at barriers: a read-modify-
// write is atomic as it stands. (The address may be device or shared memory.)
template <typename T>
inline T atomicAdd(T* address, T v) {
  const T old = *address;
  *address = old + v;
  return old;
}

// Blocks run one after another: every write is visible to the blocks after it.
inline void __threadfence() {}

inline float __uint_as_float(unsigned v) {
  float f;
  std::memcpy(&f, &v, sizeof f);
  return f;
}
inline unsigned __float_as_uint(float f) {
  unsigned v;
  std::memcpy(&v, &f, sizeof v);
  return v;
}

// 1 + the index of the lowest set bit, 0 for none.
inline int __ffsll(long long v) { return __builtin_ffsll(v); }

using std::max;
using std::min;

// Tensor-core matrix fragments (mma.h's nvcuda::wmma, 16x16x16 shapes). A real
// fragment spreads its tile over the warp's registers in an unspecified layout;
// here every lane holds the whole tile and does the whole operation, which gives
// every lane the same results a warp-wide operation gives: kernels may not depend
// on which lane holds which element, and these do not. Products are summed in fp32
// in k order (a tensor core's order is unspecified, so tests compare with a tolerance).
namespace nvcuda {
namespace wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
  static_assert(M == 16 && N == 16 && K == 16, "the emulation has the 16x16x16 shapes");
  static constexpr int rows = std::is_same<Use, matrix_b>::value ? K : M;
  static constexpr int cols = std::is_same<Use, matrix_a>::value ? K : N;
  static constexpr int num_elements = rows * cols;
  T x[rows * cols];  // row-major
};

template <typename F, typename T>
inline void fill_fragment(F& f, T v) {
  for (auto& e : f.x) e = v;
}

template <typename Use, typename T, typename Layout>
inline void load_matrix_sync(fragment<Use, 16, 16, 16, T, Layout>& f, const T* p, unsigned ldm) {
  ::cuda_emu::check_wmma_operand("load_matrix_sync", p, ldm, sizeof(T));
  using F = fragment<Use, 16, 16, 16, T, Layout>;
  const bool row = std::is_same<Layout, row_major>::value;
  for (int r = 0; r < F::rows; ++r)
    for (int c = 0; c < F::cols; ++c) f.x[r * F::cols + c] = row ? p[r * ldm + c] : p[c * ldm + r];
}

template <typename T>
inline void store_matrix_sync(T* p, const fragment<accumulator, 16, 16, 16, T>& f, unsigned ldm,
                              layout_t layout) {
  ::cuda_emu::check_wmma_operand("store_matrix_sync", p, ldm, sizeof(T));
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c)
      (layout == mem_row_major ? p[r * ldm + c] : p[c * ldm + r]) = f.x[r * 16 + c];
}

template <typename TA, typename LA, typename TB, typename LB, typename TC>
inline void mma_sync(fragment<accumulator, 16, 16, 16, TC>& d,
                     const fragment<matrix_a, 16, 16, 16, TA, LA>& a,
                     const fragment<matrix_b, 16, 16, 16, TB, LB>& b,
                     const fragment<accumulator, 16, 16, 16, TC>& c) {
  float af[256], bf[256];
  for (int i = 0; i < 256; ++i) {
    af[i] = static_cast<float>(a.x[i]);
    bf[i] = static_cast<float>(b.x[i]);
  }
  for (int r = 0; r < 16; ++r)
    for (int col = 0; col < 16; ++col) {
      float s = static_cast<float>(c.x[r * 16 + col]);
      for (int k = 0; k < 16; ++k) s += af[r * 16 + k] * bf[k * 16 + col];
      d.x[r * 16 + col] = static_cast<TC>(s);
    }
}

}  // namespace wmma
}  // namespace nvcuda

namespace cuda_emu {

// kernel<<<grid, block, shared, stream>>>(args) becomes
// cuda_emu::launch("kernel", grid, block, shared, stream)(kernel, args): the
// arguments are converted to the kernel's parameter types and copied now, as a
// launch copies them, and the kernel runs when the stream reaches it.
struct Launch {
  const char* name;
  dim3 grid, block;
  size_t shared_bytes;
  cudaStream_t stream;

  template <typename... P, typename... A>
  void operator()(void (*kernel)(P...), A&&... args) const {
    static_assert(sizeof...(P) == sizeof...(A), "kernel argument count");
    std::tuple<typename std::decay<P>::type...> params(std::forward<A>(args)...);
    check_pointer_params(params, std::index_sequence_for<P...>());
    enqueue_kernel(name, grid, block, shared_bytes, stream,
                   [kernel, params]() { std::apply(kernel, params); });
  }

 private:
  // Pointer parameters must be null or point into device memory: a host pointer
  // would work here but fault on a GPU.
  template <typename Tuple, size_t... I>
  void check_pointer_params(const Tuple& params, std::index_sequence<I...>) const {
    int unused[] = {0, (check_param(std::get<I>(params), static_cast<int>(I)), 0)...};
    (void)unused;
  }
  template <typename T>
  void check_param(const T& v, int index) const {
    if constexpr (std::is_pointer<T>::value)
      check_kernel_pointer(name, index, static_cast<const void*>(v));
    else
      (void)v, (void)index;
  }
};

inline Launch launch(const char* name, dim3 grid, dim3 block, size_t shared_bytes = 0,
                     cudaStream_t stream = nullptr) {
  return Launch{name, grid, block, shared_bytes, stream};
}

}  // namespace cuda_emu
