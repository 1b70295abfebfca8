// Model: a prepared graph plus what the export scripts recorded about it in the
// sidecar MODEL.json next to MODEL.onnx (task, input, preprocessing, stage map).
//
// A model from elsewhere has no sidecar: it still loads, with its first graph
// input as input, all graph outputs as task outputs and no named stages
// (`repshare inspect` lists its cut points so a user can name some).
#pragma once

#include <string>
#include <vector>

#include "engine/graph.h"
#include "engine/passes.h"

namespace repshare {

struct Stage {
  std::string name;    // e.g. "stage3"
  std::string tensor;  // graph tensor holding its output
  Shape shape;
};

struct ModelInfo {
  std::string name;
  std::string task;    // "classification", "detection" or "" (unknown)
  std::string source;  // where the weights came from
  std::string input;   // input tensor name
  Shape input_shape;
  std::vector<std::string> outputs;  // task outputs: logits; or class_p3.., box_p3..
  std::vector<Stage> stages;         // in network order
  std::string sidecar_json;          // the sidecar's text ("" when none), for task code
  std::string sidecar;               // where the sidecar is or would be (MODEL.json)

  const Stage& stage(const std::string& name) const;  // throws naming the model and stages
  int stage_index(const std::string& name) const;     // -1 when absent
};

struct Model {
  ModelInfo info;
  Graph graph;  // prepared: shapes inferred, folded, fused (stage tensors kept)
  PassStats stats;
};

// Loads MODEL.onnx and, when present, MODEL.json. input_batch > 0 overrides the
// batch dimension of the input.
Model load_model(const std::string& onnx_path, PassOptions passes = PassOptions(),
                 int64_t input_batch = 0);

// Sidecar path for a model file: "x/m.onnx" -> "x/m.json".
std::string sidecar_path(const std::string& onnx_path);

// The files load_model reads for it: the .onnx and its sidecar (outputs must not
// overwrite either).
std::vector<std::string> model_files(const std::string& onnx_path);

// For errors about what a sidecar says (task, outputs, stages): " (no sidecar
// 'x/m.json' was found beside the model)" where the model has none, else "".
std::string missing_sidecar_note(const ModelInfo& info);

}  // namespace repshare
