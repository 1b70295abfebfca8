#include "engine/model.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "engine/error.h"
#include "loaders/onnx_loader.h"

namespace repshare {

const Stage& ModelInfo::stage(const std::string& n) const {
  int i = stage_index(n);
  if (i < 0) {
    std::string names;
    for (const auto& s : stages) names += (names.empty() ? "" : ", ") + s.name;
    fail(ErrorKind::Argument, "model '", name, "' has no stage '", n, "' (stages: ",
         names.empty() ? "none; see repshare inspect" : names, ")");
  }
  return stages[i];
}

int ModelInfo::stage_index(const std::string& n) const {
  for (size_t i = 0; i < stages.size(); ++i)
    if (stages[i].name == n) return static_cast<int>(i);
  return -1;
}

std::string sidecar_path(const std::string& onnx_path) {
  const std::string ext = ".onnx";
  if (onnx_path.size() > ext.size() &&
      onnx_path.compare(onnx_path.size() - ext.size(), ext.size(), ext) == 0)
    return onnx_path.substr(0, onnx_path.size() - ext.size()) + ".json";
  return onnx_path + ".json";
}

namespace {

std::string base_name(const std::string& path) {
  auto slash = path.find_last_of('/');
  std::string b = slash == std::string::npos ? path : path.substr(slash + 1);
  auto dot = b.rfind(".onnx");
  return dot == std::string::npos ? b : b.substr(0, dot);
}

void read_sidecar(const std::string& path, ModelInfo& info) {
  std::ifstream f(path);
  if (!f.good()) return;
  std::stringstream ss;
  ss << f.rdbuf();
  info.sidecar_json = ss.str();
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(info.sidecar_json);
    if (j.contains("model")) info.name = j["model"].get<std::string>();
    if (j.contains("task")) info.task = j["task"].get<std::string>();
    if (j.contains("source")) info.source = j["source"].get<std::string>();
    if (j.contains("input")) info.input = j["input"]["name"].get<std::string>();
    if (j.contains("output") && j["output"].is_string())
      info.outputs = {j["output"].get<std::string>()};
    for (const char* key : {"class_outputs", "box_outputs"})
      if (j.contains(key))
        for (const auto& o : j[key]) info.outputs.push_back(o.get<std::string>());
    if (j.contains("stages"))
      for (const auto& s : j["stages"]) {
        Stage st;
        st.name = s["name"].get<std::string>();
        st.tensor = s.value("tensor", st.name);
        info.stages.push_back(st);
      }
  } catch (const nlohmann::json::exception& e) {
    fail(ErrorKind::Malformed, "sidecar '", path, "': ", e.what());
  }
}

}  // namespace

std::vector<std::string> model_files(const std::string& onnx_path) {
  return {onnx_path, sidecar_path(onnx_path)};
}

std::string missing_sidecar_note(const ModelInfo& info) {
  if (!info.sidecar_json.empty()) return "";
  return " (no sidecar '" + info.sidecar + "' was found beside the model)";
}

Model load_model(const std::string& onnx_path, PassOptions passes, int64_t input_batch) {
  Model m;
  m.info.name = base_name(onnx_path);
  m.info.sidecar = sidecar_path(onnx_path);
  read_sidecar(m.info.sidecar, m.info);

  OnnxLoadOptions load;
  if (input_batch > 0) {
    Graph probe = load_onnx(onnx_path);
    check(!probe.inputs.empty(), ErrorKind::Malformed, "model '", onnx_path, "' has no inputs");
    const Value& in = probe.values[probe.inputs[0]];
    Shape s = in.shape;
    check(s.rank() >= 1, ErrorKind::Shape, "input '", in.name, "' has no batch axis");
    s[0] = input_batch;
    load.input_shapes[m.info.input.empty() ? in.name : m.info.input] = s;
  }
  m.graph = load_onnx(onnx_path, load);
  // The weights arena records owners by graph name, and exporters name every graph
  // alike ("main_graph"): name it after the model.
  m.graph.name = m.info.name;
  check(!m.graph.inputs.empty(), ErrorKind::Malformed, "model '", onnx_path, "' has no inputs");
  if (m.info.input.empty()) m.info.input = m.graph.values[m.graph.inputs[0]].name;
  check(m.graph.find(m.info.input) >= 0, ErrorKind::Malformed, "sidecar of '", onnx_path,
        "' names input '", m.info.input, "', which the model does not have");
  if (m.info.outputs.empty())
    for (int o : m.graph.outputs) {
      bool is_stage = false;
      for (const auto& s : m.info.stages) is_stage = is_stage || s.tensor == m.graph.values[o].name;
      if (!is_stage) m.info.outputs.push_back(m.graph.values[o].name);
    }
  for (const auto& s : m.info.stages) passes.keep.insert(s.tensor);
  m.stats = prepare_graph(m.graph, passes);
  m.info.input_shape = m.graph.values[m.graph.find(m.info.input)].shape;
  for (auto& s : m.info.stages) {
    int id = m.graph.find(s.tensor);
    check(id >= 0, ErrorKind::Malformed, "sidecar of '", onnx_path, "' names stage '", s.name,
          "' at tensor '", s.tensor, "', which the model does not have");
    s.shape = m.graph.values[id].shape;
  }
  for (const auto& o : m.info.outputs)
    check(m.graph.find(o) >= 0, ErrorKind::Malformed, "model '", onnx_path,
          "' lacks the expected output '", o, "'");
  return m;
}

}  // namespace repshare
