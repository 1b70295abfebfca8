// C = act(A B + bias) with AVX-512 where the CPU has it, for the products of
// EfficientNet's convolutions on wide maps: 1x1 convs (A the weights, B the input
// [Cin, H*W]) and the stem after im2col. A 12 x 32 tile of C stays in 24
// registers over the whole of K, and bias and activation are applied before the
// one store, where OpenBLAS's result takes a second pass for them. B is packed a
// chunk of columns at a time into contiguous 32-wide tiles, sized to stay in L2
// while every row block passes over it; row block by row block, so C is written
// in long runs. Against the OpenBLAS path on B0's and D0's 1x1 shapes (2 threads,
// docs/results/cpu_speed.md): 1.1-1.9x at N >= 768, slower on 7x7 maps (hence
// avx512_sgemm_applies).
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
        const int64_t col = n0 + t * kTileCols, left = std::min<int64_t>(kTileCols, n1 - col);
        const __mmask16 mask0 = lanes(left), mask1 = lanes(left - 16);
        float* dst = panel + t * k * kTileCols;
        for (int64_t kk = 0; kk < k; ++kk) {
          const float* src = b + kk * n + col;
          _mm512_storeu_ps(dst + kk * kTileCols, _mm512_maskz_loadu_ps(mask0, src));
          _mm512_storeu_ps(dst + kk * kTileCols + 16, _mm512_maskz_loadu_ps(mask1, src + 16));
        }
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
        if (!avx512::has_vector_form(act.kind))
          for (int i = 0; i < rows; ++i)
            activation_span(act, c_block + i * n + n0, c_block + i * n + n0, n1 - n0);
      }
    }
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

bool avx512_sgemm_applies(int64_t m, int64_t k, int64_t n) {
#if defined(__x86_64__)
  // Where it beat OpenBLAS on B0's and D0's 1x1 shapes (docs/results/cpu_speed.md):
  // every K at N >= 768 (28x28 maps and up), K <= 192 at N >= 192. On 7x7 maps
  // (N = 49) a 32-wide tile wastes a third of its lanes and OpenBLAS wins.
  return has_avx512() && m >= 1 && k >= 1 && k <= 2048 &&
         (n >= 768 || (n >= 192 && k <= 192));
#else
  return false;
#endif
}

int64_t avx512_sgemm_scratch_floats(int threads, int64_t m, int64_t k, int64_t n) {
  const int64_t a = (m + kTileRows - 1) / kTileRows * kTileRows * k;
#if defined(__x86_64__)
  return a + threads * k * split_for(threads, k, n).max_chunk_cols;
#else
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
  // A in panels of 12 rows (pack_row_block), then the B panels of each thread.
  float* packed = scratch;
  float* panels = scratch + (m + kTileRows - 1) / kTileRows * kTileRows * k;
  // Activations without a 16-lane form run as None, then on the stored tiles.
  avx512::with_vector_form(act, [&](auto kind) {
    run_tiles<decltype(kind)::value>(threads, m, k, n, a, b, bias, act, residual, c, packed,
                                     panels);
  });
#else
  fail(ErrorKind::Unsupported, "avx512 sgemm: x86-64 with AVX-512 only");
#endif
}

}  // namespace cpu
}  // namespace repshare
