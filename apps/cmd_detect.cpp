// repshare detect: objects in images with an EfficientDet model.
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "apps/app_util.h"
#include "apps/commands.h"
#include "engine/error.h"
#include "loaders/draw.h"
#include "loaders/labels.h"
#include "tasks/detection.h"

namespace repshare {
namespace {

// COCO name of a detection's category, "class N" for ids that are not one of
// COCO's 80 (effdet's 90 outputs include the ten unused ids).
std::string category_name(int category_id) {
  const int index = coco_contiguous_index(category_id);
  return index >= 0 ? coco_class_name(index) : "class " + std::to_string(category_id);
}

struct ImageDetections {
  std::string path;
  int width = 0, height = 0;
  std::vector<Detection> detections;
};

// The image with its boxes drawn, as PNG bytes.
std::string draw_detections(const ImageDetections& r, float score_threshold) {
  Image img = load_image(r.path);
  for (const Detection& d : r.detections) {
    if (d.score < score_threshold) continue;
    char label[96];
    std::snprintf(label, sizeof label, "%s %.2f", category_name(d.category_id).c_str(), d.score);
    draw_labelled_box(img, d.x_min, d.y_min, d.x_max, d.y_max, label,
                      palette_color(d.category_id));
  }
  return encode_png(img);
}

}  // namespace

int cmd_detect(const CommandArgs& argv) {
  Args args(argv, {"soft-nms", "help"});
  if (args.flag("help")) {
    std::printf(
        "usage: repshare detect --model D0.onnx IMAGE... [options]\n"
        "  --score-threshold T    print and draw detections scoring at least T (default 0.3)\n"
        "  --soft-nms             Gaussian soft-NMS instead of hard NMS\n"
        "  --json FILE            write every image's detections (all scores) as JSON\n"
        "  --draw FILE.png        draw the boxes on the (single) image\n"
        "  --draw-dir DIR         draw each image's boxes to DIR/<image name>.png\n%s"
        "Letterbox size, anchors and NMS parameters come from D0.json.\n",
        kBackendUsage);
    return 0;
  }
  const std::string model_path = args.require("model");
  const double score_threshold = score_threshold_from_args(args);
  const bool soft_nms = args.flag("soft-nms");
  const std::string json_out = args.get("json");
  const std::string draw_out = args.get("draw");
  const std::string draw_dir = args.get("draw-dir");
  auto backend = backend_from_args(args);
  args.finish();
  const std::vector<std::string>& images = args.positionals();
  check(!images.empty(), ErrorKind::Argument, "give at least one image");
  check(draw_out.empty() || draw_dir.empty(), ErrorKind::Argument,
        "give either --draw or --draw-dir, not both");
  check(draw_out.empty() || images.size() == 1, ErrorKind::Argument, "--draw takes one image (",
        images.size(), " given); use --draw-dir for several");
  std::vector<std::string> inputs = images;
  for (const std::string& f : model_files(model_path)) inputs.push_back(f);
  check_can_write(json_out, inputs);
  // Made now, to fail before any work; removed again if the command fails.
  std::unique_ptr<OutputFolder> folder;
  if (!draw_dir.empty()) folder.reset(new OutputFolder(draw_dir));
  // Where each image's boxes are drawn: --draw, or DIR/<image name>.png.
  std::vector<std::string> drawings;
  if (!draw_out.empty()) drawings.push_back(draw_out);
  for (size_t i = 0; !draw_dir.empty() && i < images.size(); ++i) {
    const std::string name = std::filesystem::path(images[i]).stem().string() + ".png";
    drawings.push_back((std::filesystem::path(draw_dir) / name).string());
  }
  for (size_t i = 0; i < drawings.size(); ++i) {
    check_can_write(drawings[i], inputs);
    for (size_t j = 0; j < i; ++j)
      check(drawings[j] != drawings[i], ErrorKind::Argument, "images '", images[j], "' and '",
            images[i], "' would both be drawn to '", drawings[i], "'");
  }

  const Model model = load_model(model_path, pass_options_for(*backend));
  DetectionConfig config = detection_config_for(model.info);
  config.soft_nms = config.soft_nms || soft_nms;
  Detector detector(model, *backend, config);

  // Every image is decoded and detected before anything is written, so a bad
  // image fails the command without leaving output for the images before it.
  std::vector<ImageDetections> results;
  for (const std::string& path : images) {
    const Image img = load_image(path);
    results.push_back({path, img.width, img.height, detector.detect(img)});
  }

  nlohmann::json all = nlohmann::json::array();
  for (const ImageDetections& r : results) {
    std::printf("%s (%dx%d)\n", r.path.c_str(), r.width, r.height);
    nlohmann::json dets = nlohmann::json::array();
    for (const Detection& d : r.detections) {
      dets.push_back({{"box", {d.x_min, d.y_min, d.x_max, d.y_max}},
                      {"score", d.score},
                      {"category_id", d.category_id},
                      {"name", category_name(d.category_id)}});
      if (d.score >= score_threshold)
        std::printf("  %6.1f %6.1f %6.1f %6.1f  %.3f  %s\n", d.x_min, d.y_min, d.x_max, d.y_max,
                    d.score, category_name(d.category_id).c_str());
    }
    all.push_back({{"image", r.path}, {"width", r.width}, {"height", r.height},
                   {"detections", dets}});
  }
  if (model.info.source.find("random") != std::string::npos)
    std::printf("note: %s: %s, so its detections are meaningless\n", model.info.name.c_str(),
                model.info.source.c_str());

  OutputFiles out;
  if (!json_out.empty()) out.add(json_out, all.dump(1) + "\n");
  for (size_t i = 0; i < drawings.size(); ++i)
    out.add(drawings[i], draw_detections(results[i], score_threshold));
  out.commit();
  if (folder) folder->keep();
  return 0;
}

}  // namespace repshare
