// repshare run: several pipelines over a stream of frames, sharing representations
// as a plan says (or not, for comparison): JSON lines per frame, then throughput,
// latency percentiles and the memory summary.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "apps/app_util.h"
#include "apps/commands.h"
#include "engine/error.h"
#include "loaders/frame_source.h"
#include "loaders/labels.h"
#include "merge/pipeline.h"

namespace repshare {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string category_name(int category_id) {
  const int index = coco_contiguous_index(category_id);
  return index >= 0 ? coco_class_name(index) : "class " + std::to_string(category_id);
}

json result_json(const PipelineResult& r, double score_threshold,
                 const std::vector<std::string>& class_names) {
  json j = {{"task", r.task}};
  if (r.task == "detection") {
    j["detections"] = json::array();
    for (const Detection& d : r.detections) {
      if (d.score < score_threshold) continue;
      j["detections"].push_back({{"box", {d.x_min, d.y_min, d.x_max, d.y_max}},
                                 {"score", d.score},
                                 {"category_id", d.category_id},
                                 {"name", category_name(d.category_id)}});
    }
  } else {
    j["top"] = json::array();
    for (const auto& c : r.classes) {
      json e = {{"class", c.first}, {"prob", c.second}};
      if (static_cast<size_t>(c.first) < class_names.size()) e["name"] = class_names[c.first];
      j["top"].push_back(e);
    }
  }
  return j;
}

// Linear interpolation between closest ranks (numpy's default).
double percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const double pos = q * (v.size() - 1);
  const size_t lo = static_cast<size_t>(pos);
  const size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (pos - lo);
}

json latency_json(const std::vector<double>& seconds) {
  return {{"median_ms", 1e3 * percentile(seconds, 0.5)},
          {"p90_ms", 1e3 * percentile(seconds, 0.9)},
          {"p99_ms", 1e3 * percentile(seconds, 0.99)}};
}

}  // namespace

int cmd_run(const CommandArgs& argv) {
  Args args(argv, {"no-share", "help"});
  if (args.flag("help")) {
    std::printf(
        "usage: repshare run (--plan PLAN.json | --models A.onnx,B.onnx) [options] INPUT...\n"
        "  INPUT                  image files, folders of images (.jpg .png .ppm) and video\n"
        "                         files (.mp4 .mkv .avi ...: %s); unreadable\n"
        "                         frames are skipped with a warning\n"
        "  --plan FILE            sharing plan (examples/plans/); model paths relative to it\n"
        "  --models A,B           models without a plan: each runs in full\n"
        "  --no-share             run every model of the plan in full (the comparison)\n"
        "  --out FILE             per-frame JSON lines to FILE (written at the end, atomically)\n"
        "                         instead of stdout; the summary then goes to stdout\n"
        "  --summary FILE         the end summary as JSON (atomically)\n"
        "  --limit N              first N frames only (0: all)\n"
        "  --top K                classes per classifier (default 5)\n"
        "  --score-threshold T    detections printed per frame scoring at least T (default 0.3)\n"
        "  --labels FILE          ImageNet class names (class-index JSON or one per line)\n%s",
        video_input_available() ? "decoded with FFmpeg" : "not in this build, which has no FFmpeg",
        kBackendUsage);
    return 0;
  }
  const std::string plan_path = args.get("plan");
  const std::string model_list = args.get("models");
  const bool no_share = args.flag("no-share");
  const std::string out_path = args.get("out");
  const std::string summary_path = args.get("summary");
  const int limit = args.get_int("limit", 0);
  const int top = args.get_int("top", 5);
  const double score_threshold = score_threshold_from_args(args);
  const auto class_names = load_class_names(args.get("labels"));
  auto backend = backend_from_args(args);
  args.finish();
  check(plan_path.empty() != model_list.empty(), ErrorKind::Argument,
        "give either --plan PLAN.json or --models A.onnx,B.onnx");
  check(!args.positionals().empty(), ErrorKind::Argument, "give frames: images, folders of images or videos");
  check(limit >= 0, ErrorKind::Argument, "--limit must not be negative");
  // Checked again below against every frame and model file; a folder of frames is
  // left out here, as results may be written beside its images.
  std::vector<std::string> inputs = {plan_path};
  for (const std::string& p : args.positionals())
    if (!fs::is_directory(p)) inputs.push_back(p);
  check_can_write(out_path, inputs);
  check_can_write(summary_path, inputs);

  FrameSource frames(args.positionals(), static_cast<size_t>(limit));
  Plan plan;
  if (!plan_path.empty()) {
    plan = load_plan(plan_path);
  } else {
    std::vector<std::string> paths;
    for (size_t a = 0, b; a <= model_list.size(); a = b + 1) {
      b = std::min(model_list.find(',', a), model_list.size());
      if (b > a) paths.push_back(model_list.substr(a, b - a));
    }
    plan = plan_for_models(paths);
  }
  const bool share = !no_share && plan.any_sharing();
  // Now that the frames and models are known: an output must be none of them either.
  inputs = frames.files();
  for (const PipelineSpec& p : plan.pipelines)
    for (const std::string& f : model_files(p.model)) inputs.push_back(f);
  check_can_write(out_path, inputs);
  check_can_write(summary_path, inputs);
  auto models = load_plan_models(plan, pass_options_for(*backend));

  release_free_heap();
  const size_t rss_before = resident_bytes();
  // From before the pipelines exist, as measure_memory() (merge/pipeline.cpp) does.
  const size_t device_before = backend->device_bytes_in_use();
  Pipelines pipelines(plan, models, *backend, share, top);
  pipelines.check_class_names(class_names.size());
  const size_t rss_built = resident_bytes();
  pipelines.allocate();
  const MemoryReport memory = pipelines.memory();

  std::FILE* lines = out_path.empty() ? stdout : nullptr;
  std::string buffered;
  std::vector<std::vector<double>> seconds(plan.pipelines.size());
  std::vector<double> frame_seconds;
  size_t skipped = 0;
  Progress progress("run", frames.expected());
  const auto start = std::chrono::steady_clock::now();
  Frame frame;
  std::string why;
  for (size_t done = 1;; ++done) {
    const auto t0 = std::chrono::steady_clock::now();
    const FrameSource::Status status = frames.next(frame, &why);
    if (status == FrameSource::Status::End) break;
    if (status == FrameSource::Status::Skipped) {
      ++skipped;
      std::fprintf(stderr, "warning: skipping frame '%s': %s\n", frame.name.c_str(), why.c_str());
      progress.step(done);
      continue;
    }
    const Image& img = frame.image;
    const std::vector<PipelineResult> results = pipelines.run(img);
    frame_seconds.push_back(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    json line = {{"frame", frame.name}, {"width", img.width}, {"height", img.height}};
    if (frame.seconds >= 0) line["seconds"] = frame.seconds;
    for (size_t i = 0; i < results.size(); ++i) {
      seconds[i].push_back(results[i].seconds);
      line["pipelines"][results[i].name] = result_json(results[i], score_threshold, class_names);
    }
    const std::string text = line.dump() + "\n";
    if (lines) {
      std::fputs(text.c_str(), lines);
      std::fflush(lines);
    } else {
      buffered += text;
    }
    progress.step(done);
  }
  progress.finish();
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const size_t rss_end = resident_bytes();
  const size_t grown = overhead_grown_since(memory, *backend);
  const size_t device_end = backend->device_bytes_in_use();
  const size_t device_growth = device_end > device_before ? device_end - device_before : 0;
  const size_t processed = frame_seconds.size();
  check(processed > 0, ErrorKind::Io, "none of the ", skipped, " frames could be read");

  json summary = {{"plan", plan.origin},
                  {"sharing", share},
                  {"backend", backend->name()},
                  {"precision", precision_name(*backend)},
                  {"frames", processed},
                  {"skipped_frames", skipped},
                  {"seconds", wall},
                  {"frames_per_second", processed / wall},
                  {"frame_latency", latency_json(frame_seconds)},
                  {"memory", to_json(memory)},
                  {"rss_construction", rss_built - rss_before},
                  {"rss_allocate_and_run", rss_end - rss_built},
                  {"backend_overhead_grown_in_run", grown}};
  if (backend->name() != "cpu") summary["device_allocate_and_run"] = device_growth;
  for (size_t i = 0; i < plan.pipelines.size(); ++i)
    summary["pipelines"][plan.pipelines[i].name] = latency_json(seconds[i]);

  std::FILE* report = lines ? stderr : stdout;
  std::fprintf(report, "\n%s: %zu frames (%zu skipped: unreadable) in %.2f s: %.2f frames/s, %s\n",
               plan.origin.c_str(), processed, skipped, wall, processed / wall,
               share ? "sharing as planned" : "no sharing");
  std::fprintf(report, "latency per frame (decode and all pipelines): median %.1f ms, p90 %.1f, p99 %.1f\n",
               1e3 * percentile(frame_seconds, 0.5), 1e3 * percentile(frame_seconds, 0.9),
               1e3 * percentile(frame_seconds, 0.99));
  for (size_t i = 0; i < plan.pipelines.size(); ++i)
    std::fprintf(report, "  %-12s median %7.1f ms  p90 %7.1f  p99 %7.1f\n",
                 plan.pipelines[i].name.c_str(), 1e3 * percentile(seconds[i], 0.5),
                 1e3 * percentile(seconds[i], 0.9), 1e3 * percentile(seconds[i], 0.99));
  std::fprintf(report, "memory (%s):\n%s", memory.label.c_str(), format_report(memory).c_str());
  if (backend->name() == "cpu")
    std::fprintf(report, "process RSS grew by %s allocating and running (reported total %s), "
                 "after %s building graphs and layers\n",
                 format_bytes(rss_end - rss_built).c_str(),
                 describe_reported(memory.total(), grown).c_str(),
                 format_bytes(rss_built - rss_before).c_str());
  else
    std::fprintf(report, "%s device memory in use grew by %s allocating and running (reported "
                 "weights + activations %s)\n", backend->name().c_str(),
                 format_bytes(device_growth).c_str(), format_bytes(memory.arena_bytes()).c_str());

  OutputFiles out;
  if (!out_path.empty()) out.add(out_path, buffered);
  if (!summary_path.empty()) out.add(summary_path, summary.dump(1) + "\n");
  check_stdout_written();  // the report printed above: lost, then no files either
  out.commit();
  return 0;
}

}  // namespace repshare
