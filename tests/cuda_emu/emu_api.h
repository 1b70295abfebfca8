// What the emulated kernels (through cuda_emu.h) call in the emulator's runtime
// (runtime.cpp). Not part of CUDA's API.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <functional>

namespace cuda_emu {

const uint3& thread_idx();
const uint3& block_idx();
const dim3& block_dim();
const dim3& grid_dim();

// __syncthreads: `site` tells barriers apart, so threads of a block waiting at
// different __syncthreads (divergent code) are reported instead of released.
void sync_block(const void* site);
// __shfl_down_sync: `out` gets `bytes` from lane + delta (within `width`), or
// stays as it is past the end; every lane in `mask` must take part.
void shuffle_down(unsigned mask, const void* in, void* out, size_t bytes, unsigned delta, int width);

// extern __shared__ T name[] becomes T* name = (T*)dynamic_shared(): the launch's
// shared-memory bytes, one buffer per block.
void* dynamic_shared();

// Aborts naming the kernel unless p is null or inside a cudaMalloc block.
void check_kernel_pointer(const char* kernel, int param, const void* p);

// wmma::load/store_matrix_sync's rules: p 32-byte aligned, ldm * element_bytes a
// multiple of 16; aborts naming the call otherwise.
void check_wmma_operand(const char* call, const void* p, unsigned ldm, size_t element_bytes);

void enqueue_kernel(const char* name, dim3 grid, dim3 block, size_t shared_bytes,
                    cudaStream_t stream, std::function<void()> body);

// For tests of what a backend does when CUDA fails: the events created and not yet
// destroyed, and a failure (cudaErrorMemoryAllocation) of every cudaEventCreate
// after the next `successes` ones (negative: none fails, as at start).
size_t live_events();
void fail_event_creates_after(int successes);

// How often the host has waited for the GPU: stream and event synchronisations and
// copies into pageable host memory (which CUDA returns from only once done).
size_t host_waits();

// The graph instantiated last: its nodes, and the longest chain of them each
// waiting for the one before (at batch 1 what a replay's time follows: each such
// node waits out the one before it, however little work it has).
struct GraphShape {
  size_t nodes = 0, longest_chain = 0;
};
GraphShape last_graph_shape();

}  // namespace cuda_emu
