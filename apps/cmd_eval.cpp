// repshare eval: top-1 / top-5 accuracy of a classifier over a labelled image list.
#include <cstdio>
#include <nlohmann/json.hpp>
#include <sstream>

#include "apps/app_util.h"
#include "apps/commands.h"
#include "engine/error.h"
#include "engine/session.h"
#include "loaders/labels.h"
#include "tasks/classification.h"

namespace repshare {

int cmd_eval(const CommandArgs& argv) {
  Args args(argv, {"help"});
  if (args.flag("help")) {
    std::printf(
        "usage: repshare eval --model M.onnx --labels LIST [options]\n"
        "  LIST: lines 'images/FILE, CLASS' (paths relative to LIST's folder)\n"
        "  --limit N              only the first N images (0: all)\n"
        "  --json FILE            write the summary as JSON\n"
        "  --predictions FILE     write 'path,label,top1..top5' per image (CSV)\n%s",
        kBackendUsage);
    return 0;
  }
  const std::string model_path = args.require("model");
  const std::string list_path = args.require("labels");
  const int limit = args.get_int("limit", 0);
  check(limit >= 0, ErrorKind::Argument, "--limit must not be negative");
  const std::string json_out = args.get("json");
  const std::string predictions_out = args.get("predictions");
  auto backend = backend_from_args(args);
  args.finish();
  std::vector<std::string> inputs = model_files(model_path);
  inputs.push_back(list_path);
  check_can_write(json_out, inputs);
  check_can_write(predictions_out, inputs);

  Model model = load_model(model_path, pass_options_for(*backend));
  check(model.info.outputs.size() == 1, ErrorKind::Argument, "model '", model.info.name,
        "' is not a classifier (", model.info.outputs.size(), " outputs)",
        missing_sidecar_note(model.info));
  const std::string out_name = model.info.outputs[0];
  Session session(model, *backend, {out_name});
  const int classes = static_cast<int>(session.output_shape(out_name).numel());
  auto items = read_labelled_images(list_path, classes);
  if (limit > 0 && static_cast<size_t>(limit) < items.size()) items.resize(limit);
  check(!items.empty(), ErrorKind::Argument, "'", list_path, "' lists no images");
  for (const LabelledImage& item : items) inputs.push_back(item.path);
  check_can_write(json_out, inputs);
  check_can_write(predictions_out, inputs);
  const ClassifyPreprocess pre = classify_preprocess_for(model.info);
  Preprocessor preprocessor;

  size_t top1 = 0, top5 = 0;
  std::ostringstream csv;
  csv << "path,label,top1,top2,top3,top4,top5\n";
  Progress progress("eval " + model.info.name, items.size());
  auto start = std::chrono::steady_clock::now();
  for (size_t i = 0; i < items.size(); ++i) {
    preprocessor.classify(load_image(items[i].path), pre, session.host_input());
    session.run();
    auto top = top_k(session.host_output(out_name), classes, 5);
    top1 += top[0] == items[i].label;
    for (int t : top) top5 += t == items[i].label;
    csv << items[i].path << "," << items[i].label;
    for (int t : top) csv << "," << t;
    csv << "\n";
    progress.step(i + 1);
  }
  progress.finish();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  nlohmann::json summary = {{"model", model.info.name},
                            {"labels", list_path},
                            {"images", items.size()},
                            {"top1", static_cast<double>(top1) / items.size()},
                            {"top5", static_cast<double>(top5) / items.size()},
                            {"backend", backend->name()},
                            {"precision", precision_name(*backend)},
                            {"seconds", seconds},
                            {"images_per_second", items.size() / seconds}};
  std::printf("%s\n", summary.dump(1).c_str());
  OutputFiles out;
  if (!json_out.empty()) out.add(json_out, summary.dump(1) + "\n");
  if (!predictions_out.empty()) out.add(predictions_out, csv.str());
  out.commit();
  return 0;
}

}  // namespace repshare
