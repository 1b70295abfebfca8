// A small classifier built in code, standing in for an exported model with a
// sidecar: input -> a chain of named conv stages -> global average pooling ->
// (optionally) a 1x1 conv to `classes` logits. Weights are a fixed pattern times
// `scale`, so two builds with the same scale have identical (shareable) weights.
#pragma once

#include <string>
#include <vector>

#include "engine/model.h"
#include "engine/passes.h"

namespace repshare {

struct ToyStage {
  std::string name;
  int64_t c_out, kernel, stride;
};

// classes == 0: the pooled last stage is the logits output.
inline Model toy_model(const std::string& name, float scale, const Shape& input,
                       const std::vector<ToyStage>& stages, int64_t classes) {
  Model m;
  Graph& g = m.graph;
  g.name = name;
  g.opset = 13;
  int x = g.add_value("input");
  g.values[x].shape = input;
  g.values[x].shape_known = true;
  g.inputs.push_back(x);
  auto conv = [&](const std::string& out, const std::string& in, int64_t ci, int64_t co,
                  int64_t k, int64_t stride) {
    std::vector<float> w(co * ci * k * k);
    for (size_t i = 0; i < w.size(); ++i) w[i] = scale * (0.01f * ((i * 7 + co) % 13) - 0.06f);
    g.add_constant_f32(out + ".w", Shape{co, ci, k, k}, w);
    Node n;
    n.op_type = "Conv";
    n.name = out;
    n.inputs = {g.add_value(in), g.find(out + ".w")};
    n.outputs = {g.add_value(out)};
    const int64_t pad = k / 2;
    n.attrs["pads"].kind = n.attrs["strides"].kind = Attribute::Kind::Ints;
    n.attrs["pads"].ints = {pad, pad, pad, pad};
    n.attrs["strides"].ints = {stride, stride};
    g.nodes.push_back(n);
  };
  std::string prev = "input";
  int64_t channels = input[1];
  for (const ToyStage& s : stages) {
    conv(s.name, prev, channels, s.c_out, s.kernel, s.stride);
    prev = s.name;
    channels = s.c_out;
    m.info.stages.push_back({s.name, s.name, Shape{}});
  }
  Node gap;
  gap.op_type = "GlobalAveragePool";
  gap.name = "pool";
  gap.inputs = {g.find(prev)};
  gap.outputs = {g.add_value(classes > 0 ? "pooled" : "logits")};
  g.nodes.push_back(gap);
  if (classes > 0) conv("logits", "pooled", channels, classes, 1, 1);
  for (const ToyStage& s : stages) g.outputs.push_back(g.find(s.name));
  g.outputs.push_back(g.find("logits"));
  m.info.name = name;
  m.info.task = "classification";
  m.info.input = "input";
  m.info.outputs = {"logits"};
  prepare_graph(g);
  for (auto& s : m.info.stages) s.shape = g.values[g.find(s.tensor)].shape;
  m.info.input_shape = g.values[x].shape;
  return m;
}

}  // namespace repshare
