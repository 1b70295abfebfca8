#include "tasks/coco_eval.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "engine/error.h"
#include "loaders/image.h"

namespace repshare {
namespace {

// pycocotools' default parameters, computed as np.linspace computes them
// (i * step + start, the last point exact) so that comparisons at a threshold
// fall the same way.
std::vector<double> linspace(double start, double stop, int num) {
  std::vector<double> v(num);
  const double step = (stop - start) / (num - 1);
  for (int i = 0; i < num; ++i) v[i] = i * step + start;
  v[num - 1] = stop;
  return v;
}
const std::vector<double> kIouThresholds = linspace(0.5, 0.95, 10);
const std::vector<double> kRecallThresholds = linspace(0.0, 1.0, 101);
constexpr int kMaxDets[3] = {1, 10, 100};
constexpr int kNumMaxDets = 3;
struct AreaRange {
  double lo, hi;
};
// all, small, medium, large (pixels^2, bounds inclusive).
constexpr AreaRange kAreaRanges[4] = {{0, 1e10}, {0, 32 * 32}, {32 * 32, 96 * 96}, {96 * 96, 1e10}};
constexpr int kNumAreas = 4;

// maskApi.c's bbIou: intersection over union in double, over the detection's own
// area for crowd ground truth.
double coco_iou(const CocoBox& d, const CocoBox& g, bool crowd) {
  const double w = std::min(d.x + d.w, g.x + g.w) - std::max(d.x, g.x);
  if (w <= 0) return 0;
  const double h = std::min(d.y + d.h, g.y + g.h) - std::max(d.y, g.y);
  if (h <= 0) return 0;
  const double inter = w * h;
  const double da = d.w * d.h, ga = g.w * g.h;
  return inter / (crowd ? da : da + ga - inter);
}

// evaluateImg's result for one image, category and area range.
struct ImageEval {
  std::vector<double> scores;    // detections, best first, at most 100
  std::vector<char> matched;     // [threshold][detection]: matched a ground truth
  std::vector<char> ignored;     // [threshold][detection]
  int ground_truth = 0;          // not-ignored ground truths (npig contribution)
};

// Index of `value` in the sorted list, or -1.
int index_of(const std::vector<int64_t>& sorted, int64_t value) {
  auto it = std::lower_bound(sorted.begin(), sorted.end(), value);
  return it != sorted.end() && *it == value ? static_cast<int>(it - sorted.begin()) : -1;
}

// Evaluates one (image, category) pair for every area range, as pycocotools'
// computeIoU + evaluateImg. `dets` are already sorted best first and cut to 100.
void evaluate_pair(const std::vector<const CocoAnnotation*>& gts,
                   const std::vector<const CocoDetection*>& dets, ImageEval* out_by_area) {
  const size_t num_t = kIouThresholds.size();
  const size_t D = dets.size(), G = gts.size();
  std::vector<double> ious(D * G);
  for (size_t d = 0; d < D; ++d) {
    for (size_t g = 0; g < G; ++g) {
      ious[d * G + g] = coco_iou(dets[d]->box, gts[g]->box, gts[g]->iscrowd);
    }
  }
  for (int a = 0; a < kNumAreas; ++a) {
    const AreaRange range = kAreaRanges[a];
    const auto outside = [&](double area) { return area < range.lo || area > range.hi; };
    // Ground truth not ignored first, each group in its original order.
    std::vector<size_t> order(G);
    for (size_t g = 0; g < G; ++g) order[g] = g;
    std::vector<char> gt_ignore(G);
    for (size_t g = 0; g < G; ++g) gt_ignore[g] = gts[g]->iscrowd || outside(gts[g]->area);
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t x, size_t y) { return gt_ignore[x] < gt_ignore[y]; });

    ImageEval& e = out_by_area[a];
    e.scores.resize(D);
    for (size_t d = 0; d < D; ++d) e.scores[d] = dets[d]->score;
    e.matched.assign(num_t * D, 0);
    e.ignored.assign(num_t * D, 0);
    e.ground_truth = static_cast<int>(std::count(gt_ignore.begin(), gt_ignore.end(), 0));
    for (size_t t = 0; t < num_t; ++t) {
      std::vector<char> gt_taken(G, 0);
      for (size_t d = 0; d < D; ++d) {
        double best = std::min(kIouThresholds[t], 1 - 1e-10);
        int m = -1;  // position in `order` of the best match so far
        for (size_t k = 0; k < G; ++k) {
          const size_t g = order[k];
          if (gt_taken[k] && !gts[g]->iscrowd) continue;
          // Matched a regular ground truth: ignored ones (sorted last) cannot win.
          if (m > -1 && !gt_ignore[order[m]] && gt_ignore[g]) break;
          const double iou = ious[d * G + g];
          if (iou < best) continue;
          best = iou;
          m = static_cast<int>(k);
        }
        if (m == -1) continue;
        const CocoAnnotation& g = *gts[order[m]];
        e.ignored[t * D + d] = gt_ignore[order[m]];
        // pycocotools stores the ground-truth id and tests it for truth.
        e.matched[t * D + d] = g.id != 0;
        gt_taken[m] = 1;
      }
      for (size_t d = 0; d < D; ++d) {
        if (!e.matched[t * D + d] && outside(dets[d]->box.w * dets[d]->box.h)) {
          e.ignored[t * D + d] = 1;
        }
      }
    }
  }
}

double mean_of_valid(const std::vector<double>& v) {
  double sum = 0;
  int n = 0;
  for (double x : v) {
    if (x > -1) {
      sum += x;
      ++n;
    }
  }
  return n ? sum / n : -1;
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

}  // namespace

const char* CocoStats::name(int i) {
  static const char* kNames[kCount] = {"AP",       "AP50",     "AP75",  "AP_small",
                                       "AP_medium", "AP_large", "AR1",   "AR10",
                                       "AR100",    "AR_small", "AR_medium", "AR_large"};
  return i >= 0 && i < kCount ? kNames[i] : "?";
}

CocoStats evaluate_coco_bbox(const CocoGroundTruth& gt, const std::vector<CocoDetection>& dets) {
  std::vector<int64_t> image_ids;
  for (const CocoImage& im : gt.images) image_ids.push_back(im.id);
  std::sort(image_ids.begin(), image_ids.end());
  image_ids.erase(std::unique(image_ids.begin(), image_ids.end()), image_ids.end());
  std::vector<int64_t> category_ids(gt.category_ids.begin(), gt.category_ids.end());
  std::sort(category_ids.begin(), category_ids.end());
  category_ids.erase(std::unique(category_ids.begin(), category_ids.end()), category_ids.end());
  const size_t I = image_ids.size(), K = category_ids.size();

  // Ground truth and detections per (category, image), in their input order.
  std::vector<std::vector<const CocoAnnotation*>> gt_by(K * I);
  std::vector<std::vector<const CocoDetection*>> dt_by(K * I);
  for (const CocoAnnotation& a : gt.annotations) {
    const int i = index_of(image_ids, a.image_id);
    check(i >= 0, ErrorKind::Argument, "COCO ground truth: annotation ", a.id,
          " refers to image ", a.image_id, " that is not in the image list");
    const int k = index_of(category_ids, a.category_id);
    if (k >= 0) gt_by[k * I + i].push_back(&a);
  }
  for (const CocoDetection& d : dets) {
    const int i = index_of(image_ids, d.image_id);
    check(i >= 0, ErrorKind::Argument, "COCO detections: image ", d.image_id,
          " is not in the ground truth");
    const int k = index_of(category_ids, d.category_id);
    if (k >= 0) dt_by[k * I + i].push_back(&d);
  }

  const size_t T = kIouThresholds.size(), R = kRecallThresholds.size();
  // pycocotools' precision [T][R][K][A][M] and recall [T][K][A][M], -1 = absent.
  const auto p_at = [&](size_t t, size_t r, size_t k, size_t a, size_t m) {
    return (((t * R + r) * K + k) * kNumAreas + a) * kNumMaxDets + m;
  };
  const auto r_at = [&](size_t t, size_t k, size_t a, size_t m) {
    return ((t * K + k) * kNumAreas + a) * kNumMaxDets + m;
  };
  std::vector<double> precision(T * R * K * kNumAreas * kNumMaxDets, -1.0);
  std::vector<double> recall(T * K * kNumAreas * kNumMaxDets, -1.0);

  std::vector<ImageEval> evals(I * kNumAreas);
  std::vector<char> present(I);
  for (size_t k = 0; k < K; ++k) {
    for (size_t i = 0; i < I; ++i) {
      std::vector<const CocoDetection*> d = dt_by[k * I + i];
      present[i] = !(d.empty() && gt_by[k * I + i].empty());
      if (!present[i]) continue;
      std::stable_sort(d.begin(), d.end(), [](const CocoDetection* x, const CocoDetection* y) {
        return x->score > y->score;
      });
      const size_t max_dets = kMaxDets[kNumMaxDets - 1];
      if (d.size() > max_dets) d.resize(max_dets);
      evaluate_pair(gt_by[k * I + i], d, &evals[i * kNumAreas]);
    }
    for (int a = 0; a < kNumAreas; ++a) {
      for (int m = 0; m < kNumMaxDets; ++m) {
        // accumulate(): detections of all images, first maxDet of each, in image
        // order, then stably sorted by score.
        struct Entry {
          double score;
          size_t image;
          size_t det;
        };
        std::vector<Entry> entries;
        int ground_truth = 0;
        bool any = false;
        for (size_t i = 0; i < I; ++i) {
          if (!present[i]) continue;
          any = true;
          const ImageEval& e = evals[i * kNumAreas + a];
          ground_truth += e.ground_truth;
          const size_t n = std::min(e.scores.size(), static_cast<size_t>(kMaxDets[m]));
          for (size_t d = 0; d < n; ++d) entries.push_back({e.scores[d], i, d});
        }
        if (!any || ground_truth == 0) continue;
        std::stable_sort(entries.begin(), entries.end(),
                         [](const Entry& x, const Entry& y) { return x.score > y.score; });
        const size_t nd = entries.size();
        for (size_t t = 0; t < T; ++t) {
          std::vector<double> rc(nd), pr(nd);
          double tp = 0, fp = 0;
          for (size_t j = 0; j < nd; ++j) {
            const ImageEval& e = evals[entries[j].image * kNumAreas + a];
            const size_t at = t * e.scores.size() + entries[j].det;
            if (!e.ignored[at]) (e.matched[at] ? tp : fp) += 1;
            rc[j] = tp / ground_truth;
            pr[j] = tp / (fp + tp + 2.220446049250313e-16);  // np.spacing(1)
          }
          recall[r_at(t, k, a, m)] = nd ? rc[nd - 1] : 0;
          for (size_t j = nd; j-- > 1;) pr[j - 1] = std::max(pr[j - 1], pr[j]);
          for (size_t r = 0; r < R; ++r) {
            // np.searchsorted(rc, threshold, side='left'); beyond the last recall
            // the precision stays 0.
            const size_t j = static_cast<size_t>(
                std::lower_bound(rc.begin(), rc.end(), kRecallThresholds[r]) - rc.begin());
            precision[p_at(t, r, k, a, m)] = j < nd ? pr[j] : 0;
          }
        }
      }
    }
  }

  // summarize(): means over the valid entries of a slice.
  const auto find_t = [](double iou) {
    for (size_t t = 0; t < kIouThresholds.size(); ++t) {
      if (kIouThresholds[t] == iou) return static_cast<int>(t);
    }
    return -1;
  };
  const auto average_precision = [&](int t_only, int a, int m) {
    std::vector<double> v;
    for (size_t t = 0; t < T; ++t) {
      if (t_only >= 0 && static_cast<int>(t) != t_only) continue;
      for (size_t r = 0; r < R; ++r) {
        for (size_t k = 0; k < K; ++k) v.push_back(precision[p_at(t, r, k, a, m)]);
      }
    }
    return mean_of_valid(v);
  };
  const auto average_recall = [&](int a, int m) {
    std::vector<double> v;
    for (size_t t = 0; t < T; ++t) {
      for (size_t k = 0; k < K; ++k) v.push_back(recall[r_at(t, k, a, m)]);
    }
    return mean_of_valid(v);
  };
  CocoStats s;
  s.values = {average_precision(-1, 0, 2), average_precision(find_t(0.5), 0, 2),
              average_precision(find_t(0.75), 0, 2), average_precision(-1, 1, 2),
              average_precision(-1, 2, 2), average_precision(-1, 3, 2),
              average_recall(0, 0), average_recall(0, 1), average_recall(0, 2),
              average_recall(1, 2), average_recall(2, 2), average_recall(3, 2)};
  // Per category, indexed like gt.category_ids.
  for (int id : gt.category_ids) {
    const int k = index_of(category_ids, id);
    std::vector<double> v;
    for (size_t t = 0; t < T; ++t) {
      for (size_t r = 0; r < R; ++r) v.push_back(precision[p_at(t, r, k, 0, 2)]);
    }
    s.per_category_ap.push_back(mean_of_valid(v));
  }
  return s;
}

CocoGroundTruth load_yolo_ground_truth(const std::string& dir) {
  namespace fs = std::filesystem;
  const fs::path images_dir = fs::path(dir) / "images", labels_dir = fs::path(dir) / "labels";
  check(fs::is_directory(images_dir), ErrorKind::Io, "YOLO ground truth: no images folder ",
        images_dir.string());
  std::vector<fs::path> files;
  for (const fs::directory_entry& entry : fs::directory_iterator(images_dir)) {
    const std::string ext = lower(entry.path().extension().string());
    if (entry.is_regular_file() && (ext == ".jpg" || ext == ".jpeg" || ext == ".png")) {
      files.push_back(entry.path());
    }
  }
  check(!files.empty(), ErrorKind::Io, "YOLO ground truth: no .jpg/.png images in ",
        images_dir.string());
  std::sort(files.begin(), files.end());
  const bool numeric_stems = std::all_of(files.begin(), files.end(), [](const fs::path& p) {
    const std::string stem = p.stem().string();
    return !stem.empty() && stem.size() < 18 &&
           std::all_of(stem.begin(), stem.end(), [](char c) { return c >= '0' && c <= '9'; });
  });

  CocoGroundTruth gt;
  for (int c = 0; c < kCocoClasses; ++c) gt.category_ids.push_back(coco_category_id(c));
  std::set<int64_t> seen_ids;
  std::set<std::string> stems;
  for (size_t n = 0; n < files.size(); ++n) {
    CocoImage image;
    image.file = files[n].string();
    image.id = numeric_stems ? std::stoll(files[n].stem().string()) : static_cast<int64_t>(n + 1);
    check(seen_ids.insert(image.id).second, ErrorKind::Malformed, "YOLO ground truth: ",
          image.file, " repeats image id ", image.id);
    stems.insert(files[n].stem().string());
    const ImageSize size = read_image_size(image.file);
    image.width = size.width;
    image.height = size.height;
    gt.images.push_back(image);

    const fs::path label_path = labels_dir / (files[n].stem().string() + ".txt");
    if (!fs::exists(label_path)) continue;  // an image without objects
    std::ifstream labels(label_path);
    check(labels.good(), ErrorKind::Io, "cannot open ", label_path.string());
    std::string line;
    for (int line_no = 1; std::getline(labels, line); ++line_no) {
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      std::istringstream fields(line);
      double cls = 0, cx = 0, cy = 0, w = 0, h = 0;
      std::string extra;
      const bool parsed =
          static_cast<bool>(fields >> cls >> cx >> cy >> w >> h) && !(fields >> extra);
      check(parsed && std::isfinite(cx) && std::isfinite(cy) && std::isfinite(w) &&
                std::isfinite(h) && w >= 0 && h >= 0,
            ErrorKind::Malformed, label_path.string(), ":", line_no,
            ": expected `CLASS cx cy w h` with a non-negative size, got '", line, "'");
      check(cls == std::floor(cls) && cls >= 0 && cls < kCocoClasses, ErrorKind::Malformed,
            label_path.string(), ":", line_no, ": class ", cls, " is not an integer in 0..",
            kCocoClasses - 1);
      CocoAnnotation a;
      a.id = static_cast<int64_t>(gt.annotations.size()) + 1;
      a.image_id = image.id;
      a.category_id = coco_category_id(static_cast<int>(cls));
      a.box = {(cx - w / 2) * image.width, (cy - h / 2) * image.height, w * image.width,
               h * image.height};
      a.area = a.box.w * a.box.h;
      gt.annotations.push_back(a);
    }
  }
  if (fs::is_directory(labels_dir)) {
    for (const fs::directory_entry& entry : fs::directory_iterator(labels_dir)) {
      if (entry.path().extension() != ".txt") continue;
      check(stems.count(entry.path().stem().string()) != 0, ErrorKind::Malformed,
            "YOLO ground truth: ", entry.path().string(), " has no image in ",
            images_dir.string());
    }
  }
  return gt;
}

std::vector<CocoDetection> to_coco_detections(int64_t image_id,
                                              const std::vector<Detection>& detections) {
  std::vector<CocoDetection> out;
  for (const Detection& d : detections) {
    if (static_cast<double>(d.score) < 0.001) break;
    out.push_back({image_id, d.category_id,
                   {d.x_min, d.y_min, static_cast<double>(d.x_max - d.x_min),
                    static_cast<double>(d.y_max - d.y_min)},
                   d.score});
  }
  return out;
}

}  // namespace repshare
