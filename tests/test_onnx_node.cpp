// Every case of ONNX's official node tests (Debian's libonnx-testdata) whose ops
// and dtypes the engine supports, discovered from the data; and the repo's own
// composite-block fixtures (tests/fixtures/<case>/, made by scripts/make_fixtures.py)
// in the same layout.
#include <dirent.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "loaders/onnx_loader.h"
#include "tests/onnx_case.h"

namespace repshare {
namespace {

const char* kNodeTestDir = "/usr/share/libonnx-testdata/data/node";

std::vector<std::string> case_dirs(const std::string& root) {
  std::vector<std::string> out;
  DIR* d = opendir(root.c_str());
  if (!d) return out;
  while (dirent* e = readdir(d)) {
    std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    std::string dir = root + "/" + name;
    // A case is a model with reference data beside it (other fixtures may hold
    // models for other tests).
    if (FILE* f = std::fopen((dir + "/test_data_set_0/output_0.pb").c_str(), "rb")) {
      std::fclose(f);
      out.push_back(dir);
    }
  }
  closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

// A skip reason without the node name, so that reasons group: "op 'If' is not ...".
std::string reason_key(const std::string& r) {
  auto colon = r.find("': ");
  std::string k = colon == std::string::npos ? r : r.substr(colon + 3);
  return k.size() > 90 ? k.substr(0, 90) : k;
}

struct Tally {
  int passed = 0, failed = 0, skipped = 0;
  std::map<std::string, int> skip_reasons;
};

Tally run_all(const std::vector<std::string>& dirs, const PassOptions& passes, double rtol,
              double atol) {
  CpuBackend cpu;
  Tally t;
  for (const auto& dir : dirs) {
    CaseResult r = run_onnx_case(dir, cpu, passes, rtol, atol);
    switch (r.status) {
      case CaseResult::Status::Passed: ++t.passed; break;
      case CaseResult::Status::Skipped:
        ++t.skipped;
        ++t.skip_reasons[reason_key(r.reason)];
        break;
      case CaseResult::Status::Failed:
        ++t.failed;
        ADD_FAILURE() << dir << ": " << r.reason << " (max abs diff " << r.max_abs_diff << ")";
        break;
    }
  }
  return t;
}

void print(const char* what, const Tally& t) {
  std::printf("%s: %d cases ran and passed, %d failed, %d skipped (unsupported)\n", what,
              t.passed, t.failed, t.skipped);
  std::vector<std::pair<int, std::string>> reasons;
  for (const auto& kv : t.skip_reasons) reasons.push_back({kv.second, kv.first});
  std::sort(reasons.rbegin(), reasons.rend());
  for (size_t i = 0; i < reasons.size() && i < 25; ++i)
    std::printf("  skipped %4d: %s\n", reasons[i].first, reasons[i].second.c_str());
}

TEST(OnnxNodeTests, EverySupportedCasePasses) {
  auto dirs = case_dirs(kNodeTestDir);
  if (dirs.empty()) GTEST_SKIP() << "ONNX node tests not installed (apt libonnx-testdata)";
  // ONNX's own backend test tolerances (rtol 1e-3, atol 1e-7) with atol raised
  // for float32 transcendental ops computed with fast approximations.
  Tally t = run_all(dirs, PassOptions(), 1e-3, 1e-5);
  print("ONNX node tests", t);
  RecordProperty("passed", t.passed);
  RecordProperty("skipped", t.skipped);
  // The op set this engine exists for must be covered, not skipped wholesale.
  EXPECT_GE(t.passed, 150);
}

TEST(OnnxNodeTests, FusionsOffGiveTheSameResults) {
  auto dirs = case_dirs(kNodeTestDir);
  if (dirs.empty()) GTEST_SKIP() << "ONNX node tests not installed (apt libonnx-testdata)";
  PassOptions off;
  off.fold_constants = false;
  off.set_fusions(false);
  std::vector<std::string> some;
  for (const auto& d : dirs)
    if (d.find("conv") != std::string::npos || d.find("batchnorm") != std::string::npos ||
        d.find("resize") != std::string::npos || d.find("pool") != std::string::npos)
      some.push_back(d);
  Tally t = run_all(some, off, 1e-3, 1e-5);
  print("node tests with all passes off", t);
  EXPECT_GT(t.passed, 20);
}

TEST(RepoFixtures, CompositeBlocksMatchPyTorch) {
  auto dirs = case_dirs(std::string(REPSHARE_SOURCE_DIR) + "/tests/fixtures");
  if (dirs.empty()) GTEST_SKIP() << "no fixtures (run scripts/make_fixtures.py)";
  // Fixtures are PyTorch float32 outputs of whole blocks: max abs error 1e-4.
  for (bool fused : {true, false}) {
    PassOptions opt;
    opt.set_fusions(fused);
    Tally t = run_all(dirs, opt, 0, 1e-4);
    print(fused ? "fixtures (fused)" : "fixtures (unfused)", t);
    EXPECT_EQ(t.skipped, 0);
    EXPECT_EQ(t.failed, 0);
  }
}

// The squeeze-excitation gate of an MBConv block scales the projection conv's
// weights, not the expanded activation, and its two 1x1 convs and that gating are
// one SqueezeExcitation node making the [Cout, C, 1, 1] gated weights. (That the
// block still equals PyTorch is the test above; that the node and the projection
// become one, Passes.SqueezeExcitationThenConvBecomesOneNode; the expansion and the
// depthwise conv, Passes.PointwiseThenDepthwiseConvBecomesOneNode.)
TEST(RepoFixtures, SqueezeExciteGateScalesTheProjectionWeights) {
  for (const char* block : {"mbconv_se_s1_tfsame", "mbconv_se_s2_torchpad"}) {
    Graph g = load_onnx(std::string(REPSHARE_SOURCE_DIR) + "/tests/fixtures/" + block + "/model.onnx");
    PassOptions opt;
    opt.fuse_squeeze_excitation_conv = opt.fuse_pointwise_depthwise = false;
    const PassStats stats = prepare_graph(g, opt);
    EXPECT_EQ(stats.channel_gate, 1) << block;
    EXPECT_EQ(stats.squeeze_excitation, 1) << block;
    int se = 0;
    for (const Node& n : g.nodes) {
      EXPECT_NE(n.op_type, "Mul") << block;
      if (n.op_type != "SqueezeExcitation") continue;
      ++se;
      const Shape& out = g.values[n.outputs[0]].shape;
      ASSERT_EQ(out.rank(), 4u) << block;
      EXPECT_EQ(out[2] * out[3], 1) << block << ": the gate still scales a " << out.str() << " map";
      EXPECT_EQ(n.attr_string("expand_activation", ""), "sigmoid") << block;
    }
    EXPECT_EQ(se, 1) << block;
    // 1x1 convs left: the expansion and the projection only.
    int pointwise = 0;
    for (const Node& n : g.nodes)
      if (n.op_type == "Conv" && g.values[n.inputs[1]].shape[2] == 1) ++pointwise;
    EXPECT_EQ(pointwise, 2) << block;
  }
}

// A tensor inside the squeeze-excitation that must stay (a stage named there, say)
// keeps the two convs as they are: the pass fuses only what nothing else reads.
TEST(RepoFixtures, SqueezeExciteFusionLeavesKeptTensorsAlone) {
  const std::string path =
      std::string(REPSHARE_SOURCE_DIR) + "/tests/fixtures/mbconv_se_s1_tfsame/model.onnx";
  Graph g = load_onnx(path);
  std::string hidden;
  for (const Node& n : g.nodes)
    if (n.name == "/se/conv_reduce/Conv") hidden = g.values[n.outputs[0]].name;
  ASSERT_FALSE(hidden.empty()) << "the fixture's SE reduce conv is gone";
  PassOptions keep;
  keep.keep.insert(hidden);
  const PassStats stats = prepare_graph(g, keep);
  EXPECT_EQ(stats.squeeze_excitation, 0);
  EXPECT_GE(g.find(hidden), 0);
  int se = 0;
  for (const Node& n : g.nodes) se += n.op_type == "SqueezeExcitation";
  EXPECT_EQ(se, 0);
}

// Squeeze-excitation's pool is made by the depthwise conv as a second output: no
// reduction node is left. (Equal to PyTorch fused and unfused: the test above.) The
// depthwise conv has become one node with the expansion before it: input 3 is its
// weights.
TEST(RepoFixtures, SqueezeExcitePoolIsMadeByTheDepthwiseConv) {
  for (const char* block : {"mbconv_se_s1_tfsame", "mbconv_se_s2_torchpad"}) {
    Graph g = load_onnx(std::string(REPSHARE_SOURCE_DIR) + "/tests/fixtures/" + block + "/model.onnx");
    const PassStats stats = prepare_graph(g);
    EXPECT_EQ(stats.channel_mean, 1) << block;
    int two_output_convs = 0;
    for (const Node& n : g.nodes) {
      EXPECT_NE(n.op_type, "ReduceMean") << block;
      EXPECT_NE(n.op_type, "GlobalAveragePool") << block;
      if (n.op_type == "PointwiseDepthwiseConv" && n.outputs.size() == 2) {
        ++two_output_convs;
        EXPECT_EQ(n.attr_int("group", 1), g.values[n.inputs[3]].shape[0]) << block;
      }
    }
    EXPECT_EQ(two_output_convs, 1) << block;
  }
}

// The skip connection of a stride-1 MBConv block is added by its projection conv
// (a fourth input): no Add node is left. Stride-2 blocks have none to fuse.
// (Fused and unfused both equal PyTorch: the fixtures test above.)
TEST(RepoFixtures, ResidualConnectionIsAddedByTheProjectionConv) {
  for (const char* block : {"mbconv_se_s1_tfsame", "mbconv_se_s1_torchpad", "mbconv_se_s2_tfsame"}) {
    Graph g = load_onnx(std::string(REPSHARE_SOURCE_DIR) + "/tests/fixtures/" + block + "/model.onnx");
    const bool skip = std::string(block).find("_s1_") != std::string::npos;
    const PassStats stats = prepare_graph(g);
    EXPECT_EQ(stats.residual_add, skip ? 1 : 0) << block;
    int adds = 0, residual_convs = 0;
    for (const Node& n : g.nodes) {
      adds += n.op_type == "Add";
      // The projection, fused with the squeeze-excitation whose gate it reads: its
      // residual is input 8.
      if (n.op_type == "SqueezeExcitationConv" && n.inputs.size() == 9 && n.inputs[8] >= 0) {
        ++residual_convs;
        EXPECT_EQ(g.values[n.inputs[8]].shape, g.values[n.outputs[0]].shape) << block;
        EXPECT_EQ(g.values[n.inputs[5]].shape[2], 1) << block << ": the 1x1 projection";
      }
    }
    EXPECT_EQ(adds, 0) << block;
    EXPECT_EQ(residual_convs, skip ? 1 : 0) << block;
  }
}

}  // namespace
}  // namespace repshare
