// BiFPN fusion's inputs on the device: each input's pointer, weight and folded
// resampling (max-pool or nearest upsampling), and the fused value at one output
// element as weighted_sum stores it. Shared by weighted_sum.cu (which stores the
// sum) and conv2d.cu (whose depthwise kernels compute it as they read it, so that
// weighted_sum_separable_conv2d has the bits of weighted_sum then the conv).
#pragma once

#include "engine/backend.h"
#include "kernels/cpu/activation_math.h"
#include "kernels/cuda/cuda_storage.cuh"
#include "kernels/cuda/cuda_util.h"
#include "kernels/cuda/window.cuh"

namespace repshare {
namespace cuda {

// One input of the fusion: how it is resampled to the sum's [planes, h_out, w_out]
// (pool.h_out / w_out are the sum's).
struct FusionInput32 {
  ResampleKind kind;
  Pool32 pool;             // MaxPool: window over the input plane [pool.h, pool.w]
  int in_h, in_w, fh, fw;  // NearestUp: y[oy][ox] = x[oy / fh][ox / fw] of [in_h, in_w]
};

// Passed by value: the input pointers travel in the launch's parameter space.
template <typename T>
struct FusionInputs {
  const T* x[kMaxFusionInputs];
  float w[kMaxFusionInputs];
  FusionInput32 r[kMaxFusionInputs];
  int count, h_out, w_out;
  Activation act;
};

// Input k at element i of the sum, resampled.
template <typename T>
__device__ __forceinline__ float fusion_input(const FusionInputs<T>& in, int k, int i) {
  const FusionInput32& r = in.r[k];
  if (r.kind == ResampleKind::None) return as_float(in.x[k][i]);
  const int ox = i % in.w_out, oy = (i / in.w_out) % in.h_out, plane = i / (in.w_out * in.h_out);
  if (r.kind == ResampleKind::MaxPool) {
    // Rounded to storage as pool2d's output would be (only -FLT_MAX changes, in fp16).
    const T* xp = in.x[k] + static_cast<size_t>(plane) * r.pool.h * r.pool.w;
    return as_float(stored<T>(window_max(r.pool, xp, oy, ox)));
  }
  const T* xp = in.x[k] + static_cast<size_t>(plane) * r.in_h * r.in_w;
  return as_float(xp[(oy / r.fh) * r.in_w + ox / r.fw]);
}

// act(sum_k w[k] * input k) at element i, rounded to storage as weighted_sum stores it.
template <typename T>
__device__ __forceinline__ T fused_value(const FusionInputs<T>& in, int i) {
  float s = 0.f;
  for (int k = 0; k < in.count; ++k) s += in.w[k] * fusion_input(in, k, i);
  return stored<T>(apply_activation(in.act, s));
}

// The device form of a weighted sum into [.., h_out, w_out] (sizes checked to fit
// 32 bits; op names the caller in errors).
template <typename T>
FusionInputs<T> fusion_inputs(const WeightedSumParams& p, const FusionResample* resample,
                              const Tensor* const* xs, int64_t h_out, int64_t w_out,
                              const char* op) {
  check(p.count >= 1 && p.count <= kMaxFusionInputs, ErrorKind::Unsupported, "cuda ", op, ": ",
        p.count, " inputs (1..", kMaxFusionInputs, " supported)");
  FusionInputs<T> in = {};
  in.count = p.count;
  in.act = p.act;
  // Only resampled inputs index by row and column.
  in.h_out = to_int(h_out, op, "h");
  in.w_out = to_int(w_out, op, "w");
  for (int k = 0; k < p.count; ++k) {
    in.x[k] = data<T>(*xs[k]);
    in.w[k] = p.weights[k];
    FusionInput32& r = in.r[k];
    r.kind = resample[k].kind;
    if (r.kind == ResampleKind::MaxPool) {
      r.pool = pool32(resample[k].pool, op);
    } else if (r.kind == ResampleKind::NearestUp) {
      const ResizeParams& u = resample[k].upsample;
      to_int(u.outer * u.h * u.w, op, "input numel");
      r.in_h = to_int(u.h, op, "h");
      r.in_w = to_int(u.w, op, "w");
      r.fh = to_int(u.h_out / u.h, op, "factor");
      r.fw = to_int(u.w_out / u.w, op, "factor");
    }
  }
  return in;
}

}  // namespace cuda
}  // namespace repshare
