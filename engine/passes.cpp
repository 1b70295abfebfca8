#include "engine/passes.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>

#include "engine/error.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/resize_math.h"
#include "layers/layer.h"
#include "layers/layers.h"

namespace repshare {
namespace {

std::shared_ptr<std::vector<uint8_t>> float_bytes(const std::vector<float>& v) {
  auto b = std::make_shared<std::vector<uint8_t>>(v.size() * sizeof(float));
  if (!v.empty()) std::memcpy(b->data(), v.data(), b->size());
  return b;
}

// BatchNormalization with constant statistics becomes y = x * scale + shift.
bool lower_batchnorm(Graph& g, Node& n) {
  if (n.op_type != "BatchNormalization") return false;
  check(n.outputs.size() == 1 && n.attr_int("training_mode", 0) == 0, ErrorKind::Unsupported,
        n.label(), ": training mode");
  for (size_t i = 1; i <= 4; ++i)
    if (!has_input(n, i) || !g.values[n.inputs[i]].is_constant()) return false;
  const float eps = n.attr_float("epsilon", 1e-5f);
  auto gamma = g.values[n.inputs[1]].as_floats(), beta = g.values[n.inputs[2]].as_floats();
  auto mean = g.values[n.inputs[3]].as_floats(), var = g.values[n.inputs[4]].as_floats();
  const size_t c = gamma.size();
  check(beta.size() == c && mean.size() == c && var.size() == c, ErrorKind::Shape, n.label(),
        ": scale, bias, mean and var differ in size");
  std::vector<float> scale(c), shift(c);
  for (size_t i = 0; i < c; ++i) {
    // Computed in double: the fold must not add error beyond the final float rounding.
    double s = gamma[i] / std::sqrt(static_cast<double>(var[i]) + eps);
    scale[i] = static_cast<float>(s);
    shift[i] = static_cast<float>(beta[i] - mean[i] * s);
  }
  const int64_t cc = static_cast<int64_t>(c);
  int si = g.add_constant(n.name + "/bn_scale", Shape{cc}, DType::F32, float_bytes(scale));
  int hi = g.add_constant(n.name + "/bn_shift", Shape{cc}, DType::F32, float_bytes(shift));
  n.op_type = "ChannelAffine";
  n.inputs = {n.inputs[0], si, hi};
  n.attrs.clear();
  return true;
}

bool all_inputs_constant(const Graph& g, const Node& n) {
  for (int i : n.inputs)
    if (i >= 0 && !g.values[i].is_constant()) return false;
  return true;
}

bool all_outputs_constant(const Graph& g, const Node& n) {
  for (int o : n.outputs)
    if (o >= 0 && !g.values[o].is_constant()) return false;
  return true;
}

// Runs a float32 node whose inputs are all constants on the CPU backend and turns
// its outputs into constants.
void fold_node(Graph& g, const Node& n, Layer& layer, CpuBackend& cpu) {
  std::vector<Tensor> ins(n.inputs.size()), outs(n.outputs.size());
  std::vector<const Tensor*> in_ptrs(n.inputs.size(), nullptr);
  std::vector<Tensor*> out_ptrs(n.outputs.size(), nullptr);
  for (size_t i = 0; i < n.inputs.size(); ++i) {
    if (n.inputs[i] < 0) continue;
    const Value& v = g.values[n.inputs[i]];
    ins[i] = Tensor{v.shape, v.dtype, const_cast<uint8_t*>(v.data->data())};
    in_ptrs[i] = &ins[i];
  }
  for (size_t o = 0; o < n.outputs.size(); ++o) {
    Value& v = g.values[n.outputs[o]];
    v.data = std::make_shared<std::vector<uint8_t>>(v.shape.numel() * dtype_size(v.dtype));
    outs[o] = Tensor{v.shape, v.dtype, v.data->data()};
    out_ptrs[o] = &outs[o];
  }
  std::vector<uint8_t> workspace(layer.workspace_bytes(cpu));
  layer.forward(cpu, in_ptrs.data(), out_ptrs.data(), workspace.data());
}

struct Uses {
  std::vector<int> producer;
  std::vector<std::vector<int>> consumers;
  std::vector<bool> pinned;  // graph outputs and kept names: must stay materialised
};

Uses uses_of(const Graph& g, const std::set<std::string>& keep) {
  Uses u{g.producers(), g.consumers(), std::vector<bool>(g.values.size(), false)};
  for (int o : g.outputs) u.pinned[o] = true;
  for (const auto& name : keep) {
    int id = g.find(name);
    if (id >= 0) u.pinned[id] = true;
  }
  return u;
}

// The node that alone consumes value v (and v is not pinned), or -1.
int sole_consumer(const Uses& u, int v) {
  if (v < 0 || u.pinned[v] || u.consumers[v].size() != 1) return -1;
  return u.consumers[v][0];
}

// Whether node n reads value v as exactly one of its inputs.
bool reads_once(const Node& n, int v) {
  return std::count(n.inputs.begin(), n.inputs.end(), v) == 1;
}

// The node making n's input v where n alone reads v, once (fusing the two then
// leaves no other reader of v), or -1.
int sole_reader_producer(const Uses& u, const Node& n, int v) {
  return sole_consumer(u, v) >= 0 && reads_once(n, v) ? u.producer[v] : -1;
}

// Conv nodes with X and W (an optional input left out is -1).
bool has_conv_operands(const Node& n) {
  return n.op_type == "Conv" && n.inputs.size() >= 2 && n.inputs[0] >= 0 && n.inputs[1] >= 0;
}

// A Conv with one group per input channel and [C, 1, kh, kw] weights.
bool is_depthwise_conv(const Graph& g, const Node& conv) {
  if (!has_conv_operands(conv)) return false;
  const Shape& x = g.values[conv.inputs[0]].shape;
  const Shape& w = g.values[conv.inputs[1]].shape;
  return x.rank() == 4 && w.rank() == 4 && conv.attr_int("group", 1) == x[1] && w[0] == x[1] &&
         w[1] == 1;
}

// A 1x1 Conv, stride 1, no padding (auto_pad pads nothing there), one group, one
// output, on input x with weights w.
bool is_pointwise_conv(const Node& conv, const Shape& x, const Shape& w) {
  const std::vector<int64_t> ones = {1, 1}, zeros = {0, 0, 0, 0};
  if (conv.op_type != "Conv" || conv.outputs.size() != 1 || conv.inputs.size() < 2 ||
      conv.attr_int("group", 1) != 1 || conv.attr_ints("strides", ones) != ones ||
      conv.attr_ints("dilations", ones) != ones || conv.attr_ints("pads", zeros) != zeros)
    return false;
  return x.rank() == 4 && w.rank() == 4 && w == Shape{w[0], x[1], 1, 1};
}

bool is_pointwise_conv(const Graph& g, const Node& conv) {
  return has_conv_operands(conv) &&
         is_pointwise_conv(conv, g.values[conv.inputs[0]].shape, g.values[conv.inputs[1]].shape);
}

void erase_marked(Graph& g) {
  std::vector<Node> kept;
  for (auto& n : g.nodes)
    if (!n.op_type.empty()) kept.push_back(std::move(n));
  g.nodes = std::move(kept);
}

// Pad(constant, spatial only) -> the window op's explicit pads: a Conv's when the
// value is 0; a MaxPool's when it is -inf (TF "SAME" max pooling, BiFPN's
// downsampling), with each pad smaller than the window so that no window is all
// padding (MaxPool's own padding never wins a max, like -inf) and floor rounding
// (ceil_mode's rule for a last window depends on where the padding is).
int fuse_pad_conv(Graph& g, const PassOptions& opt) {
  Uses u = uses_of(g, opt.keep);
  int count = 0;
  for (auto& pad : g.nodes) {
    if (pad.op_type != "Pad" || pad.attr_string("mode", "constant") != "constant") continue;
    int c = sole_consumer(u, pad.outputs[0]);
    if (c < 0 || (g.nodes[c].op_type != "Conv" && g.nodes[c].op_type != "MaxPool")) continue;
    Node& conv = g.nodes[c];
    const bool pool = conv.op_type == "MaxPool";
    if (conv.inputs[0] != pad.outputs[0]) continue;
    if (conv.attr_string("auto_pad", "NOTSET") != "NOTSET") continue;
    if (pool && (conv.attr_int("ceil_mode", 0) != 0 || conv.outputs.size() != 1)) continue;
    std::vector<int64_t> pads = pad.attr_ints("pads");
    float value = pad.attr_float("value", 0.f);
    if (g.opset >= 11) {
      if (!has_input(pad, 1) || !g.values[pad.inputs[1]].is_constant()) continue;
      if (has_input(pad, 3)) continue;  // explicit axes: rare, leave alone
      pads = g.values[pad.inputs[1]].as_ints();
      if (has_input(pad, 2) && g.values[pad.inputs[2]].shape.numel() > 0)
        value = g.values[pad.inputs[2]].as_floats()[0];
    }
    const bool value_fits = pool ? value == -std::numeric_limits<float>::infinity() : value == 0.f;
    if (!value_fits || pads.size() != 8) continue;
    if (pads[0] || pads[1] || pads[4] || pads[5]) continue;  // N or C padded
    bool negative = false;
    for (int64_t p : pads) negative = negative || p < 0;
    if (negative) continue;
    std::vector<int64_t> cp = conv.attr_ints("pads", {0, 0, 0, 0});
    if (pool) {
      const std::vector<int64_t> k = conv.attr_ints("kernel_shape");
      const std::vector<int64_t> d = conv.attr_ints("dilations", {1, 1});
      if (k.size() != 2 || d.size() != 2) continue;
      const int64_t extent_h = (k[0] - 1) * d[0] + 1, extent_w = (k[1] - 1) * d[1] + 1;
      if (cp[0] + pads[2] >= extent_h || cp[2] + pads[6] >= extent_h ||
          cp[1] + pads[3] >= extent_w || cp[3] + pads[7] >= extent_w)
        continue;
    }
    cp[0] += pads[2];
    cp[1] += pads[3];
    cp[2] += pads[6];
    cp[3] += pads[7];
    conv.attrs["pads"].kind = Attribute::Kind::Ints;
    conv.attrs["pads"].ints = cp;
    conv.attrs.erase("auto_pad");
    conv.inputs[0] = pad.inputs[0];
    pad.op_type.clear();
    ++count;
  }
  erase_marked(g);
  return count;
}

// Conv -> ChannelAffine (a lowered BatchNorm): W'[o] = W[o] * s[o], b' = b*s + t.
int fold_batchnorm(Graph& g, const PassOptions& opt) {
  Uses u = uses_of(g, opt.keep);
  int count = 0;
  for (auto& conv : g.nodes) {
    if (conv.op_type != "Conv" || conv.has("activation")) continue;
    int c = sole_consumer(u, conv.outputs[0]);
    if (c < 0 || g.nodes[c].op_type != "ChannelAffine") continue;
    Node& bn = g.nodes[c];
    if (bn.has("activation")) continue;
    const Value& w = g.values[conv.inputs[1]];
    if (!w.is_constant() || (has_input(conv, 2) && !g.values[conv.inputs[2]].is_constant()))
      continue;
    auto scale = g.values[bn.inputs[1]].as_floats(), shift = g.values[bn.inputs[2]].as_floats();
    const int64_t c_out = w.shape[0];
    if (static_cast<int64_t>(scale.size()) != c_out) continue;
    std::vector<float> wf = w.as_floats();
    const int64_t per = wf.size() / c_out;
    for (int64_t o = 0; o < c_out; ++o)
      for (int64_t i = 0; i < per; ++i) wf[o * per + i] *= scale[o];
    std::vector<float> bias(c_out, 0.f);
    if (has_input(conv, 2)) bias = g.values[conv.inputs[2]].as_floats();
    for (int64_t o = 0; o < c_out; ++o) bias[o] = bias[o] * scale[o] + shift[o];
    int wi = g.add_constant(conv.name + "/w_bn", w.shape, DType::F32, float_bytes(wf));
    int bi = g.add_constant(conv.name + "/b_bn", Shape{c_out}, DType::F32, float_bytes(bias));
    conv.inputs.resize(3);
    conv.inputs[1] = wi;
    conv.inputs[2] = bi;
    conv.outputs[0] = bn.outputs[0];
    bn.op_type.clear();
    ++count;
  }
  erase_marked(g);
  return count;
}

// BiFPN's fast normalised fusion, exported with its folded weights as
// Add(Mul(x0, w0), Mul(x1, w1)) (+ Mul(x2, w2)), becomes WeightedSum(x0, x1, ...).
// Terms are Muls by a constant scalar, or an earlier WeightedSum, used only here.
int fuse_weighted_sum(Graph& g, const PassOptions& opt) {
  int count = 0;
  bool changed = true;
  while (changed) {  // an Add of a new WeightedSum and a Mul folds on the next sweep
    changed = false;
    Uses u = uses_of(g, opt.keep);
    for (auto& add : g.nodes) {
      if (add.op_type != "Add" || add.has("activation") || add.inputs.size() != 2) continue;
      const Shape& out = g.values[add.outputs[0]].shape;
      std::vector<int> xs;
      std::vector<float> ws;
      std::vector<int> absorbed;
      bool ok = true;
      for (int v : add.inputs) {
        int p = u.producer[v];
        if (p < 0 || sole_consumer(u, v) < 0) { ok = false; break; }
        Node& t = g.nodes[p];
        if (t.op_type == "WeightedSum" && !t.has("activation")) {
          for (size_t i = 0; i < t.inputs.size(); ++i) xs.push_back(t.inputs[i]);
          for (float w : t.attr_floats("weights")) ws.push_back(w);
        } else if (t.op_type == "Mul") {
          int scalar = -1, x = -1;
          for (int k = 0; k < 2; ++k) {
            const Value& val = g.values[t.inputs[k]];
            if (val.is_constant() && val.dtype == DType::F32 && val.shape.numel() == 1) scalar = k;
          }
          if (scalar < 0) { ok = false; break; }
          x = t.inputs[1 - scalar];
          if (g.values[x].shape != out) { ok = false; break; }
          xs.push_back(x);
          ws.push_back(g.values[t.inputs[scalar]].as_floats()[0]);
        } else {
          ok = false;
          break;
        }
        absorbed.push_back(p);
      }
      if (!ok || xs.size() > static_cast<size_t>(kMaxFusionInputs) || absorbed[0] == absorbed[1])
        continue;
      for (int p : absorbed) g.nodes[p].op_type.clear();
      add.op_type = "WeightedSum";
      add.inputs = xs;
      add.attrs.clear();
      add.attrs["weights"].kind = Attribute::Kind::Floats;
      add.attrs["weights"].floats = ws;
      ++count;
      changed = true;
      break;  // producers and consumers changed: recompute them
    }
    erase_marked(g);
  }
  return count;
}

// The integer factor of a nearest resize along one axis that copies input o / f
// to output o for every o (so it can be read in place), or 0.
int64_t replication_factor(const ResizeParams& p, const ResizeAxis& a) {
  if (p.mode != ResizeMode::Nearest || a.in <= 0 || a.out % a.in != 0) return 0;
  const int64_t f = a.out / a.in;
  for (int64_t o = 0; o < a.out; ++o) {
    const ResizeTaps t = resize_axis_taps(p, a, o);
    if (t.outside || t.index[0] != o / f) return 0;
  }
  return f;
}

// WeightedSum input made by a MaxPool (ceil_mode 0, no Indices output) or by a
// nearest Resize that replicates each pixel an integer number of times, used only
// there (BiFPN's down- and upsampling, 24 of D0's 26): the WeightedSum reads the
// unresampled input (WeightedSumLayer's maxpool<i> / upsample<i>), so on CUDA one
// launch does what took two and the resampled tensor is never stored.
int fold_resample_into_weighted_sum(Graph& g, const PassOptions& opt) {
  Uses u = uses_of(g, opt.keep);
  int count = 0;
  for (size_t k = 0; k < g.nodes.size(); ++k) {
    if (g.nodes[k].op_type != "WeightedSum") continue;
    for (size_t i = 0; i < g.nodes[k].inputs.size(); ++i) {
      const int v = g.nodes[k].inputs[i], p = u.producer[v];
      if (p < 0 || sole_consumer(u, v) != static_cast<int>(k)) continue;
      Node& r = g.nodes[p];
      if (r.outputs.size() != 1 || g.values[r.inputs[0]].shape.rank() != 4) continue;
      Node& sum = g.nodes[k];
      if (r.op_type == "MaxPool") {
        if (r.attr_int("ceil_mode", 0) != 0) continue;  // the sum rounds its windows down
        Pool2dLayer pool;
        pool.build(r, g);
        WeightedSumLayer::attach_maxpool(sum, i, pool.params());
      } else if (r.op_type == "Resize" || r.op_type == "Upsample") {
        ResizeLayer resize;
        resize.build(r, g);
        const ResizeParams& q = resize.params();
        const int64_t fh =
            replication_factor(q, ResizeAxis{q.h, q.h_out, q.scale_h, q.roi[0], q.roi[2]});
        const int64_t fw =
            replication_factor(q, ResizeAxis{q.w, q.w_out, q.scale_w, q.roi[1], q.roi[3]});
        if (fh == 0 || fw == 0) continue;
        WeightedSumLayer::attach_upsample(sum, i, fh, fw);
      } else {
        continue;
      }
      sum.inputs[i] = r.inputs[0];
      r.op_type.clear();
      ++count;
    }
  }
  erase_marked(g);
  return count;
}

// Mul(x, Sigmoid(x)) -> Swish(x), in either operand order.
int fuse_swish(Graph& g, const PassOptions& opt) {
  Uses u = uses_of(g, opt.keep);
  int count = 0;
  for (auto& sig : g.nodes) {
    if (sig.op_type != "Sigmoid") continue;
    int c = sole_consumer(u, sig.outputs[0]);
    if (c < 0 || g.nodes[c].op_type != "Mul") continue;
    Node& mul = g.nodes[c];
    const int x = sig.inputs[0];
    if (!((mul.inputs[0] == x && mul.inputs[1] == sig.outputs[0]) ||
          (mul.inputs[1] == x && mul.inputs[0] == sig.outputs[0])))
      continue;
    sig.op_type = "Swish";
    sig.outputs[0] = mul.outputs[0];
    mul.op_type.clear();
    ++count;
  }
  erase_marked(g);
  return count;
}

Activation standalone_activation(const Graph& g, const Node& n, bool* ok) {
  static const std::map<std::string, ActKind> kinds = {
      {"Relu", ActKind::Relu}, {"Sigmoid", ActKind::Sigmoid}, {"Swish", ActKind::Swish},
      {"Clip", ActKind::Clip}, {"Tanh", ActKind::Tanh}, {"HardSwish", ActKind::HardSwish},
      {"HardSigmoid", ActKind::HardSigmoid}, {"LeakyRelu", ActKind::LeakyRelu}};
  Activation a;
  *ok = false;
  auto it = kinds.find(n.op_type);
  if (it == kinds.end()) return a;
  a.kind = it->second;
  if (a.kind == ActKind::Clip) {
    a.alpha = n.attr_float("min", -INFINITY);
    a.beta = n.attr_float("max", INFINITY);
    for (size_t i = 1; i <= 2; ++i) {
      if (!has_input(n, i)) continue;
      const Value& v = g.values[n.inputs[i]];
      if (!v.is_constant() || v.shape.numel() != 1) return a;
      (i == 1 ? a.alpha : a.beta) = v.as_floats()[0];
    }
  } else if (a.kind == ActKind::HardSigmoid) {
    a.alpha = n.attr_float("alpha", 0.2f);
    a.beta = n.attr_float("beta", 0.5f);
  } else if (a.kind == ActKind::LeakyRelu) {
    a.alpha = n.attr_float("alpha", 0.01f);
  }
  *ok = true;
  return a;
}

// Producer + activation -> producer with the activation applied in its epilogue.
int fuse_activations(Graph& g, const PassOptions& opt) {
  static const std::set<std::string> producers = {"Conv", "Gemm", "ChannelAffine", "Add",
                                                  "Sub", "Mul", "Div", "WeightedSum"};
  Uses u = uses_of(g, opt.keep);
  int count = 0;
  for (auto& p : g.nodes) {
    if (!producers.count(p.op_type) || p.has("activation") || p.outputs.size() != 1) continue;
    int c = sole_consumer(u, p.outputs[0]);
    if (c < 0) continue;
    Node& act = g.nodes[c];
    bool ok = false;
    Activation a = standalone_activation(g, act, &ok);
    if (!ok || act.inputs[0] != p.outputs[0]) continue;
    attach_activation(p, a);
    p.outputs[0] = act.outputs[0];
    act.op_type.clear();
    ++count;
  }
  erase_marked(g);
  return count;
}

// Squeeze-excitation's gate, Mul(x, s) with s [1, C, 1, 1], feeding only a 1x1
// convolution: Conv(x * s, W) = Conv(x, W * s), so the gate scales the weights'
// input channels (Cout x C values) instead of the whole activation (C x H x W):
// in the early blocks, one pass over the largest tensor of the block less. The Mul node is kept
// and rewired to make the gated weights. Batch 1 only: with N > 1 each image has
// its own gate.
int fold_channel_gate(Graph& g, const PassOptions& opt) {
  Uses u = uses_of(g, opt.keep);
  int count = 0;
  for (auto& mul : g.nodes) {
    if (mul.op_type != "Mul" || mul.has("activation") || mul.inputs.size() != 2) continue;
    int c = sole_consumer(u, mul.outputs[0]);
    if (c < 0 || g.nodes[c].op_type != "Conv") continue;
    Node& conv = g.nodes[c];
    if (conv.inputs[0] != mul.outputs[0]) continue;
    const Shape& out = g.values[mul.outputs[0]].shape;
    int gate = -1;
    for (int k = 0; k < 2; ++k) {
      const Shape& s = g.values[mul.inputs[k]].shape;
      if (out.rank() == 4 && out[0] == 1 && s == Shape{1, out[1], 1, 1} &&
          g.values[mul.inputs[1 - k]].shape == out && out[2] * out[3] > 1)
        gate = k;
    }
    if (gate < 0) continue;
    const Shape& w = g.values[conv.inputs[1]].shape;
    const std::vector<int64_t> ones = {1, 1}, zeros = {0, 0, 0, 0};
    // Worth it only when the weights are the smaller tensor: Cout < H * W (not so
    // in the last stages of B0, 7x7 maps feeding 192 or 320 channels).
    if (w != Shape{w[0], out[1], 1, 1} || w[0] >= out[2] * out[3] ||
        conv.attr_int("group", 1) != 1 || conv.attr_ints("strides", ones) != ones ||
        conv.attr_ints("pads", zeros) != zeros || conv.attr_string("auto_pad", "NOTSET") != "NOTSET")
      continue;
    const int x = mul.inputs[1 - gate], s = mul.inputs[gate];
    const int gated = g.add_value(conv.name + "/w_gated");
    mul.inputs = {conv.inputs[1], s};  // [Cout, C, 1, 1] * [1, C, 1, 1]
    mul.outputs[0] = gated;
    conv.inputs[0] = x;
    conv.inputs[1] = gated;
    ++count;
  }
  return count;
}

// Squeeze-excitation's pool of a depthwise conv's output, or a classifier's pool of
// its last 1x1 conv's, ReduceMean (or GlobalAveragePool) of [N, C, H, W] to [N, C,
// 1, 1]: the conv makes the means as a second output while each output plane is
// still in cache, instead of the reduction reading the whole output again (D0: 2.3
// of ~65 ms on 2 threads; CUDA: one launch fewer). The conv's output keeps its other
// consumers.
int fuse_channel_mean(Graph& g) {
  const std::vector<int> producer = g.producers();
  int count = 0;
  for (auto& r : g.nodes) {
    if ((r.op_type != "ReduceMean" && r.op_type != "GlobalAveragePool") || r.inputs.empty() ||
        r.outputs.size() != 1)
      continue;
    const int v = r.inputs[0];
    const Shape& in = g.values[v].shape;
    // Reducing adjacent axes of [N, C, H, W] to [N, C, 1, 1] averages each plane.
    if (in.rank() != 4 || g.values[r.outputs[0]].shape != Shape{in[0], in[1], 1, 1}) continue;
    const int p = producer[v];
    if (p < 0) continue;
    Node& conv = g.nodes[p];
    if (!(is_depthwise_conv(g, conv) || is_pointwise_conv(g, conv)) ||
        conv.outputs.size() != 1)
      continue;
    conv.outputs.push_back(r.outputs[0]);
    r.op_type.clear();
    ++count;
  }
  erase_marked(g);
  return count;
}

// Flatten or Reshape whose output only a Gemm reads, as its A, of a row-major 2-D
// shape: the Gemm reads the reshape's input as that shape (attribute "a_shape"), as
// the bytes are the same, instead of a step copying them (a classifier's Flatten
// after its pool: one device copy fewer on CUDA).
int fold_reshape_into_gemm(Graph& g, const PassOptions& opt) {
  Uses u = uses_of(g, opt.keep);
  int count = 0;
  for (Node& reshape : g.nodes) {
    if ((reshape.op_type != "Flatten" && reshape.op_type != "Reshape") ||
        reshape.outputs.size() != 1)
      continue;
    const int v = reshape.outputs[0], c = sole_consumer(u, v);
    if (c < 0) continue;
    Node& gemm = g.nodes[c];
    const Shape& a = g.values[v].shape;
    if (gemm.op_type != "Gemm" || gemm.inputs[0] != v || gemm.inputs.size() < 2 ||
        gemm.inputs[1] == v || (gemm.inputs.size() > 2 && gemm.inputs[2] == v) ||
        a.rank() != 2 || gemm.has("a_shape"))
      continue;
    gemm.inputs[0] = reshape.inputs[0];
    gemm.attrs["a_shape"].kind = Attribute::Kind::Ints;
    gemm.attrs["a_shape"].ints = a.dims;
    reshape.op_type.clear();
    ++count;
  }
  erase_marked(g);
  return count;
}

// Add(c, r) where c is the only use of a Conv's output, the Conv has no activation
// and r has the same shape (MBConv's skip connection around its projection conv):
// the Conv takes r as a fourth input and adds it as its outputs are stored
// (Backend::conv2d_residual), instead of an Add that reads both tensors again and
// writes a third. The Add's output value stays, now made by the Conv; stage
// outputs named there survive.
int fuse_residual_add(Graph& g, const PassOptions& opt) {
  Uses u = uses_of(g, opt.keep);
  int count = 0;
  for (auto& add : g.nodes) {
    if (add.op_type != "Add" || add.has("activation") || add.inputs.size() != 2 ||
        add.outputs.size() != 1 || add.inputs[0] == add.inputs[1])
      continue;
    const Shape& out = g.values[add.outputs[0]].shape;
    if (g.values[add.inputs[0]].shape != out || g.values[add.inputs[1]].shape != out) continue;
    for (int k = 0; k < 2; ++k) {
      const int v = add.inputs[k], p = u.producer[v];
      if (p < 0 || sole_consumer(u, v) < 0) continue;
      Node& conv = g.nodes[p];
      if (conv.op_type != "Conv" || conv.has("activation") || conv.outputs.size() != 1 ||
          conv.inputs.size() < 2 || conv.inputs.size() > 3)
        continue;
      conv.inputs.resize(3, -1);  // no bias: input 2 stays missing
      conv.inputs.push_back(add.inputs[1 - k]);
      conv.outputs[0] = add.outputs[0];
      add.op_type.clear();
      ++count;
      break;
    }
  }
  erase_marked(g);
  return count;
}

// Whether pw (a pointwise Conv, no residual) and dw (a depthwise Conv, no residual,
// reading only pw's output, which nothing else reads) make one PointwiseDepthwiseConv
// (fuse_pointwise_depthwise below).
bool pointwise_depthwise_pair(const Graph& g, const Uses& u, const Node& pw, const Node& dw,
                              const PassOptions& opt) {
  if (!is_pointwise_conv(g, pw) || has_input(pw, 3)) return false;
  const Shape& x = g.values[pw.inputs[0]].shape;
  if (x[2] * x[3] > opt.pointwise_depthwise_max_plane) return false;
  const int c = sole_consumer(u, pw.outputs[0]);
  return c >= 0 && &g.nodes[c] == &dw && is_depthwise_conv(g, dw) &&
         dw.inputs[0] == pw.outputs[0] && !has_input(dw, 3) && reads_once(dw, pw.outputs[0]);
}

// A depthwise Conv (no channel means, no residual) whose output only a pointwise
// Conv reads: one SeparableConv node (Backend::separable_conv2d), so that a backend
// can make the depthwise outputs as the pointwise conv reads them instead of storing
// and reloading them (CUDA: one launch instead of two). EfficientDet's BiFPN and
// heads are made of these pairs, as are MobileNet-style blocks without SE, where
// with opt.prefer_pointwise_depthwise a depthwise conv after an expansion is left to
// fuse with the expansion instead.
int fuse_separable_conv(Graph& g, const PassOptions& opt) {
  Uses u = uses_of(g, opt.keep);
  const std::vector<int> producer = g.producers();
  int count = 0;
  for (size_t k = 0; k < g.nodes.size(); ++k) {
    Node& dw = g.nodes[k];
    if (!is_depthwise_conv(g, dw) || dw.outputs.size() != 1 || has_input(dw, 3)) continue;
    const int c = sole_consumer(u, dw.outputs[0]);
    if (c < 0) continue;
    Node& pw = g.nodes[c];
    if (!is_pointwise_conv(g, pw) || pw.inputs[0] != dw.outputs[0]) continue;
    const int expansion = producer[dw.inputs[0]];
    if (opt.prefer_pointwise_depthwise && expansion >= 0 &&
        pointwise_depthwise_pair(g, u, g.nodes[expansion], dw, opt))
      continue;
    g.nodes[c] = SeparableConvLayer::fuse(dw, pw);
    dw.op_type.clear();
    ++count;
  }
  erase_marked(g);
  return count;
}

// A WeightedSum (BiFPN's fusion, its resampling folded in) that only a SeparableConv
// reads, as that conv's input: one WeightedSumSeparableConv node
// (Backend::weighted_sum_separable_conv2d), so that a backend can compute the fused
// values as the depthwise half reads them instead of storing and reloading them
// (CUDA: one launch fewer on each BiFPN node, all on D0's longest chain).
int fuse_weighted_sum_separable(Graph& g, const PassOptions& opt) {
  Uses u = uses_of(g, opt.keep);
  int count = 0;
  for (Node& conv : g.nodes) {
    if (conv.op_type != "SeparableConv") continue;
    const int p = sole_reader_producer(u, conv, conv.inputs[0]);
    if (p < 0) continue;  // the residual too: the sum must be stored
    Node& sum = g.nodes[p];
    if (sum.op_type != "WeightedSum" || sum.outputs.size() != 1) continue;
    conv = WeightedSumSeparableConvLayer::fuse(sum, conv);
    sum.op_type.clear();
    ++count;
  }
  erase_marked(g);
  return count;
}

// A SeparableConv, or a chain of them, without residual whose output only a
// SeparableConv reads, as its input: one SeparableConvChain node
// (Backend::separable_conv_chain), so that a backend can apply each link's 1x1 bias
// and activation as the next link's depthwise half reads its product (CUDA: no
// epilogue launch between links). EfficientDet's class and box nets are chains of
// four on each level: three SeparableConvs with SiLU, then the prediction. Counts
// the links joined.
int fuse_separable_chain(Graph& g, const PassOptions& opt) {
  Uses u = uses_of(g, opt.keep);
  int count = 0;
  for (Node& next : g.nodes) {
    if (next.op_type != "SeparableConv") continue;
    const int p = sole_reader_producer(u, next, next.inputs[0]);
    if (p < 0) continue;
    // A chain fused on an earlier iteration is at its last link's index: chains grow.
    Node& prev = g.nodes[p];
    if ((prev.op_type != "SeparableConv" && prev.op_type != "SeparableConvChain") ||
        prev.outputs.size() != 1 || has_input(prev, prev.inputs.size() - 1))
      continue;
    next = SeparableConvChainLayer::fuse(prev, next);
    prev.op_type.clear();
    ++count;
  }
  erase_marked(g);
  return count;
}

// A 1x1 Conv over [N, C, 1, 1] maps with constant weights (and bias, if any), no
// residual and one output: a fully connected layer of squeeze-excitation.
bool is_pointwise_fc(const Graph& g, const Node& conv) {
  if (!is_pointwise_conv(g, conv) || conv.inputs.size() > 3) return false;
  const Shape& x = g.values[conv.inputs[0]].shape;
  const Value& w = g.values[conv.inputs[1]];
  return x.rank() == 4 && x[2] == 1 && x[3] == 1 && w.is_constant() &&
         (!has_input(conv, 2) || g.values[conv.inputs[2]].is_constant());
}

// Squeeze-excitation after its pool: Conv 1x1 (reduce, with its activation) ->
// Conv 1x1 (expand, with the gate's sigmoid) -> Mul(target, gate), the gate
// broadcast along the target's channel axis (the expanded activation, or the
// projection weights fold_channel_gate moved it to), with each intermediate used
// once: one SqueezeExcitation node (Backend::squeeze_excitation). Five kernel
// launches become two on CUDA; on the CPU three calls into OpenBLAS and the
// broadcast become one.
int fuse_squeeze_excitation(Graph& g, const PassOptions& opt) {
  Uses u = uses_of(g, opt.keep);
  int count = 0;
  for (size_t k = 0; k < g.nodes.size(); ++k) {
    Node& mul = g.nodes[k];
    if (mul.op_type != "Mul" || mul.has("activation") || mul.inputs.size() != 2 ||
        mul.outputs.size() != 1)
      continue;
    for (int side = 0; side < 2; ++side) {
      const int gate = mul.inputs[side], target = mul.inputs[1 - side];
      const int expand_node = u.producer[gate];
      if (expand_node < 0 || sole_consumer(u, gate) != static_cast<int>(k)) continue;
      const Node& expand = g.nodes[expand_node];
      if (!is_pointwise_fc(g, expand)) continue;
      const int hidden = expand.inputs[0], reduce_node = u.producer[hidden];
      if (reduce_node < 0 || sole_consumer(u, hidden) != expand_node) continue;
      const Node& reduce = g.nodes[reduce_node];
      if (!is_pointwise_fc(g, reduce)) continue;
      const Shape& mean = g.values[reduce.inputs[0]].shape;
      const Shape& gs = g.values[gate].shape;
      const Shape& ts = g.values[target].shape;
      // [N, C, 1, 1] broadcast over a rank-4 target is along its channel axis. (The
      // Mul's own output shape may not be inferred yet: fold_channel_gate's isn't.)
      if (gs != mean || ts.rank() != 4 || ts[1] != gs[1] || (gs[0] != 1 && gs[0] != ts[0]))
        continue;
      Node fused;
      fused.op_type = "SqueezeExcitation";
      fused.name = mul.name;
      fused.inputs = {reduce.inputs[0], reduce.inputs[1], optional_input(reduce, 2),
                      expand.inputs[1], optional_input(expand, 2), target};
      fused.outputs = mul.outputs;
      attach_activation(fused, fused_activation(reduce), "reduce_activation");
      attach_activation(fused, fused_activation(expand), "expand_activation");
      g.nodes[reduce_node].op_type.clear();
      g.nodes[expand_node].op_type.clear();
      g.nodes[k] = fused;
      ++count;
      break;
    }
  }
  erase_marked(g);
  return count;
}

// A pointwise Conv (no residual) whose output only a depthwise Conv (no residual)
// reads: one PointwiseDepthwiseConv node (Backend::pointwise_depthwise_conv2d), so
// that a backend can apply the 1x1 conv's bias and activation as the depthwise conv
// reads its product (CUDA: no epilogue launch, and the largest tensor of an MBConv
// block is written and read once instead of twice each; the CPU: a few channels at
// a time, so the product is never whole). Where a backend holds the whole product
// (in the workspace), one node holds the 1x1 conv's input, that product and the
// depthwise output at once, where two steps held two of them each: on planes over
// opt.pointwise_depthwise_max_plane (the early blocks, which set the arena's peak:
// B0's 112x112, D0's 256x256 and 128x128) that would raise the peak, so those stay
// two nodes there. Runs after fuse_separable_conv: depthwise convs a 1x1 conv reads
// stay in SeparableConvs.
int fuse_pointwise_depthwise(Graph& g, const PassOptions& opt) {
  Uses u = uses_of(g, opt.keep);
  int count = 0;
  for (Node& pw : g.nodes) {
    if (!is_pointwise_conv(g, pw)) continue;
    const int c = sole_consumer(u, pw.outputs[0]);
    if (c < 0 || !pointwise_depthwise_pair(g, u, pw, g.nodes[c], opt)) continue;
    Node& dw = g.nodes[c];
    dw = PointwiseDepthwiseConvLayer::fuse(pw, dw);
    pw.op_type.clear();
    ++count;
  }
  erase_marked(g);
  return count;
}

// A SqueezeExcitation whose output only a pointwise Conv reads, as its weights (the
// gate folded into them by fold_channel_gate) or as its input: one
// SqueezeExcitationConv node (Backend::squeeze_excitation_conv2d), so that a
// backend can start the conv's output from its bias and residual while the gate is
// computed (CUDA: the squeeze-excitation kernel fills it, and cuBLAS adds its
// product: no epilogue launch after each MBConv projection).
int fuse_squeeze_excitation_conv(Graph& g, const PassOptions& opt) {
  Uses u = uses_of(g, opt.keep);
  int count = 0;
  for (Node& se : g.nodes) {
    if (se.op_type != "SqueezeExcitation" || se.outputs.size() != 1) continue;
    const int gated = se.outputs[0], c = sole_consumer(u, gated);
    if (c < 0) continue;
    Node& conv = g.nodes[c];
    if (conv.op_type != "Conv" || conv.inputs.size() < 2 || conv.inputs.size() > 4 ||
        !reads_once(conv, gated) ||
        (conv.inputs[0] != gated && conv.inputs[1] != gated))
      continue;
    // The gated value has the target's shape (fold_channel_gate's is not inferred).
    const Shape& target = g.values[se.inputs[5]].shape;
    const bool gates_weights = conv.inputs[1] == gated;
    const Shape& x = gates_weights ? g.values[conv.inputs[0]].shape : target;
    const Shape& w = gates_weights ? target : g.values[conv.inputs[1]].shape;
    if (!is_pointwise_conv(conv, x, w)) continue;
    conv = SqueezeExcitationConvLayer::fuse(se, conv);
    se.op_type.clear();
    ++count;
  }
  erase_marked(g);
  return count;
}

}  // namespace

void infer_shapes(Graph& g) {
  for (const Node& n : g.nodes) create_layer(n)->build(n, g);
}

PassOptions pass_options_for(const Backend& backend) {
  PassOptions opt;
  opt.pointwise_depthwise_max_plane = backend.pointwise_depthwise_max_plane();
  opt.prefer_pointwise_depthwise = backend.prefers_pointwise_depthwise();
  return opt;
}

PassStats prepare_graph(Graph& g, const PassOptions& opt) {
  PassStats stats;
  CpuBackend cpu(1);
  for (auto& n : g.nodes) {
    lower_batchnorm(g, n);
    auto layer = create_layer(n);
    layer->build(n, g);
    if (all_outputs_constant(g, n)) {  // Constant, Shape, shape arithmetic
      n.op_type.clear();
      ++stats.folded;
      continue;
    }
    if (!opt.fold_constants || !all_inputs_constant(g, n)) continue;
    bool floats = true;
    for (int o : n.outputs) floats = floats && (o < 0 || g.values[o].dtype == DType::F32);
    for (int i : n.inputs) floats = floats && (i < 0 || g.values[i].dtype == DType::F32);
    if (!floats) continue;
    fold_node(g, n, *layer, cpu);
    n.op_type.clear();
    ++stats.folded;
  }
  erase_marked(g);
  if (opt.fuse_pad_conv) stats.pad_conv = fuse_pad_conv(g, opt);
  if (opt.fold_batchnorm) stats.batchnorm = fold_batchnorm(g, opt);
  if (opt.fuse_swish) stats.swish = fuse_swish(g, opt);
  if (opt.fuse_weighted_sum) stats.weighted_sum = fuse_weighted_sum(g, opt);
  if (opt.fuse_activations) stats.activations = fuse_activations(g, opt);
  if (opt.fold_resample) stats.resample = fold_resample_into_weighted_sum(g, opt);
  if (opt.fold_channel_gate) stats.channel_gate = fold_channel_gate(g, opt);
  if (opt.fuse_channel_mean) stats.channel_mean = fuse_channel_mean(g);
  if (opt.fold_reshape_into_gemm) stats.reshape_gemm = fold_reshape_into_gemm(g, opt);
  if (opt.fuse_residual_add) stats.residual_add = fuse_residual_add(g, opt);
  if (opt.fuse_squeeze_excitation)
    stats.squeeze_excitation = fuse_squeeze_excitation(g, opt);
  if (opt.fuse_squeeze_excitation_conv)
    stats.squeeze_excitation_conv = fuse_squeeze_excitation_conv(g, opt);
  if (opt.fuse_separable_conv) stats.separable_conv = fuse_separable_conv(g, opt);
  if (opt.fuse_weighted_sum_separable)
    stats.weighted_sum_separable = fuse_weighted_sum_separable(g, opt);
  if (opt.fuse_separable_chain) stats.separable_chain = fuse_separable_chain(g, opt);
  if (opt.fuse_pointwise_depthwise)
    stats.pointwise_depthwise = fuse_pointwise_depthwise(g, opt);
  g.remove_dead();
  g.sort_topologically();
  g.order_readers_together();
  infer_shapes(g);  // re-check every fused node against its new attributes
  return stats;
}

}  // namespace repshare
