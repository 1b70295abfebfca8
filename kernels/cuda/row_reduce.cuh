// The order in which the CUDA backend combines the elements of one row (a plane's
// global pool, a mean, a max): reduce's kernels and the conv kernels that fuse a
// channel mean (conv2d_channel_mean) use it alike, so that the fused mean has the
// bits of conv followed by reduce (backend.h's promise).
//
// Rows of at most kWarpRow elements: one warp, lane l combining elements l, l + 32,
// ... in order, then a shuffle tree. Longer rows, chunk by chunk of kLongRowChunk
// elements: a block of kLongRowBlock threads, thread t combining the chunk's elements
// t, t + kLongRowBlock, ... in order, then each warp's shuffle tree, then warp 0's
// over the warps; then the chunks' results, left to right. One warp per row of D0's
// 256x256 planes left 32 warps to sum 2M values (about 0.1 ms on an H200); the chunks
// let a few long rows spread over blocks, a chunk each, with the bits of one block
// taking the chunks in turn (conv2d.cu's plane_mean_split_kernel).
#pragma once

namespace repshare {
namespace cuda {

constexpr int kWarpRow = 1024;
constexpr int kLongRowBlock = 1024;
constexpr int kLongRowChunk = 4 * kLongRowBlock;

// The shuffle tree of one warp: lane 0 ends with the warp's result.
template <typename Combine>
__device__ __forceinline__ float warp_combine(float acc, Combine combine) {
  for (int offset = 16; offset > 0; offset /= 2)
    acc = combine(acc, __shfl_down_sync(0xffffffffu, acc, offset));
  return acc;
}

// Every thread of the block calls it with its partial; thread 0 gets the block's
// result. `identity` fills warp 0's lanes beyond the block's warps. `partials`
// is 32 floats of shared memory.
template <typename Combine>
__device__ __forceinline__ float block_combine(float acc, float identity, Combine combine,
                                               float* partials) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  acc = warp_combine(acc, combine);
  if (lane == 0) partials[warp] = acc;
  __syncthreads();
  if (warp != 0) return identity;
  return warp_combine(lane < static_cast<int>(blockDim.x / 32) ? partials[lane] : identity,
                      combine);
}

// A thread's values value(o) for o = first, first + step, ... below end, each then
// given to keep(o, v) in that order. kValuesAtOnce values are computed before any is
// kept: keep may store (the conv kernels that fuse a mean store each output), and a
// value computed after a store could not load before it. In turn, a thread's outputs
// waited for each other's loads (D0's 256x256 depthwise convs: 4 per thread, 36 us on
// an H200).
// A value is whatever value() returns (a float; or what keep() needs besides, such as
// where to store it, so that keep() does not work it out again).
constexpr int kValuesAtOnce = 4;

template <typename Value, typename Keep>
__device__ __forceinline__ void for_each_value(int first, int end, int step, Value value,
                                               Keep keep) {
  int o = first;
  for (; o < end - (kValuesAtOnce - 1) * step; o += kValuesAtOnce * step) {
    decltype(value(o)) v[kValuesAtOnce];
#pragma unroll
    for (int u = 0; u < kValuesAtOnce; ++u) v[u] = value(o + u * step);
#pragma unroll
    for (int u = 0; u < kValuesAtOnce; ++u) keep(o + u * step, v[u]);
  }
  for (; o < end; o += step) keep(o, value(o));
}

// A keep that keeps nothing: reductions of values already in memory.
struct KeepNothing {
  __device__ __forceinline__ void operator()(int, float) const {}
};

// The end of the chunk of a row of len elements that starts at begin.
__host__ __device__ __forceinline__ int chunk_end(int begin, int len) {
  return begin + kLongRowChunk < len ? begin + kLongRowChunk : len;
}

// A block's combination of value(o) for o in [begin, end), at most kLongRowChunk
// elements (one chunk of a long row), each also given to keep(o, v): thread 0 gets it.
// `partials` as block_combine's.
template <typename Value, typename Keep, typename Combine>
__device__ __forceinline__ float block_combine_chunk(int begin, int end, Value value, Keep keep,
                                                     float identity, Combine combine,
                                                     float* partials) {
  float acc = identity;
  for_each_value(begin + static_cast<int>(threadIdx.x), end, static_cast<int>(blockDim.x), value,
                 [&](int o, float v) {
                   keep(o, v);
                   acc = combine(acc, v);
                 });
  return block_combine(acc, identity, combine, partials);
}

// A long row's combination, value(o) for o in [0, len), chunk by chunk: thread 0 gets
// it. Every thread of the block calls it; each value(o) is called once, and given to
// keep(o, v).
template <typename Value, typename Keep, typename Combine>
__device__ __forceinline__ float block_combine_row(int len, Value value, Keep keep,
                                                   float identity, Combine combine,
                                                   float* partials) {
  float row = identity;
  for (int begin = 0; begin < len; begin += kLongRowChunk) {
    const float chunk = block_combine_chunk(begin, chunk_end(begin, len), value, keep, identity,
                                            combine, partials);
    if (threadIdx.x == 0) row = begin == 0 ? chunk : combine(row, chunk);
    __syncthreads();  // warp 0 has read `partials` before the next chunk writes them
  }
  return row;
}

}  // namespace cuda
}  // namespace repshare
