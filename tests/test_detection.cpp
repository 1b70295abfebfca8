// EfficientDet post-processing against effdet 0.4.1: anchors, and the detections
// of _post_process + _batch_detection (hard NMS, soft-NMS, letterbox frame) on
// network outputs that both sides compute from one integer formula
// (scripts/make_detection_fixtures.py); plus hand-checked NMS cases and bad shapes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "engine/error.h"
#include "kernels/cpu/cpu_backend.h"
#include "tasks/detection.h"

namespace repshare {
namespace {

const std::string kFixtures = std::string(REPSHARE_SOURCE_DIR) + "/tests/fixtures/detection/";

std::vector<std::string> fixture_lines(const std::string& name) {
  std::ifstream f(kFixtures + name);
  EXPECT_TRUE(f.good()) << "missing fixture " << kFixtures + name;
  std::vector<std::string> lines;
  for (std::string line; std::getline(f, line);) {
    if (!line.empty() && line[0] != '#') lines.push_back(line);
  }
  return lines;
}

TEST(DetectionAnchors, FeatureSizesHalveRoundingUp) {
  DetectionConfig config;
  const auto sizes = feature_sizes(config);
  ASSERT_EQ(sizes.size(), 5u);
  const int expected[5] = {64, 32, 16, 8, 4};
  for (int l = 0; l < 5; ++l) {
    EXPECT_EQ(sizes[l][0], expected[l]);
    EXPECT_EQ(sizes[l][1], expected[l]);
  }
  config.image_height = 100;  // 100 -> 50 -> 25 -> 13 -> 7 -> 4 -> 2
  config.image_width = 96;
  const auto odd = feature_sizes(config);
  EXPECT_EQ(odd[0][0], 13);
  EXPECT_EQ(odd[4][0], 1);
  EXPECT_EQ(odd[0][1], 12);
}

TEST(DetectionAnchors, EqualEffdetAnchors) {
  const std::vector<std::array<float, 4>> anchors = generate_anchors(DetectionConfig());
  EXPECT_EQ(anchors.size(), 49104u);
  const std::vector<std::string> lines = fixture_lines("anchors_512.txt");
  ASSERT_GT(lines.size(), 900u);
  std::istringstream count_line(lines[0]);
  std::string word;
  size_t count = 0;
  count_line >> word >> count;
  EXPECT_EQ(count, anchors.size());
  for (size_t n = 1; n < lines.size(); ++n) {
    std::istringstream row(lines[n]);
    size_t index = 0;
    float expected[4];
    row >> index >> expected[0] >> expected[1] >> expected[2] >> expected[3];
    ASSERT_LT(index, anchors.size());
    for (int k = 0; k < 4; ++k) {
      // Both round the same float64 value to float32.
      EXPECT_FLOAT_EQ(anchors[index][k], expected[k]) << "anchor " << index << " coord " << k;
    }
  }
}

TEST(DetectionAnchors, FirstAnchorByHand) {
  // P3 cell (0, 0), octave 0, aspect (1, 1): centre 4, half size 4 * 8 / 2 = 16.
  // Aspect (1.4, 0.7) is wider: half sizes 16 * 0.7 (y) and 16 * 1.4 (x).
  const auto anchors = generate_anchors(DetectionConfig());
  EXPECT_FLOAT_EQ(anchors[0][0], -12.f);
  EXPECT_FLOAT_EQ(anchors[0][3], 20.f);
  EXPECT_FLOAT_EQ(anchors[1][0], 4.f - 16.f * 0.7f);
  EXPECT_FLOAT_EQ(anchors[1][1], 4.f - 16.f * 1.4f);
  // Anchor 9 is the next column (x centre 12), same shape as anchor 0.
  EXPECT_FLOAT_EQ(anchors[9][1], 12.f - 16.f);
}

// The synthetic network outputs of scripts/make_detection_fixtures.py.
struct FormulaOutputs {
  std::vector<std::vector<float>> class_data, box_data;
  std::vector<Tensor> class_outputs, box_outputs;
};

FormulaOutputs formula_outputs(const std::vector<std::string>& lines, const DetectionConfig& c) {
  uint64_t cls_mul = 0, cls_add = 0, box_mul = 0, box_add = 0;
  double boost = 0;
  struct Object {
    int cls;
    double y0, x0, y1, x1;
  };
  std::vector<Object> objects;
  for (const std::string& line : lines) {
    std::istringstream in(line);
    std::string key;
    in >> key;
    if (key == "formula") in >> cls_mul >> cls_add >> box_mul >> box_add >> boost;
    Object o{};
    if (key == "object" && in >> o.cls >> o.y0 >> o.x0 >> o.y1 >> o.x1) objects.push_back(o);
  }
  EXPECT_NE(cls_mul, 0u) << "fixture has no formula line";
  FormulaOutputs out;
  const int64_t anchors = c.anchors_per_location();
  uint64_t cls_index = 0, box_index = 0;
  for (const auto& size : feature_sizes(c)) {
    const int64_t h = size[0], w = size[1], stride = c.image_height / h;
    std::vector<float> logits(anchors * c.num_classes * h * w);
    for (float& v : logits) {
      v = static_cast<float>(((cls_index++ * cls_mul + cls_add) % (1u << 24)) / 2097152.0 - 7.0);
    }
    for (const Object& o : objects) {
      for (int64_t y = 0; y < h; ++y) {
        for (int64_t x = 0; x < w; ++x) {
          const double cy = y * stride + stride / 2.0, cx = x * stride + stride / 2.0;
          if (cy < o.y0 || cy > o.y1 || cx < o.x0 || cx > o.x1) continue;
          for (int64_t a = 0; a < anchors; ++a) {
            logits[((a * c.num_classes + o.cls) * h + y) * w + x] += static_cast<float>(boost);
          }
        }
      }
    }
    std::vector<float> deltas(anchors * 4 * h * w);
    for (float& v : deltas) {
      v = static_cast<float>(((box_index++ * box_mul + box_add) % (1u << 24)) / 16777216.0 - 0.5);
    }
    out.class_data.push_back(std::move(logits));
    out.box_data.push_back(std::move(deltas));
    out.class_outputs.push_back({Shape{1, anchors * c.num_classes, h, w}, DType::F32,
                                 out.class_data.back().data()});
    out.box_outputs.push_back({Shape{1, anchors * 4, h, w}, DType::F32,
                               out.box_data.back().data()});
  }
  return out;
}

void expect_effdet_detections(const std::string& fixture) {
  const std::vector<std::string> lines = fixture_lines(fixture);
  DetectionConfig config;
  ImageFrame frame;
  bool has_frame = false;
  std::vector<std::vector<float>> expected;
  for (const std::string& line : lines) {
    std::istringstream in(line);
    std::string key;
    in >> key;
    if (key == "soft_nms") {
      in >> config.soft_nms;
    } else if (key == "frame") {
      in >> frame.scale >> frame.width >> frame.height;
      has_frame = true;
    } else if (key != "formula" && key != "object") {
      std::istringstream row(line);
      std::vector<float> v(6);
      for (float& x : v) row >> x;
      expected.push_back(v);
    }
  }
  FormulaOutputs outputs = formula_outputs(lines, config);
  CpuBackend cpu(2);
  DetectionPostprocess post(config, cpu);
  const std::vector<Detection> got =
      post.run(outputs.class_outputs, outputs.box_outputs, has_frame ? &frame : nullptr);
  ASSERT_EQ(got.size(), expected.size()) << fixture;
  for (size_t i = 0; i < got.size(); ++i) {
    const Detection& d = got[i];
    const std::vector<float>& e = expected[i];
    EXPECT_NEAR(d.x_min, e[0], 1e-3) << fixture << " detection " << i;
    EXPECT_NEAR(d.y_min, e[1], 1e-3) << fixture << " detection " << i;
    EXPECT_NEAR(d.x_max, e[2], 1e-3) << fixture << " detection " << i;
    EXPECT_NEAR(d.y_max, e[3], 1e-3) << fixture << " detection " << i;
    EXPECT_NEAR(d.score, e[4], 1e-4) << fixture << " detection " << i;
    EXPECT_EQ(d.category_id, static_cast<int>(e[5])) << fixture << " detection " << i;
  }
}

TEST(DetectionPostprocess, HardNmsEqualsEffdet) {
  expect_effdet_detections("postprocess_hard.txt");
}
TEST(DetectionPostprocess, SoftNmsEqualsEffdet) {
  expect_effdet_detections("postprocess_soft.txt");
}
TEST(DetectionPostprocess, LetterboxFrameEqualsEffdet) {
  expect_effdet_detections("postprocess_frame.txt");
}

DetectionCandidates candidates(std::vector<std::array<float, 4>> boxes, std::vector<float> scores,
                               std::vector<int> classes) {
  return {std::move(boxes), std::move(scores), std::move(classes)};
}

// The CPU backend's nms op on candidates in any order: they are handed to it
// best first (descending score, ties by index) and its keep list is mapped back
// to the caller's indices.
std::vector<int> cpu_nms(const DetectionCandidates& c, double iou_threshold, int max_keep = -1) {
  const int64_t n = static_cast<int64_t>(c.scores.size());
  std::vector<int> order(n);
  for (int i = 0; i < n; ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return c.scores[a] > c.scores[b]; });
  std::vector<float> boxes;
  std::vector<int64_t> classes;
  for (int i : order) {
    boxes.insert(boxes.end(), c.boxes[i].begin(), c.boxes[i].end());
    classes.push_back(c.classes[i]);
  }
  NmsParams p;
  p.count = n;
  p.iou_threshold = iou_threshold;
  p.max_keep = max_keep < 0 ? n : max_keep;
  std::vector<int64_t> keep(static_cast<size_t>(p.max_keep), -2);
  Tensor tb{Shape{n, 4}, DType::F32, boxes.data()}, tc{Shape{n}, DType::I64, classes.data()};
  Tensor tk{Shape{p.max_keep}, DType::I64, keep.data()};
  CpuBackend cpu(1);
  cpu.nms(p, tb, tc, tk, nullptr);
  std::vector<int> kept;
  size_t i = 0;
  for (; i < keep.size() && keep[i] >= 0; ++i) kept.push_back(order[keep[i]]);
  for (; i < keep.size(); ++i) EXPECT_EQ(keep[i], -1) << "keep list not padded with -1 at " << i;
  return kept;
}

TEST(DetectionNms, SuppressesOnlyWithinAClassAboveThreshold) {
  // Boxes 0 and 1: IoU 50/150 = 1/3. Boxes 0 and 2: IoU 80/100 = 0.8 (suppressed in
  // class 0). Box 3 equals box 0 but is class 1: kept. Box 4 (area 50) lies inside
  // box 0: IoU exactly 0.5, not suppressed (the test is strictly greater); with box
  // 1 its IoU is 25/125.
  const DetectionCandidates c = candidates(
      {{0, 0, 10, 10}, {5, 0, 15, 10}, {0, 0, 10, 8}, {0, 0, 10, 10}, {0, 0, 10, 5}},
      {0.9f, 0.8f, 0.85f, 0.7f, 0.6f}, {0, 0, 0, 1, 0});
  const std::vector<int> kept = cpu_nms(c, 0.5);
  EXPECT_EQ(kept, (std::vector<int>{0, 1, 3, 4}));
  EXPECT_EQ(cpu_nms(c, 0.3), (std::vector<int>{0, 3}));
}

// The textbook per-class NMS (each class on its own, by descending score; ties by
// index), as the reference for the nms op's single pass in global score order.
std::vector<int> per_class_nms(const DetectionCandidates& c, double iou_threshold) {
  auto iou = [](const std::array<float, 4>& a, const std::array<float, 4>& b) {  // float, as torchvision
    const float w = std::max(0.f, std::min(a[2], b[2]) - std::max(a[0], b[0]));
    const float h = std::max(0.f, std::min(a[3], b[3]) - std::max(a[1], b[1]));
    const float inter = w * h;
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter);
  };
  auto by_score = [&](int i, int j) {
    return c.scores[i] > c.scores[j] || (c.scores[i] == c.scores[j] && i < j);
  };
  std::vector<int> kept;
  for (int cls = 0; cls < 8; ++cls) {
    std::vector<int> order;
    for (int i = 0; i < static_cast<int>(c.scores.size()); ++i)
      if (c.classes[i] == cls) order.push_back(i);
    std::sort(order.begin(), order.end(), by_score);
    std::vector<char> gone(c.scores.size(), 0);
    for (size_t a = 0; a < order.size(); ++a) {
      if (gone[order[a]]) continue;
      kept.push_back(order[a]);
      for (size_t b = a + 1; b < order.size(); ++b)
        if (iou(c.boxes[order[a]], c.boxes[order[b]]) > iou_threshold) gone[order[b]] = 1;
    }
  }
  std::sort(kept.begin(), kept.end(), by_score);
  return kept;
}

TEST(DetectionNms, EqualsPerClassNmsAndStopsAtMaxKeep) {
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> pos(0.f, 60.f), size(4.f, 30.f);
  std::uniform_int_distribution<int> cls(0, 7), coarse(0, 20);
  for (int trial = 0; trial < 20; ++trial) {
    DetectionCandidates c;
    for (int i = 0; i < 400; ++i) {
      const float x = pos(rng), y = pos(rng);
      c.boxes.push_back({x, y, x + size(rng), y + size(rng)});
      c.scores.push_back(coarse(rng) / 20.f);  // many ties: the index breaks them
      c.classes.push_back(cls(rng));
    }
    const std::vector<int> want = per_class_nms(c, 0.5);
    EXPECT_EQ(cpu_nms(c, 0.5), want) << "trial " << trial;
    const std::vector<int> first = cpu_nms(c, 0.5, 25);
    ASSERT_EQ(first.size(), 25u);
    EXPECT_TRUE(std::equal(first.begin(), first.end(), want.begin())) << "trial " << trial;
  }
}

// detection_select against the obvious reference: every logit with its flat
// index in effdet's order, sorted (logit descending, index ascending), NaNs
// dropped, the first k decoded with effdet's formula. Coarse logits make ties
// everywhere; k = 1, a middle k, and k above the number of non-NaN logits.
TEST(DetectionSelect, EqualsAFullSortWithTiesAndNaN) {
  const int64_t anchors = 2, classes = 3;
  const std::vector<std::array<int64_t, 2>> levels = {{{5, 3}}, {{2, 2}}};
  std::mt19937 rng(9);
  std::uniform_int_distribution<int> coarse(-6, 6);
  std::uniform_real_distribution<float> delta(-0.4f, 0.4f), corner(0.f, 20.f);
  std::vector<std::vector<float>> logits, deltas;
  std::vector<std::pair<float, int64_t>> all;  // logit, flat index
  int64_t first_anchor = 0;
  for (const auto& hw : levels) {
    const int64_t positions = hw[0] * hw[1];
    std::vector<float> x(static_cast<size_t>(anchors * classes * positions));
    for (size_t i = 0; i < x.size(); ++i) {
      x[i] = i % 5 == 3 ? std::numeric_limits<float>::quiet_NaN() : coarse(rng) / 2.f;
      const int64_t channel = static_cast<int64_t>(i) / positions, pos = static_cast<int64_t>(i) % positions;
      const int64_t flat = (first_anchor + pos * anchors + channel / classes) * classes + channel % classes;
      if (!std::isnan(x[i])) all.push_back({x[i], flat});
    }
    std::vector<float> d(static_cast<size_t>(anchors * 4 * positions));
    for (float& v : d) v = delta(rng);
    logits.push_back(x);
    deltas.push_back(d);
    first_anchor += positions * anchors;
  }
  std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  });
  std::vector<float> anchor_boxes;
  for (int64_t a = 0; a < first_anchor; ++a) {
    const float y = corner(rng), x = corner(rng);
    for (float v : {y, x, y + 8.f, x + 5.f}) anchor_boxes.push_back(v);
  }
  const int64_t total = first_anchor * classes;
  for (int64_t k : {int64_t{1}, int64_t{17}, total}) {
    DetectionSelectParams p;
    p.levels = 2;
    p.positions[0] = 15;
    p.positions[1] = 4;
    p.anchors_per_location = anchors;
    p.classes = classes;
    p.k = k;
    std::vector<Tensor> cls, box;
    for (size_t l = 0; l < levels.size(); ++l) {
      const int64_t h = levels[l][0], w = levels[l][1];
      cls.push_back({Shape{1, anchors * classes, h, w}, DType::F32, logits[l].data()});
      box.push_back({Shape{1, anchors * 4, h, w}, DType::F32, deltas[l].data()});
    }
    const Tensor* cls_p[2] = {&cls[0], &cls[1]};
    const Tensor* box_p[2] = {&box[0], &box[1]};
    std::vector<float> boxes(4 * k), scores(k);
    std::vector<int64_t> labels(k, -7);
    Tensor a{Shape{first_anchor, 4}, DType::F32, anchor_boxes.data()};
    Tensor tb{Shape{k, 4}, DType::F32, boxes.data()}, ts{Shape{k}, DType::F32, scores.data()};
    Tensor tl{Shape{k}, DType::I64, labels.data()};
    CpuBackend cpu(1);
    std::vector<char> workspace(cpu.detection_select_workspace(p));
    cpu.detection_select(p, cls_p, box_p, a, tb, ts, tl, workspace.data());
    for (int64_t r = 0; r < k; ++r) {
      if (r >= static_cast<int64_t>(all.size())) {
        EXPECT_EQ(labels[r], -1) << "k " << k << " row " << r << " is past the last number";
        continue;
      }
      const int64_t flat = all[r].second, anchor = flat / classes;
      ASSERT_EQ(labels[r], flat % classes) << "k " << k << " row " << r;
      EXPECT_FLOAT_EQ(scores[r], 1.f / (1.f + std::exp(-all[r].first))) << "row " << r;
      // The anchor's level, position and shape, then effdet's decode.
      const int64_t level = anchor < 30 ? 0 : 1, in_level = anchor - (level ? 30 : 0);
      const int64_t positions = level ? 4 : 15, pos = in_level / anchors, shape = in_level % anchors;
      const std::vector<float>& d = deltas[level];
      const float ty = d[(shape * 4) * positions + pos], tx = d[(shape * 4 + 1) * positions + pos];
      const float th = d[(shape * 4 + 2) * positions + pos], tw = d[(shape * 4 + 3) * positions + pos];
      const float* an = &anchor_boxes[anchor * 4];
      const float ha = an[2] - an[0], wa = an[3] - an[1];
      const float yc = ty * ha + (an[0] + an[2]) / 2, xc = tx * wa + (an[1] + an[3]) / 2;
      const float h = std::exp(th) * ha, w = std::exp(tw) * wa;
      EXPECT_FLOAT_EQ(boxes[r * 4 + 0], xc - w / 2) << "row " << r;
      EXPECT_FLOAT_EQ(boxes[r * 4 + 1], yc - h / 2) << "row " << r;
      EXPECT_FLOAT_EQ(boxes[r * 4 + 2], xc + w / 2) << "row " << r;
      EXPECT_FLOAT_EQ(boxes[r * 4 + 3], yc + h / 2) << "row " << r;
    }
  }
}

// With enough logits the CPU scans them on every thread, each into its own
// buffer, then merges: the same rows, bit for bit, as one thread (which the test
// above holds to a full sort). Coarse logits tie everywhere; some are NaN.
TEST(DetectionSelect, ThreadsGiveTheSameSelection) {
  const int64_t anchors = 9, classes = 7;
  const std::vector<std::array<int64_t, 2>> levels = {{{48, 40}}, {{24, 20}}, {{3, 5}}};
  std::mt19937 rng(11);
  std::uniform_int_distribution<int> coarse(-40, 40);
  std::uniform_real_distribution<float> delta(-0.4f, 0.4f), corner(0.f, 200.f);
  std::vector<std::vector<float>> logits, deltas;
  int64_t anchors_total = 0;
  DetectionSelectParams p;
  p.levels = static_cast<int>(levels.size());
  p.anchors_per_location = anchors;
  p.classes = classes;
  for (size_t l = 0; l < levels.size(); ++l) {
    const int64_t positions = levels[l][0] * levels[l][1];
    p.positions[l] = positions;
    std::vector<float> x(static_cast<size_t>(anchors * classes * positions));
    for (size_t i = 0; i < x.size(); ++i)
      x[i] = i % 97 == 5 ? std::numeric_limits<float>::quiet_NaN() : coarse(rng) / 4.f;
    std::vector<float> d(static_cast<size_t>(anchors * 4 * positions));
    for (float& v : d) v = delta(rng);
    logits.push_back(x);
    deltas.push_back(d);
    anchors_total += positions * anchors;
  }
  ASSERT_GE(anchors_total * classes, 1 << 15);  // enough to be shared out
  std::vector<float> anchor_boxes;
  for (int64_t a = 0; a < anchors_total; ++a) {
    const float y = corner(rng), x = corner(rng);
    for (float v : {y, x, y + 8.f, x + 5.f}) anchor_boxes.push_back(v);
  }
  std::vector<Tensor> cls, box;
  for (size_t l = 0; l < levels.size(); ++l) {
    const int64_t h = levels[l][0], w = levels[l][1];
    cls.push_back({Shape{1, anchors * classes, h, w}, DType::F32, logits[l].data()});
    box.push_back({Shape{1, anchors * 4, h, w}, DType::F32, deltas[l].data()});
  }
  const Tensor* cls_p[3] = {&cls[0], &cls[1], &cls[2]};
  const Tensor* box_p[3] = {&box[0], &box[1], &box[2]};
  Tensor a{Shape{anchors_total, 4}, DType::F32, anchor_boxes.data()};
  for (int64_t k : {int64_t{1}, int64_t{100}, int64_t{5000}}) {
    p.k = k;
    std::vector<float> want_boxes, want_scores;
    std::vector<int64_t> want_labels;
    for (int threads : {1, 2, 3}) {
      std::vector<float> boxes(4 * k), scores(k);
      std::vector<int64_t> labels(k, -7);
      Tensor tb{Shape{k, 4}, DType::F32, boxes.data()}, ts{Shape{k}, DType::F32, scores.data()};
      Tensor tl{Shape{k}, DType::I64, labels.data()};
      CpuBackend cpu(threads);
      std::vector<char> workspace(cpu.detection_select_workspace(p));
      cpu.detection_select(p, cls_p, box_p, a, tb, ts, tl, workspace.data());
      if (threads == 1) {
        want_boxes = boxes, want_scores = scores, want_labels = labels;
        continue;
      }
      EXPECT_EQ(labels, want_labels) << "k " << k << " threads " << threads;
      EXPECT_EQ(scores, want_scores) << "k " << k << " threads " << threads;
      EXPECT_EQ(boxes, want_boxes) << "k " << k << " threads " << threads;
    }
  }
}

TEST(DetectionNms, SoftNmsDecaysByGaussianOfIou) {
  // IoU(0, 1) = 1/3: score 0.8 * exp(-(1/9) / 0.5). Class 1's box is untouched.
  const DetectionCandidates c =
      candidates({{0, 0, 10, 10}, {5, 0, 15, 10}, {0, 0, 10, 10}}, {0.9f, 0.8f, 0.5f}, {0, 0, 1});
  const SoftNmsResult r = batched_soft_nms(c, 0.5f, 0.001f);
  ASSERT_EQ(r.indices, (std::vector<int>{0, 1, 2}));
  EXPECT_FLOAT_EQ(r.scores[0], 0.9f);
  EXPECT_NEAR(r.scores[1], 0.8 * std::exp(-(1.0 / 9) / 0.5), 1e-6);
  EXPECT_FLOAT_EQ(r.scores[2], 0.5f);
  // A threshold above the decayed score drops it.
  EXPECT_EQ(batched_soft_nms(c, 0.5f, 0.7f).indices, (std::vector<int>{0}));
}

TEST(DetectionPostprocess, RejectsWrongOutputs) {
  DetectionConfig config;
  config.image_height = config.image_width = 128;
  CpuBackend cpu(1);
  DetectionPostprocess post(config, cpu);
  std::vector<float> buffer(810 * 16 * 16);
  std::vector<Tensor> cls, box;
  for (const auto& s : feature_sizes(config)) {
    cls.push_back({Shape{1, 810, s[0], s[1]}, DType::F32, buffer.data()});
    box.push_back({Shape{1, 36, s[0], s[1]}, DType::F32, buffer.data()});
  }
  EXPECT_NO_THROW(post.run(cls, box));
  try {
    std::vector<Tensor> four(cls.begin(), cls.begin() + 4);
    post.run(four, box);
    FAIL() << "4 levels accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Shape);
    EXPECT_NE(std::string(e.what()).find("got 4 levels"), std::string::npos) << e.what();
  }
  box[2].shape = Shape{1, 36, 4, 5};
  try {
    post.run(cls, box);
    FAIL() << "wrong box shape accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Shape);
    EXPECT_NE(std::string(e.what()).find("box output of P5"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace repshare
