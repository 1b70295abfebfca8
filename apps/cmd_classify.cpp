// repshare classify: top-k classes of images (or of a raw input tensor).
#include <cstdio>
#include <nlohmann/json.hpp>

#include "apps/app_util.h"
#include "apps/commands.h"
#include "engine/error.h"
#include "engine/session.h"
#include "tasks/classification.h"

namespace repshare {

int cmd_classify(const CommandArgs& argv) {
  Args args(argv, {"json", "help"});
  if (args.flag("help")) {
    std::printf(
        "usage: repshare classify --model M.onnx [IMAGE...] [options]\n"
        "  --tensor FILE          raw float32 NCHW input instead of images\n"
        "  --labels FILE          class names: ImageNet class-index JSON or one per line\n"
        "  --top K                classes to print (default 5)\n"
        "  --logits-out FILE      write the raw float32 logits (images x classes)\n"
        "  --json                 machine-readable output\n%s"
        "Preprocessing (resize, crop, interpolation, mean, std) comes from M.json.\n",
        kBackendUsage);
    return 0;
  }
  const std::string model_path = args.require("model");
  const std::string tensor_path = args.get("tensor");
  const std::string labels_path = args.get("labels");
  const auto names = load_class_names(labels_path);
  const int k = args.get_int("top", 5);
  const std::string logits_out = args.get("logits-out");
  const bool json = args.flag("json");
  auto backend = backend_from_args(args);
  args.finish();
  const auto& images = args.positionals();
  std::vector<std::string> read = images;
  read.insert(read.end(), {tensor_path, labels_path});
  for (const std::string& f : model_files(model_path)) read.push_back(f);
  check_can_write(logits_out, read);
  check(!images.empty() || !tensor_path.empty(), ErrorKind::Argument,
        "give images or --tensor FILE");
  check(images.empty() || tensor_path.empty(), ErrorKind::Argument,
        "give either images or --tensor, not both");
  check(k > 0, ErrorKind::Argument, "--top must be positive");

  Model model = load_model(model_path, pass_options_for(*backend));
  check(model.info.outputs.size() == 1, ErrorKind::Argument, "model '", model.info.name, "' has ",
        model.info.outputs.size(), " outputs; classify needs one logits output",
        missing_sidecar_note(model.info));
  const std::string out_name = model.info.outputs[0];
  Session session(model, *backend, {out_name});
  const int64_t classes = session.output_shape(out_name).numel();
  check(names.empty() || static_cast<int64_t>(names.size()) == classes, ErrorKind::Argument,
        "labels file has ", names.size(), " names; the model has ", classes, " classes");
  const ClassifyPreprocess pre = classify_preprocess_for(model.info);
  Preprocessor preprocessor;

  std::vector<std::string> inputs = images;
  if (!tensor_path.empty()) inputs = {tensor_path};
  std::string all_logits;
  nlohmann::json results = nlohmann::json::array();
  for (const auto& in : inputs) {
    if (!tensor_path.empty()) {
      auto v = read_floats(in, session.input_shape().numel());
      std::copy(v.begin(), v.end(), session.host_input());
    } else {
      Image img = load_image(in);
      check(session.input_shape().numel() == 3LL * pre.crop * pre.crop, ErrorKind::Shape,
            "model input ", session.input_shape().str(), " does not take a ", pre.crop, "x",
            pre.crop, " crop");
      preprocessor.classify(img, pre, session.host_input());
    }
    session.run();
    const float* logits = session.host_output(out_name);
    all_logits.append(reinterpret_cast<const char*>(logits), classes * sizeof(float));
    auto top = top_k_softmax(logits, static_cast<int>(classes), k);
    nlohmann::json r;
    r["input"] = in;
    for (const auto& t : top) {
      nlohmann::json c = {{"class", t.first}, {"prob", t.second}, {"logit", logits[t.first]}};
      if (!names.empty()) c["name"] = names[t.first];
      r["top"].push_back(c);
    }
    results.push_back(r);
    if (!json) {
      std::printf("%s\n", in.c_str());
      for (const auto& t : top)
        std::printf("  %5.1f%%  %4d  %s\n", 100.0 * t.second, t.first,
                    names.empty() ? "" : names[t.first].c_str());
    }
  }
  if (!logits_out.empty()) write_file_atomic(logits_out, all_logits);
  if (json) std::printf("%s\n", results.dump(1).c_str());
  return 0;
}

}  // namespace repshare
