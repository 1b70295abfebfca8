// 2-D convolution, NCHW. Depthwise, and dense convs with at most 32 taps per output
// (stems): direct kernels with bias and activation fused. Everything else is a GEMM
// per image, batched over groups by cuBLAS:
//   Y_g[Cout_g, Ho*Wo] = W_g[Cout_g, Cin_g*KH*KW] . X_g[Cin_g*KH*KW, Ho*Wo]
// where X_g is the input itself for 1x1/stride-1/no-pad convolutions and an
// im2col copy in the workspace otherwise; a bias+activation epilogue follows.
// conv2d_residual adds its residual in the same epilogue (or the depthwise kernel)
// instead of a separate elementwise add; a separable conv whose 1x1 half ends at its
// bias starts the GEMM's output from that bias, written by the depthwise kernel, and
// needs no epilogue. conv2d_channel_mean averages each plane in
// the depthwise kernel (a block per plane where the planes fill the GPU, else a block
// per chunk of a plane); with a block per plane, pointwise_depthwise_conv2d
// (MBConv's expansion) leaves the 1x1 GEMM without epilogue and the depthwise kernel
// applies its bias and activation as it stages each input plane in shared memory;
// in a chain of separable convs (EfficientDet's heads) each link's depthwise kernel
// applies the previous link's 1x1 bias and activation as it reads its product.
// With REPSHARE_CUDA_POINTWISE=fused,
// 1x1 convs are one kernel with their epilogue (fp16 on tensor cores), and
// separable_conv2d computes its depthwise half inside that kernel.
#include <mma.h>
#include <type_traits>

#include "kernels/cpu/activation_math.h"
#include "kernels/cuda/conv_start.cuh"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_storage.cuh"
#include "kernels/cuda/cuda_util.h"
#include "kernels/cuda/cudnn_conv.h"
#include "kernels/cuda/fusion_inputs.cuh"
#include "kernels/cuda/row_reduce.cuh"
#include "kernels/cuda/window.cuh"

namespace repshare {
namespace {

// Conv2dParams with 32-bit sizes (see cuda::to_int).
struct Conv32 {
  int n, c_in, h, w, c_out, kh, kw, stride_h, stride_w, dil_h, dil_w, pad_top, pad_left;
  int h_out, w_out;
};

Conv32 conv32(const Conv2dParams& p) {
  const char* op = "conv2d";
  Conv32 q;
  q.n = cuda::to_int(p.n, op, "n");
  q.c_in = cuda::to_int(p.c_in, op, "c_in");
  q.h = cuda::to_int(p.h, op, "h");
  q.w = cuda::to_int(p.w, op, "w");
  q.c_out = cuda::to_int(p.c_out, op, "c_out");
  q.kh = cuda::to_int(p.kh, op, "kh");
  q.kw = cuda::to_int(p.kw, op, "kw");
  q.stride_h = cuda::to_int(p.stride_h, op, "stride_h");
  q.stride_w = cuda::to_int(p.stride_w, op, "stride_w");
  q.dil_h = cuda::to_int(p.dil_h, op, "dil_h");
  q.dil_w = cuda::to_int(p.dil_w, op, "dil_w");
  q.pad_top = cuda::to_int(p.pad_top, op, "pad_top");
  q.pad_left = cuda::to_int(p.pad_left, op, "pad_left");
  q.h_out = cuda::to_int(p.h_out, op, "h_out");
  q.w_out = cuda::to_int(p.w_out, op, "w_out");
  // Every tensor the kernels index must fit too.
  cuda::to_int(p.n * p.c_in * p.h * p.w, op, "input numel");
  cuda::to_int(p.n * p.c_out * p.h_out * p.w_out, op, "output numel");
  cuda::to_int(p.c_in * p.kh * p.kw * p.h_out * p.w_out, op, "im2col numel");
  return q;
}

// The input is used as the GEMM operand directly (no im2col) for these.
bool reads_input_directly(const Conv2dParams& p) {
  return p.kh == 1 && p.kw == 1 && p.stride_h == 1 && p.stride_w == 1 && p.pad_top == 0 &&
         p.pad_left == 0 && p.pad_bottom == 0 && p.pad_right == 0;
}

// What the epilogue after a GEMM makes of its product v: act(v + bias) + residual.
__device__ __forceinline__ float epilogue_value(Activation act, float v, float bias,
                                               float residual) {
  return apply_activation(act, v + bias) + residual;
}

// A 1x1 conv's product v in channel c with its bias (may be null) and activation,
// rounded to storage as epilogue_kernel stores it.
template <typename T>
__device__ __forceinline__ float stored_epilogue(Activation act, T v, const T* bias, int c) {
  const float b = bias ? cuda::as_float(bias[c]) : 0.f;
  return cuda::as_float(cuda::stored<T>(epilogue_value(act, cuda::as_float(v), b, 0.f)));
}

// Where the depthwise kernels read input plane nc (image * C + channel) at offset
// `at`: StoredPlanes from memory; SummedPlanes computes it, a BiFPN fusion's output,
// as weighted_sum_kernel would store it (weighted_sum_separable_conv2d);
// ActivatedPlanes applies the previous 1x1 conv's epilogue to its product
// (separable_conv_chain); StagedPlanes reads shared memory, where stage() put it.
// The channel-mean kernels, a block per plane, call stage(nc, buffer) first.
// kComputesValues: whether a value costs more than a load (separable_depthwise_band_kernel).
template <typename T>
struct StoredPlanes {
  static constexpr bool kComputesValues = false;
  const T* x;
  int plane;  // h * w
  __device__ __forceinline__ void stage(int, float*) {}
  __device__ __forceinline__ float operator()(int nc, int at) const {
    return cuda::as_float(x[static_cast<size_t>(nc) * plane + at]);
  }
};

// Plane nc of a 1x1 conv's product with the 1x1 conv's bias and activation applied,
// rounded to storage as epilogue_kernel stores them, computed at every read (each
// is read once per tap that covers it): for the separable kernel's thread per
// output, with no block per plane to share a staged copy (separable_conv_chain).
template <typename T>
struct ActivatedPlanes {
  static constexpr bool kComputesValues = true;
  const T* product;
  const T* bias;  // [channels], or null
  Activation act;
  int plane, channels;
  __device__ __forceinline__ float operator()(int nc, int at) const {
    return stored_epilogue(act, product[static_cast<size_t>(nc) * plane + at], bias,
                           nc % channels);
  }
};

// The same values (pointwise_depthwise_conv2d), computed once per element into the
// block's shared memory: every tap then reads them there. stage() ends with a
// barrier.
template <typename T>
struct StagedPlanes {
  ActivatedPlanes<T> in;
  float* shared;
  __device__ __forceinline__ void stage(int nc, float* buffer) {
    shared = buffer;
    cuda::for_each_value(
        threadIdx.x, in.plane, blockDim.x, [this, nc](int i) { return in(nc, i); },
        [buffer](int i, float v) { buffer[i] = v; });
    __syncthreads();
  }
  __device__ __forceinline__ float operator()(int, int at) const { return shared[at]; }
};

template <typename T>
struct SummedPlanes {
  static constexpr bool kComputesValues = true;
  cuda::FusionInputs<T> sum;
  int plane;
  __device__ __forceinline__ float operator()(int nc, int at) const {
    return cuda::as_float(cuda::fused_value(sum, nc * plane + at));
  }
};

template <typename T>
__host__ __device__ __forceinline__ StoredPlanes<T> stored_planes(const T* x, const Conv32& p) {
  return StoredPlanes<T>{x, p.h * p.w};
}

// Depthwise output (oy, ox) of plane nc, activation applied, before it is stored:
// what depthwise_conv_kernel, DepthwiseOutputs, separable_depthwise_kernel and
// the separable conv's DepthwiseX compute alike.
template <typename T, typename Input>
__device__ __forceinline__ float depthwise_output(const Conv32& p, Activation act,
                                                  const Input& x, const T* __restrict__ w,
                                                  const T* __restrict__ bias, int nc, int oy,
                                                  int ox) {
  const int c = nc % p.c_in;
  const T* wp = w + c * p.kh * p.kw;
  float s = bias ? cuda::as_float(bias[c]) : 0.f;
  cuda::for_each_tap(oy * p.stride_h - p.pad_top, ox * p.stride_w - p.pad_left, p.kh, p.kw,
                     p.dil_h, p.dil_w, p.h, p.w, [&](int at, int tap) {
                       s += x(nc, at) * cuda::as_float(wp[tap]);
                     });
  return apply_activation(act, s);
}

// One thread per output element; consecutive threads walk along a row, so loads
// of x and stores of y are coalesced. Y, y's storage, is T or float (throughout this
// file: CudaBackend::conv2d_stores_f32).
template <typename T, typename Y, typename Input>
__device__ __forceinline__ void store_depthwise_at(const Conv32& p, Activation act,
                                                   const Input& x, const T* __restrict__ w,
                                                   const T* __restrict__ bias,
                                                   const T* __restrict__ residual,
                                                   Y* __restrict__ y, int i) {
  const int ox = i % p.w_out;
  const int oy = (i / p.w_out) % p.h_out;
  const int nc = i / (p.w_out * p.h_out);  // n * C + c
  float v = depthwise_output(p, act, x, w, bias, nc, oy, ox);
  if (residual) v += cuda::as_float(residual[i]);
  y[i] = cuda::stored<Y>(v);
}

template <typename T, typename Y>
__global__ void depthwise_conv_kernel(Conv32 p, Activation act, const T* __restrict__ x,
                                      const T* __restrict__ w, const T* __restrict__ bias,
                                      const T* __restrict__ residual, Y* __restrict__ y,
                                      int total) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < total) store_depthwise_at(p, act, stored_planes(x, p), w, bias, residual, y, i);
}

// The depthwise half of a separable conv, into mid, from its Input (the conv's x, or
// the BiFPN fusion it reads). Where the pointwise half has a bias but no activation
// or residual (BiFPN's nodes, the heads' predictions), the kernel also starts the
// pointwise output from that bias (start.total > 0), and cuBLAS adds the product to
// it, so no epilogue launch follows the GEMM. Threads cover the larger of the two
// tensors.
template <typename T, typename Y, typename Input>
__global__ void separable_depthwise_kernel(Conv32 p, Activation act, Input x,
                                           const T* __restrict__ w, const T* __restrict__ bias,
                                           T* __restrict__ mid, int mid_total,
                                           cuda::ConvStart<T, Y> start) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < mid_total) store_depthwise_at<T, T>(p, act, x, w, bias, nullptr, mid, i);
  if (i < start.total) start.fill(i);
}

// The input rows [begin, end) that output rows [oy0, oy1) of a depthwise conv read.
struct InputRows {
  int begin, end;
};

__host__ __device__ __forceinline__ InputRows input_rows_of(const Conv32& p, int oy0, int oy1) {
  const int first = oy0 * p.stride_h - p.pad_top;
  const int last = (oy1 - 1) * p.stride_h - p.pad_top + (p.kh - 1) * p.dil_h;
  InputRows r{first > 0 ? first : 0, last + 1 < p.h ? last + 1 : p.h};
  if (r.end < r.begin) r.end = r.begin;
  return r;
}

// Input offsets [first, ..) of one plane, staged in shared memory.
struct BandRows {
  const float* staged;
  int first;
  __device__ __forceinline__ float operator()(int, int at) const { return staged[at - first]; }
};

// separable_depthwise_kernel for an Input that computes its values (a BiFPN fusion's
// weighted sum of resampled inputs, a 1x1 product with its epilogue): a thread per
// output computed each value once per tap that reads it, nine times for a 3x3 conv,
// and a max-pooled fusion input's value is itself nine loads. Here a block takes a
// band of output rows of one plane (blockIdx.x the plane, blockIdx.y the band),
// computes the input rows the band reads into shared memory once, then its outputs
// from there: the values and their order are separable_depthwise_kernel's, and so
// are the bits. The grid's threads then fill start.
template <typename T, typename Y, typename Input>
__global__ void separable_depthwise_band_kernel(Conv32 p, Activation act, Input x,
                                                const T* __restrict__ w,
                                                const T* __restrict__ bias, T* __restrict__ mid,
                                                int band_rows, cuda::ConvStart<T, Y> start) {
  extern __shared__ float staged[];
  const int nc = blockIdx.x;
  const int oy0 = blockIdx.y * band_rows;
  const int oy1 = min(oy0 + band_rows, p.h_out);
  const InputRows rows = input_rows_of(p, oy0, oy1);
  const BandRows band{staged, rows.begin * p.w};
  float* const rows_in = staged;
  cuda::for_each_value(
      threadIdx.x, (rows.end - rows.begin) * p.w, blockDim.x,
      [&x, nc, &band](int i) { return x(nc, band.first + i); },
      [rows_in](int i, float v) { rows_in[i] = v; });
  __syncthreads();
  T* out = mid + (static_cast<size_t>(nc) * p.h_out + oy0) * p.w_out;
  cuda::for_each_value(
      threadIdx.x, (oy1 - oy0) * p.w_out, blockDim.x,
      [&](int o) {
        return depthwise_output(p, act, band, w, bias, nc, oy0 + o / p.w_out, o % p.w_out);
      },
      [out](int o, float v) { out[o] = cuda::stored<T>(v); });
  const int threads = gridDim.x * gridDim.y * blockDim.x;
  for (int i = (blockIdx.y * gridDim.x + blockIdx.x) * blockDim.x + threadIdx.x;
       i < start.total; i += threads)
    start.fill(i);
}

// conv2d_channel_mean in the kernel that stores y: a block per plane stores its
// outputs and sums the stored values in reduce's order (row_reduce.cuh), so the mean
// has reduce's bits without a second launch reading y. Outputs says what output o
// of plane nc is: DepthwiseOutputs computes it as depthwise_conv_kernel does;
// EpilogueOutputs applies a GEMM's epilogue to its product in y (a 1x1 conv's).
// Planes of at most kWarpRow elements (squeeze-excitation's depthwise convs from
// 32x32 down, B0's last 1x1 conv before its pool) keep their values in shared memory
// for warp 0 to sum; larger ones take a block of kLongRowBlock threads, each summing
// the outputs it stored, where there are planes enough to fill the GPU
// (CudaBackend::mean_block_per_plane), else a block per chunk of a plane
// (plane_mean_split_kernel).
template <typename T, typename Input>
struct DepthwiseOutputs {
  Conv32 p;
  Activation act;
  Input x;
  const T* w;
  const T* bias;
  T* y;
  int plane() const { return p.h_out * p.w_out; }
  __device__ __forceinline__ void stage(int nc, float* buffer) { x.stage(nc, buffer); }
  // Output o (row-major in its plane) of plane nc as it is stored; keep() stores it
  // (row_reduce.cuh's for_each_value computes several before storing any).
  __device__ __forceinline__ float value(int nc, int o) const {
    return cuda::as_float(
        cuda::stored<T>(depthwise_output(p, act, x, w, bias, nc, o / p.w_out, o % p.w_out)));
  }
  __device__ __forceinline__ void keep(int nc, int o, float v) const {
    y[static_cast<size_t>(nc) * p.h_out * p.w_out + o] = cuda::stored<T>(v);
  }
};

template <typename T>
struct EpilogueOutputs {
  Activation act;
  const T* bias;  // [channels], or null
  T* y;           // the product in, the outputs out
  int len, channels;
  int plane() const { return len; }
  __device__ __forceinline__ void stage(int, float*) {}
  __device__ __forceinline__ float value(int nc, int o) const {
    return stored_epilogue(act, y[static_cast<size_t>(nc) * len + o], bias, nc % channels);
  }
  __device__ __forceinline__ void keep(int nc, int o, float v) const {
    y[static_cast<size_t>(nc) * len + o] = cuda::stored<T>(v);
  }
};

// Both take dynamic shared memory for Outputs' stage(): a float per input element
// for StagedPlanes, none otherwise.
template <typename T, typename Outputs>
__global__ void plane_mean_kernel(Outputs out, int len, T* __restrict__ mean) {
  __shared__ float plane[cuda::kWarpRow];
  extern __shared__ float staged[];
  const int nc = blockIdx.x;
  out.stage(nc, staged);
  cuda::for_each_value(
      threadIdx.x, len, blockDim.x, [&out, nc](int o) { return out.value(nc, o); },
      [&out, nc](int o, float v) {
        out.keep(nc, o, v);
        plane[o] = v;
      });
  __syncthreads();
  if (threadIdx.x >= 32) return;  // whole warps: warp 0's shuffles below are safe
  const int lane = threadIdx.x;
  float acc = 0.f;
  for (int j = lane; j < len; j += 32) acc += plane[j];
  acc = cuda::warp_combine(acc, [](float a, float b) { return a + b; });
  if (lane == 0) mean[nc] = cuda::stored<T>(acc / len);
}

template <typename T, typename Outputs>
__global__ void __launch_bounds__(cuda::kLongRowBlock)
    plane_mean_long_kernel(Outputs out, int len, T* __restrict__ mean) {
  __shared__ float partials[32];
  extern __shared__ float staged[];
  const int nc = blockIdx.x;
  out.stage(nc, staged);
  const float sum = cuda::block_combine_row(
      len, [&out, nc](int o) { return out.value(nc, o); },
      [&out, nc](int o, float v) { out.keep(nc, o, v); }, 0.f,
      [](float a, float b) { return a + b; }, partials);
  if (threadIdx.x == 0) mean[nc] = cuda::stored<T>(sum / len);
}

// Per stream, for plane_mean_split_kernel: a count of finished chunks per plane (zero
// between launches) and each chunk's sum.
struct SplitMeanScratch {
  unsigned* finished;  // [planes]
  float* chunk_sums;   // [planes * chunks]
};

// The means of a few large planes, fewer than fill the GPU a block each (D0's 32
// planes of 256x256: a block per plane took 0.15 ms on an H200), on a block per chunk
// of kLongRowChunk outputs (blockIdx.x the chunk, blockIdx.y the plane). Each block
// stores its chunk's outputs and sums them as block_combine_row sums a chunk; the
// last of a plane's blocks to finish adds the chunk sums left to right: reduce's
// bits, in one launch with the whole GPU busy. That block also sets the plane's count
// back to zero, ready for the next launch on the stream. Outputs without stage().
template <typename T, typename Outputs>
__global__ void __launch_bounds__(cuda::kLongRowBlock)
    plane_mean_split_kernel(Outputs out, int len, SplitMeanScratch scratch,
                            T* __restrict__ mean) {
  __shared__ float partials[32];
  __shared__ bool last;
  const int nc = blockIdx.y, chunk = blockIdx.x, chunks = gridDim.x;
  const int begin = chunk * cuda::kLongRowChunk;
  const float sum = cuda::block_combine_chunk(
      begin, cuda::chunk_end(begin, len), [&out, nc](int o) { return out.value(nc, o); },
      [&out, nc](int o, float v) { out.keep(nc, o, v); }, 0.f,
      [](float a, float b) { return a + b; }, partials);
  if (chunks == 1) {
    if (threadIdx.x == 0) mean[nc] = cuda::stored<T>(sum / len);
    return;
  }
  if (threadIdx.x == 0) {
    scratch.chunk_sums[nc * chunks + chunk] = sum;
    __threadfence();  // the sum is visible to every block before the count says so
    last = atomicAdd(&scratch.finished[nc], 1u) == static_cast<unsigned>(chunks - 1);
  }
  __syncthreads();
  if (!last || threadIdx.x != 0) return;
  __threadfence();  // pairs with the other blocks' fence: their sums are read after it
  // Written by other blocks: volatile, so read from L2, not a stale L1 line.
  const volatile float* sums = scratch.chunk_sums + nc * chunks;
  float total = sums[0];
  for (int k = 1; k < chunks; ++k) total += sums[k];
  mean[nc] = cuda::stored<T>(total / len);
  scratch.finished[nc] = 0;
}

// Dense and grouped convs with few taps per output (direct_conv_applies: the
// 3-channel stems of EfficientNet and EfficientDet, 27 taps): one launch, without
// the im2col matrix (D0's: 27 x 65,536 values) that im2col + GEMM + epilogue, three
// launches, would fill. A block takes kBlock consecutive output positions of one image
// for kDirectChannels consecutive output channels of a group (blockIdx.x, y, z:
// positions, channel block, image), so that each input value a thread loads serves
// all of them, and the block's weights are the same for every thread: staged once in
// shared memory, tap-major, a tap's weights for the channels read as float4 broadcasts.
// Each output sums bias, then its taps channel by channel, window row by row, skipping
// those in the padding, and is stored with activation and residual. Consecutive
// threads take consecutive positions: coalesced loads and stores.
// With every thread loading its 8 x 27 weights from global memory, D0's stem took 44
// us on an H200 and B0's 15; loading a thread's 27 inputs before summing (slots split
// by run-time divisions), 75 and 22; staged as here, 23 and 10.
constexpr int kDirectTaps = 32;
constexpr int kDirectChannels = 8;  // a multiple of 4: a tap's weights are float4s

// The blocks per image: output positions in blocks of kBlock x channel blocks of
// kDirectChannels per group.
struct DirectConvSplit {
  int hw, blocks_per_group, groups;
  int channel_blocks() const { return blocks_per_group * groups; }
};

int64_t direct_blocks_per_group(const Conv2dParams& p) {
  return (p.c_out / p.groups + kDirectChannels - 1) / kDirectChannels;
}

template <typename T, typename Y>
__global__ void __launch_bounds__(cuda::kBlock)
    direct_conv_kernel(Conv32 p, DirectConvSplit split, Activation act,
                       const T* __restrict__ x, const T* __restrict__ w,
                       const T* __restrict__ bias, const T* __restrict__ residual,
                       Y* __restrict__ y) {
  __shared__ float4 weights[kDirectTaps][kDirectChannels / 4];  // [slot][channel]
  const int group = blockIdx.y / split.blocks_per_group;
  const int first = blockIdx.y % split.blocks_per_group * kDirectChannels;
  const int img = blockIdx.z;
  const int cin_g = p.c_in / split.groups, cout_g = p.c_out / split.groups;
  const int co0 = group * cout_g + first;
  const int channels = min(kDirectChannels, cout_g - first);
  const int slots = cin_g * p.kh * p.kw;  // at most kDirectTaps
  for (int k = threadIdx.x; k < slots * (kDirectChannels / 4); k += blockDim.x) {
    const int t = k / (kDirectChannels / 4), j = k % (kDirectChannels / 4) * 4;
    const auto weight = [&](int c) {  // of block channel c at slot t; 0 past the group
      return c < channels ? cuda::as_float(w[static_cast<size_t>(co0 + c) * slots + t]) : 0.f;
    };
    weights[t][j / 4] = make_float4(weight(j), weight(j + 1), weight(j + 2), weight(j + 3));
  }
  __syncthreads();
  const int at = blockIdx.x * blockDim.x + threadIdx.x;  // oy * w_out + ox
  if (at >= split.hw) return;
  const int ox = at % p.w_out, oy = at / p.w_out;
  float s[kDirectChannels];
#pragma unroll
  for (int j = 0; j < kDirectChannels; ++j)
    s[j] = bias && j < channels ? cuda::as_float(bias[co0 + j]) : 0.f;
  // The taps as window.cuh's for_each_tap walks them, but with the slot counted along:
  // through for_each_tap (slot ci * taps + tap) ptxas gives the kernel 32 registers
  // and a spill instead of 48 (sm_90), and the timed form is this one.
  const T* xg = x + (static_cast<size_t>(img) * p.c_in + group * cin_g) * p.h * p.w;
  int t = 0;  // the slot: (channel, window row, column) in the order the sums take them
  for (int ci = 0; ci < cin_g; ++ci) {
    for (int ky = 0; ky < p.kh; ++ky) {
      const int iy = oy * p.stride_h - p.pad_top + ky * p.dil_h;
      if (iy < 0 || iy >= p.h) {
        t += p.kw;
        continue;
      }
      const T* row = xg + (static_cast<size_t>(ci) * p.h + iy) * p.w;
      for (int kx = 0; kx < p.kw; ++kx, ++t) {
        const int ix = ox * p.stride_w - p.pad_left + kx * p.dil_w;
        if (ix < 0 || ix >= p.w) continue;
        const float v = cuda::as_float(row[ix]);
#pragma unroll
        for (int q = 0; q < kDirectChannels / 4; ++q) {
          const float4 wq = weights[t][q];
          s[4 * q] += v * wq.x;
          s[4 * q + 1] += v * wq.y;
          s[4 * q + 2] += v * wq.z;
          s[4 * q + 3] += v * wq.w;
        }
      }
    }
  }
  const size_t out0 = (static_cast<size_t>(img) * p.c_out + co0) * split.hw + at;
#pragma unroll
  for (int j = 0; j < kDirectChannels; ++j) {
    if (j >= channels) break;
    const size_t o = out0 + static_cast<size_t>(j) * split.hw;
    float v = apply_activation(act, s[j]);
    if (residual) v += cuda::as_float(residual[o]);
    y[o] = cuda::stored<Y>(v);
  }
}

// col[(ci*KH + ky)*KW + kx][oy*Wo + ox] = x[ci][oy*sh - pt + ky*dh][ox*sw - pl + kx*dw]
// (0 in the padding) for the C_in channels of one image.
template <typename T>
__global__ void im2col_kernel(Conv32 p, const T* __restrict__ x, T* __restrict__ col, int total) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= total) return;
  const int hw_out = p.h_out * p.w_out;
  const int pos = i % hw_out;
  const int row = i / hw_out;  // (ci*KH + ky)*KW + kx
  const int ox = pos % p.w_out, oy = pos / p.w_out;
  const int kx = row % p.kw, ky = (row / p.kw) % p.kh, ci = row / (p.kw * p.kh);
  const int iy = oy * p.stride_h - p.pad_top + ky * p.dil_h;
  const int ix = ox * p.stride_w - p.pad_left + kx * p.dil_w;
  col[i] = (iy >= 0 && iy < p.h && ix >= 0 && ix < p.w) ? x[(ci * p.h + iy) * p.w + ix]
                                                        : cuda::stored<T>(0.f);
}

// y[n, c, :] = act(y + bias[c]) (+ residual) in place after the GEMM, a thread per
// Pack of N consecutive elements: 16 bytes of y loaded and stored at once (and N
// elements of the residual) where every pack lies in one channel plane and the tensors
// are aligned to their packs, else N = 1. An element per thread kept 4 KB of fp16 in
// flight per SM: D0's 6.3 million-element expansion epilogue took 34 us on an H200
// (0.75 TB/s); 4 elements per thread, each loaded alone, 35 us; packs of 8, 19 us.
template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

template <typename T, typename Y, int N>
__global__ void epilogue_kernel(Activation act, const T* __restrict__ bias,
                                const T* __restrict__ residual, Y* y, int channels,
                                int inner, int packs) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= packs) return;
  const float b = bias ? cuda::as_float(bias[i * N / inner % channels]) : 0.f;
  Pack<Y, N> out = reinterpret_cast<const Pack<Y, N>*>(y)[i];
  Pack<T, N> res{};
  if (residual) res = reinterpret_cast<const Pack<T, N>*>(residual)[i];
#pragma unroll
  for (int u = 0; u < N; ++u) {
    const float r = residual ? cuda::as_float(res.v[u]) : 0.f;
    out.v[u] = cuda::stored<Y>(epilogue_value(act, cuda::as_float(out.v[u]), b, r));
  }
  reinterpret_cast<Pack<Y, N>*>(y)[i] = out;
}

// epilogue_kernel over y's `total` elements, 16 bytes per thread where it may.
template <typename T, typename Y>
void launch_epilogue(cudaStream_t stream, Activation act, const T* bias, const T* residual,
                     Y* y, int channels, int inner, int total) {
  constexpr int kPacked = 16 / sizeof(Y);  // Y is at least as wide as T
  const auto aligned = [](const void* ptr, size_t bytes) {
    return reinterpret_cast<uintptr_t>(ptr) % bytes == 0;
  };
  if (inner % kPacked == 0 && aligned(y, sizeof(Pack<Y, kPacked>)) &&
      (!residual || aligned(residual, sizeof(Pack<T, kPacked>)))) {
    const int packs = total / kPacked;
    epilogue_kernel<T, Y, kPacked><<<cuda::blocks_for(packs), cuda::kBlock, 0, stream>>>(
        act, bias, residual, y, channels, inner, packs);
  } else {
    epilogue_kernel<T, Y, 1><<<cuda::blocks_for(total), cuda::kBlock, 0, stream>>>(
        act, bias, residual, y, channels, inner, total);
  }
}

// Pointwise convs as one kernel with the epilogue fused (REPSHARE_CUDA_POINTWISE=fused,
// an experiment until gpu-check has timed it against cuBLAS + epilogue): a 64 x 64
// tile of Y[Cout, HWo] per block of 256 threads, K through shared memory, then
// bias, activation and residual as the outputs are stored. blockIdx.z is the image.
constexpr int kPwTile = 64, kPwThreads = 256;

// One output of the fused pointwise conv: acc is W[gm] . X[:, gn].
template <typename T, typename Y>
__device__ __forceinline__ void store_pointwise(Activation act, float acc,
                                                const T* __restrict__ bias,
                                                const T* __restrict__ residual, Y* __restrict__ y,
                                                int gm, size_t at) {
  float v = apply_activation(act, acc + (bias ? cuda::as_float(bias[gm]) : 0.f));
  if (residual) v += cuda::as_float(residual[at]);
  y[at] = cuda::stored<Y>(v);
}

// Where the kernels read X[k, n] of image img: StoredX from memory (a 1x1 conv's
// input); DepthwiseX computes it, X being a depthwise conv's output over Input (its
// x, or the BiFPN fusion it reads), as depthwise_conv_kernel would store it
// (separable_conv2d, weighted_sum_separable_conv2d).
template <typename T>
struct StoredX {
  const T* x;
  int k, n;
  __device__ __forceinline__ T operator()(int img, int row, int col) const {
    return x[(static_cast<size_t>(img) * k + row) * n + col];
  }
};

template <typename T, typename Input>
struct DepthwiseX {
  Conv32 p;
  Activation act;
  Input x;
  const T* w;
  const T* bias;
  __device__ __forceinline__ T operator()(int img, int row, int col) const {
    return cuda::stored<T>(depthwise_output(p, act, x, w, bias, img * p.c_in + row,
                                            col / p.w_out, col % p.w_out));
  }
};

// CUDA cores, any storage: 4 x 4 outputs per thread, K in steps of 16 (as float).
constexpr int kPwStep = 16;

template <typename T, typename Y, typename LoadX>
__global__ void __launch_bounds__(kPwThreads)
    pointwise_conv_kernel(int m, int n, int k, Activation act, const T* __restrict__ w,
                          LoadX load_x, const T* __restrict__ bias,
                          const T* __restrict__ residual, Y* __restrict__ y) {
  __shared__ float ws[kPwStep][kPwTile + 4];  // [k][row of Y]
  __shared__ float xs[kPwStep][kPwTile + 4];  // [k][column of Y]
  const int img = blockIdx.z;
  const size_t img_y = static_cast<size_t>(blockIdx.z) * m * n;
  const int m0 = blockIdx.y * kPwTile, n0 = blockIdx.x * kPwTile;
  const int tid = threadIdx.x;
  const int tm = (tid / 16) * 4, tn = (tid % 16) * 4;
  float acc[4][4];
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) acc[i][j] = 0.f;
  for (int k0 = 0; k0 < k; k0 += kPwStep) {
    for (int e = tid; e < kPwTile * kPwStep; e += kPwThreads) {
      // W: 16 consecutive k of a row per 16 threads; X: 64 consecutive columns.
      const int row = e / kPwStep, wk = e % kPwStep;
      const int gm = m0 + row, gk = k0 + wk;
      ws[wk][row] = gm < m && gk < k ? cuda::as_float(w[static_cast<size_t>(gm) * k + gk]) : 0.f;
      const int xk = e / kPwTile, col = e % kPwTile;
      const int xgk = k0 + xk, gn = n0 + col;
      xs[xk][col] = xgk < k && gn < n ? cuda::as_float(load_x(img, xgk, gn)) : 0.f;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kPwStep; ++kk) {
      float a[4], b[4];
      for (int i = 0; i < 4; ++i) a[i] = ws[kk][tm + i];
      for (int j = 0; j < 4; ++j) b[j] = xs[kk][tn + j];
      for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
    __syncthreads();
  }
  for (int i = 0; i < 4; ++i) {
    const int gm = m0 + tm + i;
    if (gm >= m) break;
    for (int j = 0; j < 4; ++j) {
      const int gn = n0 + tn + j;
      if (gn >= n) break;
      store_pointwise(act, acc[i][j], bias, residual, y, gm,
                      img_y + static_cast<size_t>(gm) * n + gn);
    }
  }
}

// Tensor cores, fp16 storage (compute capability 7.0+): wmma 16x16x16 products of
// fp16 operands summed in fp32, as cuBLAS's fp16 GEMMs with fp32 compute. 8 warps,
// each 16 rows x 32 columns of the tile, K in steps of 32; the accumulators go
// through shared memory to the same epilogue. Shared rows are padded (8 halves, 4
// floats): wmma wants tiles 32-byte aligned and leading dimensions a multiple of
// 16 bytes, and the padding spreads a column's rows over the banks.
constexpr int kWmmaStep = 32;

template <typename Y, typename LoadX>
__global__ void __launch_bounds__(kPwThreads)
    pointwise_conv_wmma_kernel(int m, int n, int k, Activation act,
                               const __half* __restrict__ w, LoadX load_x,
                               const __half* __restrict__ bias,
                               const __half* __restrict__ residual, Y* __restrict__ y) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 700
  __trap();  // launched only where CudaBackend::tensor_cores_
#else
  namespace wmma = nvcuda::wmma;
  __shared__ __align__(32) __half ws[kPwTile][kWmmaStep + 8];  // [row of Y][k]
  __shared__ __align__(32) __half xs[kWmmaStep][kPwTile + 8];  // [k][column of Y]
  __shared__ __align__(32) float cs[kPwTile][kPwTile + 4];     // the tile of Y
  const int img = blockIdx.z;
  const size_t img_y = static_cast<size_t>(blockIdx.z) * m * n;
  const int m0 = blockIdx.y * kPwTile, n0 = blockIdx.x * kPwTile;
  const int tid = threadIdx.x, warp = tid / 32;
  const int wm = (warp / 2) * 16, wn = (warp % 2) * 32;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2];
  wmma::fill_fragment(acc[0], 0.f);
  wmma::fill_fragment(acc[1], 0.f);
  const __half zero = __float2half_rn(0.f);
  for (int k0 = 0; k0 < k; k0 += kWmmaStep) {
    for (int e = tid; e < kPwTile * kWmmaStep; e += kPwThreads) {
      const int row = e / kWmmaStep, wk = e % kWmmaStep;
      const int gm = m0 + row, gk = k0 + wk;
      ws[row][wk] = gm < m && gk < k ? w[static_cast<size_t>(gm) * k + gk] : zero;
      const int xk = e / kPwTile, col = e % kPwTile;
      const int xgk = k0 + xk, gn = n0 + col;
      xs[xk][col] = xgk < k && gn < n ? load_x(img, xgk, gn) : zero;
    }
    __syncthreads();
    for (int kk = 0; kk < kWmmaStep; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> a;
      wmma::load_matrix_sync(a, &ws[wm][kk], kWmmaStep + 8);
      for (int j = 0; j < 2; ++j) {
        wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::row_major> b;
        wmma::load_matrix_sync(b, &xs[kk][wn + 16 * j], kPwTile + 8);
        wmma::mma_sync(acc[j], a, b, acc[j]);
      }
    }
    __syncthreads();
  }
  for (int j = 0; j < 2; ++j)
    wmma::store_matrix_sync(&cs[wm][wn + 16 * j], acc[j], kPwTile + 4, wmma::mem_row_major);
  __syncthreads();
  for (int e = tid; e < kPwTile * kPwTile; e += kPwThreads) {
    const int row = e / kPwTile, col = e % kPwTile;
    const int gm = m0 + row, gn = n0 + col;
    if (gm < m && gn < n)
      store_pointwise(act, cs[row][col], bias, residual, y, gm,
                      img_y + static_cast<size_t>(gm) * n + gn);
  }
#endif
}

// Launches the fused pointwise conv Y[m, n] = W[m, k] . X[k, n] per image: on
// tensor cores for fp16 where the GPU has them, else on CUDA cores.
template <typename LoadX>
void launch_pointwise(dim3 grid, CUstream_st* stream, bool tensor_cores, int m, int n, int k,
                      Activation act, const float* w, LoadX load_x, const float* bias,
                      const float* residual, float* y) {
  (void)tensor_cores;  // fp32 products stay on CUDA cores (no TF32)
  pointwise_conv_kernel<float, float, LoadX><<<grid, kPwThreads, 0, stream>>>(
      m, n, k, act, w, load_x, bias, residual, y);
}

template <typename Y, typename LoadX>
void launch_pointwise(dim3 grid, CUstream_st* stream, bool tensor_cores, int m, int n, int k,
                      Activation act, const __half* w, LoadX load_x, const __half* bias,
                      const __half* residual, Y* y) {
  if (tensor_cores)
    pointwise_conv_wmma_kernel<Y, LoadX><<<grid, kPwThreads, 0, stream>>>(
        m, n, k, act, w, load_x, bias, residual, y);
  else
    pointwise_conv_kernel<__half, Y, LoadX><<<grid, kPwThreads, 0, stream>>>(
        m, n, k, act, w, load_x, bias, residual, y);
}

// The grid of the fused pointwise kernels: 64 x 64 tiles of Y, blockIdx.z the image.
dim3 pointwise_grid(const Conv32& q) {
  const int hw = q.h_out * q.w_out;
  return dim3(static_cast<unsigned>((hw + kPwTile - 1) / kPwTile),
              static_cast<unsigned>((q.c_out + kPwTile - 1) / kPwTile),
              static_cast<unsigned>(q.n));
}

// Y_g = W_g . X_g + beta * Y_g for the groups of one image (X: the input read
// directly, or its im2col matrix). Row-major Y_g[Cout_g, HWo] is column-major
// Y_g^T[HWo, Cout_g] = X_g^T . W_g^T, and the row-major X_g[K, HWo] and W_g[Cout_g, K]
// already are column-major X_g^T and W_g^T: no transposes, leading dimensions HWo,
// K and HWo.
void conv_gemm(cublasHandle_t cublas, DType x_type, DType y_type, const Conv32& q, int groups,
               const void* operand, const void* w, void* y_img, float beta) {
  const int cout_g = q.c_out / groups, k = q.c_in / groups * q.kh * q.kw;
  const int hw_out = q.h_out * q.w_out;
  cuda::gemm_strided_batched(cublas, x_type, y_type, CUBLAS_OP_N, CUBLAS_OP_N, hw_out, cout_g, k,
                             1.f, operand, hw_out, static_cast<long long>(k) * hw_out, w, k,
                             static_cast<long long>(cout_g) * k, beta, y_img, hw_out,
                             static_cast<long long>(cout_g) * hw_out, groups);
}

// Also within its grid's y and z (channel blocks, images); larger batches take
// im2col + GEMM.
bool direct_conv_applies(const Conv2dParams& p) {
  return !p.is_depthwise() && !reads_input_directly(p) &&
         p.c_in / p.groups * p.kh * p.kw <= kDirectTaps &&
         direct_blocks_per_group(p) * p.groups <= 65535 && p.n <= 65535;
}

// plane_mean_kernel or plane_mean_long_kernel over `planes` planes of outputs
// (means_in_conv_kernel), with staged_bytes of dynamic shared memory.
template <typename T, typename Outputs>
void launch_plane_mean(CudaBackend& be, const Outputs& out, int64_t planes, size_t staged_bytes,
                       Tensor& mean) {
  const int len = out.plane();
  const unsigned blocks = static_cast<unsigned>(planes);
  if (len <= cuda::kWarpRow) {
    plane_mean_kernel<T, Outputs><<<blocks, cuda::kBlock, staged_bytes, be.stream()>>>(
        out, len, cuda::data<T>(mean));
    be.after_launch("plane_mean_kernel");
  } else {
    plane_mean_long_kernel<T, Outputs>
        <<<blocks, cuda::kLongRowBlock, staged_bytes, be.stream()>>>(out, len,
                                                                    cuda::data<T>(mean));
    be.after_launch("plane_mean_long_kernel");
  }
}

// plane_mean_split_kernel over `planes` planes of outputs, a block per chunk of each
// (CudaBackend::splits_means), counting and summing chunks in `scratch`.
template <typename T, typename Outputs>
void launch_plane_mean_split(CudaBackend& be, const Outputs& out, int64_t planes,
                             const SplitMeanScratch& scratch, Tensor& mean) {
  const int len = out.plane();
  const dim3 grid(static_cast<unsigned>((len + cuda::kLongRowChunk - 1) / cuda::kLongRowChunk),
                  static_cast<unsigned>(planes));
  plane_mean_split_kernel<T, Outputs><<<grid, cuda::kLongRowBlock, 0, be.stream()>>>(
      out, len, scratch, cuda::data<T>(mean));
  be.after_launch("plane_mean_split_kernel");
}

// The outputs of the depthwise conv p over x (read through Input), for the kernels
// that store them and sum their means.
template <typename T, typename Input>
DepthwiseOutputs<T, Input> depthwise_outputs(const Conv2dParams& p, const Input& x,
                                             const Tensor& w, const Tensor* bias, Tensor& y) {
  return {conv32(p), p.act, x, cuda::data<T>(w), bias ? cuda::data<T>(*bias) : nullptr,
          cuda::data<T>(y)};
}

// separable_depthwise_band_kernel's output rows per block: about kBandOutputs
// outputs (D0's 64x64 planes: bands of 8 rows, 10 staged, 512 blocks for 64
// channels), fewer where the input rows they read would exceed kBandBytes of shared
// memory; 0 (separable_depthwise_kernel then) where one row's exceed it or the bands
// would exceed the grid's y.
constexpr int kBandOutputs = 512;
constexpr size_t kBandBytes = 48 * 1024;  // a block's without opting in

size_t band_bytes(const Conv32& q, int rows) {
  const int64_t staged = static_cast<int64_t>(rows - 1) * q.stride_h + (q.kh - 1) * q.dil_h + 1;
  return static_cast<size_t>(std::min<int64_t>(staged, q.h) * q.w) * sizeof(float);
}

int band_rows(const Conv32& q) {
  int rows = std::min(std::max(1, kBandOutputs / std::max(1, q.w_out)), std::max(1, q.h_out));
  while (rows > 1 && band_bytes(q, rows) > kBandBytes) rows /= 2;
  const int bands = (q.h_out + rows - 1) / rows;
  return band_bytes(q, rows) <= kBandBytes && bands <= 65535 ? rows : 0;
}

// A block per plane and band of `rows` output rows.
dim3 band_grid(const Conv32& q, int rows) {
  return dim3(static_cast<unsigned>(q.n * q.c_out),
              static_cast<unsigned>((q.h_out + rows - 1) / rows));
}

// separable_depthwise_band_kernel where band_rows allows, for an Input that computes
// its values: whether it was launched. One whose values are loads gains nothing from
// staging them (no band kernel is made for it).
template <typename T, typename Y, typename Input>
bool launch_band(std::false_type, CudaBackend&, const Conv32&, Activation, const Input&, const T*,
                 const T*, Tensor&, const cuda::ConvStart<T, Y>&) {
  return false;
}

template <typename T, typename Y, typename Input>
bool launch_band(std::true_type, CudaBackend& be, const Conv32& q, Activation act,
                 const Input& x, const T* w, const T* b, Tensor& mid,
                 const cuda::ConvStart<T, Y>& start) {
  const int rows = band_rows(q);
  if (rows == 0) return false;
  separable_depthwise_band_kernel<T, Y, Input>
      <<<band_grid(q, rows), cuda::kBlock, band_bytes(q, rows), be.stream()>>>(
          q, act, x, w, b, cuda::data<T>(mid), rows, start);
  be.after_launch("separable_depthwise_band_kernel");
  return true;
}

// The band kernel (launch_band) or separable_depthwise_kernel: dw over x, read through
// Input, into mid; where fill_bias is not null, y filled with it too.
template <typename T, typename Y, typename Input>
void launch_separable_depthwise(CudaBackend& be, const Conv2dParams& dw, const Input& x,
                                const Tensor& w_dw, const Tensor* b_dw, Tensor& mid,
                                const Tensor* fill_bias, Tensor& y) {
  const Conv32 q = conv32(dw);
  const int mid_total = q.n * q.c_out * q.h_out * q.w_out;
  const cuda::ConvStart<T, Y> start{
      fill_bias ? cuda::data<T>(*fill_bias) : nullptr, nullptr, cuda::data<Y>(y),
      fill_bias ? static_cast<int>(y.shape[1]) : 1, q.h_out * q.w_out,
      fill_bias ? cuda::to_int(y.numel(), "separable_conv2d", "y numel") : 0};
  const int threads = std::max(mid_total, start.total);
  if (threads == 0) return;
  const T* w = cuda::data<T>(w_dw);
  const T* b = b_dw ? cuda::data<T>(*b_dw) : nullptr;
  if (mid_total > 0 &&
      launch_band(std::integral_constant<bool, Input::kComputesValues>(), be, q, dw.act, x, w, b,
                  mid, start))
    return;
  separable_depthwise_kernel<T, Y, Input><<<cuda::blocks_for(threads), cuda::kBlock, 0,
                                            be.stream()>>>(q, dw.act, x, w, b, cuda::data<T>(mid),
                                                           mid_total, start);
  be.after_launch("separable_depthwise_kernel");
}

// Whether a separable conv's 1x1 half can start from its bias (see
// separable_depthwise_kernel): a bias and nothing after it.
bool starts_from_bias(const Conv2dParams& pw, const Tensor* b_pw, const Tensor* residual) {
  return b_pw && !residual && pw.act.kind == ActKind::None && reads_input_directly(pw) &&
         pw.groups == 1;
}

#ifdef REPSHARE_WITH_CUDNN
// cuDNN's 2-D descriptors take one pad per axis: convolutions with symmetric pads
// (not TF "SAME" with stride 2, whose extra pad is at the end) that have no kernel
// of their own here (depthwise, 1x1 read directly, few taps) go to cuDNN.
bool cudnn_runs(const Conv2dParams& p) {
  return !p.is_depthwise() && !reads_input_directly(p) && !direct_conv_applies(p) &&
         p.pad_top == p.pad_bottom && p.pad_left == p.pad_right;
}
#endif

}  // namespace

// (Batches beyond the grid's z limit go through cuBLAS.) The bounds of =small, on
// the output only (more input channels only lengthen each output's loop): every
// pointwise conv of the same shape takes the same kernel, so a fused separable conv
// keeps the bits of its composition.
constexpr int64_t kSmallPointwiseChannels = 64, kSmallPointwisePlane = 1024;

bool CudaBackend::fuses_pointwise(const Conv2dParams& p) const {
  if (pointwise_ == Pointwise::Cublas || p.groups != 1 || !reads_input_directly(p) ||
      p.n > 65535)
    return false;
  return pointwise_ == Pointwise::Fused ||
         (p.c_out <= kSmallPointwiseChannels && p.h_out * p.w_out <= kSmallPointwisePlane);
}

bool CudaBackend::conv2d_stores_f32(const Conv2dParams& p) const {
#ifdef REPSHARE_WITH_CUDNN
  if (cudnn_runs(p)) return false;
#endif
  (void)p;
  return storage_ == DType::F16;
}

size_t CudaBackend::conv2d_workspace(const Conv2dParams& p) const {
  if (p.is_depthwise() || reads_input_directly(p) || direct_conv_applies(p)) return 0;
#ifdef REPSHARE_WITH_CUDNN
  // Planning asks this once per convolution: the cuDNN set-up is made here, not in
  // the run loop.
  if (cudnn_runs(p)) return cudnn_conv(p).workspace_bytes();
#endif
  // One image's im2col matrix: the images take turns on the one stream.
  return static_cast<size_t>(p.c_in * p.kh * p.kw * p.h_out * p.w_out) * dtype_size(storage_);
}

void CudaBackend::conv2d(const Conv2dParams& p, const Tensor& x, const Tensor& w,
                         const Tensor* bias, Tensor& y, void* workspace) {
  conv2d_with_residual(p, x, w, bias, nullptr, y, workspace);
}

// With the fused pointwise kernels, the depthwise half is computed as the pointwise
// kernel loads its input tile (DepthwiseX): one launch, and the depthwise output is
// never stored. Otherwise separable_conv2d_of: the depthwise kernel into the
// workspace, then the pointwise conv.
size_t CudaBackend::separable_conv2d_workspace(const Conv2dParams& dw,
                                               const Conv2dParams& pw) const {
  return fuses_pointwise(pw) ? 0 : Backend::separable_conv2d_workspace(dw, pw);
}

void CudaBackend::separable_conv2d(const Conv2dParams& dw, const Conv2dParams& pw,
                                   const Tensor& x, const Tensor& w_dw, const Tensor* b_dw,
                                   const Tensor& w_pw, const Tensor* b_pw,
                                   const Tensor* residual, Tensor& y, void* workspace) {
  if (fuses_pointwise(pw))
    separable_fused(&x, nullptr, nullptr, nullptr, dw, pw, w_dw, b_dw, w_pw, b_pw, residual, y);
  else
    separable_conv2d_of(&x, nullptr, nullptr, nullptr, dw, pw, w_dw, b_dw, w_pw, b_pw, residual,
                        y, workspace);
}

// BiFPN's fusion computed as the depthwise half reads it: the fused values are
// never stored (one launch fewer).
size_t CudaBackend::weighted_sum_separable_conv2d_workspace(const WeightedSumParams&,
                                                            const FusionResample*,
                                                            const Conv2dParams& dw,
                                                            const Conv2dParams& pw) const {
  return separable_conv2d_workspace(dw, pw);
}

void CudaBackend::weighted_sum_separable_conv2d(
    const WeightedSumParams& sum, const FusionResample* resample, const Tensor* const* xs,
    const Conv2dParams& dw, const Conv2dParams& pw, const Tensor& w_dw, const Tensor* b_dw,
    const Tensor& w_pw, const Tensor* b_pw, const Tensor* residual, Tensor& y, void* workspace) {
  if (fuses_pointwise(pw))
    separable_fused(nullptr, &sum, resample, xs, dw, pw, w_dw, b_dw, w_pw, b_pw, residual, y);
  else
    separable_conv2d_of(nullptr, &sum, resample, xs, dw, pw, w_dw, b_dw, w_pw, b_pw, residual, y,
                        workspace);
}

// The fused pointwise kernel computes the depthwise half as it loads each input
// tile (DepthwiseX): one launch, and the depthwise output is never stored.
void CudaBackend::separable_fused(const Tensor* x, const WeightedSumParams* sum,
                                  const FusionResample* resample, const Tensor* const* xs,
                                  const Conv2dParams& dw, const Conv2dParams& pw,
                                  const Tensor& w_dw, const Tensor* b_dw, const Tensor& w_pw,
                                  const Tensor* b_pw, const Tensor* residual, Tensor& y) {
  const char* op = "separable_conv2d";
  const Conv32 qd = conv32(dw), qp = conv32(pw);
  const int hw = qp.h_out * qp.w_out;
  if (qp.n * qp.c_out * hw == 0) return;
  cuda::with_storages(storage_, y.dtype, op, [&](auto tag, auto y_tag) {
    using T = decltype(tag);
    using Y = decltype(y_tag);
    const T* wd = cuda::data<T>(w_dw);
    const T* bd = b_dw ? cuda::data<T>(*b_dw) : nullptr;
    const T* wp = cuda::data<T>(w_pw);
    const T* bp = b_pw ? cuda::data<T>(*b_pw) : nullptr;
    const T* r = residual ? cuda::data<T>(*residual) : nullptr;
    auto launch = [&](const auto& load) {
      launch_pointwise(pointwise_grid(qp), stream_, tensor_cores_, qp.c_out, hw, qp.c_in, pw.act,
                       wp, load, bp, r, cuda::data<Y>(y));
    };
    if (x) {
      launch(DepthwiseX<T, StoredPlanes<T>>{qd, dw.act, stored_planes(cuda::data<T>(*x), qd), wd,
                                            bd});
    } else {
      const SummedPlanes<T> in{cuda::fusion_inputs<T>(*sum, resample, xs, dw.h, dw.w, op),
                               static_cast<int>(dw.h * dw.w)};
      launch(DepthwiseX<T, SummedPlanes<T>>{qd, dw.act, in, wd, bd});
    }
  });
  after_launch("separable_conv_kernel");
}

// The depthwise half (from x, or from the weighted sum) into the workspace, as
// conv2d would store it; then the pointwise half. A pointwise half with a bias and
// nothing after it starts from that bias, filled in by the depthwise kernel, and
// cuBLAS adds its product: two launches instead of three.
void CudaBackend::separable_conv2d_of(const Tensor* x, const WeightedSumParams* sum,
                                      const FusionResample* resample, const Tensor* const* xs,
                                      const Conv2dParams& dw, const Conv2dParams& pw,
                                      const Tensor& w_dw, const Tensor* b_dw, const Tensor& w_pw,
                                      const Tensor* b_pw, const Tensor* residual, Tensor& y,
                                      void* workspace) {
  const char* op = "separable_conv2d";
  check(workspace != nullptr, ErrorKind::Backend, op,
        ": needs separable_conv2d_workspace() bytes of workspace and got none");
  const bool from_bias = starts_from_bias(pw, b_pw, residual);
  void* rest = nullptr;
  Tensor mid = workspace_tensor(dw.output_shape(), workspace, &rest);
  cuda::with_storages(storage_, y.dtype, op, [&](auto tag, auto y_tag) {
    using T = decltype(tag);
    using Y = decltype(y_tag);
    const Tensor* fill = from_bias ? b_pw : nullptr;
    if (x)
      launch_separable_depthwise<T, Y>(*this, dw, stored_planes(cuda::data<T>(*x), conv32(dw)),
                                       w_dw, b_dw, mid, fill, y);
    else
      launch_separable_depthwise<T, Y>(
          *this, dw,
          SummedPlanes<T>{cuda::fusion_inputs<T>(*sum, resample, xs, dw.h, dw.w, op),
                          static_cast<int>(dw.h * dw.w)},
          w_dw, b_dw, mid, fill, y);
  });
  separable_pointwise(pw, mid, w_pw, b_pw, residual, from_bias, y, rest);
}

void CudaBackend::separable_pointwise(const Conv2dParams& pw, const Tensor& mid,
                                      const Tensor& w_pw, const Tensor* b_pw,
                                      const Tensor* residual, bool from_bias, Tensor& y,
                                      void* workspace) {
  if (from_bias)
    pointwise_gemm(pw, mid, w_pw, y, 1.f);
  else if (residual)
    conv2d_residual(pw, mid, w_pw, b_pw, *residual, y, workspace);
  else
    conv2d(pw, mid, w_pw, b_pw, y, workspace);
}

bool CudaBackend::fuses_a_link(const std::vector<SeparableConvParams>& links) const {
  for (const SeparableConvParams& l : links)
    if (fuses_pointwise(l.pw)) return true;
  return false;
}

// Where a link fuses: two buffers between links, and what a link's own
// separable_conv2d takes.
size_t CudaBackend::separable_conv_chain_workspace(
    const std::vector<SeparableConvParams>& links) const {
  if (!fuses_a_link(links)) return Backend::separable_conv_chain_workspace(links);
  size_t link = 0;
  for (const SeparableConvParams& l : links)
    link = std::max(link, separable_conv2d_workspace(l.dw, l.pw));
  return 2 * chain_between_bytes(links) + link;
}

// A link's 1x1 product (cuBLAS alone) at the start of the workspace, the next link's
// depthwise output after it (Backend's layout): that depthwise kernel reads the
// product with the bias and activation applied (ActivatedPlanes) before the next
// product overwrites it. The last link is separable_conv2d_of's. Where the fused 1x1
// kernel takes a link, each link is one separable_conv2d instead (one launch where
// fused), from one buffer into the other.
void CudaBackend::separable_conv_chain(const std::vector<SeparableConvParams>& links,
                                       const Tensor& x, const Tensor* const* weights,
                                       const Tensor* residual, Tensor& y, void* workspace) {
  const char* op = "separable_conv_chain";
  check(workspace != nullptr, ErrorKind::Backend, op,
        ": needs separable_conv_chain_workspace() bytes of workspace and got none");
  if (fuses_a_link(links)) {
    // Link k reads buffer (k + 1) % 2 (x for the first) and writes buffer k % 2 (y
    // for the last); each link's own workspace follows the two.
    unsigned char* const buffers = static_cast<unsigned char*>(workspace);
    const size_t between = chain_between_bytes(links);
    Tensor out[2];
    const Tensor* in = &x;
    for (size_t k = 0; k < links.size(); ++k) {
      const Tensor* const* w = weights + 4 * k;
      const bool last = k + 1 == links.size();
      void* unused = nullptr;
      if (!last) out[k % 2] = workspace_tensor(links[k].pw.output_shape(),
                                               buffers + (k % 2) * between, &unused);
      Tensor& to = last ? y : out[k % 2];
      separable_conv2d(links[k].dw, links[k].pw, *in, *w[0], w[1], *w[2], w[3],
                       last ? residual : nullptr, to, buffers + 2 * between);
      in = &to;
    }
    return;
  }
  unsigned char* const after_product = static_cast<unsigned char*>(workspace) +
                                       chain_between_bytes(links);
  Tensor product;
  for (size_t k = 0; k < links.size(); ++k) {
    const Conv2dParams &dw = links[k].dw, &pw = links[k].pw;
    const Tensor* const* w = weights + 4 * k;
    const bool last = k + 1 == links.size();
    const bool from_bias = last && starts_from_bias(pw, w[3], residual);
    void* rest = nullptr;
    Tensor mid = workspace_tensor(dw.output_shape(), after_product, &rest);
    cuda::with_storages(storage_, y.dtype, op, [&](auto tag, auto y_tag) {
      using T = decltype(tag);
      using Y = decltype(y_tag);
      const Tensor* fill = from_bias ? w[3] : nullptr;
      if (k == 0) {
        launch_separable_depthwise<T, Y>(*this, dw, stored_planes(cuda::data<T>(x), conv32(dw)),
                                         *w[0], w[1], mid, fill, y);
        return;
      }
      const Conv2dParams& prev = links[k - 1].pw;
      const Tensor* prev_bias = weights[4 * k - 1];
      const ActivatedPlanes<T> in{cuda::data<T>(product),
                                  prev_bias ? cuda::data<T>(*prev_bias) : nullptr, prev.act,
                                  static_cast<int>(prev.h_out * prev.w_out),
                                  static_cast<int>(prev.c_out)};
      launch_separable_depthwise<T, Y>(*this, dw, in, *w[0], w[1], mid, fill, y);
    });
    if (last) {
      separable_pointwise(pw, mid, *w[2], w[3], residual, from_bias, y, rest);
    } else {
      void* unused = nullptr;
      product = workspace_tensor(pw.output_shape(), workspace, &unused);
      pointwise_gemm(pw, mid, *w[2], product, 0.f);
    }
  }
}

void CudaBackend::pointwise_gemm(const Conv2dParams& p, const Tensor& x, const Tensor& w,
                                 Tensor& y, float beta) {
  const Conv32 q = conv32(p);
  const size_t hw = static_cast<size_t>(q.h_out) * q.w_out;
  for (int img = 0; img < q.n; ++img) {
    before_library_call();
    conv_gemm(cublas_, x.dtype, y.dtype, q, 1,
              static_cast<const unsigned char*>(x.data) + img * q.c_in * hw * dtype_size(x.dtype),
              w.data,
              static_cast<unsigned char*>(y.data) + img * q.c_out * hw * dtype_size(y.dtype),
              beta);
    after_library_call();
  }
}

// Whether the kernel storing a conv's outputs, a block per plane, computes the
// channel means: the depthwise kernel, or the epilogue of a 1x1 conv's GEMM, on
// planes the width of a warp's row, or enough of them to fill the GPU. A block per
// large plane, on fewer blocks than 2 per SM, left most of the GPU idle: D0's 32
// planes of 256x256 took 0.15 ms on an H200, as long as the conv on every SM
// followed by reduce's 32 warps had.
bool CudaBackend::mean_block_per_plane(const Conv2dParams& p) const {
  const int64_t plane = p.h_out * p.w_out, planes = p.n * p.c_out;
  const bool gemm = p.groups == 1 && reads_input_directly(p) && !fuses_pointwise(p);
  return (p.is_depthwise() || gemm) && plane > 0 && planes > 0 &&
         (plane <= cuda::kWarpRow || planes >= 2 * multiprocessors_);
}

// The other depthwise convs' means, a block per chunk of a plane, where the stream's
// scratch holds their chunks (D0's five and B0's three blocks with planes over 1024
// and fewer than 2 per SM: reduce's launch, a step on the longest chain each, gone).
// Beyond it the conv and reduce's block per row run apart (the same bits: the
// composition is the contract).
bool CudaBackend::splits_means(const Conv2dParams& p) const {
  if (!p.is_depthwise() || mean_block_per_plane(p)) return false;
  const int64_t plane = p.h_out * p.w_out, planes = p.n * p.c_out;
  const int64_t chunks = (plane + cuda::kLongRowChunk - 1) / cuda::kLongRowChunk;
  return plane > 0 && planes > 0 && planes <= kSplitMeanPlanes &&
         planes * chunks <= kSplitMeanChunkSums;
}

bool CudaBackend::means_in_conv_kernel(const Conv2dParams& p) const {
  return mean_block_per_plane(p) || splits_means(p);
}

// A 1x1 conv's means: cuBLAS's product into y, then its epilogue and the means in one
// launch (B0's last conv, before its pool: one launch fewer than epilogue, then reduce).
void CudaBackend::conv2d_channel_mean(const Conv2dParams& p, const Tensor& x, const Tensor& w,
                                      const Tensor* bias, Tensor& y, Tensor& mean,
                                      void* workspace) {
  if (!means_in_conv_kernel(p)) {
    Backend::conv2d_channel_mean(p, x, w, bias, y, mean, workspace);
    return;
  }
  cuda::with_storage(y.dtype, "conv2d_channel_mean", [&](auto tag) {
    using T = decltype(tag);
    if (p.is_depthwise()) {
      // The current stream's scratch (CudaBackend::split_mean_scratch_).
      char* at = static_cast<char*>(split_mean_scratch_) + queue_ * kSplitMeanScratchBytes;
      const SplitMeanScratch split{
          reinterpret_cast<unsigned*>(at),
          reinterpret_cast<float*>(at + kSplitMeanPlanes * sizeof(unsigned))};
      const auto out = depthwise_outputs<T>(p, stored_planes(cuda::data<T>(x), conv32(p)), w,
                                            bias, y);
      // A block per chunk of a plane where the planes are too few for the GPU.
      if (splits_means(p))
        launch_plane_mean_split<T>(*this, out, p.n * p.c_out, split, mean);
      else
        launch_plane_mean<T>(*this, out, p.n * p.c_out, 0, mean);
      return;
    }
    pointwise_gemm(p, x, w, y, 0.f);
    using Outputs = EpilogueOutputs<T>;
    const Conv32 q = conv32(p);
    const Outputs out{p.act, bias ? cuda::data<T>(*bias) : nullptr, cuda::data<T>(y),
                      q.h_out * q.w_out, q.c_out};
    launch_plane_mean<T, Outputs>(*this, out, p.n * p.c_out, 0, mean);
  });
}

// The 1x1 conv's product into the workspace (cuBLAS, no epilogue), then the
// depthwise conv and its means, each block staging its input plane in shared memory
// with the 1x1 conv's bias and activation applied (StagedPlanes): no epilogue launch,
// and the block's largest tensor written and read once instead of twice each.
// Input planes of at most kStagedPlane elements (32 KiB of floats, within the 48 KiB
// a block takes without opting in: B0's from 56x56 down, D0's from 64x64), where the
// means take a block per plane: where those fill the GPU, or where split means would
// give each plane one block anyway (at most kLongRowChunk outputs: B0's 144 planes of
// 56x56, D0's 240 of 64x64). The composition elsewhere, and for depthwise convs
// without means (in these models squeeze-excitation pools every one).
constexpr int64_t kStagedPlane = 8192;

void CudaBackend::pointwise_depthwise_conv2d(const Conv2dParams& pw, const Conv2dParams& dw,
                                             const Tensor& x, const Tensor& w_pw,
                                             const Tensor* b_pw, const Tensor& w_dw,
                                             const Tensor* b_dw, Tensor& y, Tensor* mean,
                                             void* workspace) {
  const int64_t staged = dw.h * dw.w;
  const bool block_per_plane = mean_block_per_plane(dw) ||
                               (splits_means(dw) && dw.h_out * dw.w_out <= cuda::kLongRowChunk);
  if (!mean || !block_per_plane || staged > kStagedPlane || fuses_pointwise(pw)) {
    Backend::pointwise_depthwise_conv2d(pw, dw, x, w_pw, b_pw, w_dw, b_dw, y, mean, workspace);
    return;
  }
  const char* op = "pointwise_depthwise_conv2d";
  check(workspace != nullptr, ErrorKind::Backend, op,
        ": needs pointwise_depthwise_conv2d_workspace() bytes of workspace and got none");
  void* rest = nullptr;
  Tensor product = workspace_tensor(pw.output_shape(), workspace, &rest);
  pointwise_gemm(pw, x, w_pw, product, 0.f);
  cuda::with_storage(y.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    const StagedPlanes<T> in{
        ActivatedPlanes<T>{cuda::data<T>(product), b_pw ? cuda::data<T>(*b_pw) : nullptr, pw.act,
                           static_cast<int>(staged), static_cast<int>(pw.c_out)},
        nullptr};
    // A block per plane: stage() fills the block's shared memory with its whole plane.
    launch_plane_mean<T>(*this, depthwise_outputs<T>(dw, in, w_dw, b_dw, y), dw.n * dw.c_out,
                         static_cast<size_t>(staged) * sizeof(float), *mean);
  });
}

void CudaBackend::conv2d_residual(const Conv2dParams& p, const Tensor& x, const Tensor& w,
                                  const Tensor* bias, const Tensor& residual, Tensor& y,
                                  void* workspace) {
  check(p.act.kind == ActKind::None, ErrorKind::Unsupported,
        "conv2d_residual: the residual is added after the conv, so it takes no activation");
  conv2d_with_residual(p, x, w, bias, &residual, y, workspace);
}

void CudaBackend::conv2d_with_residual(const Conv2dParams& p, const Tensor& x, const Tensor& w,
                                       const Tensor* bias, const Tensor* residual, Tensor& y,
                                       void* workspace) {
  const Conv32 q = conv32(p);
  check(p.groups >= 1 && p.c_in % p.groups == 0 && p.c_out % p.groups == 0, ErrorKind::Shape,
        "cuda conv2d: groups ", p.groups, " do not divide c_in ", p.c_in, " and c_out ", p.c_out);
  const int out_total = q.n * q.c_out * q.h_out * q.w_out;
  if (out_total == 0) return;
  cuda::with_storages(x.dtype, y.dtype, "conv2d", [&](auto tag, auto y_tag) {
    using T = decltype(tag);
    using Y = decltype(y_tag);
    const T* bias_data = bias ? cuda::data<T>(*bias) : nullptr;
    const T* residual_data = residual ? cuda::data<T>(*residual) : nullptr;
    if (p.is_depthwise()) {
      depthwise_conv_kernel<T, Y><<<cuda::blocks_for(out_total), cuda::kBlock, 0, stream_>>>(
          q, p.act, cuda::data<T>(x), cuda::data<T>(w), bias_data, residual_data,
          cuda::data<Y>(y), out_total);
      after_launch("depthwise_conv_kernel");
      return;
    }
    if (fuses_pointwise(p)) {
      const int hw = q.h_out * q.w_out;
      launch_pointwise(pointwise_grid(q), stream_, tensor_cores_, q.c_out, hw, q.c_in, p.act,
                       cuda::data<T>(w), StoredX<T>{cuda::data<T>(x), q.c_in, hw}, bias_data,
                       residual_data, cuda::data<Y>(y));
      after_launch("pointwise_conv_kernel");
      return;
    }
    if (direct_conv_applies(p)) {
      const DirectConvSplit split{q.h_out * q.w_out,
                                  static_cast<int>(direct_blocks_per_group(p)),
                                  static_cast<int>(p.groups)};
      const dim3 grid(cuda::blocks_for(split.hw), split.channel_blocks(), q.n);
      direct_conv_kernel<T, Y><<<grid, cuda::kBlock, 0, stream_>>>(
          q, split, p.act, cuda::data<T>(x), cuda::data<T>(w), bias_data, residual_data,
          cuda::data<Y>(y));
      after_launch("direct_conv_kernel");
      return;
    }
#ifdef REPSHARE_WITH_CUDNN
    if (cudnn_runs(p)) {
      check(x.dtype == y.dtype, ErrorKind::Unsupported, "cuda conv2d: cuDNN stores ",
            dtype_name(x.dtype), " outputs only (conv2d_stores_f32)");
      before_library_call(Library::Cudnn);
      cudnn_conv(p).forward(cudnn_, x.data, w.data, y.data, workspace);
      after_library_call(Library::Cudnn);
    } else  // im2col + cuBLAS below
#endif
    {
      const bool direct = reads_input_directly(p);
      check(direct || workspace, ErrorKind::Backend, "cuda conv2d: a ", p.kh, "x", p.kw,
            " convolution needs conv2d_workspace() bytes of workspace and got none");
      const int groups = static_cast<int>(p.groups);
      const int hw_out = q.h_out * q.w_out;
      const int col_total = q.c_in * q.kh * q.kw * hw_out;
      for (int img = 0; img < q.n; ++img) {
        const T* x_img = cuda::data<T>(x) + static_cast<size_t>(img) * q.c_in * q.h * q.w;
        Y* y_img = cuda::data<Y>(y) + static_cast<size_t>(img) * q.c_out * hw_out;
        const T* operand = x_img;
        if (!direct) {
          T* col = static_cast<T*>(workspace);
          im2col_kernel<T><<<cuda::blocks_for(col_total), cuda::kBlock, 0, stream_>>>(
              q, x_img, col, col_total);
          after_launch("im2col_kernel");
          operand = col;
        }
        before_library_call();
        conv_gemm(cublas_, x.dtype, y.dtype, q, groups, operand, w.data, y_img, 0.f);
        after_library_call();
      }
    }
    if (bias_data || residual_data || p.act.kind != ActKind::None) {
      launch_epilogue<T, Y>(stream_, p.act, bias_data, residual_data, cuda::data<Y>(y),
                            q.c_out, q.h_out * q.w_out, out_total);
      after_launch("epilogue_kernel");
    }
  });
}

}  // namespace repshare
