// Linear CKA: its defining properties, agreement with a direct NumPy float64
// implementation (tests/fixtures/cka, scripts/make_cka_fixtures.py), the
// streaming Gram against naive loops, and the `repshare cka` command.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "engine/backend_registry.h"
#include "engine/error.h"
#include "kernels/cpu/cpu_backend.h"
#include "loaders/npy.h"
#include "merge/cka.h"
#include "tests/cli_runner.h"

namespace repshare {
namespace {

const std::string kFixtures = std::string(REPSHARE_SOURCE_DIR) + "/tests/fixtures/cka/";

// Row-major n x d features.
struct Features {
  size_t n, d;
  std::vector<float> x;
};

Features random_features(size_t n, size_t d, unsigned seed, float mean = 0.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(mean, 1.0f);
  Features f{n, d, std::vector<float>(n * d)};
  for (float& v : f.x) v = normal(rng);
  return f;
}

// Y = X A for a d x e matrix A.
Features times(const Features& f, const std::vector<double>& a, size_t e) {
  Features y{f.n, e, std::vector<float>(f.n * e)};
  for (size_t i = 0; i < f.n; ++i)
    for (size_t j = 0; j < e; ++j) {
      double s = 0.0;
      for (size_t k = 0; k < f.d; ++k) s += double(f.x[i * f.d + k]) * a[k * e + j];
      y.x[i * e + j] = static_cast<float>(s);
    }
  return y;
}

// The raw Gram matrix XX^T by naive loops: the in-memory reference.
Gram naive_gram(const Features& f) {
  Gram g;
  g.n = f.n;
  g.k.assign(f.n * f.n, 0.0);
  for (size_t i = 0; i < f.n; ++i)
    for (size_t j = 0; j < f.n; ++j) {
      double s = 0.0;
      for (size_t k = 0; k < f.d; ++k) s += double(f.x[i * f.d + k]) * f.x[j * f.d + k];
      g.k[i * f.n + j] = s;
    }
  return g;
}

// The streaming path, one example at a time, with a block of a few columns.
Gram streamed_gram(const Features& f, size_t memory_bytes = kDefaultGramMemoryBytes) {
  CpuBackend cpu(2);
  GramAccumulator acc;
  for (size_t i = 0; i < f.n; ++i) acc.add_example(&f.x[i * f.d], f.d);
  return acc.gram(cpu, memory_bytes);
}

const CkaOptions kBiased{CkaEstimator::Biased, 0};
const CkaOptions kUnbiased{CkaEstimator::Unbiased, 0};

TEST(Cka, SelfSimilarityIsOne) {
  Gram k = streamed_gram(random_features(40, 70, 1));
  EXPECT_NEAR(cka(k, k, kBiased), 1.0, 1e-12);
  EXPECT_NEAR(cka(k, k, kUnbiased), 1.0, 1e-12);
  EXPECT_NEAR(cka(k, k, {CkaEstimator::Unbiased, 9}), 1.0, 1e-12);
}

TEST(Cka, InvariantToOrthogonalMapsAndIsotropicScaling) {
  const size_t d = 24;
  Features x = random_features(30, d, 2);
  const std::vector<float> w = random_features(d, 10, 3).x;
  Features z = times(x, std::vector<double>(w.begin(), w.end()), 10);
  // Q = product of random Givens rotations, times an isotropic scale of 7.
  std::vector<double> q(d * d, 0.0);
  for (size_t i = 0; i < d; ++i) q[i * d + i] = 7.0;
  std::mt19937 rng(4);
  std::uniform_real_distribution<double> angle(0.0, 6.283185307179586);
  for (int r = 0; r < 200; ++r) {
    size_t a = rng() % d, b = rng() % d;
    if (a == b) continue;
    const double t = angle(rng), c = std::cos(t), s = std::sin(t);
    for (size_t row = 0; row < d; ++row) {
      double qa = q[row * d + a], qb = q[row * d + b];
      q[row * d + a] = c * qa - s * qb;
      q[row * d + b] = s * qa + c * qb;
    }
  }
  Features xq = times(x, q, d);
  Gram kx = streamed_gram(x), kxq = streamed_gram(xq), kz = streamed_gram(z);
  for (const CkaOptions& o : {kBiased, kUnbiased, CkaOptions{CkaEstimator::Unbiased, 6}}) {
    double s = cka(kx, kz, o);
    EXPECT_GT(std::fabs(s), 0.05);
    EXPECT_NEAR(cka(kxq, kz, o), s, 1e-6);  // float32 storage of XQ limits this
    EXPECT_NEAR(cka(kx, kxq, o), 1.0, 1e-6);
  }
}

TEST(Cka, NotInvariantToGeneralInvertibleLinearMaps) {
  const size_t d = 12;
  Features x = random_features(50, d, 5);
  // A = diag(1, 2, 4, ...): invertible, but stretches the feature space unevenly.
  std::vector<double> a(d * d, 0.0);
  for (size_t i = 0; i < d; ++i) a[i * d + i] = std::pow(2.0, double(i));
  Gram kx = streamed_gram(x), kxa = streamed_gram(times(x, a, d));
  EXPECT_LT(cka(kx, kxa, kBiased), 0.9);
  EXPECT_LT(cka(kx, kxa, kUnbiased), 0.9);
}

TEST(Cka, IndependentInputsBiasedInflatedUnbiasedNearZero) {
  // n = 64 examples, 300 and 200 independent features (model-facts.md).
  Gram k = streamed_gram(random_features(64, 300, 6));
  Gram l = streamed_gram(random_features(64, 200, 7));
  EXPECT_NEAR(cka(k, l, kBiased), 0.79, 0.05);
  EXPECT_NEAR(cka(k, l, kUnbiased), 0.0, 0.06);
}

TEST(Cka, StreamingGramEqualsInMemoryGram) {
  // Large means (post-activation-like) and a 7-column block: many blocks, odd tail.
  Features x = random_features(33, 101, 8, 5.0f);
  Features y = random_features(33, 20, 9, -2.0f);
  const size_t seven_columns = 33 * sizeof(double) * 7;
  Gram kx = streamed_gram(x, seven_columns), ky = streamed_gram(y, seven_columns);
  Gram nx = naive_gram(x), ny = naive_gram(y);
  // The streamed Gram is HKH of the naive one.
  const size_t n = x.n;
  std::vector<double> row(n, 0.0);
  double all = 0.0;
  for (size_t i = 0; i < n; ++i) {
    for (size_t j = 0; j < n; ++j) row[i] += nx(i, j) / n;
    all += row[i] / n;
  }
  for (size_t i = 0; i < n; ++i)
    for (size_t j = 0; j < n; ++j)
      EXPECT_NEAR(kx(i, j), nx(i, j) - row[i] - row[j] + all, 1e-9 * nx(i, i));
  for (const CkaOptions& o : {kBiased, kUnbiased, CkaOptions{CkaEstimator::Unbiased, 8}})
    EXPECT_NEAR(cka(kx, ky, o), cka(nx, ny, o), 1e-10);
}

TEST(Cka, AccumulatorRemovesItsSpillFileAndChecksShapes) {
  char dir[] = "/tmp/repshare_test_cka_XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  {
    GramAccumulator acc(dir);
    Features f = random_features(6, 5, 10);
    acc.add_examples(f.x.data(), 4, 5);
    acc.add_example(&f.x[20], 5);
    EXPECT_THROW(acc.add_example(f.x.data(), 4), Error);
    EXPECT_EQ(acc.examples(), 5u);
    EXPECT_EQ(acc.dim(), 5u);
    CpuBackend cpu(1);
    Gram g = acc.gram(cpu);
    EXPECT_EQ(g.n, 5u);
    EXPECT_THROW(acc.gram(cpu), Error);
    EXPECT_THROW(acc.add_example(f.x.data(), 5), Error);
  }
  EXPECT_EQ(rmdir(dir), 0) << "spill file left in " << dir;
}

TEST(Cka, RejectsWhatIsUndefined) {
  Gram k = streamed_gram(random_features(10, 4, 11));
  Gram three = streamed_gram(random_features(3, 4, 12));
  EXPECT_THROW(cka(k, three, kBiased), Error);                           // different n
  EXPECT_THROW(cka(three, three, kUnbiased), Error);                     // n < 4
  EXPECT_THROW(cka(k, k, {CkaEstimator::Unbiased, 3}), Error);           // batch < 4
  EXPECT_THROW(cka(k, k, {CkaEstimator::Unbiased, 11}), Error);          // batch > n
  EXPECT_THROW(cka(k, k, {CkaEstimator::Biased, 5}), Error);             // biased minibatch
  Features constant{10, 3, std::vector<float>(30, 2.5f)};
  EXPECT_TRUE(std::isnan(cka(k, streamed_gram(constant), kBiased)));
}

// expected.json is written by our own script with json.dump(indent=1): the
// value of "key" inside the object "name" is the first "key": after "name": {.
double expected_value(const std::string& name, const std::string& key) {
  std::ifstream in(kFixtures + "expected.json");
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();
  size_t obj = text.find("\"" + name + "\": {");
  size_t at = text.find("\"" + key + "\": ", obj);
  if (obj == std::string::npos || at == std::string::npos || at > text.find('}', obj))
    ADD_FAILURE() << "expected.json lacks " << name << "." << key;
  return std::strtod(text.c_str() + at + key.size() + 4, nullptr);
}

const char* const kCases[] = {"wide", "tall", "offset"};

// The Gram products on the GPU (cuBLAS float64 syrk) against the CPU's (OpenBLAS),
// on the NumPy fixtures and on odd sizes with blocks that do not divide the
// columns: CKA within 1e-6 (the bar; float64 on both sides gives ~1e-12).
TEST(Cka, GpuGramEqualsCpuGram) {
  std::string why;
  if (!cuda_available(&why)) GTEST_SKIP() << "no GPU: " << why;
  CpuBackend cpu(2);
  auto gpu = make_backend("cuda");
  for (const char* name : kCases) {
    SCOPED_TRACE(name);
    NpyReader x(kFixtures + name + "_x.npy"), y(kFixtures + name + "_y.npy");
    const size_t memory = x.rows() * sizeof(double) * 7;  // blocks of 7 columns
    const Gram kc = centered_gram(x, cpu, memory), lc = centered_gram(y, cpu, memory);
    const Gram kg = centered_gram(x, *gpu, memory), lg = centered_gram(y, *gpu, memory);
    double worst = 0, scale = 0;
    for (size_t i = 0; i < kc.k.size(); ++i) {
      worst = std::max(worst, std::fabs(kc.k[i] - kg.k[i]));
      scale = std::max(scale, std::fabs(kc.k[i]));
    }
    EXPECT_LE(worst, 1e-12 * scale);
    for (const CkaOptions& o : {kBiased, kUnbiased})
      EXPECT_NEAR(cka(kg, lg, o), cka(kc, lc, o), 1e-6);
  }
}

TEST(Cka, MatchesNumpyFloat64OnFixtures) {
  for (const char* name : kCases) {
    SCOPED_TRACE(name);
    NpyReader x(kFixtures + name + "_x.npy"), y(kFixtures + name + "_y.npy");
    const size_t b = static_cast<size_t>(expected_value(name, "batch_size"));
    // Default blocks and blocks of 5 columns give the same Gram.
    CpuBackend cpu(2);
    for (size_t memory : {kDefaultGramMemoryBytes, x.rows() * sizeof(double) * 5}) {
      Gram k = centered_gram(x, cpu, memory), l = centered_gram(y, cpu, memory);
      EXPECT_NEAR(cka(k, l, kBiased), expected_value(name, "biased"), 1e-9);
      EXPECT_NEAR(cka(k, l, kUnbiased), expected_value(name, "unbiased"), 1e-9);
      EXPECT_NEAR(cka(k, l, {CkaEstimator::Unbiased, b}), expected_value(name, "minibatch"),
                  1e-9);
    }
  }
}

// `repshare cka ARGS`: its exit status, and its stdout + stderr in *output.
int run_cka(const std::string& args, std::string* output) {
  CommandResult r = run_repshare("cka " + args);
  *output = r.output;
  return r.status;
}

TEST(CkaCommand, PrintsJsonMatchingNumpy) {
  std::string out;
  const std::string wide = kFixtures + "wide_x.npy " + kFixtures + "wide_y.npy";
  ASSERT_EQ(run_cka(wide + " --json", &out), 0) << out;
  EXPECT_NE(out.find("\"estimator\": \"biased\", \"n\": 16}"), std::string::npos) << out;
  size_t at = out.find("\"cka\": ");
  ASSERT_NE(at, std::string::npos) << out;
  EXPECT_NEAR(std::strtod(out.c_str() + at + 7, nullptr), expected_value("wide", "biased"), 1e-9);

  const std::string tall = kFixtures + "tall_x.npy " + kFixtures + "tall_y.npy";
  ASSERT_EQ(run_cka(tall + " --batch-size 300 --json --memory-mb 1", &out), 0) << out;
  EXPECT_NE(out.find("\"estimator\": \"unbiased\", \"n\": 2000, \"batch_size\": 300}"),
            std::string::npos)
      << out;
  at = out.find("\"cka\": ");
  EXPECT_NEAR(std::strtod(out.c_str() + at + 7, nullptr), expected_value("tall", "minibatch"),
              1e-9);

  ASSERT_EQ(run_cka(tall + " --estimator unbiased", &out), 0) << out;
  EXPECT_NEAR(std::strtod(out.c_str(), nullptr), expected_value("tall", "unbiased"), 1e-8);
}

TEST(CkaCommand, BadInputsFailNamingTheProblem) {
  const std::string good = kFixtures + "v2.npy";
  struct Case {
    std::string args;
    int status;
    std::vector<std::string> phrases;
  };
  const Case cases[] = {
      {kFixtures + "bad_int64.npy " + good, 1, {"bad_int64.npy", "'<i8' is not supported"}},
      {good + " " + kFixtures + "bad_bigendian.npy", 1, {"bad_bigendian.npy", "big-endian"}},
      {kFixtures + "bad_fortran.npy " + good, 1, {"bad_fortran.npy", "Fortran order"}},
      {good + " " + kFixtures + "bad_truncated.npy", 1, {"bad_truncated.npy", "truncated"}},
      {kFixtures + "bad_magic.npy " + good, 1, {"bad_magic.npy", "not a .npy file"}},
      {good + " " + kFixtures + "missing.npy", 1, {"missing.npy", "cannot open"}},
      {kFixtures + "wide_x.npy " + kFixtures + "tall_x.npy", 1,
       {"wide_x.npy has 16 rows", "tall_x.npy has 2000"}},
      {good, 2, {"expected two feature files"}},
      {good + " " + good + " --estimator linear", 2, {"--estimator", "'linear'"}},
      {good + " " + good + " --estimator biased --batch-size 4", 2, {"unbiased"}},
      {good + " " + good + " --batch-size 2", 2, {"at least 4 examples per batch"}},
      {good + " " + good + " --frobnicate 1", 2, {"unknown option --frobnicate"}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.args);
    std::string out;
    EXPECT_EQ(run_cka(c.args, &out), c.status) << out;
    for (const std::string& phrase : c.phrases)
      EXPECT_NE(out.find(phrase), std::string::npos) << "'" << phrase << "' not in: " << out;
  }
  // A NaN is named where it is, not reported as a non-positive HSIC.
  const std::string nan_file = "/tmp/repshare_cka_nan_" + std::to_string(getpid()) + ".npy";
  std::vector<float> values(6 * 3, 0.5f);
  for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>(i % 5);
  values[4 * 3 + 1] = std::nanf("");
  write_npy(nan_file, {6, 3}, values.data());
  std::string out;
  EXPECT_EQ(run_cka(nan_file + " " + nan_file, &out), 1) << out;
  EXPECT_NE(out.find("row 4, column 1 is nan; CKA needs finite features"), std::string::npos)
      << out;
  std::remove(nan_file.c_str());
}

}  // namespace
}  // namespace repshare
