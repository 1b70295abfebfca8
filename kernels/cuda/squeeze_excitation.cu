// Squeeze-excitation in two launches instead of five (two GEMMs with their
// bias/activation epilogues and a broadcast Mul): one block per image computes the
// gate, its mean and hidden layer in shared memory; then one thread per target
// element applies it. At batch 1 with a small target (the gate folded into the
// projection conv's weights, c_out rows of c; or the 7x7 and 14x14 activations of
// the last stages, whose projections are too wide to fold) it is one launch: each
// block computes the hidden layer again and gates a slice of the channels; with the
// 1x1 conv that reads the gated tensor (squeeze_excitation_conv2d), further blocks
// start that conv's output from its bias plus residual for cuBLAS to add to.
#include <algorithm>

#include "kernels/cpu/activation_math.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/conv_start.cuh"
#include "kernels/cuda/cuda_storage.cuh"
#include "kernels/cuda/cuda_util.h"
#include "kernels/cuda/row_reduce.cuh"

namespace repshare {
namespace {

struct Se32 {
  int n, c, c_se, outer, inner;
  Activation act_reduce, act_expand;
};

// hidden[0, c_se) = act_reduce(w_reduce . mean + b_reduce) for one image, with
// m[0, c) its mean, both in shared memory. A warp per hidden unit (lanes stride
// along c, then a shuffle sum: coalesced rows of w_reduce). Ends with a barrier.
template <typename T>
__device__ void se_hidden(const Se32& p, const T* __restrict__ mean, const T* __restrict__ w_reduce,
                          const T* __restrict__ b_reduce, float* m, float* hidden) {
  for (int k = threadIdx.x; k < p.c; k += blockDim.x) m[k] = cuda::as_float(mean[k]);
  __syncthreads();
  const int lane = threadIdx.x % 32, warps = blockDim.x / 32;
  for (int j = threadIdx.x / 32; j < p.c_se; j += warps) {
    const T* row = w_reduce + static_cast<size_t>(j) * p.c;
    float s = 0.f;
#pragma unroll 16  // loads in flight (B0's 1152 channels: 36 per lane); the order kept
    for (int k = lane; k < p.c; k += 32) s += cuda::as_float(row[k]) * m[k];
    s = cuda::warp_combine(s, [](float a, float b) { return a + b; });
    if (lane == 0) {
      const float bias = b_reduce ? cuda::as_float(b_reduce[j]) : 0.f;
      hidden[j] = apply_activation(p.act_reduce, s + bias);
    }
  }
  __syncthreads();
}

// The gate of channel ch: act_expand(w_expand[ch] . hidden + b_expand[ch]) (c_se is
// small: 4..80 here, a loop per thread).
template <typename T>
__device__ float se_gate_of(const Se32& p, const T* __restrict__ w_expand,
                            const T* __restrict__ b_expand, const float* hidden, int ch) {
  const T* row = w_expand + static_cast<size_t>(ch) * p.c_se;
  float s = b_expand ? cuda::as_float(b_expand[ch]) : 0.f;
#pragma unroll 16
  for (int k = 0; k < p.c_se; ++k) s += cuda::as_float(row[k]) * hidden[k];
  return apply_activation(p.act_expand, s);
}

// The gate's blocks: its chain of dependent loads is the hidden layer's rows per
// warp (c_se / warps, c / 32 each) and the channels per thread (c_se each); with
// 1024 threads rather than 256 B0's 1152-channel squeeze-excitation waits on a
// quarter of them. The bits do not depend on it (a warp per hidden unit, a thread
// per gate). Launch bounds of one block per SM: the gating blocks are fewer than the
// SMs (B0's: 18 to 54 for 132), and ptxas otherwise fits two blocks of 1024 in 32
// registers a thread, too few for the unrolled loops' loads in flight.
constexpr int kSeBlock = 1024;

// gate[img, :] for img = blockIdx.x.
template <typename T>
__global__ void __launch_bounds__(kSeBlock, 1)
    se_gate_kernel(Se32 p, const T* __restrict__ mean, const T* __restrict__ w_reduce,
                   const T* __restrict__ b_reduce, const T* __restrict__ w_expand,
                   const T* __restrict__ b_expand, float* __restrict__ gate) {
  extern __shared__ float shared[];
  float* m = shared;             // [c]
  float* hidden = shared + p.c;  // [c_se]
  const int img = blockIdx.x;
  se_hidden(p, mean + static_cast<size_t>(img) * p.c, w_reduce, b_reduce, m, hidden);
  for (int ch = threadIdx.x; ch < p.c; ch += blockDim.x)
    gate[img * p.c + ch] = se_gate_of(p, w_expand, b_expand, hidden, ch);
}

// Batch 1, target [outer, c, inner]: a slice of kSeSlice channels [s * kSeSlice,
// +kSeSlice) of every row, with the same gate arithmetic as se_gate_kernel +
// se_apply_kernel, is gated by `parts` blocks (se_parts), kSeUnroll elements per
// thread each, loaded before any is stored (cuda::for_each_value): a thread walking
// its elements one by one waited for each load in turn (D0's 1152 channels by 192
// rows: 12 per thread, 18 blocks). Consecutive threads take consecutive elements of a
// channel's inner run (or, inner 1, consecutive channels): coalesced. The blocks
// after those fill start.y, kSeUnroll elements per thread too.
constexpr int kSeSlice = 64;
constexpr int kSeUnroll = cuda::kValuesAtOnce;
constexpr int kSeBlockElements = kSeBlock * kSeUnroll;

// Blocks per slice: each gates at most kSeBlockElements of a slice's elements and
// computes the hidden layer again (c * c_se weights read from L2).
int se_parts(const Se32& p) {
  const int64_t slice = static_cast<int64_t>(p.outer) * std::min(kSeSlice, p.c) * p.inner;
  return static_cast<int>(
      std::max<int64_t>(1, (slice + kSeBlockElements - 1) / kSeBlockElements));
}

template <typename T, typename Y>
__global__ void __launch_bounds__(kSeBlock, 1)
    se_rows_kernel(Se32 p, const T* __restrict__ mean, const T* __restrict__ w_reduce,
                   const T* __restrict__ b_reduce, const T* __restrict__ w_expand,
                   const T* __restrict__ b_expand, const T* __restrict__ target,
                   T* __restrict__ y, int parts, cuda::ConvStart<T, Y> start) {
  const int block = blockIdx.x, gating = (p.c + kSeSlice - 1) / kSeSlice * parts;
  // The elements [base, base + kSeBlockElements) of this block's part (or, past the
  // gating blocks, of start), thread t taking base + t, + kSeBlock, ...
  const int base = (block < gating ? block % parts : block - gating) * kSeBlockElements;
  const int first = base + static_cast<int>(threadIdx.x);
  if (block >= gating) {  // whole blocks: no barrier waits
    cuda::for_each_value(
        first, min(start.total, base + kSeBlockElements), kSeBlock,
        [&start](int i) { return start.value(i); },
        [&start](int i, float v) { start.store(i, v); });
    return;
  }
  extern __shared__ float shared[];
  float* m = shared;              // [c]
  float* hidden = shared + p.c;   // [c_se]
  float* gate = hidden + p.c_se;  // [kSeSlice]
  se_hidden(p, mean, w_reduce, b_reduce, m, hidden);
  const int ch0 = block / parts * kSeSlice;
  const int width = min(kSeSlice, p.c - ch0);
  for (int k = threadIdx.x; k < width; k += blockDim.x)
    gate[k] = se_gate_of(p, w_expand, b_expand, hidden, ch0 + k);
  __syncthreads();
  const int run = width * p.inner;  // one row's elements in this slice
  // Element e of the slice gated, with its offset in target and y.
  struct Gated {
    size_t at;
    float v;
  };
  cuda::for_each_value(
      first, min(p.outer * run, base + kSeBlockElements), kSeBlock,
      [&](int e) {
        const int k = e % run / p.inner;  // the channel in the slice
        const size_t at = (static_cast<size_t>(e / run) * p.c + ch0 + k) * p.inner + e % p.inner;
        return Gated{at, cuda::as_float(target[at]) * gate[k]};
      },
      [y](int, Gated g) { y[g.at] = cuda::stored<T>(g.v); });
}

template <typename T>
__global__ void se_apply_kernel(Se32 p, const T* __restrict__ target,
                                const float* __restrict__ gate, T* __restrict__ y, int total) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= total) return;
  const int row = i / p.inner;  // o * c + ch
  const float s = gate[p.n == 1 ? row % p.c : row];
  y[i] = cuda::stored<T>(cuda::as_float(target[i]) * s);
}

// Batch 1 with the gate folded into the projection weights, or gating planes of at
// most kSeOneLaunchPlane elements: se_rows_kernel, one launch, its gates in shared
// memory. Larger planes keep se_apply_kernel's one thread per element: a block per
// 64 channels would leave most of the GPU idle on B0's 112x112 blocks (96 channels).
constexpr int64_t kSeOneLaunchPlane = 256;

bool se_in_one_launch(const SqueezeExcitationParams& p) {
  return p.n == 1 && p.inner <= kSeOneLaunchPlane;
}

}  // namespace

size_t CudaBackend::squeeze_excitation_workspace(const SqueezeExcitationParams& p) const {
  if (se_in_one_launch(p)) return 0;
  return static_cast<size_t>(p.n * p.c) * sizeof(float);
}

namespace {

// The kernels' parameters, with 32-bit sizes, and the shared memory a block of
// them takes.
Se32 se32(const SqueezeExcitationParams& p, size_t* shared) {
  const char* op = "squeeze_excitation";
  Se32 q;
  q.n = cuda::to_int(p.n, op, "n");
  q.c = cuda::to_int(p.c, op, "c");
  q.c_se = cuda::to_int(p.c_se, op, "c_se");
  q.outer = cuda::to_int(p.outer, op, "outer");
  q.inner = cuda::to_int(p.inner, op, "inner");
  q.act_reduce = p.act_reduce;
  q.act_expand = p.act_expand;
  cuda::to_int(p.c * p.c_se, op, "weights numel");
  cuda::to_int(p.outer * p.c * p.inner, op, "numel");
  check(p.n == 1 || p.n == p.outer, ErrorKind::Shape, "cuda squeeze_excitation: ", p.n,
        " gates for ", p.outer, " rows");
  *shared = static_cast<size_t>(p.c + p.c_se) * sizeof(float);
  // 48 KiB of shared memory per block without opting in: 12k channels, far above
  // any squeeze-excitation here (1152 in B0, 1280 at most in these models).
  check(*shared + kSeSlice * sizeof(float) <= 48 * 1024, ErrorKind::Unsupported,
        "cuda squeeze_excitation: ", p.c, " + ", p.c_se,
        " channels exceed the 48 KiB of shared memory of one block");
  return q;
}

// se_rows_kernel: se_parts blocks per kSeSlice channels, then the blocks filling
// start.y.
template <typename T, typename Y>
void launch_se_rows(CUstream_st* stream, const Se32& q, size_t shared, const Tensor& mean,
                    const Tensor& w_reduce, const Tensor* b_reduce, const Tensor& w_expand,
                    const Tensor* b_expand, const Tensor& target, Tensor& y,
                    const cuda::ConvStart<T, Y>& start) {
  const int parts = se_parts(q);
  const unsigned gating = static_cast<unsigned>((q.c + kSeSlice - 1) / kSeSlice * parts);
  const unsigned fill_blocks =
      static_cast<unsigned>((int64_t{start.total} + kSeBlockElements - 1) / kSeBlockElements);
  se_rows_kernel<T, Y><<<gating + fill_blocks, kSeBlock, shared + kSeSlice * sizeof(float),
                         stream>>>(
      q, cuda::data<T>(mean), cuda::data<T>(w_reduce),
      b_reduce ? cuda::data<T>(*b_reduce) : nullptr, cuda::data<T>(w_expand),
      b_expand ? cuda::data<T>(*b_expand) : nullptr, cuda::data<T>(target), cuda::data<T>(y),
      parts, start);
}

}  // namespace

void CudaBackend::squeeze_excitation(const SqueezeExcitationParams& p, const Tensor& mean,
                                     const Tensor& w_reduce, const Tensor* b_reduce,
                                     const Tensor& w_expand, const Tensor* b_expand,
                                     const Tensor& target, Tensor& y, void* workspace) {
  const char* op = "squeeze_excitation";
  size_t shared = 0;
  const Se32 q = se32(p, &shared);
  const int total = q.outer * q.c * q.inner;
  if (total == 0) return;
  float* gate = static_cast<float*>(workspace);
  cuda::with_storage(y.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    if (se_in_one_launch(p)) {
      launch_se_rows(stream_, q, shared, mean, w_reduce, b_reduce, w_expand, b_expand, target, y,
                     cuda::ConvStart<T, T>{nullptr, nullptr, nullptr, 1, 1, 0});
      after_launch("se_rows_kernel");
      return;
    }
    const T* br = b_reduce ? cuda::data<T>(*b_reduce) : nullptr;
    const T* be = b_expand ? cuda::data<T>(*b_expand) : nullptr;
    se_gate_kernel<T><<<static_cast<unsigned>(q.n), kSeBlock, shared, stream_>>>(
        q, cuda::data<T>(mean), cuda::data<T>(w_reduce), br, cuda::data<T>(w_expand), be, gate);
    after_launch("se_gate_kernel");
    se_apply_kernel<T><<<cuda::blocks_for(total), cuda::kBlock, 0, stream_>>>(
        q, cuda::data<T>(target), gate, cuda::data<T>(y), total);
    after_launch("se_apply_kernel");
  });
}

// The gated tensor into the workspace, where Backend's composition puts it, by
// se_rows_kernel, whose extra blocks start y from the conv's bias plus residual;
// then cuBLAS adds the product (beta 1). Two launches instead of three.
void CudaBackend::squeeze_excitation_conv2d(
    const SqueezeExcitationParams& se, const Conv2dParams& conv, bool gates_weights,
    const Tensor& mean, const Tensor& w_reduce, const Tensor* b_reduce, const Tensor& w_expand,
    const Tensor* b_expand, const Tensor& target, const Tensor& other, const Tensor* bias,
    const Tensor* residual, Tensor& y, void* workspace) {
  const char* op = "squeeze_excitation_conv2d";
  if (!se_in_one_launch(se) || !conv.is_pointwise() || conv.act.kind != ActKind::None ||
      fuses_pointwise(conv) || (!bias && !residual)) {
    Backend::squeeze_excitation_conv2d(se, conv, gates_weights, mean, w_reduce, b_reduce,
                                       w_expand, b_expand, target, other, bias, residual, y,
                                       workspace);
    return;
  }
  check(workspace != nullptr, ErrorKind::Backend, op,
        ": needs squeeze_excitation_conv2d_workspace() bytes of workspace and got none");
  size_t shared = 0;
  const Se32 q = se32(se, &shared);
  const int total = cuda::to_int(conv.n * conv.c_out * conv.h_out * conv.w_out, op, "numel");
  if (total == 0 || q.outer * q.c * q.inner == 0) return;
  void* rest = nullptr;
  Tensor gated = workspace_tensor(target.shape, workspace, &rest);
  cuda::with_storages(storage_, y.dtype, op, [&](auto tag, auto y_tag) {
    using T = decltype(tag);
    using Y = decltype(y_tag);
    const cuda::ConvStart<T, Y> start{bias ? cuda::data<T>(*bias) : nullptr,
                                residual ? cuda::data<T>(*residual) : nullptr, cuda::data<Y>(y),
                                cuda::to_int(conv.c_out, op, "c_out"),
                                cuda::to_int(conv.h_out * conv.w_out, op, "h_out * w_out"),
                                total};
    launch_se_rows(stream_, q, shared, mean, w_reduce, b_reduce, w_expand, b_expand, target,
                   gated, start);
    after_launch("se_rows_kernel");
  });
  pointwise_gemm(conv, gates_weights ? other : gated, gates_weights ? gated : other, y, 1.f);
}

}  // namespace repshare
