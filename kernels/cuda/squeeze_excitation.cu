// Squeeze-excitation in two launches instead of five (two GEMMs with their
// bias/activation epilogues and a broadcast Mul): one block per image computes the
// gate, its mean and hidden layer in shared memory; then one thread per target
// element applies it.
#include "kernels/cpu/activation_math.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_storage.cuh"
#include "kernels/cuda/cuda_util.h"

namespace repshare {
namespace {

struct Se32 {
  int n, c, c_se, outer, inner;
  Activation act_reduce, act_expand;
};

// gate[img, :] for img = blockIdx.x. The reduce layer is a warp per hidden unit
// (lanes stride along c, then a shuffle sum: coalesced rows of w_reduce); the
// expand layer a thread per channel (c_se is small: 4..80 here).
template <typename T>
__global__ void se_gate_kernel(Se32 p, const T* __restrict__ mean, const T* __restrict__ w_reduce,
                               const T* __restrict__ b_reduce, const T* __restrict__ w_expand,
                               const T* __restrict__ b_expand, float* __restrict__ gate) {
  extern __shared__ float shared[];
  float* m = shared;             // [c]
  float* hidden = shared + p.c;  // [c_se]
  const int img = blockIdx.x;
  for (int k = threadIdx.x; k < p.c; k += blockDim.x) m[k] = cuda::as_float(mean[img * p.c + k]);
  __syncthreads();
  const int lane = threadIdx.x % 32, warps = blockDim.x / 32;
  for (int j = threadIdx.x / 32; j < p.c_se; j += warps) {
    const T* row = w_reduce + static_cast<size_t>(j) * p.c;
    float s = 0.f;
    for (int k = lane; k < p.c; k += 32) s += cuda::as_float(row[k]) * m[k];
    for (int offset = 16; offset > 0; offset /= 2) s += __shfl_down_sync(0xffffffffu, s, offset);
    if (lane == 0) {
      const float bias = b_reduce ? cuda::as_float(b_reduce[j]) : 0.f;
      hidden[j] = apply_activation(p.act_reduce, s + bias);
    }
  }
  __syncthreads();
  for (int ch = threadIdx.x; ch < p.c; ch += blockDim.x) {
    const T* row = w_expand + static_cast<size_t>(ch) * p.c_se;
    float s = b_expand ? cuda::as_float(b_expand[ch]) : 0.f;
    for (int k = 0; k < p.c_se; ++k) s += cuda::as_float(row[k]) * hidden[k];
    gate[img * p.c + ch] = apply_activation(p.act_expand, s);
  }
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

}  // namespace

size_t CudaBackend::squeeze_excitation_workspace(const SqueezeExcitationParams& p) const {
  return static_cast<size_t>(p.n * p.c) * sizeof(float);
}

void CudaBackend::squeeze_excitation(const SqueezeExcitationParams& p, const Tensor& mean,
                                     const Tensor& w_reduce, const Tensor* b_reduce,
                                     const Tensor& w_expand, const Tensor* b_expand,
                                     const Tensor& target, Tensor& y, void* workspace) {
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
  const int total = cuda::to_int(p.outer * p.c * p.inner, op, "numel");
  check(p.n == 1 || p.n == p.outer, ErrorKind::Shape, "cuda squeeze_excitation: ", p.n,
        " gates for ", p.outer, " rows");
  if (total == 0) return;
  const size_t shared = static_cast<size_t>(p.c + p.c_se) * sizeof(float);
  // 48 KiB of shared memory per block without opting in: 12k channels, far above
  // any squeeze-excitation here (1152 in B0, 1280 at most in these models).
  check(shared <= 48 * 1024, ErrorKind::Unsupported, "cuda squeeze_excitation: ", p.c, " + ",
        p.c_se, " channels exceed the 48 KiB of shared memory of one block");
  float* gate = static_cast<float*>(workspace);
  cuda::with_storage(y.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    const T* br = b_reduce ? cuda::data<T>(*b_reduce) : nullptr;
    const T* be = b_expand ? cuda::data<T>(*b_expand) : nullptr;
    se_gate_kernel<T><<<static_cast<unsigned>(q.n), cuda::kBlock, shared, stream_>>>(
        q, cuda::data<T>(mean), cuda::data<T>(w_reduce), br, cuda::data<T>(w_expand), be, gate);
    after_launch("se_gate_kernel");
    se_apply_kernel<T><<<cuda::blocks_for(total), cuda::kBlock, 0, stream_>>>(
        q, cuda::data<T>(target), gate, cuda::data<T>(y), total);
    after_launch("se_apply_kernel");
  });
}

}  // namespace repshare
