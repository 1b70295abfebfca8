// Convolution, three ways:
//  - pointwise (1x1, stride 1, no pad, one group): one SGEMM per image,
//    Y[Cout, HW] = W[Cout, Cin] * X[Cin, HW], bias + activation in the epilogue
//    (cpu::avx512_sgemm where the CPU has AVX-512, else OpenBLAS and a second
//    pass);
//  - depthwise (groups == Cin == Cout): direct AVX2 loops (AVX-512 for rows 9-16
//    wide, and 17-32 wide with 5x5 kernels, where the CPU has it) over a
//    zero-padded copy of each input plane, so the inner loops need no bounds
//    checks; on maps at most 8 wide, where the CPU has AVX-512, 16 channels at a
//    time instead; optionally each output plane's mean (conv2d_channel_mean);
//  - everything else: im2col into the workspace, then one SGEMM per group.
#ifdef __AVX2__
#include <immintrin.h>
#endif
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <type_traits>

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

// Whether each group's product goes to the AVX-512 kernels (cpu::avx512_sgemm,
// bias and activation fused) instead of OpenBLAS. Their scratch (on wide maps,
// packed weights and B panels) follows the im2col buffer in the workspace.
bool uses_avx512_sgemm(const Conv2dParams& p) {
  return cpu::avx512_sgemm_applies(p.c_out / p.groups, p.c_in / p.groups * p.kh * p.kw,
                                    p.h_out * p.w_out);
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

// One block of 16 channels of one image: gathered into the padded buffer, convolved
// pixel by pixel, scattered back (and averaged per plane where `mean` is asked).
template <int K, int S, ActKind A>
REPSHARE_AVX512 void channels16_block(const Conv2dParams& p, const float* x, const float* w,
                                      const float* bias, float* y, float* mean, float* buf,
                                      int64_t img, int64_t c0) {
  const int64_t cols = padded_extent(p).cols;
  const int64_t hw_in = p.h * p.w, hw_out = p.h_out * p.w_out;
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  // Lane c reads and writes plane c of the block: these are the planes' strides.
  const __m512i in_stride = _mm512_mullo_epi32(lane, _mm512_set1_epi32(static_cast<int>(hw_in)));
  const __m512i out_stride = _mm512_mullo_epi32(lane, _mm512_set1_epi32(static_cast<int>(hw_out)));
  const __m512i w_stride = _mm512_mullo_epi32(lane, _mm512_set1_epi32(K * K));
  const __m512 zero = _mm512_setzero_ps();
  const __mmask16 m = cpu::avx512::lanes(p.c_in - c0);
  const float* xb = x + (img * p.c_in + c0) * hw_in;
  for (int64_t iy = 0; iy < p.h; ++iy)
    for (int64_t ix = 0; ix < p.w; ++ix)
      _mm512_storeu_ps(buf + ((p.pad_top + iy) * cols + p.pad_left + ix) * 16,
                       _mm512_mask_i32gather_ps(zero, m, in_stride, xb + iy * p.w + ix, 4));
  __m512 wk[K * K];
  for (int t = 0; t < K * K; ++t)
    wk[t] = _mm512_mask_i32gather_ps(zero, m, w_stride, w + c0 * K * K + t, 4);
  const __m512 b = bias ? _mm512_maskz_loadu_ps(m, bias + c0) : zero;
  float* yb = y + (img * p.c_out + c0) * hw_out;
  int64_t q = 0;
  for (; q + 4 <= hw_out; q += 4)
    channels16_pixels<K, S, A, 4>(p, buf, cols, wk, b, m, out_stride, q, yb);
  for (; q < hw_out; ++q)
    channels16_pixels<K, S, A, 1>(p, buf, cols, wk, b, m, out_stride, q, yb);
  const float norm = 1.f / static_cast<float>(hw_out);
  for (int64_t c = 0; c < std::min<int64_t>(16, p.c_in - c0); ++c) {
    float* out = yb + c * hw_out;
    if (!cpu::avx512::has_vector_form(p.act.kind)) cpu::activation_span(p.act, out, out, hw_out);
    if (mean) mean[img * p.c_in + c0 + c] = cpu::sum_contiguous(out, hw_out) * norm;
  }
}

// (The region's body holds no vector code: clang outlines OpenMP regions into
// functions without the AVX-512 target.)
template <int K, int S, ActKind A>
void depthwise_channels16(const Conv2dParams& p, const float* x, const float* w,
                          const float* bias, float* y, float* mean, float* ws, int threads) {
  const int64_t buf_floats = channels16_floats(p);
  const int64_t blocks = (p.c_in + 15) / 16;
#pragma omp parallel num_threads(threads)
  {
    float* buf = ws + omp_get_thread_num() * buf_floats;
    std::memset(buf, 0, static_cast<size_t>(buf_floats) * sizeof(float));  // the border
#pragma omp for schedule(static)
    for (int64_t item = 0; item < p.n * blocks; ++item)
      channels16_block<K, S, A>(p, x, w, bias, y, mean, buf, item / blocks, item % blocks * 16);
  }
}

template <int K, int S>
void depthwise_channels16_act(const Conv2dParams& p, const float* x, const float* w,
                              const float* bias, float* y, float* mean, float* ws, int threads) {
  // Activations without a 16-lane form run as None, then on each plane.
  cpu::avx512::with_vector_form(p.act, [&](auto kind) {
    depthwise_channels16<K, S, decltype(kind)::value>(p, x, w, bias, y, mean, ws, threads);
  });
}
#endif

// Depthwise conv, plane by plane on `threads` threads; with `mean` non-null,
// mean[plane] = the plane's average, taken as CpuBackend::reduce takes it.
void depthwise(const Conv2dParams& p, const float* x, const float* w, const float* bias,
               float* y, float* mean, void* workspace, int threads) {
#if defined(__AVX2__) && defined(__x86_64__)
  if (depthwise_channels16_applies(p)) {
    float* ws = static_cast<float*>(workspace);
    if (p.kh == 3)
      return p.stride_w == 1 ? depthwise_channels16_act<3, 1>(p, x, w, bias, y, mean, ws, threads)
                             : depthwise_channels16_act<3, 2>(p, x, w, bias, y, mean, ws, threads);
    return p.stride_w == 1 ? depthwise_channels16_act<5, 1>(p, x, w, bias, y, mean, ws, threads)
                           : depthwise_channels16_act<5, 2>(p, x, w, bias, y, mean, ws, threads);
  }
#endif
  const PaddedPlane pp = padded_plane(p);
  const DepthwisePlaneFn plane_fn = pick_depthwise(p);
  float* ws = static_cast<float*>(workspace);
  const int64_t planes = p.n * p.c_in, hw_in = p.h * p.w, hw_out = p.h_out * p.w_out;
  const float norm = 1.f / static_cast<float>(hw_out);
#pragma omp parallel num_threads(threads)
  {
    // The border of each thread's padded plane is zeroed once and never written.
    float* buf = ws + omp_get_thread_num() * pp.floats();
    std::memset(buf, 0, static_cast<size_t>(pp.floats()) * sizeof(float));
#pragma omp for schedule(static)
    for (int64_t plane = 0; plane < planes; ++plane) {
      const int64_t c = plane % p.c_in;
      float* out = y + plane * hw_out;
      fill_padded_plane(p, pp, x + plane * hw_in, buf);
      plane_fn(p, pp, buf, w + c * p.kh * p.kw, bias ? bias[c] : 0.f, out);
      if (mean) mean[plane] = cpu::sum_contiguous(out, hw_out) * norm;
    }
  }
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
  const bool avx512 = uses_avx512_sgemm(p);
  float* scratch = col + (p.is_pointwise() ? 0 : im2col_floats(p));
  for (int64_t img = 0; img < p.n; ++img) {
    for (int64_t g = 0; g < p.groups; ++g) {
      const float* xg = xd + (img * p.c_in + g * cin_g) * hw_in;
      const float* b_mat = xg;  // a pointwise conv multiplies the input itself
      if (!p.is_pointwise()) {
        im2col(p, xg, col, threads);
        b_mat = col;
      }
      const float* bias_g = bd ? bd + g * cout_g : nullptr;
      const int64_t y_offset = (img * p.c_out + g * cout_g) * hw_out;
      const float* residual_g = residual ? residual + y_offset : nullptr;
      float* y_g = yd + y_offset;
      if (avx512) {
        cpu::avx512_sgemm(threads, cout_g, k, hw_out, wd + g * cout_g * k, b_mat, bias_g, p.act,
                          residual_g, y_g, scratch);
        continue;
      }
      cpu::SgemmArgs args;
      args.m = cout_g;
      args.n = hw_out;
      args.k = k;
      args.a = wd + g * cout_g * k;
      args.lda = k;
      args.b = b_mat;
      args.ldb = hw_out;
      args.c = y_g;
      args.ldc = hw_out;
      cpu::parallel_sgemm(threads, args, [&](int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
        add_bias_act(p.act, bias_g, y_g, hw_out, r0, r1, c0, c1);
        if (residual_g)
          for (int64_t r = r0; r < r1; ++r)
            for (int64_t c = c0; c < c1; ++c) y_g[r * hw_out + c] += residual_g[r * hw_out + c];
      });
    }
  }
}

}  // namespace

size_t CpuBackend::conv2d_workspace(const Conv2dParams& p) const {
  // The same order as conv2d(): a 1-channel 1x1 conv is depthwise there too.
  if (p.is_depthwise()) {
#if defined(__AVX2__) && defined(__x86_64__)
    if (depthwise_channels16_applies(p))
      return static_cast<size_t>(threads_ * channels16_floats(p)) * sizeof(float);
#endif
    return static_cast<size_t>(threads_ * padded_plane(p).floats()) * sizeof(float);
  }
  const int64_t col = p.is_pointwise() ? 0 : im2col_floats(p);
  const int64_t scratch =
      uses_avx512_sgemm(p) ? cpu::avx512_sgemm_scratch_floats(threads_, p.c_out / p.groups,
                                                              p.c_in / p.groups * p.kh * p.kw,
                                                              p.h_out * p.w_out)
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

}  // namespace repshare
