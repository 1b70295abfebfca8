// `repshare bench` through the binary on the committed tiny models: --image times
// the network on a real image preprocessed as classify/detect do (N(0,1) noise
// never reaches the value ranges of real frames: see the subnormal flush in
// kernels/cpu/cpu_backend.h), onnxruntime gets the same input, and a bad image is a
// named error that leaves no output file.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>

#include "tests/cli_runner.h"

namespace repshare {
namespace {

const std::string kFixtures = std::string(REPSHARE_SOURCE_DIR) + "/tests/fixtures/";

std::string temp_path(const std::string& name) {
  return "/tmp/repshare_bench_" + std::to_string(getpid()) + "_" + name;
}

nlohmann::json read_json(const std::string& path) {
  std::ifstream f(path);
  return nlohmann::json::parse(f);
}

TEST(BenchCommand, TimesAClassifierAndADetectorOnARealImage) {
  const std::string out = temp_path("image.json");
  struct Case {
    std::string model, image;
    std::vector<int64_t> input;
  } cases[] = {{kFixtures + "tiny_tf_efficientnet/model.onnx", kFixtures + "images/wide.png",
                {1, 3, 48, 48}},
               {kFixtures + "tiny_detector/model.onnx", kFixtures + "images/tall.png",
                {1, 3, 64, 64}}};
  for (const Case& c : cases) {
    CommandResult r = run_repshare("bench --model " + c.model + " --image " + c.image +
                                   " --runs 2 --rounds 1 --warmup 1 --json " + out);
    ASSERT_EQ(r.status, 0) << r.output;
    EXPECT_NE(r.output.find("from " + c.image), std::string::npos) << r.output;
    const nlohmann::json j = read_json(out);
    EXPECT_EQ(j["input_from"], c.image);
    EXPECT_EQ(j["input"].get<std::vector<int64_t>>(), c.input);
    EXPECT_EQ(j["runs"], 2);
    std::remove(out.c_str());
  }
}

// onnxruntime reads the engine's preprocessed input from a temporary .npy and
// reports its sum, which bench checks; the file is gone afterwards.
TEST(BenchCommand, OnnxruntimeTimesTheSameImage) {
  const std::string python = std::string(REPSHARE_SOURCE_DIR) + "/.venv/bin/python";
  if (std::system((python + " -c 'import onnxruntime' 2>/dev/null").c_str()) != 0)
    GTEST_SKIP() << "no onnxruntime in " << python << " (scripts/setup.sh)";
  const std::string out = temp_path("ort.json");
  CommandResult r = run_repshare("bench --model " + kFixtures +
                                 "tiny_tf_efficientnet/model.onnx --image " + kFixtures +
                                 "images/wide.png --vs-onnxruntime --runs 2 --rounds 2 "
                                 "--warmup 1 --json " + out);
  ASSERT_EQ(r.status, 0) << r.output;
  const nlohmann::json j = read_json(out);
  EXPECT_EQ(j["onnxruntime"]["runs"], 4);
  EXPECT_GT(j["ratio_vs_onnxruntime"].get<double>(), 0.0);
  std::remove(out.c_str());
}

// fp16: the JSON says so; against onnxruntime (fp32) the simulation is refused.
TEST(BenchCommand, Fp16IsReportedAndNotComparedWithOnnxruntime) {
  const std::string out = temp_path("fp16.json");
  const std::string model = kFixtures + "tiny_tf_efficientnet/model.onnx";
  CommandResult r = run_repshare("bench --model " + model +
                                 " --precision fp16 --runs 2 --rounds 1 --json " + out);
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(read_json(out)["precision"], "fp16");
  std::remove(out.c_str());
  r = run_repshare("bench --model " + model + " --precision fp16 --vs-onnxruntime --json " + out);
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("drop --precision fp16"), std::string::npos) << r.output;
  EXPECT_FALSE(std::ifstream(out).good());
}

TEST(BenchCommand, AnImageThatDoesNotDecodeIsNamedAndLeavesNoOutput) {
  const std::string bad = temp_path("bad.jpg"), out = temp_path("bad.json");
  std::ofstream(bad) << "this is not a JPEG";
  for (const std::string& image : {bad, std::string("/nonexistent/frame.png")}) {
    CommandResult r = run_repshare("bench --model " + kFixtures +
                                   "tiny_tf_efficientnet/model.onnx --image " + image +
                                   " --runs 1 --json " + out);
    EXPECT_NE(r.status, 0) << image;
    EXPECT_NE(r.output.find(image), std::string::npos) << r.output;
    EXPECT_FALSE(std::ifstream(out).good()) << image;
  }
  std::remove(bad.c_str());
}

}  // namespace
}  // namespace repshare
