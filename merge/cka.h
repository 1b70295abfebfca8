// Linear CKA (centred kernel alignment) between two representations of the same
// N examples, computed from their N x N Gram matrices in float64.
//
//   biased   (Kornblith et al. 2019): HSIC0(K, L) = tr(KHLH) / (n-1)^2, H = I - 11^T/n
//   unbiased (Song et al. 2012):      zero the diagonals of K and L, then
//            HSIC1 = [tr(KL) + (1^T K 1)(1^T L 1)/((n-1)(n-2)) - 2 1^T K L 1/(n-2)] / (n(n-3))
//   CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))
// Minibatch CKA (Nguyen et al. 2020) averages each HSIC1 over minibatches of
// consecutive examples before taking the ratio.
//
// Streaming. A stage's features arrive one example at a time and D can be
// millions (64x256x256 = 4M floats at 512x512), so N x D never sits in memory.
// GramAccumulator spills each example's float32 features to a temporary .npy
// file (N*D*4 bytes of disk) and computes the Gram matrix at the end in ONE pass
// over that file by column blocks X[:, c0:c1] of all N examples: K = sum over
// blocks of X_b X_b^T, memory O(N^2 + N*block). Row blocks would need a pass
// per pair of blocks; keeping K incrementally as examples arrive would re-read
// every earlier example for each new one. The same routine reads a user's .npy
// (repshare cka) directly, without a copy.
//
// Precision. Each column block is converted to float64, centred by its exact
// column means, and multiplied with dsyrk into the float64 K, so every product
// and every sum is float64; float32 sgemm partials would lose ~sqrt(block)*6e-8
// relative accuracy per block, and post-activation features have large means
// that cancel in HKH. Centring the features (X - 1 mu^T) first gives HKH
// directly, and both estimators are exactly invariant to it: HKH = (HX)(HX)^T,
// and HSIC1 is unchanged when K_ij gains a_i + a_j + c off the diagonal (also
// within every minibatch). The price is dsyrk's rate, about half of ssyrk's:
// N^2*D flops at 10-20 GFLOP/s on the 2-core dev machine, which dominates
// reading the spill file back (N = 1000, D = 31360: 0.1 s read, 1.5 s dsyrk).
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "engine/backend.h"
#include "loaders/npy.h"

namespace repshare {

// A symmetric N x N Gram matrix in float64, row-major. cka() accepts it centred
// or not: it centres (biased) or relies on invariance to centring (unbiased).
struct Gram {
  size_t n = 0;
  std::vector<double> k;
  double operator()(size_t i, size_t j) const { return k[i * n + j]; }
};

// Features held per column block when computing a Gram matrix.
constexpr size_t kDefaultGramMemoryBytes = size_t(64) << 20;

// Gram matrix of the column-centred rows of `x` (HKH for K = XX^T), in one pass
// over x's columns holding at most ~memory_bytes of features (at least one column).
// The centring is done here in float64; the products (Backend::gram_accumulate,
// float64 syrk) on `backend`: OpenBLAS on the CPU, cuBLAS on a GPU, which also
// holds K (n*n doubles) and one column block.
Gram centered_gram(const NpyReader& x, Backend& backend,
                   size_t memory_bytes = kDefaultGramMemoryBytes);

// Collects one stage's features example by example and yields its Gram matrix.
// Usage: acc.add_example(feat, D) per example, then gram = acc.gram() once.
class GramAccumulator {
 public:
  // Spill file directory: spill_dir, else $TMPDIR, else /tmp. The file is
  // removed when gram() has read it or the accumulator is destroyed.
  explicit GramAccumulator(std::string spill_dir = "");
  ~GramAccumulator();
  GramAccumulator(const GramAccumulator&) = delete;
  GramAccumulator& operator=(const GramAccumulator&) = delete;

  // Appends `count` examples of `d` float32 values each (row-major); the first
  // call fixes d for all later ones.
  void add_examples(const float* features, size_t count, size_t d);
  void add_example(const float* features, size_t d) { add_examples(features, 1, d); }

  size_t examples() const { return examples_; }
  size_t dim() const { return dim_; }

  // The centred Gram matrix of everything added. Call once, after the last
  // add_example: it consumes the spill file.
  Gram gram(Backend& backend, size_t memory_bytes = kDefaultGramMemoryBytes);

 private:
  void remove_spill();

  std::string spill_dir_;
  std::string spill_path_;
  std::unique_ptr<NpyWriter> writer_;
  size_t examples_ = 0;
  size_t dim_ = 0;
  bool consumed_ = false;
};

enum class CkaEstimator { Biased, Unbiased };

struct CkaOptions {
  CkaEstimator estimator = CkaEstimator::Biased;
  // Unbiased only: 0 uses all n examples at once; B >= 4 averages HSIC1 over
  // minibatches of B consecutive examples (the last n % B join the final batch).
  size_t batch_size = 0;
};

const char* cka_estimator_name(CkaEstimator e);

// CKA of two representations of the same examples (k.n == l.n). NaN when either
// self-similarity HSIC(K, K) or HSIC(L, L) is not positive (constant features,
// or an unbiased estimate that came out <= 0): the similarity is then undefined.
double cka(const Gram& k, const Gram& l, const CkaOptions& options = {});

}  // namespace repshare
