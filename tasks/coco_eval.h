// COCO bounding-box evaluation, replicating pycocotools' COCOeval (iouType "bbox",
// default parameters): per image and category, detections sorted by score are
// greedily matched to ground truth at IoU thresholds .50:.05:.95, crowd and
// out-of-area-range ground truth is ignored, precision is interpolated at 101
// recall points under its monotone envelope, and categories without ground truth
// are left out of the means (pycocotools' -1).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "loaders/labels.h"  // kCocoClasses, coco_category_id
#include "tasks/detection.h"

namespace repshare {

struct CocoBox {
  double x = 0, y = 0, w = 0, h = 0;  // COCO's [x, y, width, height] in pixels
};

struct CocoImage {
  int64_t id = 0;
  int width = 0, height = 0;
  std::string file;
};

struct CocoAnnotation {
  int64_t id = 0;  // >= 1: pycocotools treats a match with ground-truth id 0 as none
  int64_t image_id = 0;
  int category_id = 0;
  CocoBox box;
  double area = 0;  // decides the small / medium / large range (box area here)
  bool iscrowd = false;
};

struct CocoDetection {
  int64_t image_id = 0;
  int category_id = 0;
  CocoBox box;
  double score = 0;
};

struct CocoGroundTruth {
  std::vector<CocoImage> images;
  std::vector<int> category_ids;  // the categories evaluated
  std::vector<CocoAnnotation> annotations;
};

// pycocotools' summarize() stats, in its order; -1 where no category has ground truth.
struct CocoStats {
  static constexpr int kCount = 12;
  std::array<double, kCount> values{};
  double ap() const { return values[0]; }    // AP @[.50:.95], all areas, 100 dets
  double ap50() const { return values[1]; }
  double ap75() const { return values[2]; }
  double ap_small() const { return values[3]; }
  double ap_medium() const { return values[4]; }
  double ap_large() const { return values[5]; }
  double ar1() const { return values[6]; }
  double ar10() const { return values[7]; }
  double ar100() const { return values[8]; }
  double ar_small() const { return values[9]; }
  double ar_medium() const { return values[10]; }
  double ar_large() const { return values[11]; }
  static const char* name(int i);  // "AP", "AP50", ...
  // AP @[.50:.95] (all areas, 100 dets) per gt.category_ids entry; -1 if absent.
  std::vector<double> per_category_ap;
};

// Evaluates detections on every image of gt. Detections of categories outside
// gt.category_ids are ignored, as pycocotools does; detections on images that are
// not in gt are an error.
CocoStats evaluate_coco_bbox(const CocoGroundTruth& gt, const std::vector<CocoDetection>& dets);

// Ground truth from a YOLO-style folder (the layout of coco-val128): images/*.jpg
// (or .png), labels/<stem>.txt with one `CLASS cx cy w h` line per object, CLASS
// the contiguous 0..79 index and the box normalised to the image size. An image
// without a labels file has no objects. Image ids are the numeric file stems
// (COCO's own ids) when all stems are numbers, else 1..N in file-name order;
// categories are all 80 COCO categories.
CocoGroundTruth load_yolo_ground_truth(const std::string& dir);

// effdet's evaluator conversion: [x_min, y_min, x_max, y_max] to [x, y, w, h],
// stopping at the first score below 0.001 (detections come best first).
std::vector<CocoDetection> to_coco_detections(int64_t image_id,
                                              const std::vector<Detection>& detections);

}  // namespace repshare
