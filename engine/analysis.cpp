#include "engine/analysis.h"

#include <algorithm>
#include <set>

#include "layers/layers.h"

namespace repshare {

int64_t node_flops(const Graph& g, const Node& n) {
  if (n.op_type == "Conv") {
    const Shape& w = g.values[n.inputs[1]].shape;     // [Cout, Cin/groups, kh, kw]
    const Shape& y = g.values[n.outputs[0]].shape;    // [N, Cout, Ho, Wo]
    return 2 * y.numel() * w[1] * w[2] * w[3];
  }
  // Depthwise then pointwise, same spatial size (the fused BiFPN sum counts nothing,
  // as a WeightedSum node does).
  if (n.op_type == "SeparableConv" || n.op_type == "WeightedSumSeparableConv") {
    const Shape& w_dw = g.values[n.inputs[1]].shape;  // [C, 1, kh, kw]
    const Shape& w_pw = g.values[n.inputs[3]].shape;  // [Cout, C, 1, 1]
    const Shape& y = g.values[n.outputs[0]].shape;    // [N, Cout, Ho, Wo]
    const int64_t positions = y.numel() / y[1];
    return 2 * positions * w_dw[0] * w_dw[2] * w_dw[3] + 2 * y.numel() * w_pw[1];
  }
  // Its links' separable convs, one after another.
  if (n.op_type == "SeparableConvChain") {
    int64_t flops = 0;
    for (const SeparableConvParams& p : separable_chain_params(n, g)) {
      const int64_t positions = p.dw.n * p.dw.h_out * p.dw.w_out;
      flops += 2 * positions * p.dw.c_out * p.dw.kh * p.dw.kw +
               2 * p.pw.output_shape().numel() * p.pw.c_in;
    }
    return flops;
  }
  // A 1x1 conv, then the depthwise conv over its output.
  if (n.op_type == "PointwiseDepthwiseConv") {
    const Shape& x = g.values[n.inputs[0]].shape;     // [N, Cin, H, W]
    const Shape& w_pw = g.values[n.inputs[1]].shape;  // [C, Cin, 1, 1]
    const Shape& w_dw = g.values[n.inputs[3]].shape;  // [C, 1, kh, kw]
    const Shape& y = g.values[n.outputs[0]].shape;    // [N, C, Ho, Wo]
    return 2 * (x.numel() / x[1]) * w_pw.numel() + 2 * y.numel() * w_dw[2] * w_dw[3];
  }
  // Two 1x1 convs on [N, C, 1, 1] (gating counts nothing, as a Mul node does), then,
  // fused, the conv reading the gated weights or input.
  if (n.op_type == "SqueezeExcitation" || n.op_type == "SqueezeExcitationConv") {
    const Shape& w_se = g.values[n.inputs[1]].shape;  // [Cse, C, 1, 1]
    const int64_t se = 2 * 2 * g.values[n.inputs[0]].shape[0] * w_se.numel();
    if (n.op_type == "SqueezeExcitation") return se;
    const Shape& w = g.values[n.inputs[n.attr_int("gates_weights", 0) ? 5 : 6]].shape;
    const Shape& y = g.values[n.outputs[0]].shape;
    return se + 2 * y.numel() * w[1] * w[2] * w[3];
  }
  if (n.op_type == "Gemm" || n.op_type == "MatMul") {
    // A Gemm that a reshape folded into reads A as its a_shape (the pooled [N, C, 1, 1]
    // as [N, C]).
    const Shape a = n.op_type == "Gemm" && n.has("a_shape") ? Shape(n.attr_ints("a_shape"))
                                                            : g.values[n.inputs[0]].shape;
    const Shape& y = g.values[n.outputs[0]].shape;
    int64_t k = n.op_type == "Gemm" && n.attr_int("transA", 0) ? a[0] : a[a.rank() - 1];
    return 2 * y.numel() * k;
  }
  return 0;
}

namespace {

// Marks the nodes needed to compute `target` (stopping at already-assigned nodes).
void ancestors(const Graph& g, const std::vector<int>& producer, int target,
               std::vector<int>& owner, int stage) {
  std::vector<int> stack = {target};
  std::vector<bool> seen(g.values.size(), false);
  while (!stack.empty()) {
    int v = stack.back();
    stack.pop_back();
    if (v < 0 || seen[v]) continue;
    seen[v] = true;
    int p = producer[v];
    if (p < 0 || owner[p] >= 0) continue;
    owner[p] = stage;
    for (int i : g.nodes[p].inputs) stack.push_back(i);
  }
}

}  // namespace

ModelAnalysis analyze(const Model& m) {
  const Graph& g = m.graph;
  ModelAnalysis a;
  const std::vector<int> producer = g.producers();
  a.node_flops.resize(g.nodes.size());
  for (size_t k = 0; k < g.nodes.size(); ++k) {
    a.node_flops[k] = node_flops(g, g.nodes[k]);
    a.total_flops += a.node_flops[k];
  }

  // Stage ownership: a node belongs to the first stage that needs it.
  const int ns = static_cast<int>(m.info.stages.size());
  std::vector<int> owner(g.nodes.size(), -1);
  for (int s = 0; s < ns; ++s) ancestors(g, producer, g.find(m.info.stages[s].tensor), owner, s);
  for (const auto& o : m.info.outputs) ancestors(g, producer, g.find(o), owner, ns);
  for (int s = 0; s <= ns; ++s) {
    StageStats st;
    st.name = s < ns ? m.info.stages[s].name : "output";
    if (s < ns) {
      st.tensor = m.info.stages[s].tensor;
      st.shape = m.info.stages[s].shape;
    }
    a.stages.push_back(st);
  }
  std::set<int> counted;
  for (size_t k = 0; k < g.nodes.size(); ++k) {
    if (owner[k] < 0) continue;
    StageStats& st = a.stages[owner[k]];
    ++st.nodes;
    st.flops += a.node_flops[k];
    for (int i : g.nodes[k].inputs)
      if (i >= 0 && g.values[i].is_constant() && counted.insert(i).second) {
        st.params += g.values[i].shape.numel();
        a.total_params += g.values[i].shape.numel();
      }
  }

  // Cut points with respect to the task outputs: after node p, exactly one
  // non-constant value is still needed later.
  std::vector<int> last_use(g.values.size(), -1);
  std::vector<bool> is_output(g.values.size(), false);
  for (const auto& o : m.info.outputs) is_output[g.find(o)] = true;
  for (size_t k = 0; k < g.nodes.size(); ++k)
    for (int i : g.nodes[k].inputs)
      if (i >= 0 && !g.values[i].is_constant()) last_use[i] = static_cast<int>(k);
  const int n = static_cast<int>(g.nodes.size());
  for (size_t v = 0; v < g.values.size(); ++v)
    if (is_output[v]) last_use[v] = n;
  // live[p] counts values produced at or before p and used after p.
  std::vector<int> delta(n + 2, 0);
  auto add_range = [&](int from, int to) {  // live on positions [from, to)
    if (to <= from) return;
    delta[from + 1] += 1;
    delta[std::min(to, n) + 1] -= 1;
  };
  for (int v : g.inputs) add_range(-1, last_use[v]);
  for (int k = 0; k < n; ++k)
    for (int o : g.nodes[k].outputs)
      if (o >= 0) add_range(k, last_use[o]);
  int live = 0;
  int64_t flops = 0;
  live += delta[0];
  for (int k = 0; k < n; ++k) {
    live += delta[k + 1];
    flops += a.node_flops[k];
    if (live != 1 || owner[k] < 0) continue;
    for (int o : g.nodes[k].outputs)
      if (o >= 0 && last_use[o] > k && !is_output[o])
        a.cut_points.push_back({g.values[o].name, g.values[o].shape, flops});
  }
  return a;
}

}  // namespace repshare
