// Per-element activation math with ONNX semantics, shared by the CPU kernels
// (scalar tails and reference paths) and the CUDA kernels (compiled by nvcc as
// __host__ __device__). Keep it C++14-clean and free of std:: calls that device
// code cannot make: the C math functions (expf, logf, ...) work on both sides.
#pragma once

#include <math.h>

#include "engine/backend.h"

#ifdef __CUDACC__
#define REPSHARE_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define REPSHARE_HOST_DEVICE inline
#endif

namespace repshare {

// Stable for any x: the exponential is only taken of a non-positive number.
REPSHARE_HOST_DEVICE float sigmoid_scalar(float x) {
  if (x >= 0.f) return 1.f / (1.f + expf(-x));
  const float e = expf(x);
  return e / (1.f + e);
}

// log(1 + exp(x)) without overflow for large x.
REPSHARE_HOST_DEVICE float softplus_scalar(float x) {
  return x > 0.f ? x + log1pf(expf(-x)) : log1pf(expf(x));
}

REPSHARE_HOST_DEVICE float apply_activation(ActKind kind, float alpha, float beta, float x) {
  switch (kind) {
    case ActKind::None: return x;
    case ActKind::Relu: return x > 0.f ? x : 0.f;
    case ActKind::Clip: return fminf(fmaxf(x, alpha), beta);
    case ActKind::Sigmoid: return sigmoid_scalar(x);
    case ActKind::Swish: return x * sigmoid_scalar(x);
    case ActKind::Tanh: return tanhf(x);
    case ActKind::LeakyRelu: return x < 0.f ? alpha * x : x;
    case ActKind::HardSigmoid: return fminf(fmaxf(alpha * x + beta, 0.f), 1.f);
    // ONNX HardSwish: x * HardSigmoid(x) with alpha = 1/6, beta = 0.5.
    case ActKind::HardSwish: return x * fminf(fmaxf(x * (1.f / 6.f) + 0.5f, 0.f), 1.f);
    case ActKind::Elu: return x < 0.f ? alpha * (expf(x) - 1.f) : x;
    case ActKind::Exp: return expf(x);
    case ActKind::Log: return logf(x);
    case ActKind::Sqrt: return sqrtf(x);
    case ActKind::Neg: return -x;
    case ActKind::Abs: return fabsf(x);
    case ActKind::Reciprocal: return 1.f / x;
    case ActKind::Softplus: return softplus_scalar(x);
  }
  return x;
}

REPSHARE_HOST_DEVICE float apply_activation(const Activation& a, float x) {
  return apply_activation(a.kind, a.alpha, a.beta, x);
}

}  // namespace repshare
