#ifdef __AVX2__
#include <immintrin.h>
#endif

#include <algorithm>
#include <limits>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_kernels.h"

namespace repshare {
namespace {

// Taps k in [0, taps) with start + k * dil inside [lo, hi): returns [first, last).
inline void tap_range(int64_t start, int64_t dil, int64_t taps, int64_t lo, int64_t hi,
                      int64_t& first, int64_t& last) {
  first = start >= lo ? 0 : (lo - start + dil - 1) / dil;
  last = start >= hi ? 0 : std::min(taps, (hi - start + dil - 1) / dil);
  if (last < first) last = first;
}

#ifdef __AVX2__
// Max pooling 3 wide with stride 2 across (BiFPN's SAME downsampling in
// EfficientDet), where the generic loop below reads one scalar at a time at a
// run-time stride (D0's 3x3 s2 pools took 1.6-2 ms per image, onnxruntime's 0.4).
// Per output row: the window's rows are maxed into one row, a contiguous pass,
// stored between -inf borders as wide as the pads, so every output column then
// takes three neighbours of that row (even and odd lanes by shuffles, 8 outputs
// at a time) without clipping. NaN inputs are dropped, as std::max drops them in
// the generic loop.
constexpr int64_t kMax3RowFloats = 2048;

bool max3_s2_applies(const Pool2dParams& p) {
  const int64_t w_out8 = (p.w_out + 7) / 8 * 8;
  return p.kind == PoolKind::Max && p.kw == 3 && p.stride_w == 2 && p.dil_w == 1 &&
         p.pad_left + p.w <= 2 * w_out8 + 2 && 2 * w_out8 + 2 <= kMax3RowFloats;
}

void max3_s2_plane(const Pool2dParams& p, const float* in, float* out) {
  alignas(32) float row[kMax3RowFloats];
  const int64_t w_out8 = (p.w_out + 7) / 8 * 8;
  const float neg_inf = -std::numeric_limits<float>::infinity();
  // Left pad, and right of the image as far as the last vector of outputs reads.
  std::fill(row, row + p.pad_left, neg_inf);
  std::fill(row + p.pad_left + p.w, row + 2 * w_out8 + 2, neg_inf);
  const __m256i tail = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(p.w_out % 8)),
                                          _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  for (int64_t oy = 0; oy < p.h_out; ++oy) {
    const int64_t y0 = oy * p.stride_h - p.pad_top;
    int64_t ky0, ky1;
    tap_range(y0, p.dil_h, p.kh, 0, p.h, ky0, ky1);
    float* vrow = row + p.pad_left;
    int64_t ix = 0;
    for (; ix + 8 <= p.w; ix += 8) {
      __m256 v = _mm256_set1_ps(neg_inf);
      for (int64_t ky = ky0; ky < ky1; ++ky)
        v = _mm256_max_ps(_mm256_loadu_ps(in + (y0 + ky * p.dil_h) * p.w + ix), v);
      _mm256_storeu_ps(vrow + ix, v);
    }
    for (; ix < p.w; ++ix) {
      float v = neg_inf;
      for (int64_t ky = ky0; ky < ky1; ++ky) v = std::max(v, in[(y0 + ky * p.dil_h) * p.w + ix]);
      vrow[ix] = v;
    }
    float* orow = out + oy * p.w_out;
    for (int64_t ox = 0; ox < p.w_out; ox += 8) {
      const float* r = row + 2 * ox;
      const __m256 a = _mm256_loadu_ps(r), b = _mm256_loadu_ps(r + 8);
      // Taps 0 and 2 of each output are the even lanes of max(row[i], row[i + 2]).
      const __m256 m0 = _mm256_max_ps(a, _mm256_loadu_ps(r + 2));
      const __m256 m1 = _mm256_max_ps(b, _mm256_loadu_ps(r + 10));
      const __m256 even = _mm256_shuffle_ps(m0, m1, _MM_SHUFFLE(2, 0, 2, 0));  // lanes 0 2 8 10 | 4 6 12 14
      const __m256 odd = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1));     // lanes 1 3 9 11 | 5 7 13 15
      const __m256 v = _mm256_castpd_ps(_mm256_permute4x64_pd(
          _mm256_castps_pd(_mm256_max_ps(even, odd)), _MM_SHUFFLE(3, 1, 2, 0)));
      if (ox + 8 <= p.w_out)
        _mm256_storeu_ps(orow + ox, v);
      else
        _mm256_maskstore_ps(orow + ox, tail, v);
    }
  }
}
#endif

}  // namespace

void CpuBackend::pool2d(const Pool2dParams& p, const Tensor& x, Tensor& y) {
  const float* xd = x.f32();
  float* yd = y.f32();
  const int64_t planes = p.n * p.c;
#ifdef __AVX2__
  if (max3_s2_applies(p)) {
#pragma omp parallel for num_threads(threads_) schedule(static) if (planes * p.h_out * p.w_out * p.kh * p.kw >= cpu::kMinParallelWork)
    for (int64_t plane = 0; plane < planes; ++plane)
      max3_s2_plane(p, xd + plane * p.h * p.w, yd + plane * p.h_out * p.w_out);
    return;
  }
#endif
  const bool is_max = p.kind == PoolKind::Max;
  // Output columns whose whole window is inside the image need no clipping:
  // ox in [ox_in0, ox_in1). Only the border columns pay for tap_range's divisions.
  const int64_t span_w = (p.kw - 1) * p.dil_w;
  const int64_t ox_in0 = std::min(p.w_out, (p.pad_left + p.stride_w - 1) / p.stride_w);
  const int64_t ox_in1 = std::max(
      ox_in0, std::min(p.w_out, p.w - 1 - span_w + p.pad_left >= 0
                                    ? (p.w - 1 - span_w + p.pad_left) / p.stride_w + 1
                                    : 0));
#pragma omp parallel for num_threads(threads_) schedule(static) if (planes * p.h_out * p.w_out * p.kh * p.kw >= cpu::kMinParallelWork)
  for (int64_t plane = 0; plane < planes; ++plane) {
    const float* in = xd + plane * p.h * p.w;
    float* out = yd + plane * p.h_out * p.w_out;
    for (int64_t oy = 0; oy < p.h_out; ++oy) {
      const int64_t y0 = oy * p.stride_h - p.pad_top;
      int64_t ky0, ky1, pky0, pky1;
      tap_range(y0, p.dil_h, p.kh, 0, p.h, ky0, ky1);
      tap_range(y0, p.dil_h, p.kh, -p.pad_top, p.h + p.pad_bottom, pky0, pky1);
      float* orow = out + oy * p.w_out;
      // Interior columns, one tap at a time across the row: the output row is the
      // accumulator, so successive columns are independent (a max/add chain per
      // output would be latency-bound).
      std::fill(orow + ox_in0, orow + ox_in1, is_max ? std::numeric_limits<float>::lowest() : 0.f);
      for (int64_t ky = ky0; ky < ky1; ++ky) {
        const float* row = in + (y0 + ky * p.dil_h) * p.w - p.pad_left;
        for (int64_t kx = 0; kx < p.kw; ++kx) {
          const float* r = row + kx * p.dil_w;
          if (is_max) {
            for (int64_t ox = ox_in0; ox < ox_in1; ++ox)
              orow[ox] = std::max(orow[ox], r[ox * p.stride_w]);
          } else {
            for (int64_t ox = ox_in0; ox < ox_in1; ++ox) orow[ox] += r[ox * p.stride_w];
          }
        }
      }
      if (!is_max) {
        const int64_t count = (p.count_include_pad ? pky1 - pky0 : ky1 - ky0) * p.kw;
        const float inv = count > 0 ? 1.f / static_cast<float>(count) : 0.f;
        for (int64_t ox = ox_in0; ox < ox_in1; ++ox) orow[ox] *= inv;
      }
      // Border columns: windows clipped to the image.
      auto border_column = [&](int64_t ox) {
        const int64_t x0 = ox * p.stride_w - p.pad_left;
        int64_t kx0, kx1;
        tap_range(x0, p.dil_w, p.kw, 0, p.w, kx0, kx1);
        float acc = is_max ? std::numeric_limits<float>::lowest() : 0.f;
        for (int64_t ky = ky0; ky < ky1; ++ky) {
          const float* row = in + (y0 + ky * p.dil_h) * p.w + x0;
          if (is_max) {
            for (int64_t kx = kx0; kx < kx1; ++kx) acc = std::max(acc, row[kx * p.dil_w]);
          } else {
            for (int64_t kx = kx0; kx < kx1; ++kx) acc += row[kx * p.dil_w];
          }
        }
        if (!is_max) {
          int64_t count = (ky1 - ky0) * (kx1 - kx0);
          if (p.count_include_pad) {
            int64_t pkx0, pkx1;
            tap_range(x0, p.dil_w, p.kw, -p.pad_left, p.w + p.pad_right, pkx0, pkx1);
            count = (pky1 - pky0) * (pkx1 - pkx0);
          }
          acc = count > 0 ? acc / static_cast<float>(count) : 0.f;
        }
        orow[ox] = acc;
      };
      for (int64_t ox = 0; ox < ox_in0; ++ox) border_column(ox);
      for (int64_t ox = ox_in1; ox < p.w_out; ++ox) border_column(ox);
    }
  }
}

}  // namespace repshare
