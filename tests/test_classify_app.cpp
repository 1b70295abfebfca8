// `repshare classify` and `repshare eval` through the binary, on the small
// committed EfficientNet fixture (a 48x48 tf_efficientnet-shaped network with
// random weights): outputs agree with the raw-tensor path, and bad input (an
// unreadable image, a wrongly sized tensor, a missing model, a malformed list)
// gives a named error, a non-zero exit and no output file. And `repshare inspect`'s
// engine ops.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <vector>

#include "engine/model.h"
#include "engine/passes.h"
#include "kernels/cpu/cpu_backend.h"
#include "loaders/onnx_loader.h"
#include "tests/cli_runner.h"
#include "tests/exported_models.h"

namespace repshare {
namespace {

const std::string kFixtures = std::string(REPSHARE_SOURCE_DIR) + "/tests/fixtures/";
const std::string kModel = kFixtures + "tiny_tf_efficientnet/model.onnx";

std::string temp_path(const std::string& name) {
  return "/tmp/repshare_classify_" + std::to_string(getpid()) + "_" + name;
}

bool exists(const std::string& p) { return std::ifstream(p).good(); }

TEST(ClassifyCommand, RawTensorLogitsMatchTheFixtureReference) {
  // The fixture's reference output is PyTorch's on its input_0.pb.
  HostTensor in = load_tensor_pb(kFixtures + "tiny_tf_efficientnet/test_data_set_0/input_0.pb");
  HostTensor want = load_tensor_pb(kFixtures + "tiny_tf_efficientnet/test_data_set_0/output_0.pb");
  const std::string tensor = temp_path("input.f32"), logits = temp_path("logits.f32");
  {
    std::ofstream f(tensor, std::ios::binary);
    f.write(reinterpret_cast<const char*>(in.bytes.data()), in.bytes.size());
  }
  CommandResult r = run_repshare("classify --model " + kModel + " --tensor " + tensor +
                                 " --logits-out " + logits + " --json --top 3");
  ASSERT_EQ(r.status, 0) << r.output;
  auto j = nlohmann::json::parse(r.output);
  ASSERT_EQ(j.size(), 1u);
  EXPECT_EQ(j[0]["top"].size(), 3u);
  std::ifstream f(logits, std::ios::binary);
  std::vector<float> got(want.shape.numel());
  f.read(reinterpret_cast<char*>(got.data()), got.size() * sizeof(float));
  ASSERT_TRUE(f.good());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want.f32()[i], 1e-4);
  std::remove(tensor.c_str());
  std::remove(logits.c_str());
}

// --precision fp16 on the CPU runs the fp16 simulation: logits near fp32's (fp16
// keeps 11 significant bits) but not equal; an unknown precision is named.
TEST(ClassifyCommand, Fp16PrecisionRunsTheSimulation) {
  HostTensor in = load_tensor_pb(kFixtures + "tiny_tf_efficientnet/test_data_set_0/input_0.pb");
  const std::string tensor = temp_path("input16.f32");
  {
    std::ofstream f(tensor, std::ios::binary);
    f.write(reinterpret_cast<const char*>(in.bytes.data()), in.bytes.size());
  }
  std::vector<float> logits[2];
  const char* precisions[2] = {"fp32", "fp16"};
  for (int k = 0; k < 2; ++k) {
    const std::string out = temp_path(std::string("logits_") + precisions[k] + ".f32");
    CommandResult r = run_repshare("classify --model " + kModel + " --tensor " + tensor +
                                   " --logits-out " + out + " --precision " + precisions[k]);
    ASSERT_EQ(r.status, 0) << r.output;
    std::ifstream f(out, std::ios::binary);
    f.seekg(0, std::ios::end);
    logits[k].resize(static_cast<size_t>(f.tellg()) / sizeof(float));
    f.seekg(0);
    f.read(reinterpret_cast<char*>(logits[k].data()), logits[k].size() * sizeof(float));
    std::remove(out.c_str());
  }
  ASSERT_EQ(logits[0].size(), logits[1].size());
  ASSERT_FALSE(logits[0].empty());
  double diff = 0, norm = 0;
  for (size_t i = 0; i < logits[0].size(); ++i) {
    diff += (double(logits[1][i]) - logits[0][i]) * (double(logits[1][i]) - logits[0][i]);
    norm += double(logits[0][i]) * logits[0][i];
  }
  EXPECT_LT(std::sqrt(diff / norm), 1e-2);
  EXPECT_GT(diff, 0.0) << "fp16 storage changed nothing";
  CommandResult bad = run_repshare("classify --model " + kModel + " --tensor " + tensor +
                                   " --precision fp8");
  EXPECT_NE(bad.status, 0);
  EXPECT_NE(bad.output.find("--precision must be fp32, fp16 or tf32"), std::string::npos)
      << bad.output;
  // TF32 is the GPU's tensor cores: on the cpu it is refused, not quietly fp32.
  CommandResult tf32 = run_repshare("classify --model " + kModel + " --tensor " + tensor +
                                    " --precision tf32");
  EXPECT_NE(tf32.status, 0);
  EXPECT_NE(tf32.output.find("tf32 is a CUDA precision"), std::string::npos) << tf32.output;
  std::remove(tensor.c_str());
}

TEST(ClassifyCommand, ImagesGiveTopKWithProbabilities) {
  CommandResult r = run_repshare("classify --model " + kModel + " " + kFixtures +
                                 "images/grey.png --json");
  ASSERT_EQ(r.status, 0) << r.output;
  auto j = nlohmann::json::parse(r.output);
  double prev = 1.0;
  for (const auto& t : j[0]["top"]) {
    EXPECT_LE(t["prob"].get<double>(), prev);
    prev = t["prob"].get<double>();
  }
}

TEST(ClassifyCommand, BadInputIsNamedAndLeavesNoOutput) {
  const std::string logits = temp_path("bad_logits.f32");
  const std::string bad_image = temp_path("bad.jpg"), short_tensor = temp_path("short.f32");
  std::ofstream(bad_image) << "this is not a JPEG";
  std::ofstream(short_tensor) << "1234";
  struct Case {
    std::string args, message;
  } cases[] = {
      {"--model " + kModel + " " + bad_image, "bad.jpg"},
      {"--model " + kModel + " /nonexistent/x.png", "/nonexistent/x.png"},
      {"--model " + kModel + " --tensor " + short_tensor, "needs 6912 float32 values"},
      {"--model /nonexistent/model.onnx " + bad_image, "cannot open model"},
      {"--model " + kModel, "give images or --tensor"},
  };
  for (const auto& c : cases) {
    CommandResult r = run_repshare("classify " + c.args + " --logits-out " + logits);
    EXPECT_NE(r.status, 0) << c.args;
    EXPECT_NE(r.output.find(c.message), std::string::npos) << c.args << "\n" << r.output;
    EXPECT_FALSE(exists(logits)) << c.args;
    EXPECT_FALSE(exists(logits + ".tmp")) << c.args;
  }
  std::remove(bad_image.c_str());
  std::remove(short_tensor.c_str());
}

TEST(EvalCommand, CountsAccuracyAndRejectsAMalformedList) {
  const std::string list = temp_path("labels.txt"), summary = temp_path("summary.json");
  std::ofstream(list) << kFixtures << "images/grey.png, 3\n";
  CommandResult ok = run_repshare("eval --model " + kModel + " --labels " + list + " --json " +
                                  summary);
  ASSERT_EQ(ok.status, 0) << ok.output;
  auto j = nlohmann::json::parse(std::ifstream(summary));
  EXPECT_EQ(j["images"].get<int>(), 1);
  EXPECT_GE(j["top5"].get<double>(), j["top1"].get<double>());
  std::remove(summary.c_str());

  std::ofstream(list) << "images/a.png 3\n";  // no comma
  CommandResult bad = run_repshare("eval --model " + kModel + " --labels " + list + " --json " +
                                   summary);
  EXPECT_NE(bad.status, 0);
  EXPECT_NE(bad.output.find("line 1"), std::string::npos) << bad.output;
  EXPECT_FALSE(exists(summary));
  std::remove(list.c_str());
}

// inspect lists the engine ops of the graph the CPU backend runs: in AVX2 builds B0's
// early MBConv expansions (planes of 112 x 112) fuse with their depthwise convs there,
// which the passes' defaults (other backends) leave as two nodes.
TEST(InspectCommand, EngineOpsAreTheCpuBackends) {
  std::vector<std::string> models = {kModel};
  const std::string b0 = exported_model("timm_b0_rand0");
  if (!b0.empty()) models.push_back(b0);
  for (const std::string& path : models) {
    SCOPED_TRACE(path);
    CommandResult r = run_repshare("inspect " + path + " --json");
    ASSERT_EQ(r.status, 0) << r.output;
    const auto ops = nlohmann::json::parse(r.output)["engine_ops"];
    const Model m = load_model(path, pass_options_for(CpuBackend(1)));
    std::map<std::string, int> want;
    for (const Node& n : m.graph.nodes) ++want[n.op_type];
    const auto got = ops.get<std::map<std::string, int>>();
    EXPECT_EQ(got, want);
  }
  if (b0.empty()) GTEST_SKIP() << "timm_b0_rand0.onnx not found: checked the fixture only";
}

}  // namespace
}  // namespace repshare
