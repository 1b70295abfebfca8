// C = act(A B + bias) with AVX-512 where the CPU has it, for the products of
// EfficientNet's convolutions: 1x1 convs (A the weights, B the input [Cin, H*W])
// and dense convs after im2col. Bias and activation are applied before the one
// store, where OpenBLAS's result takes a second pass for them. Two kernels:
//  - wide maps (uses_packed_tiles): a 12 x 32 tile of C stays in 24 registers
//    over the whole of K; B is packed a chunk of columns at a time into contiguous
//    32-wide tiles, sized to stay in L2 while every row block passes over it; row
//    block by row block, so C is written in long runs;
//  - narrow maps (14x14 and below; uses_narrow_tiles), and at most 12 rows of C
//    on wide ones: a 6 x 64 tile, A and B read in place.
// Other shapes (large K on 16x16 to 27x27 maps) stay with OpenBLAS.
// Against OpenBLAS and its epilogue on B0's, Lite0's and D0's 1x1 shapes (2
// threads, docs/results/cpu_speed.md): 1.1-1.9x at N >= 768 (packed), 1.05-2x
// below (narrow).
#include <omp.h>

#include <algorithm>
#include <atomic>

#include "engine/error.h"
#include "kernels/cpu/avx512_math.h"
#include "kernels/cpu/cpu_kernels.h"

namespace repshare {
namespace cpu {
namespace {

constexpr int kTileRows = 12;  // MR: rows of C per tile, 2 x 12 accumulators
constexpr int kTileCols = 32;  // NR: two 16-float vectors

#if defined(__x86_64__)

using avx512::lanes;

// One tile: rows [0, rows) of C (rows <= Rows <= 12) and 32 columns, stored masked
// when Full is false. `a` is the row block's packed panel (K groups of 12 weights,
// one per row), `b` a packed B tile (K rows of 32, ldb apart). Rows is 12 but for
// the last row block of an M that 12 does not divide, which computes only the
// multiple of 4 it needs (M = 64, BiFPN's width, otherwise takes 72 rows' work).
template <bool Full, ActKind K, int Rows>
REPSHARE_AVX512 inline void tile(int64_t k_len, int64_t ldb, int64_t ldc, const float* a,
                                 const float* b, const float* bias, const Activation& act,
                                 const float* residual, int rows, __mmask16 mask0,
                                 __mmask16 mask1, float* c) {
  __m512 acc[Rows][2];
#pragma GCC unroll 12
  for (int i = 0; i < Rows; ++i) {
    acc[i][0] = _mm512_set1_ps(bias && i < rows ? bias[i] : 0.f);
    acc[i][1] = acc[i][0];
  }
  for (int64_t k = 0; k < k_len; ++k) {
    const float* brow = b + k * ldb;  // a packed tile: zeros past the last column
    const __m512 b0 = _mm512_loadu_ps(brow), b1 = _mm512_loadu_ps(brow + 16);
    const float* ak = a + k * kTileRows;
#pragma GCC unroll 12
    for (int i = 0; i < Rows; ++i) {
      const __m512 w = _mm512_set1_ps(ak[i]);
      acc[i][0] = _mm512_fmadd_ps(w, b0, acc[i][0]);
      acc[i][1] = _mm512_fmadd_ps(w, b1, acc[i][1]);
    }
  }
#pragma GCC unroll 12
  for (int i = 0; i < Rows; ++i) {
    if (i >= rows) break;
    float* crow = c + i * ldc;
    __m512 v0 = avx512::act<K>(acc[i][0], act), v1 = avx512::act<K>(acc[i][1], act);
    if (residual) {  // C's layout: row i of the tile is ldc floats on
      const float* r = residual + i * ldc;
      v0 = _mm512_add_ps(v0, Full ? _mm512_loadu_ps(r) : _mm512_maskz_loadu_ps(mask0, r));
      v1 = _mm512_add_ps(v1, Full ? _mm512_loadu_ps(r + 16) : _mm512_maskz_loadu_ps(mask1, r + 16));
    }
    if (Full) {
      _mm512_storeu_ps(crow, v0);
      _mm512_storeu_ps(crow + 16, v1);
    } else {
      _mm512_mask_storeu_ps(crow, mask0, v0);
      _mm512_mask_storeu_ps(crow + 16, mask1, v1);
    }
  }
}

// How the product is shared out: chunks of columns of B, each packed into a
// thread's panel that stays in L2 (256 KiB) while row blocks of C pass over it,
// and, on maps too narrow to give each thread 4 tiles of columns (14x14 and
// below), groups of row blocks instead, each thread packing the same columns.
// Chunk c holds tiles [tiles * c / chunks, tiles * (c + 1) / chunks), so chunk
// sizes differ by at most one tile, and with column chunks their number is a
// multiple of the thread count: the static schedule then gives every thread the
// same work (chunks of a fixed width left a short last one, e.g. 4 + 3 chunks of
// D0's 24 -> 144 conv on 128x128, one thread waiting a third of the call).
struct Split {
  int64_t tiles = 0;        // 32-column tiles of C
  int64_t chunks = 1;
  int64_t row_groups = 1;   // parts the row blocks are divided into
  int64_t max_chunk_cols = 0;  // widest chunk: a thread's panel holds k x this
  int64_t first_tile(int64_t chunk) const { return tiles * chunk / chunks; }
};

Split split_for(int threads, int64_t k, int64_t n) {
  Split s;
  s.tiles = (n + kTileCols - 1) / kTileCols;
  const int64_t l2_tiles = std::max<int64_t>(1, std::min<int64_t>(64 * 1024 / k, 8192) / kTileCols);
  s.chunks = (s.tiles + l2_tiles - 1) / l2_tiles;
  if (s.tiles < 4 * threads) {
    s.row_groups = threads;
  } else {
    s.chunks = (s.chunks + threads - 1) / threads * threads;
  }
  s.max_chunk_cols = (s.tiles + s.chunks - 1) / s.chunks * kTileCols;
  return s;
}

// A's rows [12 r, 12 r + 12) as the tiles read them: k groups of 12 weights, one
// per row, zeros for rows past m.
void pack_row_block(int64_t m, int64_t k, const float* a, int64_t r, float* packed) {
  float* dst = packed + r * k * kTileRows;
  for (int i = 0; i < kTileRows; ++i) {
    const int64_t row = r * kTileRows + i;
    if (row < m) {
      for (int64_t kk = 0; kk < k; ++kk) dst[kk * kTileRows + i] = a[row * k + kk];
    } else {
      for (int64_t kk = 0; kk < k; ++kk) dst[kk * kTileRows + i] = 0.f;
    }
  }
}

// One row block of C over the chunk's columns [n0, n1), tile by tile.
template <ActKind K, int Rows>
REPSHARE_AVX512 void row_block_tiles(int64_t k, int64_t n, int64_t n0, int64_t n1, int64_t tiles,
                                     const float* a_block, const float* panel, const float* bias,
                                     const Activation& act, const float* residual_block, int rows,
                                     float* c_block) {
  for (int64_t t = 0; t < tiles; ++t) {
    const int64_t col = n0 + t * kTileCols, left = n1 - col;
    const float* residual = residual_block ? residual_block + col : nullptr;
    if (left >= kTileCols) {
      tile<true, K, Rows>(k, kTileCols, n, a_block, panel + t * k * kTileCols, bias, act,
                          residual, rows, 0xffff, 0xffff, c_block + col);
    } else {
      tile<false, K, Rows>(k, kTileCols, n, a_block, panel + t * k * kTileCols, bias, act,
                           residual, rows, lanes(left), lanes(left - 16), c_block + col);
    }
  }
}

// Columns [0, cols) of B's k rows (ldb n apart) as one contiguous k x 32 tile,
// zeros past cols. (Vector code stays out of the OpenMP regions' own bodies:
// clang outlines them into functions without the AVX-512 target.)
REPSHARE_AVX512 void pack_b_tile(int64_t k, int64_t n, const float* b, int64_t cols, float* dst) {
  const __mmask16 mask0 = lanes(cols), mask1 = lanes(cols - 16);
  for (int64_t kk = 0; kk < k; ++kk) {
    const float* src = b + kk * n;
    _mm512_storeu_ps(dst + kk * kTileCols, _mm512_maskz_loadu_ps(mask0, src));
    _mm512_storeu_ps(dst + kk * kTileCols + 16, _mm512_maskz_loadu_ps(mask1, src + 16));
  }
}

template <ActKind K>
REPSHARE_AVX512 void run_tiles(int threads, int64_t m, int64_t k, int64_t n, const float* a,
                               const float* b, const float* bias, const Activation& act,
                               const float* residual, float* c, float* packed, float* panels) {
  const Split split = split_for(threads, k, n);
  const int64_t row_blocks = (m + kTileRows - 1) / kTileRows;
#pragma omp parallel num_threads(threads)
  {
    // A is packed on every call (the SE gate folded into a projection's weights
    // changes them every run), shared out so no thread waits for another alone.
#pragma omp for schedule(static)
    for (int64_t r = 0; r < row_blocks; ++r) pack_row_block(m, k, a, r, packed);

    float* panel = panels + omp_get_thread_num() * k * split.max_chunk_cols;
#pragma omp for schedule(static)
    for (int64_t item = 0; item < split.chunks * split.row_groups; ++item) {
      const int64_t ch = item / split.row_groups, group = item % split.row_groups;
      const int64_t n0 = split.first_tile(ch) * kTileCols;
      const int64_t n1 = std::min(n, split.first_tile(ch + 1) * kTileCols);
      const int64_t tiles = (n1 - n0 + kTileCols - 1) / kTileCols;
      // B's columns [n0, n1) as contiguous k x 32 tiles (zeros past n1): a tile's
      // reads are then one stream, not k rows a power-of-two stride apart that
      // share an L1 set.
      for (int64_t t = 0; t < tiles; ++t) {
        const int64_t col = n0 + t * kTileCols;
        pack_b_tile(k, n, b + col, std::min<int64_t>(kTileCols, n1 - col),
                    panel + t * k * kTileCols);
      }
      // Row block by row block, so each writes 12 long runs of C.
      const int64_t r0 = row_blocks * group / split.row_groups;
      const int64_t r1 = row_blocks * (group + 1) / split.row_groups;
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t m0 = r * kTileRows;
        const int rows = static_cast<int>(std::min<int64_t>(kTileRows, m - m0));
        const float* bias_block = bias ? bias + m0 : nullptr;
        const float* residual_block = residual ? residual + m0 * n : nullptr;
        float* c_block = c + m0 * n;
        if (rows > 8)
          row_block_tiles<K, kTileRows>(k, n, n0, n1, tiles, packed + m0 * k, panel, bias_block,
                                        act, residual_block, rows, c_block);
        else if (rows > 4)
          row_block_tiles<K, 8>(k, n, n0, n1, tiles, packed + m0 * k, panel, bias_block, act,
                                residual_block, rows, c_block);
        else
          row_block_tiles<K, 4>(k, n, n0, n1, tiles, packed + m0 * k, panel, bias_block, act,
                                residual_block, rows, c_block);
        if (!has_vector_form(act.kind))
          for (int i = 0; i < rows; ++i)
            activation_span(act, c_block + i * n + n0, c_block + i * n + n0, n1 - n0);
      }
    }
  }
}

// Narrow maps (14x14 and below): A and B are read where they are, nothing is
// packed. A 6 x 64 tile of C stays in 24 registers; each k broadcasts one weight
// per row straight from A's rows and loads 64 columns of B's row k (masked past
// n). Packing costs most where the map is narrow: each weight is copied for only
// N (49 on a 7x7 map) multiply-adds, and the copy reads the weights from memory
// (Lite0's head has 1.6 MB of them; a whole inference's do not stay in cache) in
// a pass with no arithmetic to hide it. Rows past m reuse row m - 1 and are never
// stored.
constexpr int kNarrowRows = 6;
constexpr int64_t kNarrowCols = 64;

template <ActKind K, int Vectors>
REPSHARE_AVX512 inline void narrow_tile(int64_t k_len, int64_t n, const float* const* a_rows,
                                        const float* b, const float* bias, const Activation& act,
                                        const float* residual, int rows, __mmask16 last,
                                        float* c) {
  __m512 acc[kNarrowRows][Vectors];
#pragma GCC unroll 6
  for (int i = 0; i < kNarrowRows; ++i) {
    const __m512 start = _mm512_set1_ps(bias && i < rows ? bias[i] : 0.f);
#pragma GCC unroll 4
    for (int v = 0; v < Vectors; ++v) acc[i][v] = start;
  }
  for (int64_t k = 0; k < k_len; ++k) {
    const float* brow = b + k * n;
    __m512 bv[Vectors];
#pragma GCC unroll 4
    for (int v = 0; v < Vectors; ++v)
      bv[v] = v + 1 < Vectors ? _mm512_loadu_ps(brow + 16 * v)
                              : _mm512_maskz_loadu_ps(last, brow + 16 * v);
#pragma GCC unroll 6
    for (int i = 0; i < kNarrowRows; ++i) {
      const __m512 w = _mm512_set1_ps(a_rows[i][k]);
#pragma GCC unroll 4
      for (int v = 0; v < Vectors; ++v) acc[i][v] = _mm512_fmadd_ps(w, bv[v], acc[i][v]);
    }
  }
#pragma GCC unroll 6
  for (int i = 0; i < kNarrowRows; ++i) {
    if (i >= rows) break;
#pragma GCC unroll 4
    for (int v = 0; v < Vectors; ++v) {
      const __mmask16 mask = v + 1 < Vectors ? __mmask16(0xffff) : last;
      __m512 out = avx512::act<K>(acc[i][v], act);
      if (residual) out = _mm512_add_ps(out, _mm512_maskz_loadu_ps(mask, residual + i * n + 16 * v));
      _mm512_mask_storeu_ps(c + i * n + 16 * v, mask, out);
    }
  }
}

// Row blocks shared out between the threads (on one thread where waking the others
// would cost more than the product); each runs across all of C's columns, so its
// 6 rows of A come from memory once and B stays in the thread's L2.
template <ActKind K>
REPSHARE_AVX512 void run_narrow(int threads, int64_t m, int64_t k, int64_t n, const float* a,
                                const float* b, const float* bias, const Activation& act,
                                const float* residual, float* c) {
  const int64_t row_blocks = (m + kNarrowRows - 1) / kNarrowRows;
#pragma omp parallel for num_threads(threads) schedule(static) if (m * n * k >= kMinParallelWork)
  for (int64_t r = 0; r < row_blocks; ++r) {
    const int64_t m0 = r * kNarrowRows;
    const int rows = static_cast<int>(std::min<int64_t>(kNarrowRows, m - m0));
    const float* a_rows[kNarrowRows];
    for (int i = 0; i < kNarrowRows; ++i) a_rows[i] = a + (m0 + std::min(i, rows - 1)) * k;
    const float* bias_block = bias ? bias + m0 : nullptr;
    for (int64_t col = 0; col < n; col += kNarrowCols) {
      const int64_t left = std::min(kNarrowCols, n - col);
      const __mmask16 last = lanes(left - (left - 1) / 16 * 16);
      const float* residual_tile = residual ? residual + m0 * n + col : nullptr;
      float* c_tile = c + m0 * n + col;
      switch ((left + 15) / 16) {
        case 4:
          narrow_tile<K, 4>(k, n, a_rows, b + col, bias_block, act, residual_tile, rows, last, c_tile);
          break;
        case 3:
          narrow_tile<K, 3>(k, n, a_rows, b + col, bias_block, act, residual_tile, rows, last, c_tile);
          break;
        case 2:
          narrow_tile<K, 2>(k, n, a_rows, b + col, bias_block, act, residual_tile, rows, last, c_tile);
          break;
        default:
          narrow_tile<K, 1>(k, n, a_rows, b + col, bias_block, act, residual_tile, rows, last, c_tile);
      }
    }
    if (!has_vector_form(act.kind))
      for (int i = 0; i < rows; ++i) activation_span(act, c + (m0 + i) * n, c + (m0 + i) * n, n);
  }
}
#endif

}  // namespace

namespace {
std::atomic<bool> avx512_allowed{true};
}  // namespace

bool has_avx512() {
#if defined(__x86_64__)
  static const bool has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq");
  return has && avx512_allowed.load(std::memory_order_relaxed);
#else
  return false;
#endif
}

void allow_avx512(bool on) { avx512_allowed.store(on, std::memory_order_relaxed); }

namespace {
// Where the packed tiles beat OpenBLAS on B0's and D0's 1x1 shapes
// (docs/results/cpu_speed.md): every K at N >= 768 (28x28 maps and up), K <= 192
// at N >= 256.
bool wide_shape(int64_t k, int64_t n) {
  return k <= 2048 && (n >= 768 || (n >= 256 && k <= 192));
}
// Packing B pays for itself over the row blocks that pass over each panel. One row
// block (12 rows or fewer: pointwise_depthwise_conv2d's channel blocks) feeds each
// packed element to 12 rows at most, and there the narrow tiles reading B in place
// took 0.78-0.98x the time, with no scratch (BM_PointwiseDepthwise, medians of 5,
// old and new alternated 3 times, 1 and 2 threads, 2026-11-28: 16to96 at 112x112
// s2 0.78-0.90x, at 256x256 s2 0.83-0.95x, 24to144 at 56x56 0.86-0.98x).
bool uses_packed_tiles(int64_t m, int64_t k, int64_t n) {
  return m > kTileRows && wide_shape(k, n);
}
// The narrow kernel beat both below the wide shapes (14x14 maps and smaller:
// 0.5-0.95x the time of OpenBLAS and its epilogue, 0.8-0.9x the packed tiles at
// N = 196) while B fits in 1 MiB: every row block reads all of it, from L2 only
// while it stays there (D0's 1152 -> 320 conv on 16x16, B 1.1 MiB, took 1.33x
// OpenBLAS's time); and on wide shapes with one row block (above).
bool uses_narrow_tiles(int64_t m, int64_t k, int64_t n) {
  return !uses_packed_tiles(m, k, n) && (k * n <= 256 * 1024 || wide_shape(k, n));
}
}  // namespace

bool avx512_sgemm_applies(int64_t m, int64_t k, int64_t n) {
#if defined(__x86_64__)
  return has_avx512() && m >= 1 && k >= 1 && n >= 1 &&
         (uses_packed_tiles(m, k, n) || uses_narrow_tiles(m, k, n));
#else
  (void)m, (void)k, (void)n;
  return false;
#endif
}

int64_t avx512_sgemm_scratch_floats(int threads, int64_t m, int64_t k, int64_t n) {
  if (!uses_packed_tiles(m, k, n)) return 0;
  const int64_t a = (m + kTileRows - 1) / kTileRows * kTileRows * k;
#if defined(__x86_64__)
  return a + threads * k * split_for(threads, k, n).max_chunk_cols;
#else
  (void)n;
  return a;
#endif
}

void avx512_sgemm(int threads, int64_t m, int64_t k, int64_t n, const float* a, const float* b,
                   const float* bias, const Activation& act, const float* residual, float* c,
                   float* scratch) {
#if defined(__x86_64__)
  check(avx512_sgemm_applies(m, k, n), ErrorKind::Unsupported, "avx512 sgemm: ", m, "x", k,
        "x", n, " is not a shape it handles (or the CPU has no AVX-512)");
  check(!residual || act.kind == ActKind::None, ErrorKind::Unsupported,
        "avx512 sgemm: a residual is added to outputs without an activation only");
  // Activations without a 16-lane form run as None, then on the stored tiles.
  if (uses_narrow_tiles(m, k, n)) {
    with_vector_form(act, [&](auto kind) {
      run_narrow<decltype(kind)::value>(threads, m, k, n, a, b, bias, act, residual, c);
    });
    return;
  }
  // A in panels of 12 rows (pack_row_block), then the B panels of each thread.
  float* packed = scratch;
  float* panels = scratch + (m + kTileRows - 1) / kTileRows * kTileRows * k;
  with_vector_form(act, [&](auto kind) {
    run_tiles<decltype(kind)::value>(threads, m, k, n, a, b, bias, act, residual, c, packed,
                                     panels);
  });
#else
  fail(ErrorKind::Unsupported, "avx512 sgemm: x86-64 with AVX-512 only");
#endif
}

}  // namespace cpu
}  // namespace repshare
