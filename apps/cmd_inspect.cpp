// repshare inspect MODEL.onnx: ops, parameters, FLOPs and output shape per stage,
// and the single-tensor cut points, so a user can name stages on any model.
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>

#include "apps/args.h"
#include "apps/commands.h"
#include "engine/analysis.h"
#include "engine/error.h"
#include "engine/passes.h"
#include "kernels/cpu/cpu_backend.h"
#include "loaders/onnx_loader.h"

namespace repshare {

int cmd_inspect(const CommandArgs& argv) {
  Args args(argv, {"json", "help", "no-fusion"});
  if (args.flag("help")) {
    std::printf(
        "usage: repshare inspect MODEL.onnx [--json] [--no-fusion]\n"
        "Lists the model's ONNX ops and its engine ops (after the CPU backend's\n"
        "load-time passes; --no-fusion: without fusions), its stages (from MODEL.json\n"
        "when present) with parameters, FLOPs (2 x MACs of conv/gemm) and output\n"
        "shapes, and the single-tensor cut points a sharing plan can use as stages.\n");
    return 0;
  }
  const bool json = args.flag("json");
  // The graph the CPU backend runs (other backends may fuse less; no device needed).
  PassOptions passes = pass_options_for(CpuBackend(1));
  if (args.flag("no-fusion")) passes.set_fusions(false);
  args.finish();
  check(args.positionals().size() == 1, ErrorKind::Argument, "expected one model file");
  const std::string path = args.positionals()[0];

  std::map<std::string, int> onnx_ops;
  for (const auto& n : load_onnx(path).nodes) ++onnx_ops[n.op_type];
  Model m = load_model(path, passes);
  ModelAnalysis a = analyze(m);
  std::map<std::string, int> engine_ops;
  for (const auto& n : m.graph.nodes) ++engine_ops[n.op_type];

  if (json) {
    nlohmann::json j;
    j["model"] = m.info.name;
    j["input"] = {{"name", m.info.input}, {"shape", m.info.input_shape.dims}};
    j["onnx_ops"] = onnx_ops;
    j["engine_ops"] = engine_ops;
    j["params"] = a.total_params;
    j["flops"] = a.total_flops;
    for (const auto& s : a.stages)
      j["stages"].push_back({{"name", s.name}, {"tensor", s.tensor}, {"shape", s.shape.dims},
                             {"nodes", s.nodes}, {"params", s.params}, {"flops", s.flops}});
    for (const auto& c : a.cut_points)
      j["cut_points"].push_back(
          {{"tensor", c.tensor}, {"shape", c.shape.dims}, {"flops_before", c.flops_before}});
    std::printf("%s\n", j.dump(1).c_str());
    return 0;
  }
  std::printf("model   %s\ninput   %s %s\nparams  %lld\nFLOPs   %.3f G (2 x MACs)\n",
              m.info.name.c_str(), m.info.input.c_str(), m.info.input_shape.str().c_str(),
              static_cast<long long>(a.total_params), a.total_flops * 1e-9);
  std::printf("\nONNX ops (%zu kinds):", onnx_ops.size());
  for (const auto& kv : onnx_ops) std::printf(" %s:%d", kv.first.c_str(), kv.second);
  std::printf("\nafter load-time passes (%zu nodes):", m.graph.nodes.size());
  for (const auto& kv : engine_ops) std::printf(" %s:%d", kv.first.c_str(), kv.second);
  std::printf("\n\n%-10s %-22s %-20s %6s %12s %12s\n", "stage", "tensor", "shape", "nodes",
              "params", "MFLOPs");
  for (const auto& s : a.stages)
    std::printf("%-10s %-22s %-20s %6d %12lld %12.1f\n", s.name.c_str(), s.tensor.c_str(),
                s.shape.str().c_str(), s.nodes, static_cast<long long>(s.params), s.flops * 1e-6);
  std::printf("\nsingle-tensor cut points (%zu):\n", a.cut_points.size());
  for (const auto& c : a.cut_points)
    std::printf("  %-40s %-20s after %.1f MFLOPs\n", c.tensor.c_str(), c.shape.str().c_str(),
                c.flops_before * 1e-6);
  return 0;
}

}  // namespace repshare
