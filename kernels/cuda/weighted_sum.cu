// BiFPN fusion: y = act(sum_i weights[i] * xs[i]), each input read as it is or
// through its folded max-pool / nearest-upsampling (weighted_sum_resampled).
#include "kernels/cpu/activation_math.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_storage.cuh"
#include "kernels/cuda/cuda_util.h"
#include "kernels/cuda/window.cuh"

namespace repshare {
namespace {

// One input of the fusion: its pointer and weight, and how it is resampled to
// y's [planes, h_out, w_out] (pool.h_out / w_out are y's).
struct FusionInput32 {
  ResampleKind kind;
  cuda::Pool32 pool;       // MaxPool: window over the input plane [pool.h, pool.w]
  int in_h, in_w, fh, fw;  // NearestUp: y[oy][ox] = x[oy / fh][ox / fw] of [in_h, in_w]
};

// Passed by value: the input pointers travel in the launch's parameter space.
template <typename T>
struct FusionInputs {
  const T* x[kMaxFusionInputs];
  float w[kMaxFusionInputs];
  FusionInput32 r[kMaxFusionInputs];
  int count, h_out, w_out;
};

template <typename T>
__device__ __forceinline__ float fusion_input(const FusionInputs<T>& in, int k, int i) {
  const FusionInput32& r = in.r[k];
  if (r.kind == ResampleKind::None) return cuda::as_float(in.x[k][i]);
  const int ox = i % in.w_out, oy = (i / in.w_out) % in.h_out, plane = i / (in.w_out * in.h_out);
  if (r.kind == ResampleKind::MaxPool) {
    // Rounded to storage as pool2d's output would be (only -FLT_MAX changes, in fp16).
    const T* xp = in.x[k] + static_cast<size_t>(plane) * r.pool.h * r.pool.w;
    return cuda::as_float(cuda::stored<T>(cuda::window_max(r.pool, xp, oy, ox)));
  }
  const T* xp = in.x[k] + static_cast<size_t>(plane) * r.in_h * r.in_w;
  return cuda::as_float(xp[(oy / r.fh) * r.in_w + ox / r.fw]);
}

template <typename T>
__global__ void weighted_sum_kernel(FusionInputs<T> in, Activation act, T* y, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  float s = 0.f;
  for (int k = 0; k < in.count; ++k) s += in.w[k] * fusion_input(in, k, i);
  y[i] = cuda::stored<T>(apply_activation(act, s));
}

}  // namespace

void CudaBackend::weighted_sum(const WeightedSumParams& p, const Tensor* const* xs, Tensor& y) {
  const FusionResample none[kMaxFusionInputs] = {};
  weighted_sum_resampled(p, none, xs, y, nullptr);
}

size_t CudaBackend::weighted_sum_resampled_workspace(const WeightedSumParams&,
                                                     const FusionResample*) const {
  return 0;  // windows are read in place
}

void CudaBackend::weighted_sum_resampled(const WeightedSumParams& p,
                                         const FusionResample* resample, const Tensor* const* xs,
                                         Tensor& y, void*) {
  const char* op = "weighted_sum";
  check(p.count >= 1 && p.count <= kMaxFusionInputs, ErrorKind::Unsupported, "cuda ", op, ": ",
        p.count, " inputs (1..", kMaxFusionInputs, " supported)");
  const int n = cuda::to_int(p.numel, op, "numel");
  if (n == 0) return;
  cuda::with_storage(y.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    FusionInputs<T> in = {};
    in.count = p.count;
    // y is [.., h_out, w_out]: only resampled inputs index by row and column.
    in.h_out = cuda::to_int(y.dim_r(1), op, "h");
    in.w_out = cuda::to_int(y.dim_r(0), op, "w");
    for (int k = 0; k < p.count; ++k) {
      in.x[k] = cuda::data<T>(*xs[k]);
      in.w[k] = p.weights[k];
      FusionInput32& r = in.r[k];
      r.kind = resample[k].kind;
      if (r.kind == ResampleKind::MaxPool) {
        r.pool = cuda::pool32(resample[k].pool, op);
      } else if (r.kind == ResampleKind::NearestUp) {
        const ResizeParams& u = resample[k].upsample;
        cuda::to_int(u.outer * u.h * u.w, op, "input numel");
        r.in_h = cuda::to_int(u.h, op, "h");
        r.in_w = cuda::to_int(u.w, op, "w");
        r.fh = cuda::to_int(u.h_out / u.h, op, "factor");
        r.fw = cuda::to_int(u.w_out / u.w, op, "factor");
      }
    }
    weighted_sum_kernel<T><<<cuda::blocks_for(n), cuda::kBlock, 0, stream_>>>(in, p.act,
                                                                             cuda::data<T>(y), n);
  });
  after_launch("weighted_sum_kernel");
}

}  // namespace repshare
