// Sharing plans: parsing, path resolution and the errors a bad plan gets, alone
// and through `repshare run` (non-zero exit, no partial output file).
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <unistd.h>

#include "tests/cli_runner.h"
#include "engine/error.h"
#include "merge/plan.h"

namespace repshare {
namespace {

namespace fs = std::filesystem;

// The message of the Error `f` throws ("" when it throws none).
template <typename F>
std::string error_of(F f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

const char* kTwoPipelines = R"({"pipelines": [
  {"name": "det", "model": "d0.onnx"},
  {"name": "cls", "model": "/abs/b0.onnx",
   "share": {"from": "det", "donor_stage": "stage4", "receiver_stage": "stage3",
             "adapter": {"upsample": "nearest", "downsample": "bilinear"}}}]})";

TEST(Plan, ParsesPipelinesSharesAndAdapters) {
  Plan p = parse_plan(kTwoPipelines, "plans/x", "x.json");
  ASSERT_EQ(p.pipelines.size(), 2u);
  EXPECT_EQ(p.pipelines[0].model, "plans/x/d0.onnx");  // relative to the plan
  EXPECT_EQ(p.pipelines[1].model, "/abs/b0.onnx");
  EXPECT_FALSE(p.pipelines[0].shares);
  ASSERT_TRUE(p.pipelines[1].shares);
  EXPECT_EQ(p.pipelines[1].share.from, "det");
  EXPECT_EQ(p.pipelines[1].share.donor_stage, "stage4");
  EXPECT_EQ(p.pipelines[1].share.receiver_stage, "stage3");
  EXPECT_EQ(p.pipelines[1].share.adapter.upsample, ResizeMethod::Nearest);
  EXPECT_EQ(p.pipelines[1].share.adapter.downsample, ResizeMethod::Bilinear);
  EXPECT_TRUE(p.any_sharing());
  EXPECT_FALSE(without_sharing(p).any_sharing());
  EXPECT_EQ(p.index("cls"), 1);
  EXPECT_EQ(p.index("nope"), -1);
}

TEST(Plan, BadPlansAreNamedWithThePipeline) {
  const auto err = [](const std::string& text) {
    return error_of([&] { parse_plan(text, ".", "p.json"); });
  };
  EXPECT_NE(err("{").find("plan 'p.json'"), std::string::npos);
  EXPECT_NE(err(R"({"pipelines": []})").find("non-empty array"), std::string::npos);
  EXPECT_NE(err(R"({"pipelines": [{"name": "a"}]})").find("pipeline 'a': missing \"model\""),
            std::string::npos);
  EXPECT_NE(err(R"({"pipelines": [{"name": "a", "model": "m", "shape": 1}]})")
                .find("unknown key 'shape'"),
            std::string::npos);
  EXPECT_NE(err(R"({"pipelines": [{"name": "a", "model": "m"}, {"name": "a", "model": "m"}]})")
                .find("used twice"),
            std::string::npos);
  const std::string from_unknown = err(R"({"pipelines": [{"name": "a", "model": "m"},
      {"name": "b", "model": "m", "share": {"from": "x", "donor_stage": "s", "receiver_stage": "s"}}]})");
  EXPECT_NE(from_unknown.find("pipeline 'b': shares from 'x', which is not a pipeline"),
            std::string::npos) << from_unknown;
  EXPECT_NE(from_unknown.find("(pipelines: a, b)"), std::string::npos);
  EXPECT_NE(err(R"({"pipelines": [{"name": "a", "model": "m",
      "share": {"from": "a", "donor_stage": "s", "receiver_stage": "s"}}]})").find("from itself"),
            std::string::npos);
  EXPECT_NE(err(R"({"pipelines": [{"name": "a", "model": "m"},
      {"name": "b", "model": "m", "share": {"from": "a", "donor_stage": "s", "receiver_stage": "s"}},
      {"name": "c", "model": "m", "share": {"from": "b", "donor_stage": "s", "receiver_stage": "s"}}]})")
                .find("chains are not supported"),
            std::string::npos);
  EXPECT_NE(err(R"({"pipelines": [{"name": "a", "model": "m"},
      {"name": "b", "model": "m", "share": {"from": "a", "donor_stage": "s", "receiver_stage": "s",
       "adapter": {"upsample": "lanczos"}}}]})").find("pipeline 'b' adapter"),
            std::string::npos);
  EXPECT_NE(err(R"({"pipelines": [{"name": "a", "model": "m"},
      {"name": "b", "model": "m", "share": {"from": "a", "donor_stage": "s"}}]})")
                .find("missing \"receiver_stage\""),
            std::string::npos);
}

TEST(Plan, ModelsWithoutAPlanAreNamedAfterTheirFiles) {
  Plan p = plan_for_models({"x/lite0.onnx", "y/lite0.onnx", "d0.onnx"});
  ASSERT_EQ(p.pipelines.size(), 3u);
  EXPECT_EQ(p.pipelines[0].name, "lite0");
  EXPECT_EQ(p.pipelines[1].name, "lite0_2");
  EXPECT_EQ(p.pipelines[2].name, "d0");
  EXPECT_FALSE(p.any_sharing());
}

TEST(Plan, MissingModelFileNamesThePipelineAndPath) {
  Plan p = parse_plan(R"({"pipelines": [{"name": "det", "model": "no_such_model.onnx"}]})",
                      "/nonexistent", "p.json");
  const std::string e = error_of([&] { load_plan_models(p); });
  EXPECT_NE(e.find("pipeline 'det'"), std::string::npos) << e;
  EXPECT_NE(e.find("/nonexistent/no_such_model.onnx"), std::string::npos) << e;
  EXPECT_NE(error_of([] { load_plan("/nonexistent/plan.json"); }).find("cannot open plan"),
            std::string::npos);
}

// ---- through the binary ----


class RunCommand : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("repshare_test_plan_" + std::to_string(getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string write(const std::string& name, const std::string& text) {
    const fs::path p = dir_ / name;
    std::ofstream(p) << text;
    return p.string();
  }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  const std::string src_ = REPSHARE_SOURCE_DIR;
  fs::path dir_;
};

TEST_F(RunCommand, PlanNamingAMissingModelFailsWithoutOutput) {
  const std::string plan = write("p.json", R"({"pipelines": [{"name": "det", "model": "gone.onnx"}]})");
  const std::string out = path("out.jsonl");
  CommandResult r = run_repshare("run --plan " + plan + " --out " + out + " " + src_ +
                                 "/data/samples");
  EXPECT_NE(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("pipeline 'det': model file"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(out));
  EXPECT_FALSE(fs::exists(out + ".tmp"));
}

TEST_F(RunCommand, PlanNamingAMissingStageListsTheStages) {
  const std::string model = src_ + "/tests/fixtures/tiny_detector/model.onnx";
  const std::string plan = write("p.json", R"({"pipelines": [{"name": "a", "model": ")" + model +
      R"("}, {"name": "b", "model": ")" + model + R"(", "share": {"from": "a",
       "donor_stage": "stage4", "receiver_stage": "stage4"}}]})");
  const std::string out = path("out.jsonl");
  CommandResult r = run_repshare("run --plan " + plan + " --out " + out + " " + src_ +
                                 "/data/samples");
  EXPECT_NE(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("pipeline 'b': donor 'a'"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("has no stage 'stage4'"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(out));
}

TEST_F(RunCommand, UnreadableFramesAreSkippedAndCounted) {
  const std::string model = src_ + "/tests/fixtures/tiny_detector/model.onnx";
  const std::string broken = write("broken.jpg", "not an image");
  const std::string samples = src_ + "/data/samples";
  const std::string out = path("out.jsonl");
  const std::string summary = path("summary.json");
  CommandResult r = run_repshare("run --models " + model + " --out " + out + " --summary " +
                                 summary + " " + samples + "/frame_000.jpg " + broken + " " +
                                 samples + "/frame_001.jpg");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("warning: skipping frame '" + broken + "'"), std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("2 frames (1 skipped: unreadable)"), std::string::npos) << r.output;
  std::ifstream f(out);
  std::string line;
  int lines = 0;
  while (std::getline(f, line)) {
    ++lines;
    EXPECT_NE(line.find("\"detections\""), std::string::npos) << line;
  }
  EXPECT_EQ(lines, 2);
  std::ifstream s(summary);
  std::string text((std::istreambuf_iterator<char>(s)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("\"skipped_frames\": 1"), std::string::npos) << text;
}

}  // namespace
}  // namespace repshare
