#include "merge/cka.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "engine/error.h"

namespace repshare {
namespace {

// H K H: K_ij - mean_i - mean_j + mean (K is symmetric, so row and column means agree).
std::vector<double> double_centered(const Gram& g) {
  const size_t n = g.n;
  std::vector<double> row_mean(n, 0.0);
  double mean = 0.0;
  for (size_t i = 0; i < n; ++i) {
    double s = 0.0;
    for (size_t j = 0; j < n; ++j) s += g(i, j);
    row_mean[i] = s / n;
    mean += row_mean[i];
  }
  mean /= n;
  std::vector<double> c(n * n);
  for (size_t i = 0; i < n; ++i)
    for (size_t j = 0; j < n; ++j) c[i * n + j] = g(i, j) - row_mean[i] - row_mean[j] + mean;
  return c;
}

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0.0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// The diagonal-free submatrix of a Gram matrix on examples [b0, b1): its row
// sums and total, which the unbiased estimator needs for every pairing.
struct HollowBlock {
  const Gram* g;
  size_t b0, b1;
  std::vector<double> row_sums;
  double total = 0.0;

  HollowBlock(const Gram& gram, size_t begin, size_t end) : g(&gram), b0(begin), b1(end) {
    row_sums.assign(b1 - b0, 0.0);
    for (size_t i = b0; i < b1; ++i) {
      double s = 0.0;
      for (size_t j = b0; j < b1; ++j)
        if (j != i) s += gram(i, j);
      row_sums[i - b0] = s;
      total += s;
    }
  }
};

// HSIC1 (Song et al. 2012) of two hollow blocks over the same examples.
double hsic_unbiased(const HollowBlock& a, const HollowBlock& b) {
  const double m = static_cast<double>(a.b1 - a.b0);
  double trace_ab = 0.0;  // tr(AB) = sum_ij A_ij B_ij for symmetric A, B
  for (size_t i = a.b0; i < a.b1; ++i)
    for (size_t j = a.b0; j < a.b1; ++j)
      if (j != i) trace_ab += (*a.g)(i, j) * (*b.g)(i, j);
  const double ones_ab_ones = dot(a.row_sums, b.row_sums);  // 1^T A B 1 = (A1).(B1)
  return (trace_ab + a.total * b.total / ((m - 1) * (m - 2)) - 2.0 * ones_ab_ones / (m - 2)) /
         (m * (m - 3));
}

double ratio(double kl, double kk, double ll) {
  if (!(kk > 0.0) || !(ll > 0.0)) return std::numeric_limits<double>::quiet_NaN();
  return kl / std::sqrt(kk * ll);
}

double cka_biased(const Gram& k, const Gram& l) {
  check(k.n >= 2, ErrorKind::Shape, "biased CKA needs at least 2 examples, got ", k.n);
  std::vector<double> kc = double_centered(k), lc = double_centered(l);
  // tr(KHLH) = sum(HKH o HLH); the common 1/(n-1)^2 cancels in the ratio.
  return ratio(dot(kc, lc), dot(kc, kc), dot(lc, lc));
}

double cka_unbiased(const Gram& k, const Gram& l, size_t batch_size) {
  const size_t n = k.n;
  const size_t b = batch_size == 0 ? n : batch_size;
  check(b >= 4, ErrorKind::Argument, "unbiased CKA needs at least 4 examples per batch, got ",
        b, batch_size == 0 ? " examples" : " (--batch-size)");
  check(b <= n, ErrorKind::Argument, "batch size ", b, " exceeds the ", n, " examples");
  const size_t batches = n / b;
  double kl = 0.0, kk = 0.0, ll = 0.0;
  for (size_t i = 0; i < batches; ++i) {
    size_t b0 = i * b, b1 = i + 1 == batches ? n : b0 + b;
    HollowBlock kb(k, b0, b1), lb(l, b0, b1);
    kl += hsic_unbiased(kb, lb);
    kk += hsic_unbiased(kb, kb);
    ll += hsic_unbiased(lb, lb);
  }
  // Averages: the common 1/batches cancels in the ratio.
  return ratio(kl, kk, ll);
}

}  // namespace

Gram centered_gram(const NpyReader& x, Backend& backend, size_t memory_bytes) {
  const size_t n = x.rows(), d = x.cols();
  Gram g;
  g.n = n;
  g.k.assign(n * n, 0.0);
  if (n == 0 || d == 0) return g;
  const size_t block = std::max<size_t>(1, std::min(d, memory_bytes / (n * sizeof(double))));
  std::vector<double> xb(n * block);
  // Backend memory for the duration of this Gram computation.
  BackendBuffer k(backend, n * n * sizeof(double)), xdev(backend, n * block * sizeof(double));
  backend.upload(k.data, g.k.data(), n * n * sizeof(double));
  for (size_t c0 = 0; c0 < d; c0 += block) {
    const size_t w = std::min(block, d - c0);
    x.read_block(0, n, c0, c0 + w, xb.data());
    // One NaN or Inf would make every S NaN, reported as a non-positive HSIC.
    for (size_t i = 0; i < n * w; ++i)
      check(std::isfinite(xb[i]), ErrorKind::Malformed, "feature file '", x.path(), "': row ",
            i / w, ", column ", c0 + i % w, " is ", xb[i], "; CKA needs finite features");
    // Centre each column by its exact mean over all n examples: (HX)(HX)^T = HKH.
    std::vector<double> mean(w, 0.0);
    for (size_t i = 0; i < n; ++i)
      for (size_t j = 0; j < w; ++j) mean[j] += xb[i * w + j];
    for (size_t j = 0; j < w; ++j) mean[j] /= n;
    for (size_t i = 0; i < n; ++i)
      for (size_t j = 0; j < w; ++j) xb[i * w + j] -= mean[j];
    backend.upload(xdev.data, xb.data(), n * w * sizeof(double));
    backend.gram_accumulate(static_cast<int64_t>(n), static_cast<int64_t>(w), xdev.as<double>(),
                            k.as<double>());
    // xb is refilled next: the upload must have read it (pageable copies are
    // staged before they return on CUDA; a synchronize makes it explicit).
    backend.synchronize();
  }
  backend.download(g.k.data(), k.data, n * n * sizeof(double));
  for (size_t i = 0; i < n; ++i)
    for (size_t j = 0; j < i; ++j) g.k[i * n + j] = g.k[j * n + i];
  return g;
}

GramAccumulator::GramAccumulator(std::string spill_dir) : spill_dir_(std::move(spill_dir)) {
  if (spill_dir_.empty()) {
    const char* tmp = std::getenv("TMPDIR");
    spill_dir_ = tmp && *tmp ? tmp : "/tmp";
  }
}

GramAccumulator::~GramAccumulator() {
  writer_.reset();
  remove_spill();
}

void GramAccumulator::remove_spill() {
  if (!spill_path_.empty()) ::unlink(spill_path_.c_str());
  spill_path_.clear();
}

void GramAccumulator::add_examples(const float* features, size_t count, size_t d) {
  check(!consumed_, ErrorKind::Argument, "GramAccumulator: add_example after gram()");
  check(d > 0, ErrorKind::Shape, "GramAccumulator: examples need at least one feature");
  if (!writer_) {
    std::string path = spill_dir_ + "/repshare-gram-XXXXXX";
    int fd = ::mkstemp(&path[0]);
    check(fd >= 0, ErrorKind::Io, path, ": cannot create a spill file for Gram features: ",
          std::strerror(errno));
    ::close(fd);
    spill_path_ = path;
    writer_.reset(new NpyWriter(spill_path_, {static_cast<int64_t>(d)}));
    dim_ = d;
  }
  check(d == dim_, ErrorKind::Shape, "GramAccumulator: example ", examples_, " has ", d,
        " features but earlier examples have ", dim_);
  writer_->append(features, count);
  examples_ += count;
}

Gram GramAccumulator::gram(Backend& backend, size_t memory_bytes) {
  check(!consumed_, ErrorKind::Argument, "GramAccumulator: gram() called twice");
  consumed_ = true;
  if (!writer_) return Gram{};
  writer_->close();
  writer_.reset();
  Gram g;
  {
    NpyReader reader(spill_path_);
    g = centered_gram(reader, backend, memory_bytes);
  }
  remove_spill();
  return g;
}

const char* cka_estimator_name(CkaEstimator e) {
  return e == CkaEstimator::Biased ? "biased" : "unbiased";
}

double cka(const Gram& k, const Gram& l, const CkaOptions& options) {
  check(k.n == l.n, ErrorKind::Shape, "CKA needs the same examples on both sides: ", k.n,
        " vs ", l.n);
  check(k.k.size() == k.n * k.n && l.k.size() == l.n * l.n, ErrorKind::Shape,
        "Gram matrix storage does not match its n");
  if (options.estimator == CkaEstimator::Biased) {
    check(options.batch_size == 0, ErrorKind::Argument,
          "minibatches (batch size ", options.batch_size, ") need the unbiased estimator");
    return cka_biased(k, l);
  }
  return cka_unbiased(k, l, options.batch_size);
}

}  // namespace repshare
