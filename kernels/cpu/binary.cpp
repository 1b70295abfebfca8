#include <algorithm>
#include <cmath>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_kernels.h"

namespace repshare {
namespace {

template <BinaryOp Op>
inline float apply_binary(float a, float b) {
  switch (Op) {
    case BinaryOp::Add: return a + b;
    case BinaryOp::Sub: return a - b;
    case BinaryOp::Mul: return a * b;
    case BinaryOp::Div: return a / b;
    case BinaryOp::Pow: return std::pow(a, b);
    case BinaryOp::Max: return std::max(a, b);
    case BinaryOp::Min: return std::min(a, b);
  }
  return 0.f;
}

// One innermost row; the four stride cases get their own loops so that the
// contiguous and the broadcast-scalar ones vectorise.
template <BinaryOp Op>
void binary_row(const float* a, int64_t sa, const float* b, int64_t sb, float* y, int64_t n) {
  if (sa == 1 && sb == 1) {
    for (int64_t i = 0; i < n; ++i) y[i] = apply_binary<Op>(a[i], b[i]);
  } else if (sa == 1 && sb == 0) {
    const float bv = *b;
    for (int64_t i = 0; i < n; ++i) y[i] = apply_binary<Op>(a[i], bv);
  } else if (sa == 0 && sb == 1) {
    const float av = *a;
    for (int64_t i = 0; i < n; ++i) y[i] = apply_binary<Op>(av, b[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) y[i] = apply_binary<Op>(a[i * sa], b[i * sb]);
  }
}

// Merges adjacent dims that both operands walk contiguously (and drops size-1
// dims) so the innermost row is as long as possible: [N,C,H,W] + [N,C,H,W] becomes
// one row, [N,C,H,W] * [N,C,1,1] becomes N*C rows of H*W.
BroadcastParams coalesce(const BroadcastParams& p) {
  BroadcastParams q = p;
  q.rank = 0;
  for (int d = 0; d < p.rank; ++d) {
    if (p.out_dims[d] == 1) continue;
    if (q.rank > 0) {
      const int last = q.rank - 1;
      if (q.a_strides[last] == p.a_strides[d] * p.out_dims[d] &&
          q.b_strides[last] == p.b_strides[d] * p.out_dims[d]) {
        q.out_dims[last] *= p.out_dims[d];
        q.a_strides[last] = p.a_strides[d];
        q.b_strides[last] = p.b_strides[d];
        continue;
      }
    }
    q.out_dims[q.rank] = p.out_dims[d];
    q.a_strides[q.rank] = p.a_strides[d];
    q.b_strides[q.rank] = p.b_strides[d];
    ++q.rank;
  }
  if (q.rank == 0) {  // a scalar result
    q.rank = 1;
    q.out_dims[0] = 1;
    q.a_strides[0] = q.b_strides[0] = 0;
  }
  return q;
}

template <BinaryOp Op>
void binary_kernel(const BroadcastParams& raw, const float* a, const float* b, float* y,
                   int threads) {
  const BroadcastParams p = coalesce(raw);
  const int inner_dim = p.rank - 1;
  const int64_t row = p.out_dims[inner_dim];
  int64_t rows = 1;
  for (int d = 0; d < inner_dim; ++d) rows *= p.out_dims[d];
  if (rows * row == 0) return;
  // Work items are pieces of rows of at most kPiece elements: a same-shape Add
  // (a residual connection) is one row after coalescing and ran on one thread.
  constexpr int64_t kPiece = 4096;
  const int64_t pieces = (row + kPiece - 1) / kPiece;
  const int64_t sa = p.a_strides[inner_dim], sb = p.b_strides[inner_dim];
#pragma omp parallel for num_threads(threads) schedule(static) if (rows * row >= cpu::kMinParallelWork && rows * pieces > 1)
  for (int64_t item = 0; item < rows * pieces; ++item) {
    const int64_t r = item / pieces, lo = item % pieces * kPiece, n = std::min(kPiece, row - lo);
    // Offsets of row r: decompose r over the outer dims, last outer dim fastest.
    int64_t rem = r, off_a = 0, off_b = 0;
    for (int d = inner_dim - 1; d >= 0; --d) {
      const int64_t idx = rem % p.out_dims[d];
      rem /= p.out_dims[d];
      off_a += idx * p.a_strides[d];
      off_b += idx * p.b_strides[d];
    }
    float* yr = y + r * row + lo;
    binary_row<Op>(a + off_a + lo * sa, sa, b + off_b + lo * sb, sb, yr, n);
    cpu::activation_span(p.act, yr, yr, n);
  }
}

}  // namespace

void CpuBackend::binary(const BroadcastParams& p, const Tensor& a, const Tensor& b, Tensor& y) {
  const float *ad = a.f32(), *bd = b.f32();
  float* yd = y.f32();
  switch (p.op) {
    case BinaryOp::Add: return binary_kernel<BinaryOp::Add>(p, ad, bd, yd, threads_);
    case BinaryOp::Sub: return binary_kernel<BinaryOp::Sub>(p, ad, bd, yd, threads_);
    case BinaryOp::Mul: return binary_kernel<BinaryOp::Mul>(p, ad, bd, yd, threads_);
    case BinaryOp::Div: return binary_kernel<BinaryOp::Div>(p, ad, bd, yd, threads_);
    case BinaryOp::Pow: return binary_kernel<BinaryOp::Pow>(p, ad, bd, yd, threads_);
    case BinaryOp::Max: return binary_kernel<BinaryOp::Max>(p, ad, bd, yd, threads_);
    case BinaryOp::Min: return binary_kernel<BinaryOp::Min>(p, ad, bd, yd, threads_);
  }
}

}  // namespace repshare
