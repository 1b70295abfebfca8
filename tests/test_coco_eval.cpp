// COCO bbox evaluation against pycocotools 2.0.11 (fixtures written by
// scripts/make_detection_fixtures.py): a small hand-made case with crowd ground
// truth, every area range, duplicates, > 100 detections and categories with no
// detections or no ground truth; the real coco-val128 labels with synthetic
// detections when ../shared/data is present; the YOLO label loader and its errors.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "engine/error.h"
#include "tasks/coco_eval.h"

namespace repshare {
namespace {

namespace fs = std::filesystem;
const std::string kFixtures = std::string(REPSHARE_SOURCE_DIR) + "/tests/fixtures/detection/";

// A fixture: image/category/gt/det lines and pycocotools' stats.
struct CocoFixture {
  CocoGroundTruth gt;
  std::vector<CocoDetection> dets;
  std::vector<double> stats;
  std::vector<std::pair<int, double>> category_ap;
};

CocoFixture read_fixture(const std::string& name) {
  std::ifstream f(kFixtures + name);
  EXPECT_TRUE(f.good()) << "missing fixture " << kFixtures + name;
  CocoFixture fx;
  for (std::string line; std::getline(f, line);) {
    std::istringstream in(line);
    std::string key;
    in >> key;
    if (key == "image") {
      CocoImage im;
      in >> im.id >> im.width >> im.height;
      fx.gt.images.push_back(im);
    } else if (key == "category") {
      int id = 0;
      in >> id;
      fx.gt.category_ids.push_back(id);
    } else if (key == "gt") {
      CocoAnnotation a;
      in >> a.id >> a.image_id >> a.category_id >> a.box.x >> a.box.y >> a.box.w >> a.box.h >>
          a.area >> a.iscrowd;
      fx.gt.annotations.push_back(a);
    } else if (key == "det") {
      CocoDetection d;
      in >> d.image_id >> d.category_id >> d.box.x >> d.box.y >> d.box.w >> d.box.h >> d.score;
      fx.dets.push_back(d);
    } else if (key == "stats") {
      for (double v; in >> v;) fx.stats.push_back(v);
    } else if (key == "category_ap") {
      std::pair<int, double> p;
      in >> p.first >> p.second;
      fx.category_ap.push_back(p);
    }
  }
  return fx;
}

// The evaluator replicates pycocotools' arithmetic, so it agrees far below the
// 0.001 that matters for reporting.
constexpr double kTolerance = 1e-9;

void expect_pycocotools_stats(const CocoGroundTruth& gt, const CocoFixture& fx) {
  const CocoStats s = evaluate_coco_bbox(gt, fx.dets);
  ASSERT_EQ(fx.stats.size(), static_cast<size_t>(CocoStats::kCount));
  for (int i = 0; i < CocoStats::kCount; ++i) {
    EXPECT_NEAR(s.values[i], fx.stats[i], kTolerance) << CocoStats::name(i);
  }
  ASSERT_EQ(fx.category_ap.size(), gt.category_ids.size());
  for (size_t k = 0; k < gt.category_ids.size(); ++k) {
    EXPECT_EQ(gt.category_ids[k], fx.category_ap[k].first);
    EXPECT_NEAR(s.per_category_ap[k], fx.category_ap[k].second, kTolerance)
        << "category " << gt.category_ids[k];
  }
}

TEST(CocoEval, SmallCaseEqualsPycocotools) {
  const CocoFixture fx = read_fixture("coco_small.txt");
  ASSERT_GT(fx.dets.size(), 100u);
  expect_pycocotools_stats(fx.gt, fx);
  const CocoStats s = evaluate_coco_bbox(fx.gt, fx.dets);
  EXPECT_EQ(s.per_category_ap.back(), -1.0);  // category 90: detections, no ground truth
}

TEST(CocoEval, Val128SyntheticDetectionsEqualPycocotools) {
  const std::string data = std::string(REPSHARE_SOURCE_DIR) + "/../shared/data/coco-val128";
  if (!fs::is_directory(data)) GTEST_SKIP() << data << " not present";
  const CocoFixture fx = read_fixture("coco_val128_synthetic.txt");
  const CocoGroundTruth gt = load_yolo_ground_truth(data);
  EXPECT_EQ(gt.images.size(), 128u);
  expect_pycocotools_stats(gt, fx);
}

TEST(CocoEval, PerfectMissingAndAbsentByHand) {
  CocoGroundTruth gt;
  gt.images = {{1, 100, 100, ""}, {2, 100, 100, ""}};
  gt.category_ids = {1, 2, 3};
  gt.annotations = {{1, 1, 1, {10, 10, 20, 20}, 400, false},
                    {2, 2, 1, {50, 50, 40, 40}, 1600, false},
                    {3, 2, 2, {0, 0, 50, 50}, 2500, false}};
  // Exact boxes for category 1, nothing for 2, a detection for 3 (no ground truth).
  const std::vector<CocoDetection> dets = {{1, 1, {10, 10, 20, 20}, 0.9},
                                           {2, 1, {50, 50, 40, 40}, 0.8},
                                           {1, 3, {0, 0, 10, 10}, 0.7}};
  const CocoStats s = evaluate_coco_bbox(gt, dets);
  EXPECT_DOUBLE_EQ(s.per_category_ap[0], 1.0);
  EXPECT_DOUBLE_EQ(s.per_category_ap[1], 0.0);
  EXPECT_DOUBLE_EQ(s.per_category_ap[2], -1.0);
  EXPECT_DOUBLE_EQ(s.ap(), 0.5);
  EXPECT_DOUBLE_EQ(s.ap_small(), 1.0);   // only category 1's 20x20 box is small
  EXPECT_DOUBLE_EQ(s.ap_large(), -1.0);  // no large ground truth at all
  // A crowd box absorbs any number of detections without false positives.
  gt.annotations[2].iscrowd = true;
  const std::vector<CocoDetection> on_crowd = {{2, 2, {0, 0, 10, 10}, 0.9},
                                               {2, 2, {10, 10, 10, 10}, 0.8}};
  EXPECT_DOUBLE_EQ(evaluate_coco_bbox(gt, on_crowd).per_category_ap[1], -1.0);
}

TEST(CocoEval, RejectsDetectionsOnUnknownImages) {
  CocoGroundTruth gt;
  gt.images = {{1, 10, 10, ""}};
  gt.category_ids = {1};
  try {
    evaluate_coco_bbox(gt, {{7, 1, {0, 0, 1, 1}, 0.5}});
    FAIL() << "detection on image 7 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("image 7"), std::string::npos) << e.what();
  }
}

TEST(CocoEval, CategoryTableAndEffdetConversion) {
  EXPECT_EQ(coco_category_id(0), 1);
  EXPECT_EQ(coco_category_id(11), 13);
  EXPECT_EQ(coco_category_id(79), 90);
  EXPECT_THROW(coco_category_id(80), Error);
  const std::vector<Detection> dets = {{10, 20, 30, 60, 0.5f, 18}, {0, 0, 5, 5, 0.0005f, 1},
                                       {0, 0, 9, 9, 0.4f, 1}};
  const std::vector<CocoDetection> coco = to_coco_detections(42, dets);
  ASSERT_EQ(coco.size(), 1u);  // stops at the first score below 0.001, as effdet
  EXPECT_EQ(coco[0].image_id, 42);
  EXPECT_EQ(coco[0].category_id, 18);
  EXPECT_DOUBLE_EQ(coco[0].box.w, 20);
  EXPECT_DOUBLE_EQ(coco[0].box.h, 40);
}

TEST(CocoGroundTruthLoader, ReadsYoloFolder) {
  const CocoGroundTruth gt = load_yolo_ground_truth(kFixtures + "yolo_tiny");
  ASSERT_EQ(gt.images.size(), 3u);
  EXPECT_EQ(gt.category_ids.size(), 80u);
  // File-name order; ids from the numeric stems.
  EXPECT_EQ(gt.images[0].id, 7);
  EXPECT_EQ(gt.images[1].id, 42);
  EXPECT_EQ(gt.images[2].id, 100);  // no labels file: no objects
  EXPECT_EQ(gt.images[1].width, 40);
  EXPECT_EQ(gt.images[1].height, 30);
  ASSERT_EQ(gt.annotations.size(), 3u);
  const CocoAnnotation& whole = gt.annotations[0];  // image 7: `11 0.5 0.5 1 1`, 16x24
  EXPECT_EQ(whole.image_id, 7);
  EXPECT_EQ(whole.category_id, 13);
  EXPECT_DOUBLE_EQ(whole.box.x, 0);
  EXPECT_DOUBLE_EQ(whole.box.w, 16);
  EXPECT_DOUBLE_EQ(whole.box.h, 24);
  EXPECT_DOUBLE_EQ(whole.area, 16 * 24);
  const CocoAnnotation& last = gt.annotations[2];  // image 42: `79 0.25 0.75 0.1 0.2`
  EXPECT_EQ(last.category_id, 90);
  EXPECT_NEAR(last.box.x, (0.25 - 0.05) * 40, 1e-12);
  EXPECT_NEAR(last.box.y, (0.75 - 0.1) * 30, 1e-12);
  EXPECT_GE(last.id, 1);
}

// A scratch copy of the tiny folder with one labels file replaced.
std::string folder_with_labels(const std::string& name, const std::string& labels) {
  const fs::path dir = fs::temp_directory_path() / ("repshare_test_coco_" + name);
  fs::remove_all(dir);
  fs::create_directories(dir / "labels");
  fs::copy(kFixtures + "yolo_tiny/images", dir / "images");
  std::ofstream(dir / "labels" / "000000000042.txt") << labels;
  return dir.string();
}

void expect_error(const std::string& dir, ErrorKind kind, const std::string& fragment) {
  try {
    load_yolo_ground_truth(dir);
    FAIL() << dir << " accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), kind) << e.what();
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

TEST(CocoGroundTruthLoader, NamesBadFilesAndLines) {
  expect_error(folder_with_labels("fields", "0 0.5 0.5 0.2 0.2\n3 0.5 0.5 0.2\n"),
               ErrorKind::Malformed, "000000000042.txt:2");
  expect_error(folder_with_labels("extra", "0 0.5 0.5 0.2 0.2 7\n"), ErrorKind::Malformed,
               "000000000042.txt:1");
  expect_error(folder_with_labels("word", "person 0.5 0.5 0.2 0.2\n"), ErrorKind::Malformed,
               "000000000042.txt:1");
  expect_error(folder_with_labels("class", "\n80 0.5 0.5 0.2 0.2\n"), ErrorKind::Malformed,
               "000000000042.txt:2: class 80");
  expect_error(folder_with_labels("negative", "1 0.5 0.5 -0.2 0.2\n"), ErrorKind::Malformed,
               "000000000042.txt:1");
  const std::string orphan = folder_with_labels("orphan", "1 0.5 0.5 0.2 0.2\n");
  std::ofstream(fs::path(orphan) / "labels" / "000000000999.txt") << "1 0.5 0.5 0.2 0.2\n";
  expect_error(orphan, ErrorKind::Malformed, "000000000999.txt has no image");
  const fs::path missing = fs::temp_directory_path() / "repshare_test_coco_missing";
  fs::remove_all(missing);
  expect_error(missing.string(), ErrorKind::Io, (missing / "images").string());
  for (const char* name : {"fields", "extra", "word", "class", "negative", "orphan"}) {
    fs::remove_all(fs::temp_directory_path() / (std::string("repshare_test_coco_") + name));
  }
}

}  // namespace
}  // namespace repshare
