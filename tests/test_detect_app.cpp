// EfficientDet end to end: the sidecar-driven Detector and the detect / eval-det
// commands against effdet's own pipeline, and D0 parity with PyTorch.
//
// Always run: a tiny EfficientDet-shaped model (tests/fixtures/tiny_detector,
// scripts/effdet_reference.py tiny-fixture) whose detections on two fixture images
// effdet computed through its whole pipeline (letterbox, onnxruntime, post-process).
// With the D0 exports (scripts/make_parity_models.sh; models/ or $REPSHARE_MODELS):
// head outputs against PyTorch and post-processing of PyTorch's outputs against
// effdet, for tf_efficientdet_d0 and efficientdet_d0. Skipped without them.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "engine/backend_registry.h"
#include "engine/error.h"
#include "kernels/cpu/cpu_backend.h"
#include "loaders/image.h"
#include "tasks/classification.h"
#include "tasks/coco_eval.h"
#include "tasks/detection.h"
#include "tests/cli_runner.h"
#include "tests/exported_models.h"

namespace repshare {
namespace {

namespace fs = std::filesystem;

const std::string kSource = REPSHARE_SOURCE_DIR;
const std::string kTiny = kSource + "/tests/fixtures/tiny_detector/";
const std::string kImages = kSource + "/tests/fixtures/images/";

// Detections a fixture file lists, and the frame line effdet was given.
struct ReferenceDetections {
  ImageFrame frame;
  std::vector<Detection> detections;
};

ReferenceDetections read_reference(const std::string& path) {
  std::ifstream f(path);
  EXPECT_TRUE(f.good()) << "missing " << path;
  ReferenceDetections r;
  for (std::string line; std::getline(f, line);) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream in(line);
    if (line.rfind("frame", 0) == 0) {
      std::string word;
      in >> word >> r.frame.scale >> r.frame.width >> r.frame.height;
      continue;
    }
    Detection d;
    in >> d.x_min >> d.y_min >> d.x_max >> d.y_max >> d.score >> d.category_id;
    EXPECT_FALSE(in.fail()) << path << ": bad line '" << line << "'";
    r.detections.push_back(d);
  }
  return r;
}

// Same detections in the same order; boxes within box_tol pixels, scores within
// score_tol.
void expect_same_detections(const std::vector<Detection>& got, const std::vector<Detection>& want,
                            double box_tol, double score_tol, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    const Detection &g = got[i], &w = want[i];
    EXPECT_EQ(g.category_id, w.category_id) << what << " detection " << i;
    EXPECT_NEAR(g.score, w.score, score_tol) << what << " detection " << i;
    EXPECT_NEAR(g.x_min, w.x_min, box_tol) << what << " detection " << i;
    EXPECT_NEAR(g.y_min, w.y_min, box_tol) << what << " detection " << i;
    EXPECT_NEAR(g.x_max, w.x_max, box_tol) << what << " detection " << i;
    EXPECT_NEAR(g.y_max, w.y_max, box_tol) << what << " detection " << i;
  }
}

TEST(DetectionModel, ConfigAndPreprocessFromTheSidecar) {
  ModelInfo info;
  info.name = "m";
  info.input_shape = Shape{1, 3, 64, 64};
  info.sidecar_json = R"({"num_classes": 7,
      "anchors": {"min_level": 3, "max_level": 6, "num_scales": 2, "anchor_scale": 3.0,
                  "aspect_ratios": [[1.0, 1.0]], "image_size": [64, 64]},
      "postprocess": {"max_detection_points": 300, "max_det_per_image": 20, "nms_iou": 0.6,
                      "soft_nms": true},
      "preprocess": {"resize": 64, "interpolation": "bicubic", "fill": "mean",
                     "mean": [0.5, 0.25, 0.0], "std": [0.5, 0.5, 0.5]}})";
  const DetectionConfig c = detection_config_for(info);
  EXPECT_EQ(c.num_classes, 7);
  EXPECT_EQ(c.max_level, 6);
  EXPECT_EQ(c.num_scales, 2);
  EXPECT_EQ(c.anchor_scale, 3.0);
  ASSERT_EQ(c.aspect_ratios.size(), 1u);
  EXPECT_EQ(c.image_height, 64);
  EXPECT_EQ(c.max_detection_points, 300);
  EXPECT_EQ(c.max_detections, 20);
  EXPECT_EQ(c.iou_threshold, 0.6);
  EXPECT_TRUE(c.soft_nms);
  const DetectPreprocess p = detect_preprocess_for(info);
  EXPECT_EQ(p.target, 64);
  EXPECT_EQ(p.interp, Interp::Bicubic);
  // effdet's round(255 * mean): 127.5 -> 128 (Python rounds that tie to even, 128 too).
  EXPECT_EQ(p.fill[0], 128);
  EXPECT_EQ(p.fill[1], 64);
  EXPECT_EQ(p.fill[2], 0);
  EXPECT_FLOAT_EQ(p.std[0], 0.5f);

  // No sidecar: effdet's defaults, the image size from the input.
  ModelInfo bare;
  bare.name = "bare";
  bare.input_shape = Shape{1, 3, 256, 256};
  const DetectionConfig d = detection_config_for(bare);
  EXPECT_EQ(d.image_width, 256);
  EXPECT_EQ(d.num_classes, 90);
  EXPECT_EQ(d.aspect_ratios.size(), 3u);
  EXPECT_EQ(detect_preprocess_for(bare).target, 256);
  EXPECT_EQ(detect_preprocess_for(bare).fill[0], 124);

  // Anchors for another image size than the input's: an error naming the model.
  ModelInfo wrong = info;
  wrong.sidecar_json = R"({"anchors": {"image_size": [512, 512]}})";
  try {
    detection_config_for(wrong);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'m'"), std::string::npos) << e.what();
  }
  wrong.sidecar_json = R"({"num_classes": "ninety"})";
  EXPECT_THROW(detection_config_for(wrong), Error);

  // Values of the right type that no model can use: named, before any image.
  const struct {
    const char* sidecar;
    const char* message;
  } unusable[] = {
      {R"({"preprocess": {"std": [0.5, 0, 0.5]}})", "std [0.5,0,0.5] must be positive"},
      {R"({"preprocess": {"mean": [0.5, 0.5]}})", "mean must be three numbers"},
      {R"({"preprocess": {"resize": "big"}})", "resize must be a whole number, not \"big\""},
  };
  for (const auto& u : unusable) {
    wrong.sidecar_json = u.sidecar;
    try {
      detect_preprocess_for(wrong);
      ADD_FAILURE() << "expected an error for " << u.sidecar;
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::Malformed) << e.what();
      EXPECT_NE(std::string(e.what()).find(u.message), std::string::npos) << e.what();
    }
    EXPECT_THROW(classify_preprocess_for(wrong), Error) << u.sidecar;
  }
  DetectionConfig bad_iou = detection_config_for(info);
  bad_iou.iou_threshold = 5;
  CpuBackend cpu(1);
  EXPECT_THROW(DetectionPostprocess(bad_iou, cpu), Error);
  DetectionConfig flat = detection_config_for(info);
  flat.anchor_scale = 0;
  EXPECT_THROW(generate_anchors(flat), Error);
  flat.anchor_scale = 4;
  flat.aspect_ratios = {{1.0, 0.0}};
  EXPECT_THROW(generate_anchors(flat), Error);
}

TEST(DetectionModel, ImageFrameIsEffdetImgInfo) {
  Letterbox box;
  box.scale = 64.0 / 97.0;
  box.image_width = 97;
  box.image_height = 73;
  const ImageFrame f = image_frame(box);
  EXPECT_EQ(f.scale, 1.515625f);  // effdet's img_scale for wide.png into 64 (fixture)
  EXPECT_EQ(f.width, 97.0f);
  EXPECT_EQ(f.height, 73.0f);
}

TEST(DetectionModel, HeadRejectsAModelWithoutDetectionOutputs) {
  const Model classifier = load_model(kSource + "/tests/fixtures/tiny_tf_efficientnet/model.onnx");
  try {
    auto cpu = make_backend("cpu", 1);
    DetectionHead head(classifier.info, detection_config_for(classifier.info), *cpu);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Argument);
    EXPECT_NE(std::string(e.what()).find("class_p3"), std::string::npos) << e.what();
  }
}

// The tiny detector: image -> letterbox -> network -> post-processing against
// effdet's letterbox -> onnxruntime -> post-processing. The letterbox is PIL's
// exactly (tests/test_image.cpp) and the network is 1x1 convs of averages (output
// differences ~1e-6), so boxes agree to float rounding: 1e-3 px and 1e-4 in score
// leave two orders of magnitude of margin while any indexing, anchor, clipping or
// scaling mistake moves boxes by pixels.
TEST(TinyDetector, DetectEqualsEffdetPipeline) {
  const Model model = load_model(kTiny + "model.onnx");
  auto cpu = make_backend("cpu", 1);
  Detector detector(model, *cpu, detection_config_for(model.info));
  for (const std::string image : {"wide", "tall"}) {
    const ReferenceDetections ref = read_reference(kTiny + "detections_" + image + ".txt");
    ASSERT_EQ(ref.detections.size(), 100u);
    const Image img = load_image(kImages + image + ".png");
    expect_same_detections(detector.detect(img), ref.detections, 1e-3, 1e-4, image);
  }
}

TEST(TinyDetector, EmptyImageIsAnError) {
  const Model model = load_model(kTiny + "model.onnx");
  auto cpu = make_backend("cpu", 1);
  Detector detector(model, *cpu, detection_config_for(model.info));
  EXPECT_THROW(detector.detect(Image()), Error);
}

// ---- the commands ----


nlohmann::json read_json(const std::string& path) {
  std::ifstream f(path);
  EXPECT_TRUE(f.good()) << "missing " << path;
  return nlohmann::json::parse(f);
}

class DetectCommand : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("repshare_detect_" + std::string(::testing::UnitTest::GetInstance()
                                                 ->current_test_info()
                                                 ->name()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  fs::path dir_;
};

TEST_F(DetectCommand, JsonAndDrawingsMatchTheEffdetReference) {
  const CommandResult r =
      run_repshare("detect --model " + kTiny + "model.onnx " + kImages + "wide.png " + kImages +
                   "tall.png --threads 1 --json " + path("d.json") + " --draw-dir " + path("drawn"));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("sheep"), std::string::npos) << r.output;  // category 20, printed
  EXPECT_NE(r.output.find("random weights"), std::string::npos) << r.output;
  const nlohmann::json j = read_json(path("d.json"));
  ASSERT_EQ(j.size(), 2u);
  const char* names[2] = {"wide", "tall"};
  for (int i = 0; i < 2; ++i) {
    const ReferenceDetections ref = read_reference(kTiny + "detections_" + names[i] + ".txt");
    std::vector<Detection> got;
    for (const auto& d : j[i]["detections"]) {
      got.push_back({d["box"][0].get<float>(), d["box"][1].get<float>(), d["box"][2].get<float>(),
                     d["box"][3].get<float>(), d["score"].get<float>(),
                     d["category_id"].get<int>()});
    }
    expect_same_detections(got, ref.detections, 1e-3, 1e-4, names[i]);
    EXPECT_EQ(j[i]["width"].get<int>(), static_cast<int>(ref.frame.width));
    const Image drawn = load_image(path("drawn/" + std::string(names[i]) + ".png"));
    EXPECT_EQ(drawn.width, static_cast<int>(ref.frame.width));
    EXPECT_EQ(drawn.height, static_cast<int>(ref.frame.height));
    const Image original = load_image(kImages + names[i] + ".png");
    EXPECT_NE(drawn.pixels, original.pixels) << "no box drawn on " << names[i];
  }
}

TEST_F(DetectCommand, BadInputsFailWithoutWritingOutput) {
  // A PNG whose header says 0x0 pixels (valid CRCs), and bytes that are no image.
  const unsigned char zero_png[] = {
      0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49,
      0x48, 0x44, 0x52, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x08, 0x02,
      0x00, 0x00, 0x00, 0xb4, 0xe9, 0xeb, 0x45, 0x00, 0x00, 0x00, 0x08, 0x49, 0x44,
      0x41, 0x54, 0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01, 0x48, 0x06, 0x89,
      0xd2, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82};
  std::ofstream(path("zero.png"), std::ios::binary)
      .write(reinterpret_cast<const char*>(zero_png), sizeof zero_png);
  std::ofstream(path("garbage.jpg")) << "this is not a JPEG";
  const std::string model = " --model " + kTiny + "model.onnx ";
  const std::string good = kImages + "wide.png ";
  struct Case {
    std::string args, expect;  // expect: part of the error message
  };
  const std::vector<Case> cases = {
      {model + good + path("missing.png"), "missing.png"},
      {model + good + path("garbage.jpg"), "garbage.jpg"},
      {model + good + path("zero.png"), "zero.png"},
      {" --model " + kSource + "/tests/fixtures/tiny_tf_efficientnet/model.onnx " + good,
       "class_p3"},
      {" --model " + path("nope.onnx ") + good, "nope.onnx"},
      {model + good + good + " --draw " + path("one.png"), "--draw"},
  };
  for (const Case& c : cases) {
    const CommandResult r =
        run_repshare("detect" + c.args + " --json " + path("out.json") + " --draw-dir " +
                     path("drawn"));
    EXPECT_NE(r.status, 0) << c.args << "\n" << r.output;
    EXPECT_NE(r.output.find("error"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find(c.expect), std::string::npos) << r.output;
    EXPECT_FALSE(fs::exists(path("out.json"))) << c.args;
    EXPECT_FALSE(fs::exists(path("drawn/wide.png"))) << c.args;
    EXPECT_FALSE(fs::exists(path("one.png"))) << c.args;
  }
}

// eval-det's wiring: its detections are the Detector's on each image, its stats
// the evaluator's on them (the evaluator itself is tested against pycocotools in
// tests/test_coco_eval.cpp), and --limit evaluates the first images only.
TEST_F(DetectCommand, EvalDetIsTheEvaluatorOnTheDetectorsOutput) {
  const std::string data = kSource + "/tests/fixtures/detection/yolo_tiny";
  const CommandResult r = run_repshare("eval-det --model " + kTiny + "model.onnx --data " + data +
                                       " --limit 2 --threads 1 --json " + path("s.json") +
                                       " --detections " + path("d.json"));
  ASSERT_EQ(r.status, 0) << r.output;
  const nlohmann::json summary = read_json(path("s.json"));
  const nlohmann::json dets = read_json(path("d.json"));

  CocoGroundTruth gt = load_yolo_ground_truth(data);
  gt.images.resize(2);
  std::vector<CocoAnnotation> kept;
  for (const CocoAnnotation& a : gt.annotations)
    if (a.image_id == gt.images[0].id || a.image_id == gt.images[1].id) kept.push_back(a);
  gt.annotations = kept;
  const Model model = load_model(kTiny + "model.onnx");
  auto cpu = make_backend("cpu", 1);
  Detector detector(model, *cpu, detection_config_for(model.info));
  std::vector<CocoDetection> expected;
  for (const CocoImage& im : gt.images) {
    const auto found = to_coco_detections(im.id, detector.detect(load_image(im.file)));
    expected.insert(expected.end(), found.begin(), found.end());
  }
  ASSERT_EQ(dets.size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(dets[i]["image_id"].get<int64_t>(), expected[i].image_id);
    EXPECT_EQ(dets[i]["category_id"].get<int>(), expected[i].category_id);
    EXPECT_DOUBLE_EQ(dets[i]["score"].get<double>(), expected[i].score);
    EXPECT_DOUBLE_EQ(dets[i]["bbox"][2].get<double>(), expected[i].box.w);
  }
  const CocoStats stats = evaluate_coco_bbox(gt, expected);
  EXPECT_EQ(summary["images"].get<int>(), 2);
  for (int i = 0; i < CocoStats::kCount; ++i)
    EXPECT_DOUBLE_EQ(summary[CocoStats::name(i)].get<double>(), stats.values[i])
        << CocoStats::name(i);
}

// ---- D0 parity (needs scripts/make_parity_models.sh) ----

template <typename T>
std::vector<T> read_raw(const std::string& path, size_t count) {
  std::ifstream f(path, std::ios::binary);
  EXPECT_TRUE(f.good()) << "missing " << path;
  std::vector<T> v(count);
  f.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(count * sizeof(T)));
  EXPECT_EQ(static_cast<size_t>(f.gcount()), count * sizeof(T)) << path;
  return v;
}
std::vector<float> read_f32(const std::string& path, size_t count) { return read_raw<float>(path, count); }
std::vector<double> read_f64(const std::string& path, size_t count) { return read_raw<double>(path, count); }

class D0Parity : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    onnx_ = models_dir() + "/" + GetParam() + ".onnx";
    ref_ = models_dir() + "/parity/" + GetParam() + "/";
    if (!fs::exists(onnx_) || !fs::exists(ref_ + "reference.json") ||
        !fs::exists(ref_ + "detections_effdet.txt") || !fs::exists(ref_ + "class_p3.f64.bin"))
      GTEST_SKIP() << onnx_ << " or " << ref_
                   << " missing: scripts/make_parity_models.sh makes them (REPSHARE_MODELS "
                      "points elsewhere)";
    reference_ = read_json(ref_ + "reference.json");
  }
  // PyTorch's value of a head output, as a host tensor over `storage`.
  Tensor reference_output(const std::string& name, std::vector<float>& storage) const {
    const auto& entry = reference_["outputs"][name];
    Tensor t;
    t.shape = Shape(entry["shape"].get<std::vector<int64_t>>());
    storage = read_f32(ref_ + entry["file"].get<std::string>(), t.numel());
    t.data = storage.data();
    return t;
  }
  std::string onnx_, ref_;
  nlohmann::json reference_;
};

// Two bars per head output.
// (1) Against PyTorch's fp32 values: max |ours - PyTorch| <= 1e-4 * max |PyTorch|,
// the criterion the export scripts hold onnxruntime to (export_common.MAX_RELATIVE_DIFF).
// Relative because float32 through ~200 convolutions summed in other orders leaves
// errors proportional to the activations' scale, and the random-weight heads reach
// |15| on an N(0,1) input. The issue's absolute 1e-4 does not hold (ours: 1.9e-4 on
// tf_efficientdet_d0, 1.5e-4 on efficientdet_d0), and no implementation can promise
// it: PyTorch's fp32 class_p3 is 1.3e-4 from the float64 result, so even the
// exact answer is further than 1e-4 from it, and PyTorch moves by 1.1e-4 itself
// on another thread count (reference.json; docs/results/model_parity.md).
// (2) Against the float64 run of the same network (reference_outputs.py): ours
// must be at most 3x as far from it as PyTorch's fp32 result is (measured: up to
// 1.72x on tf_efficientdet_d0, 1.01x on efficientdet_d0; docs/results/model_parity.md).
// A real mistake is far beyond either bar (a wrong BN eps moves B0's stem by 5e-3).
// Each output's absolute differences are recorded as properties.
TEST_P(D0Parity, HeadOutputsEqualPyTorch) {
  const Model model = load_model(onnx_);
  auto cpu = make_backend("cpu", 0);
  const DetectionHead head(model.info, detection_config_for(model.info), *cpu);
  Session session(model, *cpu, head.outputs());
  const std::vector<float> input =
      read_f32(ref_ + "input.bin", static_cast<size_t>(session.input_shape().numel()));
  std::copy(input.begin(), input.end(), session.host_input());
  session.run();
  for (const std::string& name : head.outputs()) {
    std::vector<float> storage;
    const Tensor want = reference_output(name, storage);
    ASSERT_EQ(session.output_shape(name), want.shape) << name;
    const float* got = session.host_output(name);
    const auto& entry = reference_["outputs"][name];
    const std::vector<double> exact =
        read_f64(ref_ + entry["fp64_file"].get<std::string>(), static_cast<size_t>(want.numel()));
    double worst = 0, worst_exact = 0;
    for (int64_t i = 0; i < want.numel(); ++i) {
      worst = std::max(worst, static_cast<double>(std::fabs(got[i] - want.f32()[i])));
      worst_exact = std::max(worst_exact, std::fabs(got[i] - exact[i]));
    }
    const double scale = entry["max_abs"].get<double>();
    const double torch_exact = entry["torch_vs_fp64_max_abs_diff"].get<double>();
    RecordProperty(name + "_max_abs_diff", std::to_string(worst));
    RecordProperty(name + "_max_abs_diff_fp64", std::to_string(worst_exact));
    EXPECT_LE(worst, 1e-4 * std::max(scale, 1.0))
        << GetParam() << " " << name << " (max |PyTorch| " << scale << ")";
    EXPECT_LE(worst_exact, 3 * torch_exact)
        << GetParam() << " " << name << ": " << worst_exact << " from the float64 result, "
        << "PyTorch's fp32 " << torch_exact;
  }
}

// Post-processing of PyTorch's head outputs against effdet's of the same
// outputs, in the letterbox frame of a 640x480 image: same inputs, so only the
// post-processing's own float rounding separates them.
TEST_P(D0Parity, DetectionsOfPyTorchOutputsEqualEffdet) {
  const Model model = load_model(onnx_);
  auto cpu = make_backend("cpu", 0);
  DetectionPostprocess post(detection_config_for(model.info), *cpu);
  const ReferenceDetections ref = read_reference(ref_ + "detections_effdet.txt");
  std::vector<std::vector<float>> storage(10);
  std::vector<Tensor> classes, boxes;
  for (int l = 0; l < 5; ++l) {
    classes.push_back(reference_output("class_p" + std::to_string(l + 3), storage[l]));
    boxes.push_back(reference_output("box_p" + std::to_string(l + 3), storage[5 + l]));
  }
  expect_same_detections(post.run(classes, boxes, &ref.frame), ref.detections, 1e-3, 1e-4,
                         GetParam());
}

INSTANTIATE_TEST_SUITE_P(D0, D0Parity,
                         ::testing::Values("tf_efficientdet_d0_rand0", "efficientdet_d0_rand0"));

}  // namespace
}  // namespace repshare
