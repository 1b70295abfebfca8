// C = act(A B + bias) with AVX2 FMAs for 1x1 convs with few input channels
// (MBConv's expansions on the widest maps: 16 -> 96 on 112x112 or 256x256, 24 ->
// 144) on CPUs without AVX-512, where OpenBLAS would take them and then a second
// pass over C for bias and activation. A 6 x 16 tile of C stays in 12 registers
// over the whole of K; each k broadcasts one weight per row straight from A and
// loads 16 columns of B's row k in place: with K <= 32 a tile's B rows are few
// enough for the prefetchers, so nothing is packed. Every output is summed from
// its bias in k order, whatever the tile, thread or block it falls in: the result
// does not depend on how the product is split (threads, channel blocks of
// CpuBackend::pointwise_depthwise_conv2d), where OpenBLAS's does.
// Against OpenBLAS and its epilogue, swish, a throwaway harness (median of 40,
// 2 threads, this 2-core AMD EPYC): 96 x 16 x 65536 0.90-0.96x the time, 144 x 24
// x 16384 0.93x, 96 x 16 x 12544 0.86-0.90x, 144 x 24 x 3136 0.82-0.88x; 16 x 32 x
// 65536 (a projection, few rows) 1.39x, which is why it takes 24 rows and more.
#include <omp.h>

#include <algorithm>

#include "engine/error.h"
#include "kernels/cpu/avx2_math.h"
#include "kernels/cpu/cpu_kernels.h"

namespace repshare {
namespace cpu {
namespace {

#ifdef __AVX2__
constexpr int kRows = 6;       // rows of C per tile
constexpr int64_t kCols = 16;  // two 8-float vectors

// One tile: rows [0, rows) of C (rows <= 6; rows past m reuse row m - 1 and are
// never stored) and V vectors of columns, the last stored masked by `last`.
template <ActKind K, int V>
inline void tile(int64_t k_len, int64_t n, const float* const* a_rows, const float* b,
                 const float* bias, const Activation& act, const float* residual, int rows,
                 __m256i last, float* c) {
  __m256 acc[kRows][V];
#pragma GCC unroll 6
  for (int i = 0; i < kRows; ++i) {
    const __m256 start = _mm256_set1_ps(bias && i < rows ? bias[i] : 0.f);
#pragma GCC unroll 2
    for (int v = 0; v < V; ++v) acc[i][v] = start;
  }
  for (int64_t k = 0; k < k_len; ++k) {
    const float* brow = b + k * n;
    __m256 bv[V];
#pragma GCC unroll 2
    for (int v = 0; v < V; ++v)
      bv[v] = v + 1 < V ? _mm256_loadu_ps(brow + 8 * v) : _mm256_maskload_ps(brow + 8 * v, last);
#pragma GCC unroll 6
    for (int i = 0; i < kRows; ++i) {
      const __m256 w = _mm256_broadcast_ss(a_rows[i] + k);
#pragma GCC unroll 2
      for (int v = 0; v < V; ++v) acc[i][v] = _mm256_fmadd_ps(w, bv[v], acc[i][v]);
    }
  }
  const __m256 alpha = _mm256_set1_ps(act.alpha), beta = _mm256_set1_ps(act.beta);
#pragma GCC unroll 6
  for (int i = 0; i < kRows; ++i) {
    if (i >= rows) break;
#pragma GCC unroll 2
    for (int v = 0; v < V; ++v) {
      __m256 out = avx2::act<K>(acc[i][v], alpha, beta);
      float* dst = c + i * n + 8 * v;
      if (v + 1 < V) {
        if (residual) out = _mm256_add_ps(out, _mm256_loadu_ps(residual + i * n + 8 * v));
        _mm256_storeu_ps(dst, out);
      } else {
        if (residual) out = _mm256_add_ps(out, _mm256_maskload_ps(residual + i * n + 8 * v, last));
        _mm256_maskstore_ps(dst, last, out);
      }
    }
  }
}

// Columns are shared out in chunks whose B rows (K x 512 floats, 64 KiB at K = 32)
// stay in L2 while every row block passes over them; on maps too narrow to give
// each thread 4 chunks, the row blocks are shared out instead.
constexpr int64_t kChunkCols = 512;

template <ActKind K>
void run(int threads, int64_t m, int64_t k, int64_t n, const float* a, const float* b,
         const float* bias, const Activation& act, const float* residual, float* c) {
  const int64_t row_blocks = (m + kRows - 1) / kRows;
  const int64_t chunks = (n + kChunkCols - 1) / kChunkCols;
  const int64_t row_groups = chunks < 4 * threads ? std::min<int64_t>(threads, row_blocks) : 1;
#pragma omp parallel for num_threads(threads) schedule(static) if (m * n * k >= kMinParallelWork)
  for (int64_t item = 0; item < chunks * row_groups; ++item) {
    const int64_t n0 = item / row_groups * kChunkCols, n1 = std::min(n, n0 + kChunkCols);
    const int64_t group = item % row_groups;
    for (int64_t r = row_blocks * group / row_groups; r < row_blocks * (group + 1) / row_groups;
         ++r) {
      const int64_t m0 = r * kRows;
      const int rows = static_cast<int>(std::min<int64_t>(kRows, m - m0));
      const float* a_rows[kRows];
      for (int i = 0; i < kRows; ++i) a_rows[i] = a + (m0 + std::min(i, rows - 1)) * k;
      const float* bias_block = bias ? bias + m0 : nullptr;
      for (int64_t col = n0; col < n1; col += kCols) {
        const int64_t left = std::min(kCols, n1 - col);
        const __m256i last = avx2::lanes(left - (left - 1) / 8 * 8);
        const float* residual_tile = residual ? residual + m0 * n + col : nullptr;
        float* c_tile = c + m0 * n + col;
        if (left > 8)
          tile<K, 2>(k, n, a_rows, b + col, bias_block, act, residual_tile, rows, last, c_tile);
        else
          tile<K, 1>(k, n, a_rows, b + col, bias_block, act, residual_tile, rows, last, c_tile);
      }
      if (!has_vector_form(act.kind))
        for (int i = 0; i < rows; ++i)
          activation_span(act, c + (m0 + i) * n + n0, c + (m0 + i) * n + n0, n1 - n0);
    }
  }
}
#endif

}  // namespace

bool avx2_sgemm_applies(int64_t m, int64_t k, int64_t n) {
#ifdef __AVX2__
  return k >= 1 && k <= 32 && m >= 24 && n >= 1;
#else
  (void)m, (void)k, (void)n;
  return false;
#endif
}

void avx2_sgemm(int threads, int64_t m, int64_t k, int64_t n, const float* a, const float* b,
                const float* bias, const Activation& act, const float* residual, float* c) {
#ifdef __AVX2__
  check(m >= 1 && k >= 1 && n >= 1, ErrorKind::Unsupported, "avx2 sgemm: ", m, "x", k, "x", n,
        " is empty");
  check(!residual || act.kind == ActKind::None, ErrorKind::Unsupported,
        "avx2 sgemm: a residual is added to outputs without an activation only");
  // Activations without a vector form run as None, then on the stored rows.
  with_vector_form(act, [&](auto kind) {
    run<decltype(kind)::value>(threads, m, k, n, a, b, bias, act, residual, c);
  });
#else
  (void)threads, (void)m, (void)k, (void)n, (void)a, (void)b, (void)bias, (void)act, (void)residual,
      (void)c;
  fail(ErrorKind::Unsupported, "avx2 sgemm: built without AVX2");
#endif
}

}  // namespace cpu
}  // namespace repshare
