#include <algorithm>
#include <cstring>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_kernels.h"

namespace repshare {
namespace {

// Input index for output index o on an axis of n input elements, or -1 where the
// output takes the constant. Negative pad_begin crops: i = o - pad_begin is then
// inside the input for every output.
inline int64_t source_index(PadMode mode, int64_t o, int64_t pad_begin, int64_t n) {
  int64_t i = o - pad_begin;
  if (i >= 0 && i < n) return i;
  switch (mode) {
    case PadMode::Constant: return -1;
    case PadMode::Edge: return i < 0 ? 0 : n - 1;
    case PadMode::Wrap: return (i % n + n) % n;
    case PadMode::Reflect: {
      // numpy's 'reflect' (mirror without repeating the edge), periodic in 2(n-1).
      if (n == 1) return 0;
      const int64_t period = 2 * (n - 1);
      i = (i % period + period) % period;
      return i < n ? i : period - i;
    }
  }
  return -1;
}

}  // namespace

void CpuBackend::pad(const PadParams& p, const Tensor& x, Tensor& y) {
  const float* in = x.f32();
  float* out = y.f32();
  const int inner = p.rank - 1;
  if (p.rank == 0) {
    out[0] = in[0];
    return;
  }
  int64_t in_strides[kMaxRank];
  in_strides[inner] = 1;
  for (int d = inner - 1; d >= 0; --d) in_strides[d] = in_strides[d + 1] * p.in_dims[d + 1];
  const int64_t row_out = p.out_dims[inner], row_in = p.in_dims[inner];
  const int64_t begin = p.pad_begin[inner];
  int64_t rows = 1;
  for (int d = 0; d < inner; ++d) rows *= p.out_dims[d];
  if (rows * row_out == 0) return;
  // Output columns [lo, hi) copy input columns [lo - begin, hi - begin) directly.
  const int64_t lo = std::min(row_out, std::max<int64_t>(0, begin));
  const int64_t hi = std::max(lo, std::min(row_out, begin + row_in));
#pragma omp parallel for num_threads(threads_) schedule(static) if (rows * row_out >= cpu::kMinParallelWork && rows > 1)
  for (int64_t r = 0; r < rows; ++r) {
    float* orow = out + r * row_out;
    int64_t rem = r, off = 0;
    bool constant_row = false;
    for (int d = inner - 1; d >= 0; --d) {
      const int64_t o = rem % p.out_dims[d];
      rem /= p.out_dims[d];
      const int64_t i = source_index(p.mode, o, p.pad_begin[d], p.in_dims[d]);
      if (i < 0) constant_row = true;
      off += i * in_strides[d];
    }
    if (constant_row) {
      std::fill(orow, orow + row_out, p.value);
      continue;
    }
    const float* irow = in + off;
    for (int64_t o = 0; o < lo; ++o) {
      const int64_t i = source_index(p.mode, o, begin, row_in);
      orow[o] = i < 0 ? p.value : irow[i];
    }
    std::memcpy(orow + lo, irow + (lo - begin), static_cast<size_t>(hi - lo) * sizeof(float));
    for (int64_t o = hi; o < row_out; ++o) {
      const int64_t i = source_index(p.mode, o, begin, row_in);
      orow[o] = i < 0 ? p.value : irow[i];
    }
  }
}

}  // namespace repshare
