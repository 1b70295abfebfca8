// Convolution, three ways:
//  - pointwise (1x1, stride 1, no pad, one group): one SGEMM per image,
//    Y[Cout, HW] = W[Cout, Cin] * X[Cin, HW], bias + activation in the epilogue
//    (cpu::avx512_sgemm where the CPU has AVX-512, else cpu::avx2_sgemm for at
//    most 32 inputs, else OpenBLAS and a second pass: gemm_kernel);
//  - depthwise (groups == Cin == Cout): direct AVX2 loops (AVX-512 for rows 9-16
//    wide, and 17-32 wide with 5x5 kernels, where the CPU has it) over a
//    zero-padded copy of each input plane, so the inner loops need no bounds
//    checks; on maps at most 8 wide, where the CPU has AVX-512, 16 channels at a
//    time instead; optionally each output plane's mean (conv2d_channel_mean);
//  - everything else: im2col into the workspace, then one SGEMM per group.
// And an MBConv expansion with its depthwise conv (pointwise_depthwise_conv2d), a
// block of channels per thread at a time where the 1x1 GEMM's bits do not depend on
// the split.
#ifdef __AVX2__
#include <immintrin.h>
#endif
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <type_traits>

#include "engine/error.h"
#include "kernels/cpu/avx512_math.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_kernels.h"

namespace repshare {
namespace {

// Floats a vector load may read past the last output's inputs in a padded row
// (the last, partial block of 8 outputs is computed in full and stored masked).
constexpr int64_t kRowSlack = 16;

// Per-thread copy of one input plane with its zero padding. For horizontal stride
// 2 each row is stored deinterleaved, even padded columns then odd ones (each part
// `half` floats), so every tap of 8 strided outputs is one contiguous load.
struct PaddedPlane {
  int64_t rows = 0;
  int64_t ld = 0;    // floats per row
  int64_t half = 0;  // stride 2: offset of the odd columns in a row; 0 otherwise
  int64_t floats() const { return rows * ld; }
};

// Only the AVX2 stride-2 kernel reads the deinterleaved layout (pick_depthwise).
bool deinterleaved(const Conv2dParams& p) {
#ifdef __AVX2__
  return p.stride_w == 2 && p.kw <= 16;
#else
  return false;
#endif
}

// Rows and columns of an input plane with its padding: as far as the windows read
// or the pads reach, whichever is further.
struct PaddedExtent {
  int64_t rows, cols;
};

PaddedExtent padded_extent(const Conv2dParams& p) {
  const int64_t rows_read = (p.h_out - 1) * p.stride_h + (p.kh - 1) * p.dil_h + 1;
  const int64_t cols_read = (p.w_out - 1) * p.stride_w + (p.kw - 1) * p.dil_w + 1;
  return {std::max(rows_read, p.pad_top + p.h + p.pad_bottom),
          std::max(cols_read, p.pad_left + p.w + p.pad_right)};
}

PaddedPlane padded_plane(const Conv2dParams& p) {
  PaddedPlane pp;
  const PaddedExtent e = padded_extent(p);
  const int64_t cols = e.cols;
  pp.rows = e.rows;
  if (deinterleaved(p)) {
    pp.half = (cols + 1) / 2 + kRowSlack;
    pp.ld = 2 * pp.half;
  } else {
    pp.ld = cols + kRowSlack;
  }
  return pp;
}

// Copies input plane `src` into the interior of the padded plane (whose border
// stays zero from the thread's one memset).
void fill_padded_plane(const Conv2dParams& p, const PaddedPlane& pp, const float* src, float* buf) {
  for (int64_t iy = 0; iy < p.h; ++iy) {
    float* row = buf + (p.pad_top + iy) * pp.ld;
    const float* s = src + iy * p.w;
    if (pp.half == 0) {
      std::memcpy(row + p.pad_left, s, static_cast<size_t>(p.w) * sizeof(float));
      continue;
    }
    int64_t ix = 0;
#ifdef __AVX2__
    // 16 inputs at a time: their even and odd elements are 8 consecutive floats of
    // one part each (which part depends on the parity of pad_left).
    const int64_t first = p.pad_left & 1;
    for (; ix + 16 <= p.w; ix += 16) {
      const __m256 a = _mm256_loadu_ps(s + ix), b = _mm256_loadu_ps(s + ix + 8);
      const __m256 even = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));  // a0 a2 b0 b2 | a4 a6 b4 b6
      const __m256 odd = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1));
      const int order = _MM_SHUFFLE(3, 1, 2, 0);  // 64-bit lanes to a0 a2 a4 a6 b0 b2 b4 b6
      const int64_t col = p.pad_left + ix;
      _mm256_storeu_ps(row + first * pp.half + (col >> 1),
                       _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(even), order)));
      _mm256_storeu_ps(row + (1 - first) * pp.half + ((col + 1) >> 1),
                       _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(odd), order)));
    }
#endif
    for (; ix < p.w; ++ix) {
      const int64_t col = p.pad_left + ix;
      row[(col & 1) * pp.half + (col >> 1)] = s[ix];
    }
  }
}

int64_t im2col_floats(const Conv2dParams& p) {
  return p.c_in / p.groups * p.kh * p.kw * p.h_out * p.w_out;
}

// Which GEMM computes each group's product: the AVX-512 kernels where the CPU has
// them and they take the shape (cpu::avx512_sgemm; their scratch, on wide maps
// packed weights and B panels, follows the im2col buffer in the workspace), else
// for 1x1 convs with few input channels the AVX2 one (cpu::avx2_sgemm), both with
// bias and activation fused and bits that do not depend on how the product is
// split; else OpenBLAS, then a pass for bias and activation.
enum class GemmKernel { Avx512, Avx2, OpenBlas };

GemmKernel gemm_kernel(const Conv2dParams& p) {
  const int64_t m = p.c_out / p.groups, k = p.c_in / p.groups * p.kh * p.kw;
  const int64_t n = p.h_out * p.w_out;
  if (cpu::avx512_sgemm_applies(m, k, n)) return GemmKernel::Avx512;
  if (p.is_pointwise() && cpu::avx2_sgemm_applies(m, k, n)) return GemmKernel::Avx2;
  return GemmKernel::OpenBlas;
}

void add_bias_act(const Activation& act, const float* bias, float* y, int64_t ld, int64_t r0,
                  int64_t r1, int64_t c0, int64_t c1) {
  for (int64_t r = r0; r < r1; ++r)
    cpu::activation_span(act, y + r * ld + c0, y + r * ld + c0, c1 - c0, bias ? bias[r] : 0.f);
}

#ifdef __AVX2__
// V vectors of 8 outputs in each of R output rows of a KxK depthwise conv with
// stride S both ways, starting at `rows` (row 0's first input row): input row i
// is tap row i - r S of output row r, so the K + (R - 1) S rows are each loaded
// once for all R. Each output still sums its taps row by row, left to right.
// Undilated taps: tap kx is kx floats on (stride 1), or in the deinterleaved
// layout kx / 2 floats on in the even or, `half` floats further, the odd part.
template <int S, int K, int R, int V>
inline void depthwise_rows(const float* rows, int64_t ld, int64_t half, const __m256* wk,
                           __m256 (&acc)[R][2]) {
#pragma GCC unroll 16
  for (int i = 0; i < K + (R - 1) * S; ++i) {
    const float* r = rows + i * ld;
#pragma GCC unroll 8
    for (int kx = 0; kx < K; ++kx) {
#pragma GCC unroll 2
      for (int v = 0; v < V; ++v) {
        const float* tap = S == 1 ? r + kx : r + (kx & 1 ? half : 0) + kx / 2;
        const __m256 x = _mm256_loadu_ps(tap + 8 * v);
#pragma GCC unroll 4
        for (int o = 0; o < R; ++o) {
          const int ky = i - o * S;
          if (ky >= 0 && ky < K) acc[o][v] = _mm256_fmadd_ps(wk[ky * K + kx], x, acc[o][v]);
        }
      }
    }
  }
}

// One output plane of a depthwise conv with horizontal stride S (1, or 2 on the
// deinterleaved layout); K > 0 fixes a KxK kernel at compile time (3 and 5 are the
// EfficientNet sizes) so the tap loops unroll and the weights stay broadcast.
template <int S, int K>
void depthwise_plane(const Conv2dParams& p, const PaddedPlane& pp, const float* in,
                     const float* w, float bias, float* out) {
  const int64_t kh = K ? K : p.kh, kw = K ? K : p.kw, dh = p.dil_h, dw = p.dil_w, ld = pp.ld;
  // Offset of tap kx from an output's first input, in the plane's layout.
  int64_t tap_offset[16];
  const int64_t taps_x = std::min<int64_t>(kw, 16);
  for (int64_t kx = 0; kx < taps_x; ++kx) {
    const int64_t c = kx * dw;
    tap_offset[kx] = S == 1 ? c : (c & 1) * pp.half + (c >> 1);
  }
  __m256 wk[K ? K * K : 1];
  if (K)
    for (int i = 0; i < K * K; ++i) wk[i] = _mm256_set1_ps(w[i]);
  auto weight = [&](int64_t i) { return K ? wk[i] : _mm256_set1_ps(w[i]); };

  // The last block of a row may be partial: its inputs are read from the row
  // slack and only its valid outputs are stored.
  const __m256i tail_mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(p.w_out % 8)),
                                               _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  auto store = [&](float* dst, int64_t valid, __m256 v) {
    if (valid >= 8)
      _mm256_storeu_ps(dst, v);
    else
      _mm256_maskstore_ps(dst, tail_mask, v);
  };
  const __m256 b = _mm256_set1_ps(bias);
  // R output rows from oy on, 16 columns at a time.
  auto rows_block = [&](auto rows_tag, int64_t oy) {
    constexpr int R = decltype(rows_tag)::value;
    const float* rows = in + oy * S * ld;
    for (int64_t ox = 0; ox < p.w_out; ox += 16) {
      const int64_t valid = p.w_out - ox;
      __m256 acc[R][2];  // [row][vector]
      for (int o = 0; o < R; ++o) acc[o][0] = acc[o][1] = b;
      if (valid > 8)
        depthwise_rows<S, K, R, 2>(rows + ox, ld, pp.half, wk, acc);
      else  // 7x7 maps and the like: one vector, not two
        depthwise_rows<S, K, R, 1>(rows + ox, ld, pp.half, wk, acc);
      for (int o = 0; o < R; ++o) {
        float* orow = out + (oy + o) * p.w_out;
        store(orow + ox, valid, acc[o][0]);
        if (valid > 8) store(orow + ox + 8, valid - 8, acc[o][1]);
      }
    }
  };
  int64_t oy = 0;
  // Several output rows at a time where the vertical stride is S too (every
  // EfficientNet depthwise conv): their input rows are each loaded once and feed
  // every row's taps, and each row's two vectors are independent chains of K*K
  // FMAs. Four rows for 5x5 kernels and narrow maps, two for 3x3 on wide maps,
  // where 8 accumulators and 9 weights do not fit AVX2's 16 registers (in-process
  // A/B on D0's depthwise shapes: 0.77-0.93x the time of two rows for 5x5 and
  // for maps up to 32 wide, 1.03-1.23x for 3x3 on 128- and 256-wide maps).
  if (K && p.stride_h == S && dh == 1 && dw == 1) {
    if (K == 5 || p.w_out <= 32)
      for (; oy + 3 < p.h_out; oy += 4) rows_block(std::integral_constant<int, 4>(), oy);
    for (; oy + 1 < p.h_out; oy += 2) rows_block(std::integral_constant<int, 2>(), oy);
  }
  for (; oy < p.h_out; ++oy) {
    const float* rows = in + oy * p.stride_h * ld;
    float* orow = out + oy * p.w_out;
    for (int64_t ox = 0; ox < p.w_out; ox += 16) {
      const int64_t valid = p.w_out - ox;
      if (valid > 8) {  // two vectors share each weight
        __m256 acc0 = b, acc1 = b;
        for (int64_t ky = 0; ky < kh; ++ky) {
          const float* r = rows + ky * dh * ld + ox;
          for (int64_t kx = 0; kx < kw; ++kx) {
            const __m256 wv = weight(ky * kw + kx);
            acc0 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(r + tap_offset[kx]), acc0);
            acc1 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(r + tap_offset[kx] + 8), acc1);
          }
        }
        _mm256_storeu_ps(orow + ox, acc0);
        store(orow + ox + 8, valid - 8, acc1);
      } else {
        __m256 acc = b;
        for (int64_t ky = 0; ky < kh; ++ky) {
          const float* r = rows + ky * dh * ld + ox;
          for (int64_t kx = 0; kx < kw; ++kx)
            acc = _mm256_fmadd_ps(weight(ky * kw + kx), _mm256_loadu_ps(r + tap_offset[kx]), acc);
        }
        store(orow + ox, valid, acc);
      }
    }
  }
  // One pass over the whole plane (still in L1/L2): on 7x7 and 14x14 maps a call per
  // row would cost more than the activation itself.
  cpu::activation_span(p.act, out, out, p.h_out * p.w_out);
}
#endif

#if defined(__AVX2__) && defined(__x86_64__)
// Rows at most 32 wide (D0's 16x16 and 32x32 stages, B0's 14x14, BiFPN's small
// levels) where the CPU has AVX-512: V = 1 or 2 16-lane vectors per row instead of
// 8-lane ones, R rows at a time (independent accumulator chains; input rows loaded
// once for all R), each weight broadcast from memory by the FMA itself. Same
// summation order as the AVX2 kernels: bit-identical outputs.
template <int S, int K, int R, int V>
REPSHARE_AVX512 inline void depthwise_rows16(const float* rows, int64_t ld, int64_t half,
                                             const float* w, __m512 (&acc)[R][V]) {
#pragma GCC unroll 16
  for (int i = 0; i < K + (R - 1) * S; ++i) {
    const float* r = rows + i * ld;
#pragma GCC unroll 8
    for (int kx = 0; kx < K; ++kx) {
      const float* tap = S == 1 ? r + kx : r + (kx & 1 ? half : 0) + kx / 2;
#pragma GCC unroll 2
      for (int v = 0; v < V; ++v) {
        const __m512 x = _mm512_loadu_ps(tap + 16 * v);
#pragma GCC unroll 4
        for (int o = 0; o < R; ++o) {
          const int ky = i - o * S;
          if (ky >= 0 && ky < K)
            acc[o][v] = _mm512_fmadd_ps(_mm512_set1_ps(w[ky * K + kx]), x, acc[o][v]);
        }
      }
    }
  }
}

// Output rows [oy, oy + R) of a plane whose rows are at most 16 V wide.
template <int S, int K, int R, int V>
REPSHARE_AVX512 void depthwise_block16(const Conv2dParams& p, const PaddedPlane& pp,
                                       const float* in, const float* w, float bias, int64_t oy,
                                       float* out) {
  __m512 acc[R][V];
  for (int o = 0; o < R; ++o)
    for (int v = 0; v < V; ++v) acc[o][v] = _mm512_set1_ps(bias);
  depthwise_rows16<S, K, R, V>(in + oy * S * pp.ld, pp.ld, pp.half, w, acc);
  for (int o = 0; o < R; ++o)
    for (int v = 0; v < V; ++v)
      _mm512_mask_storeu_ps(out + (oy + o) * p.w_out + 16 * v,
                            cpu::avx512::lanes(p.w_out - 16 * v), acc[o][v]);
}

template <int S, int K, int V>
void depthwise_plane16(const Conv2dParams& p, const PaddedPlane& pp, const float* in,
                       const float* w, float bias, float* out) {
  int64_t oy = 0;
  for (; oy + 3 < p.h_out; oy += 4) depthwise_block16<S, K, 4, V>(p, pp, in, w, bias, oy, out);
  for (; oy < p.h_out; ++oy) depthwise_block16<S, K, 1, V>(p, pp, in, w, bias, oy, out);
  cpu::activation_span(p.act, out, out, p.h_out * p.w_out);
}
#endif

// Any stride and kernel: plain loops over the (not deinterleaved) padded plane.
void depthwise_plane_generic(const Conv2dParams& p, const PaddedPlane& pp, const float* in,
                             const float* w, float bias, float* out) {
  for (int64_t oy = 0; oy < p.h_out; ++oy) {
    float* orow = out + oy * p.w_out;
    for (int64_t ox = 0; ox < p.w_out; ++ox) {
      float acc = bias;
      for (int64_t ky = 0; ky < p.kh; ++ky) {
        const float* r = in + (oy * p.stride_h + ky * p.dil_h) * pp.ld + ox * p.stride_w;
        for (int64_t kx = 0; kx < p.kw; ++kx) acc += w[ky * p.kw + kx] * r[kx * p.dil_w];
      }
      orow[ox] = acc;
    }
  }
  cpu::activation_span(p.act, out, out, p.h_out * p.w_out);
}

using DepthwisePlaneFn = void (*)(const Conv2dParams&, const PaddedPlane&, const float*,
                                  const float*, float, float*);

DepthwisePlaneFn pick_depthwise(const Conv2dParams& p) {
#ifdef __AVX2__
  const bool square3 = p.kh == 3 && p.kw == 3, square5 = p.kh == 5 && p.kw == 5;
#if defined(__x86_64__)
  // Where the CPU has AVX-512: rows 9-16 wide as one 16-lane vector each (8 wide and
  // under fit one AVX2 vector), and for 5x5 kernels rows 17-32 wide as two. In-process
  // A/B on D0's shapes, 2 threads: 1152 x 16x16 5x5 0.405 -> 0.291 ms; 672 x 32x32
  // 5x5 0.66-0.76x the AVX2 kernel's time, 3x3 at 32 wide no faster (0.95-1.08x,
  // kept on AVX2), four vectors for 5x5 at 64 wide 1.26-1.37x (not used).
  if (cpu::has_avx512() && (square3 || square5) && p.stride_h == p.stride_w &&
      p.stride_w <= 2 && p.dil_h == 1 && p.dil_w == 1 && p.w_out > 8 &&
      (p.w_out <= 16 || (square5 && p.w_out <= 32))) {
    if (p.w_out > 16)
      return p.stride_w == 1 ? depthwise_plane16<1, 5, 2> : depthwise_plane16<2, 5, 2>;
    if (p.stride_w == 1) return square3 ? depthwise_plane16<1, 3, 1> : depthwise_plane16<1, 5, 1>;
    return square3 ? depthwise_plane16<2, 3, 1> : depthwise_plane16<2, 5, 1>;
  }
#endif
  if (p.kw <= 16 && p.stride_w == 1) {
    if (square3) return depthwise_plane<1, 3>;
    if (square5) return depthwise_plane<1, 5>;
    return depthwise_plane<1, 0>;
  }
  if (p.kw <= 16 && p.stride_w == 2) {
    if (square3) return depthwise_plane<2, 3>;
    if (square5) return depthwise_plane<2, 5>;
    return depthwise_plane<2, 0>;
  }
#endif
  return depthwise_plane_generic;
}

#ifdef __AVX2__
// src[0], src[2], ..., src[14].
inline __m256 even_lanes(const float* src) {
  const __m256 v = _mm256_shuffle_ps(_mm256_loadu_ps(src), _mm256_loadu_ps(src + 8),
                                     _MM_SHUFFLE(2, 0, 2, 0));  // 0 2 8 10 | 4 6 12 14
  return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(v), _MM_SHUFFLE(3, 1, 2, 0)));
}
#endif

void im2col(const Conv2dParams& p, const float* x, float* col, int threads) {
  const int64_t cin_g = p.c_in / p.groups, hw_out = p.h_out * p.w_out;
  const int64_t rows = cin_g * p.kh * p.kw;
#pragma omp parallel for num_threads(threads) schedule(static) if (rows * hw_out >= cpu::kMinParallelWork)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t ci = r / (p.kh * p.kw), ky = r / p.kw % p.kh, kx = r % p.kw;
    const float* plane = x + ci * p.h * p.w;
    float* dst = col + r * hw_out;
    // Output columns whose input column is inside the image: ox in [ox_lo, ox_hi).
    const int64_t off_x = kx * p.dil_w - p.pad_left;
    int64_t ox_lo = off_x >= 0 ? 0 : (-off_x + p.stride_w - 1) / p.stride_w;
    int64_t ox_hi = off_x >= p.w ? 0 : (p.w - off_x + p.stride_w - 1) / p.stride_w;
    ox_lo = std::min(ox_lo, p.w_out);
    ox_hi = std::max(ox_lo, std::min(ox_hi, p.w_out));
    for (int64_t oy = 0; oy < p.h_out; ++oy) {
      float* d = dst + oy * p.w_out;
      const int64_t iy = oy * p.stride_h - p.pad_top + ky * p.dil_h;
      if (iy < 0 || iy >= p.h) {
        std::fill(d, d + p.w_out, 0.f);
        continue;
      }
      const float* s = plane + iy * p.w + off_x;
      std::fill(d, d + ox_lo, 0.f);
      if (p.stride_w == 1) {
        std::memcpy(d + ox_lo, s + ox_lo, static_cast<size_t>(ox_hi - ox_lo) * sizeof(float));
      } else {
        int64_t ox = ox_lo;
#ifdef __AVX2__
        // Stride 2 (the stem): the even lanes of 16 inputs, 8 outputs at a time,
        // while all 16 lie in the row (the 16th is not needed but is read).
        if (p.stride_w == 2)
          for (; ox + 8 <= ox_hi && off_x + 2 * ox + 16 <= p.w; ox += 8)
            _mm256_storeu_ps(d + ox, even_lanes(s + 2 * ox));
#endif
        for (; ox < ox_hi; ++ox) d[ox] = s[ox * p.stride_w];
      }
      std::fill(d + ox_hi, d + p.w_out, 0.f);
    }
  }
}

// Consecutive channels of one image of a depthwise conv, each pointer at the first
// one's plane, weights, bias and mean (bias and mean may be null).
struct DepthwiseRange {
  const float* x;
  const float* w;
  const float* bias;
  float* y;
  float* mean;
  int64_t count;
};

// The channels [c0, c0 + count) of image img.
DepthwiseRange depthwise_range(const Conv2dParams& p, const float* x, const float* w,
                               const float* bias, float* y, float* mean, int64_t img, int64_t c0,
                               int64_t count) {
  const int64_t plane = img * p.c_in + c0;
  return {x + plane * p.h * p.w,         w + c0 * p.kh * p.kw,          bias ? bias + c0 : nullptr,
          y + plane * p.h_out * p.w_out, mean ? mean + plane : nullptr, count};
}

using Channels16Fn = void (*)(const Conv2dParams&, const DepthwiseRange&, float*);

#if defined(__AVX2__) && defined(__x86_64__)
// Maps at most 8 wide and 16 high (B0's and Lite0's 7x7 stage, BiFPN's 4x4 and
// 8x8 levels) where the CPU has AVX-512: 16 channels at a time instead of plane by
// plane, where a padded copy, a call and a vector per row that is 7 of 8 lanes
// full cost more than a 7x7 plane's 49 outputs. The 16 planes are gathered into a
// padded [row][column][16] buffer, each output pixel of all 16 channels is one
// chain of K*K FMAs (taps in the row kernels' order: the same bits) with the
// weights held in registers, four pixels at a time, and the results are scattered
// back to their planes. In-process A/B against the row kernels (min of 60, 2
// threads, swish): 1152 x 7x7 5x5 0.48-0.50x, 3x3 0.59-0.68x, 672 x 14x14 5x5
// stride 2 (7x7 out) 0.37-0.40x; on 14x14 and 16x16 outputs 1.3-1.8x slower, so the
// row kernels keep those.
bool depthwise_channels16_applies(const Conv2dParams& p) {
  return cpu::has_avx512() && p.kh == p.kw && (p.kh == 3 || p.kh == 5) &&
         p.stride_h == p.stride_w && p.stride_w <= 2 && p.dil_h == 1 && p.dil_w == 1 &&
         p.w_out <= 8 && p.h_out <= 16 && p.c_in >= 16;
}

// The 16-channel buffer is the padded plane's rows and columns, 16 floats each.
int64_t channels16_floats(const Conv2dParams& p) {
  const PaddedExtent e = padded_extent(p);
  return e.rows * e.cols * 16;
}

// Output pixels [q, q + P) of a block of 16 channels: P independent FMA chains.
template <int K, int S, ActKind A, int P>
REPSHARE_AVX512 inline void channels16_pixels(const Conv2dParams& p, const float* buf,
                                              int64_t cols, const __m512 (&wk)[K * K], __m512 b,
                                              __mmask16 m, __m512i out_stride, int64_t q,
                                              float* yb) {
  const float* base[P];
  __m512 acc[P];
  for (int i = 0; i < P; ++i) {
    const int64_t oy = (q + i) / p.w_out, ox = (q + i) % p.w_out;
    base[i] = buf + (oy * S * cols + ox * S) * 16;
    acc[i] = b;
  }
#pragma GCC unroll 5
  for (int ky = 0; ky < K; ++ky)
#pragma GCC unroll 5
    for (int kx = 0; kx < K; ++kx)
#pragma GCC unroll 4
      for (int i = 0; i < P; ++i)
        acc[i] = _mm512_fmadd_ps(wk[ky * K + kx], _mm512_loadu_ps(base[i] + (ky * cols + kx) * 16),
                                 acc[i]);
  const __m512 zero = _mm512_setzero_ps();
  for (int i = 0; i < P; ++i)  // + 0 as activation_span adds its zero bias: the same bits
    _mm512_mask_i32scatter_ps(yb + q + i, m, out_stride,
                              cpu::avx512::act<A>(_mm512_add_ps(acc[i], zero), p.act), 4);
}

// One block of at most 16 channels (r.count) of one image: gathered into the padded
// buffer, convolved pixel by pixel, scattered back (and averaged per plane where
// r.mean is asked).
template <int K, int S, ActKind A>
REPSHARE_AVX512 void channels16_block(const Conv2dParams& p, const DepthwiseRange& r, float* buf) {
  const int64_t cols = padded_extent(p).cols;
  const int64_t hw_in = p.h * p.w, hw_out = p.h_out * p.w_out;
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  // Lane c reads and writes plane c of the block: these are the planes' strides.
  const __m512i in_stride = _mm512_mullo_epi32(lane, _mm512_set1_epi32(static_cast<int>(hw_in)));
  const __m512i out_stride = _mm512_mullo_epi32(lane, _mm512_set1_epi32(static_cast<int>(hw_out)));
  const __m512i w_stride = _mm512_mullo_epi32(lane, _mm512_set1_epi32(K * K));
  const __m512 zero = _mm512_setzero_ps();
  const __mmask16 m = cpu::avx512::lanes(r.count);
  for (int64_t iy = 0; iy < p.h; ++iy)
    for (int64_t ix = 0; ix < p.w; ++ix)
      _mm512_storeu_ps(buf + ((p.pad_top + iy) * cols + p.pad_left + ix) * 16,
                       _mm512_mask_i32gather_ps(zero, m, in_stride, r.x + iy * p.w + ix, 4));
  __m512 wk[K * K];
  for (int t = 0; t < K * K; ++t) wk[t] = _mm512_mask_i32gather_ps(zero, m, w_stride, r.w + t, 4);
  const __m512 b = r.bias ? _mm512_maskz_loadu_ps(m, r.bias) : zero;
  int64_t q = 0;
  for (; q + 4 <= hw_out; q += 4)
    channels16_pixels<K, S, A, 4>(p, buf, cols, wk, b, m, out_stride, q, r.y);
  for (; q < hw_out; ++q) channels16_pixels<K, S, A, 1>(p, buf, cols, wk, b, m, out_stride, q, r.y);
  const float norm = 1.f / static_cast<float>(hw_out);
  for (int64_t c = 0; c < r.count; ++c) {
    float* out = r.y + c * hw_out;
    if (!cpu::has_vector_form(p.act.kind)) cpu::activation_span(p.act, out, out, hw_out);
    if (r.mean) r.mean[c] = cpu::sum_contiguous(out, hw_out) * norm;
  }
}

// The block function for p's kernel size, stride and activation (activations
// without a 16-lane form run as None, then on each plane).
Channels16Fn pick_channels16(const Conv2dParams& p) {
  Channels16Fn fn = nullptr;
  cpu::with_vector_form(p.act, [&](auto kind) {
    constexpr ActKind A = decltype(kind)::value;
    if (p.kh == 3)
      fn = p.stride_w == 1 ? channels16_block<3, 1, A> : channels16_block<3, 2, A>;
    else
      fn = p.stride_w == 1 ? channels16_block<5, 1, A> : channels16_block<5, 2, A>;
  });
  return fn;
}
#endif

// How a depthwise conv runs: 16 channels at a time (AVX-512, narrow maps) or plane by
// plane, each thread with its own buffer (the padded copy), whose border is zeroed
// once and never written.
struct DepthwiseKernel {
  Channels16Fn channels16 = nullptr;
  DepthwisePlaneFn plane = nullptr;
  PaddedPlane pp;
  int64_t buffer_floats = 0;

  // Channels a caller splitting the work should keep together.
  int64_t granule() const { return channels16 ? 16 : 1; }

  // The range's channels on the calling thread; with r.mean, each output plane's
  // average, taken as CpuBackend::reduce takes it.
  void run(const Conv2dParams& p, const DepthwiseRange& r, float* buf) const {
    const int64_t hw_in = p.h * p.w, hw_out = p.h_out * p.w_out;
    if (channels16) {
      for (int64_t c = 0; c < r.count; c += 16) {
        const DepthwiseRange block{
            r.x + c * hw_in,  r.w + c * p.kh * p.kw,         r.bias ? r.bias + c : nullptr,
            r.y + c * hw_out, r.mean ? r.mean + c : nullptr, std::min<int64_t>(16, r.count - c)};
        channels16(p, block, buf);
      }
      return;
    }
    const float norm = 1.f / static_cast<float>(hw_out);
    for (int64_t c = 0; c < r.count; ++c) {
      float* out = r.y + c * hw_out;
      fill_padded_plane(p, pp, r.x + c * hw_in, buf);
      plane(p, pp, buf, r.w + c * p.kh * p.kw, r.bias ? r.bias[c] : 0.f, out);
      if (r.mean) r.mean[c] = cpu::sum_contiguous(out, hw_out) * norm;
    }
  }
};

DepthwiseKernel depthwise_kernel(const Conv2dParams& p) {
  DepthwiseKernel k;
#if defined(__AVX2__) && defined(__x86_64__)
  if (depthwise_channels16_applies(p)) {
    k.channels16 = pick_channels16(p);
    k.buffer_floats = channels16_floats(p);
    return k;
  }
#endif
  k.pp = padded_plane(p);
  k.plane = pick_depthwise(p);
  k.buffer_floats = k.pp.floats();
  return k;
}

// Depthwise conv on `threads` threads, in granules of channels; with `mean`
// non-null, mean[plane] = the plane's average.
void depthwise(const Conv2dParams& p, const float* x, const float* w, const float* bias, float* y,
               float* mean, void* workspace, int threads) {
  const DepthwiseKernel k = depthwise_kernel(p);
  const int64_t granules = (p.c_in + k.granule() - 1) / k.granule();
#pragma omp parallel num_threads(threads)
  {
    float* buf = static_cast<float*>(workspace) + omp_get_thread_num() * k.buffer_floats;
    std::memset(buf, 0, static_cast<size_t>(k.buffer_floats) * sizeof(float));
#pragma omp for schedule(static)
    for (int64_t item = 0; item < p.n * granules; ++item) {
      const int64_t c0 = item % granules * k.granule();
      k.run(p,
            depthwise_range(p, x, w, bias, y, mean, item / granules, c0,
                            std::min(k.granule(), p.c_in - c0)),
            buf);
    }
  }
}

// y[m, n] = act(w[m, k] x[k, n] + bias) (+ residual) by `kernel` on `threads`
// threads; scratch: the AVX-512 kernels' (avx512_sgemm_scratch_floats).
void gemm_product(GemmKernel kernel, int threads, int64_t m, int64_t k, int64_t n, const float* w,
                  const float* x, const float* bias, const Activation& act, const float* residual,
                  float* y, float* scratch) {
  if (kernel == GemmKernel::Avx512)
    return cpu::avx512_sgemm(threads, m, k, n, w, x, bias, act, residual, y, scratch);
  if (kernel == GemmKernel::Avx2)
    return cpu::avx2_sgemm(threads, m, k, n, w, x, bias, act, residual, y);
  cpu::SgemmArgs args;
  args.m = m;
  args.n = n;
  args.k = k;
  args.a = w;
  args.lda = k;
  args.b = x;
  args.ldb = n;
  args.c = y;
  args.ldc = n;
  cpu::parallel_sgemm(threads, args, [&](int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
    add_bias_act(act, bias, y, n, r0, r1, c0, c1);
    if (residual)
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = c0; c < c1; ++c) y[r * n + c] += residual[r * n + c];
  });
}

// Dense, grouped and pointwise convs as one GEMM per image and group (after
// im2col unless pointwise); `residual` (y's shape, or null) is added to the
// outputs as the GEMM's epilogue stores them (conv2d_residual), after the bias.
void conv2d_gemm(const Conv2dParams& p, const float* xd, const float* wd, const float* bd,
                 const float* residual, float* yd, void* workspace, int threads) {
  const int64_t hw_in = p.h * p.w, hw_out = p.h_out * p.w_out;
  const int64_t cin_g = p.c_in / p.groups, cout_g = p.c_out / p.groups;
  const int64_t k = cin_g * p.kh * p.kw;
  float* col = static_cast<float*>(workspace);
  const GemmKernel kernel = gemm_kernel(p);
  float* scratch = col + (p.is_pointwise() ? 0 : im2col_floats(p));
  for (int64_t img = 0; img < p.n; ++img) {
    for (int64_t g = 0; g < p.groups; ++g) {
      const float* xg = xd + (img * p.c_in + g * cin_g) * hw_in;
      const float* b_mat = xg;  // a pointwise conv multiplies the input itself
      if (!p.is_pointwise()) {
        im2col(p, xg, col, threads);
        b_mat = col;
      }
      const int64_t y_offset = (img * p.c_out + g * cout_g) * hw_out;
      gemm_product(kernel, threads, cout_g, k, hw_out, wd + g * cout_g * k, b_mat,
                   bd ? bd + g * cout_g : nullptr, p.act, residual ? residual + y_offset : nullptr,
                   yd + y_offset, scratch);
    }
  }
}

// Rows [r0, r1) of a pointwise conv's output for one image (x its input planes, y
// where row r0 goes), on the calling thread, by the kernel conv2d_gemm runs, which
// must be one whose bits do not depend on the split (not OpenBLAS). `scratch` holds
// pointwise_rows_scratch_floats(p, r1 - r0) floats.
void pointwise_rows(const Conv2dParams& p, const float* x, const float* w, const float* bias,
                    int64_t r0, int64_t r1, float* y, float* scratch) {
  gemm_product(gemm_kernel(p), 1, r1 - r0, p.c_in, p.h_out * p.w_out, w + r0 * p.c_in, x,
               bias ? bias + r0 : nullptr, p.act, nullptr, y, scratch);
}

int64_t pointwise_rows_scratch_floats(const Conv2dParams& p, int64_t rows) {
  return gemm_kernel(p) == GemmKernel::Avx512
             ? cpu::avx512_sgemm_scratch_floats(1, rows, p.c_in, p.h_out * p.w_out)
             : 0;
}

// How CpuBackend::pointwise_depthwise_conv2d shares out the channels of each image:
// `blocks` runs of whole granules, block b holding granules [granules * b / blocks,
// granules * (b + 1) / blocks), so their sizes differ by at most one granule.
struct ChannelBlocks {
  int64_t channels = 0, granule = 1, granules = 0, blocks = 1;
  int64_t first(int64_t b) const { return std::min(channels, granules * b / blocks * granule); }
  int64_t max_rows() const { return (granules + blocks - 1) / blocks * granule; }
};

// A block's 1x1 product is at most this many floats (256 KiB, or a granule's
// planes), so that it is still in L2 when the depthwise conv reads it back.
constexpr int64_t kBlockProductFloats = 64 * 1024;

ChannelBlocks channel_blocks(const Conv2dParams& pw, const DepthwiseKernel& dw, int threads) {
  ChannelBlocks b;
  b.channels = pw.c_out;
  // Whole tiles of the GEMMs' rows (6 and 12); 16-channel depthwise kernels take
  // whole blocks of 16.
  b.granule = dw.granule() == 16 ? 48 : 12;
  b.granules = (b.channels + b.granule - 1) / b.granule;
  const int64_t plane = std::max<int64_t>(1, pw.h_out * pw.w_out);
  const int64_t rows = std::max<int64_t>(b.granule, kBlockProductFloats / plane);
  // At least one block per thread across the batch.
  b.blocks = std::max<int64_t>((b.channels + rows - 1) / rows, (threads + pw.n - 1) / pw.n);
  b.blocks = std::max<int64_t>(1, std::min(b.blocks, b.granules));
  // And whole rounds of them where the channels allow: 3 blocks on 2 threads leave one
  // thread idle for a third of the step (EfficientNet's 672 channels at 14x14).
  while ((pw.n * b.blocks) % threads != 0 && b.blocks < b.granules) ++b.blocks;
  return b;
}

// One thread's share of the workspace: the block's 1x1 product, the depthwise
// kernel's buffer and the GEMM's scratch, each 64-byte aligned.
struct BlockWorkspace {
  int64_t product = 0, buffer = 0, scratch = 0;
  int64_t floats() const { return product + buffer + scratch; }
};

BlockWorkspace block_workspace(const Conv2dParams& pw, const DepthwiseKernel& dw,
                               const ChannelBlocks& blocks) {
  auto aligned = [](int64_t floats) { return (floats + 15) / 16 * 16; };
  BlockWorkspace w;
  w.product = aligned(blocks.max_rows() * pw.h_out * pw.w_out);
  w.buffer = aligned(dw.buffer_floats);
  w.scratch = aligned(pointwise_rows_scratch_floats(pw, blocks.max_rows()));
  return w;
}

// The channel blocks take a plain 1x1 conv feeding a depthwise one whose product
// a kernel with split-independent bits computes (the blocks then give the bits of
// the whole conv); anything else runs the default composition (OpenBLAS: 1x1 convs
// with over 32 input channels on CPUs without AVX-512, which EfficientNet and
// EfficientDet have on planes of 64x64 and smaller only).
bool blocks_apply(const Conv2dParams& pw, const Conv2dParams& dw) {
  return pw.is_pointwise() && dw.is_depthwise() && pw.n == dw.n && pw.c_out == dw.c_in &&
         pw.h_out == dw.h && pw.w_out == dw.w && gemm_kernel(pw) != GemmKernel::OpenBlas;
}

}  // namespace

size_t CpuBackend::conv2d_workspace(const Conv2dParams& p) const {
  // The same order as conv2d(): a 1-channel 1x1 conv is depthwise there too.
  if (p.is_depthwise())
    return static_cast<size_t>(threads_ * depthwise_kernel(p).buffer_floats) * sizeof(float);
  const int64_t col = p.is_pointwise() ? 0 : im2col_floats(p);
  const int64_t scratch =
      gemm_kernel(p) == GemmKernel::Avx512
          ? cpu::avx512_sgemm_scratch_floats(threads_, p.c_out / p.groups,
                                             p.c_in / p.groups * p.kh * p.kw, p.h_out * p.w_out)
          : 0;
  return static_cast<size_t>(col + scratch) * sizeof(float);
}

void CpuBackend::conv2d(const Conv2dParams& p, const Tensor& x, const Tensor& w,
                        const Tensor* bias, Tensor& y, void* workspace) {
  const float* bd = bias ? bias->f32() : nullptr;
  if (p.is_depthwise())
    return depthwise(p, x.f32(), w.f32(), bd, y.f32(), nullptr, workspace, threads_);
  conv2d_gemm(p, x.f32(), w.f32(), bd, nullptr, y.f32(), workspace, threads_);
}

void CpuBackend::conv2d_residual(const Conv2dParams& p, const Tensor& x, const Tensor& w,
                                 const Tensor* bias, const Tensor& residual, Tensor& y,
                                 void* workspace) {
  if (p.is_depthwise() || p.act.kind != ActKind::None)  // the default checks the activation
    return Backend::conv2d_residual(p, x, w, bias, residual, y, workspace);
  conv2d_gemm(p, x.f32(), w.f32(), bias ? bias->f32() : nullptr, residual.f32(), y.f32(),
              workspace, threads_);
}

void CpuBackend::conv2d_channel_mean(const Conv2dParams& p, const Tensor& x, const Tensor& w,
                                     const Tensor* bias, Tensor& y, Tensor& mean, void* workspace) {
  if (!p.is_depthwise()) return Backend::conv2d_channel_mean(p, x, w, bias, y, mean, workspace);
  depthwise(p, x.f32(), w.f32(), bias ? bias->f32() : nullptr, y.f32(), mean.f32(), workspace,
            threads_);
}

int64_t CpuBackend::pointwise_depthwise_max_plane() const {
#ifdef __AVX2__
  return INT64_MAX;
#else
  return Backend::pointwise_depthwise_max_plane();
#endif
}

// EfficientNet-Lite0's activations 6.44 -> 4.21 MiB (AVX-512 host), the same bits
// and time: the expansion's channel blocks, then the projection as a plain 1x1 conv.
bool CpuBackend::prefers_pointwise_depthwise() const {
#ifdef __AVX2__
  return true;
#else
  return false;
#endif
}

size_t CpuBackend::pointwise_depthwise_conv2d_workspace(const Conv2dParams& pw,
                                                        const Conv2dParams& dw) const {
  if (!blocks_apply(pw, dw)) return Backend::pointwise_depthwise_conv2d_workspace(pw, dw);
  const DepthwiseKernel kernel = depthwise_kernel(dw);
  const BlockWorkspace w = block_workspace(pw, kernel, channel_blocks(pw, kernel, threads_));
  return static_cast<size_t>(threads_ * w.floats()) * sizeof(float);
}

void CpuBackend::pointwise_depthwise_conv2d(const Conv2dParams& pw, const Conv2dParams& dw,
                                            const Tensor& x, const Tensor& w_pw, const Tensor* b_pw,
                                            const Tensor& w_dw, const Tensor* b_dw, Tensor& y,
                                            Tensor* mean, void* workspace) {
  if (!blocks_apply(pw, dw))
    return Backend::pointwise_depthwise_conv2d(pw, dw, x, w_pw, b_pw, w_dw, b_dw, y, mean,
                                               workspace);
  check(workspace != nullptr, ErrorKind::Backend,
        "pointwise_depthwise_conv2d: needs pointwise_depthwise_conv2d_workspace() bytes of "
        "workspace and got none");
  const DepthwiseKernel kernel = depthwise_kernel(dw);
  const ChannelBlocks blocks = channel_blocks(pw, kernel, threads_);
  const BlockWorkspace layout = block_workspace(pw, kernel, blocks);
  const int64_t hw_in = pw.h * pw.w, hw_out = dw.h_out * dw.w_out;
  const float* xd = x.f32();
  const float* wd = w_dw.f32();
  const float* bd = b_dw ? b_dw->f32() : nullptr;
  float* yd = y.f32();
  float* md = mean ? mean->f32() : nullptr;
#pragma omp parallel num_threads(threads_)
  {
    float* product = static_cast<float*>(workspace) + omp_get_thread_num() * layout.floats();
    float* buffer = product + layout.product;
    float* scratch = buffer + layout.buffer;
    std::memset(buffer, 0, static_cast<size_t>(kernel.buffer_floats) * sizeof(float));
#pragma omp for schedule(static)
    for (int64_t item = 0; item < pw.n * blocks.blocks; ++item) {
      const int64_t img = item / blocks.blocks, b = item % blocks.blocks;
      const int64_t c0 = blocks.first(b), c1 = blocks.first(b + 1);
      pointwise_rows(pw, xd + img * pw.c_in * hw_in, w_pw.f32(), b_pw ? b_pw->f32() : nullptr, c0,
                     c1, product, scratch);
      const int64_t plane = img * dw.c_in + c0;  // the block's first output plane
      kernel.run(dw,
                 DepthwiseRange{product, wd + c0 * dw.kh * dw.kw, bd ? bd + c0 : nullptr,
                                yd + plane * hw_out, md ? md + plane : nullptr, c1 - c0},
                 buffer);
    }
  }
}

}  // namespace repshare
