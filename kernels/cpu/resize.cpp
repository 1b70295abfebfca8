// ONNX Resize on the last two axes, written after onnx/reference/ops/op_resize.py.
// Which input elements each output reads, and with what weights, is
// kernels/cpu/resize_math.h, shared with the CUDA kernel; here the column taps are
// tabulated per chunk and reused by every output row.
#ifdef __AVX2__
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/resize_math.h"

namespace repshare {
namespace {

// out[i] = in[i / 2] for i in [0, n): nearest 2x upsampling of a row (BiFPN's),
// 8 inputs to 16 outputs at a time.
void duplicate_pairs(const float* in, float* out, int64_t n) {
  int64_t i = 0;
#ifdef __AVX2__
  for (; i + 16 <= n; i += 16) {
    const __m256 v = _mm256_loadu_ps(in + i / 2);        // a0 .. a7
    const __m256 lo = _mm256_unpacklo_ps(v, v);          // a0 a0 a1 a1 | a4 a4 a5 a5
    const __m256 hi = _mm256_unpackhi_ps(v, v);          // a2 a2 a3 a3 | a6 a6 a7 a7
    _mm256_storeu_ps(out + i, _mm256_permute2f128_ps(lo, hi, 0x20));
    _mm256_storeu_ps(out + i + 8, _mm256_permute2f128_ps(lo, hi, 0x31));
  }
#endif
  for (; i < n; ++i) out[i] = in[i / 2];
}

}  // namespace

void CpuBackend::resize(const ResizeParams& p, const Tensor& x, Tensor& y) {
  const float* xd = x.f32();
  float* yd = y.f32();
  const ResizeAxis ay{p.h, p.h_out, p.scale_h, p.roi[0], p.roi[2]};
  const ResizeAxis ax{p.w, p.w_out, p.scale_w, p.roi[1], p.roi[3]};
  const int taps = resize_taps_of(p.mode);
  // Column taps are computed once per plane for a chunk of columns and kept on the
  // stack (kernels allocate nothing), then reused by every output row.
  constexpr int64_t kChunk = 256;
#pragma omp parallel for num_threads(threads_) schedule(static) if (p.outer * p.h_out * p.w_out * taps * taps >= cpu::kMinParallelWork)
  for (int64_t plane = 0; plane < p.outer; ++plane) {
    const float* in = xd + plane * p.h * p.w;
    float* out = yd + plane * p.h_out * p.w_out;
    ResizeTaps cols[kChunk];
    for (int64_t c0 = 0; c0 < p.w_out; c0 += kChunk) {
      const int64_t c1 = std::min(p.w_out, c0 + kChunk);
      for (int64_t ox = c0; ox < c1; ++ox) cols[ox - c0] = resize_axis_taps(p, ax, ox);
      const bool nearest = p.mode == ResizeMode::Nearest && p.coord != CoordMode::TfCropAndResize;
      // Columns that repeat each input column twice from index[c0] on (2x upsampling).
      bool pairs = nearest;
      for (int64_t ox = c0; ox < c1 && pairs; ++ox)
        pairs = cols[ox - c0].index[0] == cols[0].index[0] + (ox - c0) / 2;
      int64_t prev_index = -1;  // input row of the previous output row
      for (int64_t oy = 0; oy < p.h_out; ++oy) {
        const ResizeTaps row = resize_axis_taps(p, ay, oy);
        float* orow = out + oy * p.w_out;
        if (nearest && !row.outside) {  // a gather from one input row
          if (row.index[0] == prev_index) {  // the previous output row again
            std::memcpy(orow + c0, orow - p.w_out + c0, static_cast<size_t>(c1 - c0) * sizeof(float));
            continue;
          }
          prev_index = row.index[0];
          const float* irow = in + row.index[0] * p.w;
          if (pairs) {
            duplicate_pairs(irow + cols[0].index[0], orow + c0, c1 - c0);
            continue;
          }
          for (int64_t ox = c0; ox < c1; ++ox) orow[ox] = irow[cols[ox - c0].index[0]];
          continue;
        }
        prev_index = -1;
        for (int64_t ox = c0; ox < c1; ++ox) {
          const ResizeTaps& col = cols[ox - c0];
          if (row.outside || col.outside) {
            orow[ox] = p.extrapolation_value;
            continue;
          }
          // Rows first, then across them, as the reference interpolates.
          float acc = 0.f;
          for (int i = 0; i < taps; ++i) {
            const float* irow = in + row.index[i] * p.w;
            float line = 0.f;
            for (int j = 0; j < taps; ++j) line += col.weight[j] * irow[col.index[j]];
            acc += row.weight[i] * line;
          }
          orow[ox] = acc;
        }
      }
    }
  }
}

}  // namespace repshare
