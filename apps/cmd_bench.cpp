// repshare bench: latency of one model (median and p90 of repeated runs after
// warm-up), throughput and memory; optionally against onnxruntime on the same file
// with the same threads in the same run, and a per-op profile.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <random>

#include "apps/app_util.h"
#include "apps/commands.h"
#include "engine/error.h"
#include "engine/session.h"
#include "kernels/cpu/cpu_backend.h"
#include "loaders/image.h"
#include "loaders/npy.h"
#include "tasks/classification.h"
#include "tasks/detection.h"

#ifndef REPSHARE_SOURCE_DIR
#define REPSHARE_SOURCE_DIR "."
#endif

namespace repshare {
namespace {

double percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  const double pos = q * (v.size() - 1);
  const size_t lo = static_cast<size_t>(pos);
  const size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (pos - lo);
}

std::vector<double> time_runs(int runs, const std::function<void()>& run) {
  std::vector<double> ms;
  for (int i = 0; i < runs; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    run();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
                     .count());
  }
  return ms;
}

// `input_npy`: the input both sides time, or empty for the script's own N(0,1)
// draw (the same distribution as the engine's, not the same numbers).
std::vector<double> onnxruntime_runs(const std::string& model, int threads, int runs,
                                     int warmup, const std::vector<std::string>& outputs,
                                     const std::string& input_npy, std::string* version,
                                     double* input_sum) {
  const char* py = std::getenv("REPSHARE_PYTHON");
  std::string python = py ? py : std::string(REPSHARE_SOURCE_DIR) + "/.venv/bin/python";
  std::string outs;
  for (const auto& o : outputs) outs += (outs.empty() ? "" : ",") + o;
  std::vector<std::string> cmd = {
      python,      std::string(REPSHARE_SOURCE_DIR) + "/scripts/bench_onnxruntime.py",
      "--model",   model,
      "--threads", std::to_string(threads),
      "--runs",    std::to_string(runs),
      "--warmup",  std::to_string(warmup),
      "--outputs", outs};
  if (!input_npy.empty()) cmd.insert(cmd.end(), {"--input", input_npy});
  std::string out;
  const int rc = run_program(cmd, &out);
  std::string line;
  for (const std::string& a : cmd) line += (line.empty() ? "" : " ") + a;
  check(rc == 0, ErrorKind::Io, "onnxruntime benchmark failed (", line,
        "); set REPSHARE_PYTHON to a python with onnxruntime (scripts/setup.sh)");
  check(out.find('{') != std::string::npos, ErrorKind::Io, "onnxruntime benchmark (", line,
        ") printed no result");
  auto j = nlohmann::json::parse(out.substr(out.find('{')));
  *version = j["version"].get<std::string>();
  *input_sum = j["input_sum"].get<double>();
  return j["times_ms"].get<std::vector<double>>();
}

// What a step is, finer than its op type where that decides the kernel: a
// convolution is pointwise (1x1), depthwise (one channel per group) or dense.
std::string op_kind(const Graph& g, const Node& n) {
  if (n.op_type == "SeparableConv" || n.op_type == "WeightedSumSeparableConv") {
    // named by its depthwise half
    const Shape& w = g.values[n.inputs[1]].shape;
    const auto strides = n.attr_ints("depthwise_strides", {1, 1});
    return std::string(n.op_type == "SeparableConv" ? "" : "WeightedSum + ") + "SeparableConv " +
           std::to_string(w[2]) + "x" + std::to_string(w[3]) +
           (strides.empty() || strides[0] == 1 ? "" : " s" + std::to_string(strides[0]));
  }
  if (n.op_type == "SqueezeExcitationConv") return "SqueezeExcitation + Conv pointwise";
  if (n.op_type == "SeparableConvChain")
    return "SeparableConv chain of " + std::to_string((n.inputs.size() - 2) / 4);
  if (n.op_type == "PointwiseDepthwiseConv") {  // named by its depthwise half
    const Shape& w = g.values[n.inputs[3]].shape;
    const auto strides = n.attr_ints("strides", {1, 1});
    return "Conv pointwise + depthwise " + std::to_string(w[2]) + "x" + std::to_string(w[3]) +
           (strides.empty() || strides[0] == 1 ? "" : " s" + std::to_string(strides[0]));
  }
  if (n.op_type != "Conv") return n.op_type;
  const Shape& w = g.values[n.inputs[1]].shape;
  const int64_t group = n.attr_int("group", 1);
  const auto strides = n.attr_ints("strides", {1, 1});
  const std::string stride =
      strides.empty() || strides[0] == 1 ? "" : " s" + std::to_string(strides[0]);
  const std::string k = std::to_string(w[2]) + "x" + std::to_string(w[3]) + stride;
  if (group > 1 && group == w[0] && w[1] == 1) return "Conv depthwise " + k;
  if (w[2] == 1 && w[3] == 1 && group == 1) return "Conv pointwise" + stride;
  return "Conv dense " + k + (group > 1 ? " g" + std::to_string(group) : "");
}

// Times network + post-processing as Detector::detect runs them (the post-processing
// queued behind the network, one wait), then post-processing alone after a network
// run waited for (detection models).
void time_postprocess(Session& s, DetectionHead& head, int runs, std::vector<double>* post,
                      std::vector<double>* total) {
  const DetectionConfig& c = head.postprocess().config();
  const ImageFrame frame{1.0f, static_cast<float>(c.image_width),
                         static_cast<float>(c.image_height)};
  auto ms_since = [](std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t)
        .count();
  };
  for (int i = 0; i < runs; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    s.run_queued();
    head.run(s.executor(), &frame);
    total->push_back(ms_since(t0));
  }
  for (int i = 0; i < runs; ++i) {
    s.run();
    const auto t0 = std::chrono::steady_clock::now();
    head.run(s.executor(), &frame);
    post->push_back(ms_since(t0));
  }
}

}  // namespace

int cmd_bench(const CommandArgs& argv) {
  Args args(argv, {"vs-onnxruntime", "profile", "with-postprocess", "help"});
  if (args.flag("help")) {
    std::printf(
        "usage: repshare bench --model M.onnx [options]\n"
        "Times whole runs (input uploaded, network, a classifier's outputs downloaded);\n"
        "on a GPU also the network alone on an input already on the device, as GPU\n"
        "benchmarks time a model.\n"
        "  --runs N               timed runs per round (default 30)\n"
        "  --rounds R             alternating rounds with onnxruntime (default 3)\n"
        "  --image FILE           time on this image, preprocessed as classify/detect do\n"
        "                         (default: N(0,1) noise, which never reaches the value\n"
        "                         ranges of real frames)\n"
        "  --warmup N             untimed runs first, and at the start of every round\n"
        "                         of either side with --vs-onnxruntime (default 5)\n"
        "  --vs-onnxruntime       time onnxruntime on the same file and threads, same run\n"
        "  --profile              time each op type and kind (pointwise/depthwise/dense\n"
        "                         convolutions), and list the slowest steps (steps run\n"
        "                         one by one; on CUDA timed by device events)\n"
        "  --profile-steps N      how many slowest steps --profile lists (default 10)\n"
        "  --with-postprocess     detection models: also time top-k, box decoding and NMS\n"
        "                         after the network, on the same backend\n"
        "  --json FILE            write the results as JSON\n%s",
        kBackendUsage);
    return 0;
  }
  const std::string model_path = args.require("model");
  const int runs = args.get_int("runs", 30), warmup = args.get_int("warmup", 5);
  const int rounds = args.get_int("rounds", 3);
  const bool vs_ort = args.flag("vs-onnxruntime"), profile = args.flag("profile");
  const bool with_postprocess = args.flag("with-postprocess");
  const int profile_steps = args.get_int("profile-steps", 10);
  check(profile_steps >= 0, ErrorKind::Argument, "--profile-steps must not be negative");
  const std::string json_out = args.get("json"), image_path = args.get("image");
  auto backend = backend_from_args(args);
  args.finish();
  std::vector<std::string> inputs = model_files(model_path);
  inputs.push_back(image_path);
  check_can_write(json_out, inputs);
  check(runs > 0, ErrorKind::Argument, "--runs must be positive, got ", runs);
  check(rounds > 0, ErrorKind::Argument, "--rounds must be positive, got ", rounds);
  check(warmup >= 0, ErrorKind::Argument, "--warmup must not be negative, got ", warmup);
  // onnxruntime runs fp32 on the CPU: against the fp16 simulation the ratio would
  // measure the simulation's conversions, not the engine.
  check(!vs_ort || backend->float_storage() == DType::F32, ErrorKind::Argument,
        "--vs-onnxruntime compares fp32 on the CPU; drop --precision fp16");

  Model model = load_model(model_path, pass_options_for(*backend));
  // A detector's outputs stay where the network left them, as detect and run leave
  // them for the post-processing: downloading D0's 18 MB of logits is not part of
  // its job on a GPU.
  const bool detector = model.info.task == "detection";
  Session session(model, *backend, {},
                  detector ? Session::Outputs::StayOnBackend : Session::Outputs::Downloaded);
  std::unique_ptr<DetectionHead> head;
  if (with_postprocess)
    head = std::make_unique<DetectionHead>(model.info, detection_config_for(model.info), *backend);
  const int64_t input_size = session.input_shape().numel();
  if (image_path.empty()) {
    std::mt19937 rng(0);
    std::normal_distribution<float> normal;
    for (int64_t i = 0; i < input_size; ++i) session.host_input()[i] = normal(rng);
  } else {
    const Image img = load_image(image_path);
    Preprocessor pre;
    check(session.input_shape()[0] == 1, ErrorKind::Argument, "--image needs a batch-1 model, ",
          model_path, " takes ", session.input_shape().str());
    if (detector)
      pre.detect(img, detect_preprocess_for(model.info), session.host_input());
    else
      pre.classify(img, classify_preprocess_for(model.info), session.host_input());
  }
  // onnxruntime reads the same input from a temporary .npy (removed on every exit).
  struct TempFile {
    std::string path;
    ~TempFile() {
      if (!path.empty()) std::remove(path.c_str());
    }
  } input_npy;
  if (vs_ort && !image_path.empty()) {
    char name[] = "/tmp/repshare-bench-XXXXXX.npy";
    const int fd = mkstemps(name, 4);
    check(fd >= 0, ErrorKind::Io, "cannot create a temporary file for onnxruntime's input");
    close(fd);
    input_npy.path = name;
    write_npy(input_npy.path, session.input_shape().dims, session.host_input());
  }
  double input_sum = 0;
  for (int64_t i = 0; i < input_size; ++i) input_sum += session.host_input()[i];
  const int threads = backend->name() == "cpu" ? static_cast<CpuBackend&>(*backend).threads() : 0;

  // On a device, also the network alone, as GPU benchmarks time a model
  // (Session::run_on_device_input, from a copy of the input kept on the device):
  // session.run() uploads the input from host memory first (D0's 3 MiB) and
  // downloads a classifier's outputs.
  const bool on_device = backend->name() != "cpu";
  const size_t input_bytes = on_device ? session.input_shape().numel() * sizeof(float) : 0;
  const BackendBuffer device_input(*backend, input_bytes);
  backend->upload(device_input.data, session.host_input(), input_bytes);
  for (int i = 0; i < warmup; ++i) session.run();
  std::vector<double> ours, network, ort, post, with_post;
  std::string ort_version;
  for (int r = 0; r < rounds; ++r) {
    // Each onnxruntime round starts with `warmup` untimed runs in its own process;
    // after one, the engine's caches and waiting threads are as cold, so its
    // round starts with the same number (the first round follows the warm-up).
    if (r > 0 && vs_ort)
      for (int i = 0; i < warmup; ++i) session.run();
    auto t = time_runs(runs, [&] { session.run(); });
    ours.insert(ours.end(), t.begin(), t.end());
    if (on_device) {
      t = time_runs(runs, [&] { session.run_on_device_input(device_input.data); });
      network.insert(network.end(), t.begin(), t.end());
    }
    if (vs_ort) {
      double ort_input_sum = 0;
      auto o = onnxruntime_runs(model_path, threads, runs, warmup, model.info.outputs,
                                input_npy.path, &ort_version, &ort_input_sum);
      check(input_npy.path.empty() || std::fabs(ort_input_sum - input_sum) <=
                                          1e-6 * (1.0 + std::fabs(input_sum)),
            ErrorKind::Io, "onnxruntime timed another input than ", image_path, " (sum ",
            ort_input_sum, " against ", input_sum, ")");
      ort.insert(ort.end(), o.begin(), o.end());
    }
    if (head) time_postprocess(session, *head, runs, &post, &with_post);
  }
  const double batch = static_cast<double>(session.input_shape()[0]);
  nlohmann::json j = {
      {"model", model.info.name},
      {"backend", backend->name()},
      {"precision", precision_name(*backend)},
      {"threads", threads},
      {"input", session.input_shape().dims},
      {"input_from", image_path.empty() ? "N(0,1)" : image_path},
      {"runs", ours.size()},
      {"median_ms", percentile(ours, 0.5)},
      {"p90_ms", percentile(ours, 0.9)},
      {"min_ms", percentile(ours, 0.0)},
      {"throughput_per_s", 1000.0 * batch / percentile(ours, 0.5)},
      {"activation_arena_bytes", session.executor().activation_bytes()},
      {"activation_lower_bound_bytes", session.executor().activation_lower_bound()},
      {"weights_bytes", session.weights().total_bytes()},
      {"recorded_graph", session.executor().recorded()}};
  if (on_device) {
    j["network_median_ms"] = percentile(network, 0.5);
    j["network_p90_ms"] = percentile(network, 0.9);
  }
  if (!session.executor().recording_error().empty())
    j["recording_error"] = session.executor().recording_error();
  // How a recording puts the steps on the backend's queues (CUDA streams).
  const size_t longest_chain = critical_path(session.executor().schedule());
  j["queues"] = backend->queues();
  j["steps"] = session.executor().num_steps();
  j["longest_chain_steps"] = longest_chain;
  const RecordedWork::Shape graph = session.executor().recorded_shape();
  if (graph.calls > 0) {
    j["graph_nodes"] = graph.calls;
    j["graph_longest_chain"] = graph.longest_chain;
  }
  const std::string host_threads =
      backend->name() == "cpu" ? " (" + std::to_string(threads) + " threads)" : "";
  std::printf("%s on %s %s%s, input %s from %s\n", model.info.name.c_str(),
              backend->name().c_str(), precision_name(*backend), host_threads.c_str(),
              session.input_shape().str().c_str(),
              image_path.empty() ? "N(0,1) noise" : image_path.c_str());
  if (backend->name() != "cpu")
    std::printf("  replayed as one recorded graph: %s%s\n",
                !session.executor().recorded() ? "no"
                : graph.calls > 0
                    ? ("yes: " + std::to_string(graph.calls) + " nodes, " +
                       std::to_string(graph.longest_chain) +
                       " of them in the longest chain run one after another")
                          .c_str()
                    : "yes",
                session.executor().recording_error().empty()
                    ? ""
                    : (" (" + session.executor().recording_error() + ")").c_str());
  if (backend->queues() > 1 && longest_chain < session.executor().num_steps())
    std::printf("  %zu steps on %d streams: the longest chain of steps run one after another "
                "is %zu\n",
                session.executor().num_steps(), backend->queues(), longest_chain);
  else if (backend->queues() > 1)
    std::printf("  %zu steps, one after another: no step can run beside another within the "
                "arena allowance\n",
                session.executor().num_steps());
  std::printf("  repshare     median %8.2f ms  p90 %8.2f ms  (%zu runs)  %.1f inferences/s\n",
              percentile(ours, 0.5), percentile(ours, 0.9), ours.size(),
              1000.0 * batch / percentile(ours, 0.5));
  if (on_device)
    std::printf(
        "  network      median %8.2f ms  p90 %8.2f ms  (input already on the device, "
        "outputs left there)\n",
        percentile(network, 0.5), percentile(network, 0.9));
  if (head) {
    j["postprocess_median_ms"] = percentile(post, 0.5);
    j["with_postprocess_median_ms"] = percentile(with_post, 0.5);
    j["with_postprocess_p90_ms"] = percentile(with_post, 0.9);
    std::printf("  + postproc   median %8.2f ms  p90 %8.2f ms  (post-processing alone %.2f ms)\n",
                percentile(with_post, 0.5), percentile(with_post, 0.9), percentile(post, 0.5));
  }
  if (vs_ort) {
    const double ratio = percentile(ours, 0.5) / percentile(ort, 0.5);
    j["onnxruntime"] = {{"version", ort_version},
                        {"median_ms", percentile(ort, 0.5)},
                        {"p90_ms", percentile(ort, 0.9)},
                        {"runs", ort.size()}};
    j["ratio_vs_onnxruntime"] = ratio;
    std::printf("  onnxruntime  median %8.2f ms  p90 %8.2f ms  (%zu runs, v%s)\n",
                percentile(ort, 0.5), percentile(ort, 0.9), ort.size(), ort_version.c_str());
    std::printf("  ratio repshare/onnxruntime (median): %.3f\n", ratio);
    if (head) {  // onnxruntime runs the network only: the ratio of the whole job
      j["ratio_with_postprocess_vs_onnxruntime"] = percentile(with_post, 0.5) / percentile(ort, 0.5);
      std::printf("  ratio repshare+postproc/onnxruntime network (median): %.3f\n",
                  percentile(with_post, 0.5) / percentile(ort, 0.5));
    }
  }
  std::printf("  activation arena %.2f MiB (liveness lower bound %.2f MiB), weights %.2f MiB\n",
              session.executor().activation_bytes() / 1048576.0,
              session.executor().activation_lower_bound() / 1048576.0,
              session.weights().total_bytes() / 1048576.0);
  if (profile) {
    std::vector<double> per_step;
    for (int i = 0; i < runs; ++i) session.run_profiled(per_step);
    std::map<std::string, double> by_op, by_kind;
    const auto names = session.executor().step_names();
    std::vector<std::pair<double, std::string>> slowest;
    double total = 0;
    for (size_t s = 0; s < per_step.size(); ++s) {
      const double ms = per_step[s] / runs * 1e3;
      total += ms;
      const auto node = std::find_if(model.graph.nodes.begin(), model.graph.nodes.end(),
                                     [&](const Node& x) { return x.name == names[s]; });
      if (node == model.graph.nodes.end()) {  // fp16 mode's conversions at the edges
        by_op["Convert"] += ms;
        by_kind["convert"] += ms;
        slowest.push_back({ms, names[s]});
        continue;
      }
      const Node& n = *node;
      by_op[n.op_type + (n.has("activation") ? "+" + n.attr_string("activation", "") : "")] += ms;
      const std::string kind = op_kind(model.graph, n);
      by_kind[kind] += ms;
      slowest.push_back(
          {ms, kind + " -> " + model.graph.values[n.outputs[0]].shape.str() + "  " + n.name});
    }
    auto print_table = [&](const char* title, const char* key,
                           const std::map<std::string, double>& table) {
      std::vector<std::pair<double, std::string>> rows;
      for (const auto& kv : table) rows.push_back({kv.second, kv.first});
      std::sort(rows.rbegin(), rows.rend());
      std::printf("  profile (mean ms per run by %s):\n", title);
      for (const auto& r : rows) {
        std::printf("    %-28s %8.3f ms  %5.1f%%\n", r.second.c_str(), r.first, 100 * r.first / total);
        j[key][r.second] = r.first;
      }
    };
    print_table("op", "profile_ms", by_op);
    print_table("kind", "profile_kind_ms", by_kind);
    std::sort(slowest.rbegin(), slowest.rend());
    std::printf("  slowest steps:\n");
    for (size_t i = 0; i < std::min(static_cast<size_t>(profile_steps), slowest.size()); ++i) {
      std::printf("    %8.3f ms  %s\n", slowest[i].first, slowest[i].second.c_str());
      j["profile_slowest_steps"].push_back({{"ms", slowest[i].first}, {"step", slowest[i].second}});
    }
    j["profile_steps"] = per_step.size();
    j["profile_total_ms"] = total;
  }
  if (!json_out.empty()) write_file_atomic(json_out, j.dump(1) + "\n");
  return 0;
}

}  // namespace repshare
