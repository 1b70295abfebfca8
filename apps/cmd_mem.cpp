// repshare mem: the memory a model or a sharing plan takes, separate vs merged,
// what sharing at each candidate stage would save, whether it fits a device, and
// the real growth next to the reported total (process RSS on the CPU, device
// memory in use on a GPU).
#include <cstdio>
#include <nlohmann/json.hpp>

#include "apps/app_util.h"
#include "apps/commands.h"
#include "engine/error.h"
#include "merge/pipeline.h"

namespace repshare {
namespace {

using nlohmann::json;

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Host bytes of the constants each loaded model holds (the ONNX weights as read).
// They stay alive next to the weights arena while the executors hold the graphs;
// on a Jetson host and device share one memory, so they count for "does it fit".
size_t loader_bytes(const std::vector<std::shared_ptr<const Model>>& models) {
  size_t total = 0;
  for (const auto& m : models)
    for (const Value& v : m->graph.values)
      if (v.is_constant()) total += v.data->size();
  return total;
}

struct Variant {
  std::string name;
  MemoryReport memory;
};

// The plan with receiver `r` cut at `stage` in both models (same-named stages).
Plan with_cut(Plan plan, size_t r, const std::string& stage) {
  plan.pipelines[r].share.donor_stage = stage;
  plan.pipelines[r].share.receiver_stage = stage;
  return plan;
}

}  // namespace

int cmd_mem(const CommandArgs& argv) {
  Args args(argv, {"json", "no-measure", "help"});
  if (args.flag("help")) {
    std::printf(
        "usage: repshare mem MODEL.onnx|PLAN.json [options]\n"
        "  --json                 machine-readable output\n"
        "  --device-mem SIZE      target memory (e.g. 4GiB): list the variants that fit\n"
        "  --os-reserve SIZE      taken off --device-mem for the OS and other processes\n"
        "                         (default 0)\n"
        "  --no-measure           skip building the plan for real to measure the RSS delta\n%s"
        "Weights shared between models are counted once, for their owner. Candidate stages\n"
        "pair same-named stages of donor and receiver (stage4 -> stage4).\n",
        kBackendUsage);
    return 0;
  }
  const bool as_json = args.flag("json");
  const bool measure = !args.flag("no-measure");
  const std::string device_mem = args.get("device-mem");
  const std::string os_reserve = args.get("os-reserve");
  check(os_reserve.empty() || !device_mem.empty(), ErrorKind::Argument,
        "--os-reserve is taken off --device-mem: give --device-mem too");
  const size_t reserve = os_reserve.empty() ? 0 : parse_byte_size(os_reserve, "--os-reserve");
  const size_t device = device_mem.empty() ? 0 : parse_byte_size(device_mem, "--device-mem");
  check(device_mem.empty() || device > 0, ErrorKind::Argument, "--device-mem must be positive");
  check(device_mem.empty() || device > reserve, ErrorKind::Argument, "--os-reserve ",
        format_bytes(reserve), " leaves nothing of --device-mem ", format_bytes(device));
  auto backend = backend_from_args(args);
  args.finish();
  check(args.positionals().size() == 1, ErrorKind::Argument,
        "give one model (.onnx) or plan (.json)");
  const std::string input = args.positionals()[0];
  const Plan plan = ends_with(input, ".json") ? load_plan(input) : plan_for_models({input});
  const auto models = load_plan_models(plan, pass_options_for(*backend));

  std::vector<Variant> variants;
  variants.push_back({"no sharing", Pipelines(plan, models, *backend, false).memory()});
  if (plan.any_sharing())
    variants.push_back({"plan as written", Pipelines(plan, models, *backend, true).memory()});
  const size_t separate = variants[0].memory.total();

  // Candidate cuts: every stage name a receiver and its donor both have.
  json candidates = json::array();
  for (size_t r = 0; r < plan.pipelines.size(); ++r) {
    const PipelineSpec& spec = plan.pipelines[r];
    if (!spec.shares) continue;
    const Model& donor = *models[plan.index(spec.share.from)];
    for (const Stage& st : models[r]->info.stages) {
      if (donor.info.stage_index(st.name) < 0) continue;
      json c = {{"receiver", spec.name}, {"stage", st.name}};
      try {
        MemoryReport m = Pipelines(with_cut(plan, r, st.name), models, *backend, true).memory();
        c["total"] = m.total();
        c["saved"] = static_cast<double>(separate) - static_cast<double>(m.total());
        c["weights_saved"] =
            static_cast<double>(variants[0].memory.weights) - static_cast<double>(m.weights);
        variants.push_back({spec.name + " from " + spec.share.from + " at " + st.name, m});
      } catch (const Error& e) {
        c["error"] = e.what();
      }
      candidates.push_back(c);
    }
  }

  const size_t loaders = loader_bytes(models);
  json out = {{"input", input},
              {"backend", backend->name()},
              {"precision", precision_name(*backend)},
              {"loader_host_bytes", loaders}};
  for (const Variant& v : variants) out["variants"].push_back({{"name", v.name}, {"memory", to_json(v.memory)}});
  out["candidates"] = candidates;
  // A single model: what a receiver cutting after each stage would not load.
  json cumulative = json::array();
  if (!plan.any_sharing()) {
    for (const PipelineMemory& p : variants[0].memory.pipelines) {
      size_t upto = 0;
      for (const StageWeights& s : p.stages) {
        upto += s.bytes;
        cumulative.push_back({{"pipeline", p.name}, {"stage", s.name}, {"weight_bytes", s.bytes},
                              {"weights_through_stage", upto}});
      }
    }
    out["stages"] = cumulative;
  }
  const bool merged = plan.any_sharing();
  const MemoryReport& as_written = merged ? variants[1].memory : variants[0].memory;
  const bool on_host = backend->name() == "cpu";
  if (measure) {
    Image gray;  // a VGA frame: preprocessing scratch stays small next to the arenas
    gray.reset(640, 480);
    std::fill(gray.pixels.begin(), gray.pixels.end(), uint8_t(128));
    const MeasuredMemory m = measure_memory(plan, models, *backend, merged, gray);
    out["rss_construction"] = m.construction_rss;
    out["rss_allocate_and_run"] = m.allocate_and_run_rss;
    if (on_host) {
      const size_t grown = overhead_grown_since(as_written, *backend);
      out["backend_overhead_grown_in_run"] = grown;
      out["rss_vs_reported"] =
          static_cast<double>(m.allocate_and_run_rss) / (as_written.total() + grown) - 1.0;
    } else {
      // On a GPU the arenas are device memory: compare the device's growth with them
      // (plus what the backend's overhead grew by meanwhile: cuBLAS workspaces for
      // streams no earlier schedule used), and the process's device use (the
      // backend's overhead as reported, plus that growth) with the reported device
      // total. The arenas alone come out above the report by what cudaMalloc rounds
      // up to whole 2 MiB pages.
      const double overhead = static_cast<double>(as_written.overhead_bytes());
      const double arenas = static_cast<double>(as_written.arena_bytes() + m.overhead_grown);
      out["backend_overhead_grown_in_run"] = m.overhead_grown;
      out["device_allocate_and_run"] = m.allocate_and_run_device;
      out["device_vs_reported"] = static_cast<double>(m.allocate_and_run_device) / arenas - 1.0;
      out["device_total_vs_reported"] =
          (overhead + m.allocate_and_run_device) / (overhead + arenas) - 1.0;
    }
  }
  if (!device_mem.empty()) {
    const size_t budget = device - reserve;
    json fit = {{"device_bytes", device}, {"reserve_bytes", reserve}, {"budget_bytes", budget}};
    for (const Variant& v : variants)
      fit["variants"].push_back({{"name", v.name},
                                 {"total_with_loader", v.memory.total() + loaders},
                                 {"fits", v.memory.total() + loaders <= budget}});
    out["fit"] = fit;
  }

  if (as_json) {
    std::printf("%s\n", out.dump(1).c_str());
    return 0;
  }
  for (const Variant& v : variants) {
    std::printf("== %s ==\n%s", v.name.c_str(), format_report(v.memory).c_str());
    for (const PipelineMemory& p : v.memory.pipelines) {
      if (!p.shares_from.empty()) std::printf("  %s takes %s\n", p.name.c_str(), p.shares_from.c_str());
      for (const ArenaMemory& a : p.arenas)
        std::printf("  arena %-34s %11s (lower bound %s, largest workspace %s)\n", a.name.c_str(),
                    format_bytes(a.bytes).c_str(), format_bytes(a.lower_bound).c_str(),
                    format_bytes(a.largest_workspace).c_str());
    }
    std::printf("\n");
  }
  if (merged) {
    std::printf("weights per stage (params x %zu B; '-' = not loaded, taken from the donor):\n",
                dtype_size(backend->float_storage()));
    for (const PipelineMemory& p : as_written.pipelines) {
      std::printf("  %-12s", p.name.c_str());
      for (const StageWeights& s : p.stages)
        std::printf(" %s%s=%s", s.loaded ? "" : "-", s.name.c_str(), format_bytes(s.bytes).c_str());
      std::printf("\n");
    }
    std::printf("\nsharing at each candidate stage (vs no sharing, %s):\n", format_bytes(separate).c_str());
    std::printf("  %-12s %-10s %12s %12s %12s\n", "receiver", "stage", "total", "saved", "weights saved");
    for (const json& c : candidates) {
      if (c.contains("error")) {
        std::printf("  %-12s %-10s  not a usable cut: %s\n", c["receiver"].get<std::string>().c_str(),
                    c["stage"].get<std::string>().c_str(), c["error"].get<std::string>().c_str());
        continue;
      }
      std::printf("  %-12s %-10s %12s %12s %12s\n", c["receiver"].get<std::string>().c_str(),
                  c["stage"].get<std::string>().c_str(), format_bytes(c["total"].get<double>()).c_str(),
                  format_bytes(c["saved"].get<double>()).c_str(),
                  format_bytes(c["weights_saved"].get<double>()).c_str());
    }
  } else {
    std::printf("weights per stage, and through it (what a receiver cutting after it would not load):\n");
    for (const json& s : cumulative)
      std::printf("  %-12s %-10s %12s %12s\n", s["pipeline"].get<std::string>().c_str(),
                  s["stage"].get<std::string>().c_str(),
                  format_bytes(s["weight_bytes"].get<double>()).c_str(),
                  format_bytes(s["weights_through_stage"].get<double>()).c_str());
  }
  std::printf("\nhost copies of the loaded model constants (held by the loader): %s\n",
              format_bytes(loaders).c_str());
  if (out.contains("rss_vs_reported"))
    std::printf("measured on %s (%s plan, one 640x480 frame): process RSS grew by %s allocating "
                "and running (reported %s, %+.1f%%), after %s building graphs and layers\n",
                backend->name().c_str(), merged ? "merged" : "separate",
                format_bytes(out["rss_allocate_and_run"].get<double>()).c_str(),
                describe_reported(as_written.total(),
                                  out["backend_overhead_grown_in_run"].get<size_t>())
                    .c_str(),
                100.0 * out["rss_vs_reported"].get<double>(),
                format_bytes(out["rss_construction"].get<double>()).c_str());
  if (out.contains("device_vs_reported"))
    std::printf("measured on %s (%s plan, one 640x480 frame): device memory in use grew by %s "
                "allocating and running (reported weights + activations %s, %+.1f%%; with the "
                "backend's overhead %+.1f%%); host RSS grew by %s\n",
                backend->name().c_str(), merged ? "merged" : "separate",
                format_bytes(out["device_allocate_and_run"].get<double>()).c_str(),
                describe_reported(as_written.arena_bytes(),
                                  out["backend_overhead_grown_in_run"].get<size_t>())
                    .c_str(),
                100.0 * out["device_vs_reported"].get<double>(),
                100.0 * out["device_total_vs_reported"].get<double>(),
                format_bytes(out["rss_allocate_and_run"].get<double>()).c_str());
  if (out.contains("fit")) {
    std::printf("\ndoes it fit in %s (minus %s reserved: %s)? engine total + loader copies:\n",
                format_bytes(out["fit"]["device_bytes"].get<double>()).c_str(),
                format_bytes(reserve).c_str(),
                format_bytes(out["fit"]["budget_bytes"].get<double>()).c_str());
    for (const json& v : out["fit"]["variants"])
      std::printf("  %-3s %-34s %12s\n", v["fits"].get<bool>() ? "yes" : "no",
                  v["name"].get<std::string>().c_str(),
                  format_bytes(v["total_with_loader"].get<double>()).c_str());
  }
  return 0;
}

}  // namespace repshare
