// repshare eval-det: COCO box AP of a detection model over a YOLO-layout folder.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <set>

#include "apps/app_util.h"
#include "apps/commands.h"
#include "engine/error.h"
#include "tasks/coco_eval.h"
#include "tasks/detection.h"

namespace repshare {
namespace {

// The ground truth of the first `limit` images only: pycocotools evaluates the
// images it is given, so the others must leave the annotations too.
void keep_first_images(CocoGroundTruth& gt, size_t limit) {
  if (limit == 0 || limit >= gt.images.size()) return;
  gt.images.resize(limit);
  std::set<int64_t> kept;
  for (const CocoImage& im : gt.images) kept.insert(im.id);
  gt.annotations.erase(std::remove_if(gt.annotations.begin(), gt.annotations.end(),
                                      [&](const CocoAnnotation& a) {
                                        return kept.count(a.image_id) == 0;
                                      }),
                       gt.annotations.end());
}

}  // namespace

int cmd_eval_det(const CommandArgs& argv) {
  Args args(argv, {"soft-nms", "help"});
  if (args.flag("help")) {
    std::printf(
        "usage: repshare eval-det --model D0.onnx --data DIR [options]\n"
        "  DIR: images/*.jpg, labels/<image>.txt (YOLO: CLASS cx cy w h, normalised)\n"
        "  --limit N              only the first N images (file-name order; 0: all)\n"
        "  --soft-nms             Gaussian soft-NMS instead of hard NMS\n"
        "  --json FILE            write the summary as JSON\n"
        "  --detections FILE      write the detections as COCO results JSON (pycocotools' "
        "loadRes)\n%s"
        "Reports pycocotools' 12 bbox stats (AP @[.50:.95], AP50, AP75, ...).\n",
        kBackendUsage);
    return 0;
  }
  const std::string model_path = args.require("model");
  const std::string data_dir = args.require("data");
  const int limit = args.get_int("limit", 0);
  const bool soft_nms = args.flag("soft-nms");
  const std::string json_out = args.get("json");
  const std::string detections_out = args.get("detections");
  auto backend = backend_from_args(args);
  args.finish();
  std::vector<std::string> inputs = model_files(model_path);
  inputs.push_back(data_dir);  // its images and labels
  check_can_write(json_out, inputs);
  check_can_write(detections_out, inputs);
  check(limit >= 0, ErrorKind::Argument, "--limit must not be negative");

  CocoGroundTruth gt = load_yolo_ground_truth(data_dir);
  keep_first_images(gt, static_cast<size_t>(limit));
  check(!gt.images.empty(), ErrorKind::Argument, "'", data_dir, "' holds no images");
  const Model model = load_model(model_path, pass_options_for(*backend));
  DetectionConfig config = detection_config_for(model.info);
  config.soft_nms = config.soft_nms || soft_nms;
  Detector detector(model, *backend, config);

  std::vector<CocoDetection> detections;
  Progress progress("eval-det " + model.info.name, gt.images.size());
  const auto start = std::chrono::steady_clock::now();
  for (size_t i = 0; i < gt.images.size(); ++i) {
    const CocoImage& im = gt.images[i];
    const Image img = load_image(im.file);
    check(img.width == im.width && img.height == im.height, ErrorKind::Malformed, im.file,
          " decodes to ", img.width, "x", img.height, " but its header says ", im.width, "x",
          im.height);
    const std::vector<CocoDetection> found = to_coco_detections(im.id, detector.detect(img));
    detections.insert(detections.end(), found.begin(), found.end());
    progress.step(i + 1);
  }
  progress.finish();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const CocoStats stats = evaluate_coco_bbox(gt, detections);

  nlohmann::json summary = {{"model", model.info.name},
                            {"model_source", model.info.source},
                            {"data", data_dir},
                            {"images", gt.images.size()},
                            {"annotations", gt.annotations.size()},
                            {"detections", detections.size()},
                            {"soft_nms", config.soft_nms},
                            {"backend", backend->name()},
                            {"precision", precision_name(*backend)},
                            {"seconds", seconds},
                            {"images_per_second", gt.images.size() / seconds}};
  for (int i = 0; i < CocoStats::kCount; ++i) summary[CocoStats::name(i)] = stats.values[i];
  if (model.info.source.find("random") != std::string::npos)
    summary["note"] = "random weights: AP near 0 is expected; this run checks the pipeline";
  std::printf("%s\n", summary.dump(1).c_str());
  OutputFiles out;
  if (!json_out.empty()) out.add(json_out, summary.dump(1) + "\n");
  if (!detections_out.empty()) {
    nlohmann::json results = nlohmann::json::array();
    for (const CocoDetection& d : detections)
      results.push_back({{"image_id", d.image_id},
                         {"category_id", d.category_id},
                         {"bbox", {d.box.x, d.box.y, d.box.w, d.box.h}},
                         {"score", d.score}});
    out.add(detections_out, results.dump() + "\n");
  }
  out.commit();
  return 0;
}

}  // namespace repshare
