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
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/exp_poly.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define REPSHARE_AVX512 __attribute__((target("avx512f,avx512dq,fma")))
// GCC 12's AVX-512 headers start masked intrinsics from _mm512_undefined_ps(),
// which -Wmaybe-uninitialized reports at every inlined use (GCC bug 105593).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#endif

namespace repshare {
namespace cpu {
namespace {

constexpr int kTileRows = 12;  // MR: rows of C per tile, 2 x 12 accumulators
constexpr int kTileCols = 32;  // NR: two 16-float vectors

#if defined(__x86_64__)

// exp by kernels/cpu/exp_poly.h, as activation.cpp computes it for AVX2, 16
// lanes at a time; 2^n by vscalefps.
REPSHARE_AVX512 inline __m512 exp512(__m512 x) {
  using namespace exp_poly;
  x = _mm512_min_ps(x, _mm512_set1_ps(kMax));
  x = _mm512_max_ps(x, _mm512_set1_ps(kMin));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(kLog2e)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Hi), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Lo), r);
  __m512 p = _mm512_set1_ps(kPoly[0]);
  for (int i = 1; i < 6; ++i) p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kPoly[i]));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.f)));
  return _mm512_scalef_ps(p, n);
}

// 1 / (1 + exp(-x)), the reciprocal estimate refined by one Newton step.
REPSHARE_AVX512 inline __m512 sigmoid512(__m512 x) {
  const __m512 d =
      _mm512_add_ps(_mm512_set1_ps(1.f), exp512(_mm512_sub_ps(_mm512_setzero_ps(), x)));
  const __m512 r = _mm512_rcp14_ps(d);
  return _mm512_mul_ps(r, _mm512_fnmadd_ps(d, r, _mm512_set1_ps(2.f)));
}

// The first `count` of a vector's 16 lanes (none for count <= 0, all from 16 on).
inline __mmask16 lanes(int64_t count) {
  return count >= 16 ? 0xffff : count <= 0 ? 0 : static_cast<__mmask16>((1u << count) - 1);
}

// The activations applied in registers; the others are applied to the stored
// tile afterwards (in_registers() says which).
bool in_registers(ActKind k) {
  return k == ActKind::None || k == ActKind::Relu || k == ActKind::Clip ||
         k == ActKind::Sigmoid || k == ActKind::Swish;
}

// Clip is ReLU6 in EfficientNet-Lite: min in alpha, max in beta.
template <ActKind K>
REPSHARE_AVX512 inline __m512 act512(__m512 v, const Activation& act) {
  if (K == ActKind::Relu) return _mm512_max_ps(v, _mm512_setzero_ps());
  if (K == ActKind::Clip)
    return _mm512_min_ps(_mm512_max_ps(v, _mm512_set1_ps(act.alpha)), _mm512_set1_ps(act.beta));
  if (K == ActKind::Sigmoid) return sigmoid512(v);
  if (K == ActKind::Swish) return _mm512_mul_ps(v, sigmoid512(v));
  return v;
}

// One tile: rows [0, rows) of C (rows <= 12) and 32 columns, stored masked when
// Full is false. `a` is the row block's packed panel (K groups of 12 weights, one
// per row), `b` a packed B tile (K rows of 32, ldb apart).
template <bool Full, ActKind K>
REPSHARE_AVX512 inline void tile(int64_t k_len, int64_t ldb, int64_t ldc, const float* a,
                                 const float* b, const float* bias, const Activation& act, int rows,
                                 __mmask16 mask0, __mmask16 mask1, float* c) {
  __m512 acc[kTileRows][2];
#pragma GCC unroll 12
  for (int i = 0; i < kTileRows; ++i) {
    acc[i][0] = _mm512_set1_ps(bias && i < rows ? bias[i] : 0.f);
    acc[i][1] = acc[i][0];
  }
  for (int64_t k = 0; k < k_len; ++k) {
    const float* brow = b + k * ldb;  // a packed tile: zeros past the last column
    const __m512 b0 = _mm512_loadu_ps(brow), b1 = _mm512_loadu_ps(brow + 16);
    const float* ak = a + k * kTileRows;
#pragma GCC unroll 12
    for (int i = 0; i < kTileRows; ++i) {
      const __m512 w = _mm512_set1_ps(ak[i]);
      acc[i][0] = _mm512_fmadd_ps(w, b0, acc[i][0]);
      acc[i][1] = _mm512_fmadd_ps(w, b1, acc[i][1]);
    }
  }
#pragma GCC unroll 12
  for (int i = 0; i < kTileRows; ++i) {
    if (i >= rows) break;
    float* crow = c + i * ldc;
    const __m512 v0 = act512<K>(acc[i][0], act), v1 = act512<K>(acc[i][1], act);
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
struct Split {
  int64_t chunk = 0;       // columns per chunk (a multiple of 32)
  int64_t row_groups = 1;  // parts the row blocks are divided into
};

Split split_for(int threads, int64_t k, int64_t n) {
  const int64_t tiles = (n + kTileCols - 1) / kTileCols;
  const int64_t l2 = std::max<int64_t>(kTileCols, (64 * 1024 / k) / kTileCols * kTileCols);
  Split s;
  if (tiles < 4 * threads) {
    s.chunk = std::min(l2, tiles * kTileCols);
    s.row_groups = threads;
  } else {
    const int64_t per_thread = (tiles + threads - 1) / threads * kTileCols;
    s.chunk = std::min<int64_t>({l2, per_thread, 8192});
  }
  return s;
}

template <ActKind K>
REPSHARE_AVX512 void run_tiles(int threads, int64_t m, int64_t k, int64_t n, const float* packed,
                               const float* b, const float* bias, const Activation& act,
                               float* c, float* panels) {
  const Split split = split_for(threads, k, n);
  const int64_t chunk = split.chunk, chunks = (n + chunk - 1) / chunk;
  const int64_t row_blocks = (m + kTileRows - 1) / kTileRows;
#pragma omp parallel num_threads(threads)
  {
    float* panel = panels + omp_get_thread_num() * k * chunk;
#pragma omp for schedule(static)
    for (int64_t item = 0; item < chunks * split.row_groups; ++item) {
      const int64_t ch = item / split.row_groups, group = item % split.row_groups;
      const int64_t n0 = ch * chunk, n1 = std::min(n, n0 + chunk);
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
        float* c_block = c + m0 * n;
        for (int64_t t = 0; t < tiles; ++t) {
          const int64_t col = n0 + t * kTileCols, left = n1 - col;
          if (left >= kTileCols) {
            tile<true, K>(k, kTileCols, n, packed + m0 * k, panel + t * k * kTileCols, bias_block,
                          act, rows, 0xffff, 0xffff, c_block + col);
          } else {
            tile<false, K>(k, kTileCols, n, packed + m0 * k, panel + t * k * kTileCols,
                           bias_block, act, rows, lanes(left), lanes(left - 16), c_block + col);
          }
        }
        if (!in_registers(act.kind))
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
  return a + threads * k * split_for(threads, k, n).chunk;
#else
  return a;
#endif
}

void avx512_sgemm(int threads, int64_t m, int64_t k, int64_t n, const float* a, const float* b,
                   const float* bias, const Activation& act, float* c, float* scratch) {
#if defined(__x86_64__)
  check(avx512_sgemm_applies(m, k, n), ErrorKind::Unsupported, "avx512 sgemm: ", m, "x", k,
        "x", n, " is not a shape it handles (or the CPU has no AVX-512)");
  // A in panels of 12 rows, k-major inside: a tile reads its 12 weights for one k
  // as one contiguous group. Rows past m are zero.
  float* packed = scratch;
  float* panels = scratch + (m + kTileRows - 1) / kTileRows * kTileRows * k;
  const int64_t row_blocks = (m + kTileRows - 1) / kTileRows;
  for (int64_t r = 0; r < row_blocks; ++r)
    for (int64_t kk = 0; kk < k; ++kk)
      for (int i = 0; i < kTileRows; ++i) {
        const int64_t row = r * kTileRows + i;
        packed[(r * k + kk) * kTileRows + i] = row < m ? a[row * k + kk] : 0.f;
      }
  switch (act.kind) {
    case ActKind::Relu:
      return run_tiles<ActKind::Relu>(threads, m, k, n, packed, b, bias, act, c, panels);
    case ActKind::Clip:
      return run_tiles<ActKind::Clip>(threads, m, k, n, packed, b, bias, act, c, panels);
    case ActKind::Sigmoid:
      return run_tiles<ActKind::Sigmoid>(threads, m, k, n, packed, b, bias, act, c, panels);
    case ActKind::Swish:
      return run_tiles<ActKind::Swish>(threads, m, k, n, packed, b, bias, act, c, panels);
    default:  // None, or an activation applied after the stores
      return run_tiles<ActKind::None>(threads, m, k, n, packed, b, bias, act, c, panels);
  }
#else
  fail(ErrorKind::Unsupported, "avx512 sgemm: x86-64 with AVX-512 only");
#endif
}

}  // namespace cpu
}  // namespace repshare
