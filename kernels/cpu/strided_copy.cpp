#include <cstring>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_kernels.h"

namespace repshare {
namespace {

// Drops size-1 dims and merges neighbours that are contiguous in both tensors, so
// a Concat or Slice along an outer axis becomes a few long memcpy rows.
CopyParams coalesce(const CopyParams& p) {
  CopyParams q = p;
  q.rank = 0;
  for (int d = 0; d < p.rank; ++d) {
    if (p.dims[d] == 1) continue;
    if (q.rank > 0) {
      const int last = q.rank - 1;
      if (q.in_strides[last] == p.in_strides[d] * p.dims[d] &&
          q.out_strides[last] == p.out_strides[d] * p.dims[d]) {
        q.dims[last] *= p.dims[d];
        q.in_strides[last] = p.in_strides[d];
        q.out_strides[last] = p.out_strides[d];
        continue;
      }
    }
    q.dims[q.rank] = p.dims[d];
    q.in_strides[q.rank] = p.in_strides[d];
    q.out_strides[q.rank] = p.out_strides[d];
    ++q.rank;
  }
  if (q.rank == 0) {  // one element
    q.rank = 1;
    q.dims[0] = 1;
    q.in_strides[0] = q.out_strides[0] = 1;
  }
  return q;
}

}  // namespace

void CpuBackend::strided_copy(const CopyParams& raw, const Tensor& x, Tensor& y) {
  for (int d = 0; d < raw.rank; ++d)
    if (raw.dims[d] == 0) return;
  const CopyParams p = coalesce(raw);
  const float* in = x.f32() + p.in_offset;
  float* out = y.f32() + p.out_offset;
  const int inner = p.rank - 1;
  const int64_t row = p.dims[inner], si = p.in_strides[inner], so = p.out_strides[inner];
  int64_t rows = 1;
  for (int d = 0; d < inner; ++d) rows *= p.dims[d];
#pragma omp parallel for num_threads(threads_) schedule(static) if (rows * row >= cpu::kMinParallelWork && rows > 1)
  for (int64_t r = 0; r < rows; ++r) {
    int64_t rem = r, off_in = 0, off_out = 0;
    for (int d = inner - 1; d >= 0; --d) {
      const int64_t idx = rem % p.dims[d];
      rem /= p.dims[d];
      off_in += idx * p.in_strides[d];
      off_out += idx * p.out_strides[d];
    }
    const float* s = in + off_in;
    float* t = out + off_out;
    if (si == 1 && so == 1) {
      std::memcpy(t, s, static_cast<size_t>(row) * sizeof(float));
    } else {
      for (int64_t i = 0; i < row; ++i) t[i * so] = s[i * si];
    }
  }
}

}  // namespace repshare
