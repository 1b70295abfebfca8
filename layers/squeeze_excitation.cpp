// SqueezeExcitation: repshare's fused squeeze-excitation after its pool (made by the
// fuse_squeeze_excitation pass from two 1x1 convs on [N, C, 1, 1] and the Mul that
// applies the gate). Inputs: mean [N, C, 1, 1], w_reduce [Cse, C, 1, 1], b_reduce
// [Cse] (optional), w_expand [C, Cse, 1, 1], b_expand [C] (optional), target
// [outer, C, ...]; output target * gate, target's shape. Attributes
// reduce_activation* and expand_activation* are the convs' fused activations.
// SqueezeExcitationConv: the SqueezeExcitation and the conv that alone reads it.
#include "engine/error.h"
#include "layers/layers.h"

namespace repshare {

Shape SqueezeExcitationLayer::se_params(const Node& n, const Graph& g,
                                        SqueezeExcitationParams& p) {
  for (size_t i : {0, 1, 3, 5}) require_f32(g, n, i);
  const Shape& mean = input_value(g, n, 0).shape;
  const Shape& wr = input_value(g, n, 1).shape;
  const Shape& we = input_value(g, n, 3).shape;
  const Shape& target = input_value(g, n, 5).shape;
  check(mean.rank() == 4 && mean[2] == 1 && mean[3] == 1, ErrorKind::Shape, n.label(),
        ": mean ", mean.str(), " is not [N, C, 1, 1]");
  p = SqueezeExcitationParams();
  p.n = mean[0];
  p.c = mean[1];
  p.c_se = wr.rank() == 4 ? wr[0] : 0;
  check(wr == Shape{p.c_se, p.c, 1, 1} && we == Shape{p.c, p.c_se, 1, 1}, ErrorKind::Shape,
        n.label(), ": weights ", wr.str(), " and ", we.str(), " do not squeeze ", p.c,
        " channels and expand them back");
  check(!has_input(n, 2) || input_value(g, n, 2).shape.numel() == p.c_se, ErrorKind::Shape,
        n.label(), ": reduce bias is not [", p.c_se, "]");
  check(!has_input(n, 4) || input_value(g, n, 4).shape.numel() == p.c, ErrorKind::Shape,
        n.label(), ": expand bias is not [", p.c, "]");
  check(target.rank() >= 2 && target[1] == p.c && (p.n == 1 || target[0] == p.n),
        ErrorKind::Shape, n.label(), ": the gate of ", p.n, " image(s) x ", p.c,
        " channels does not apply to ", target.str());
  p.outer = target[0];
  p.inner = target.numel() / std::max<int64_t>(1, p.outer * p.c);
  p.act_reduce = fused_activation(n, "reduce_activation");
  p.act_expand = fused_activation(n, "expand_activation");
  return target;
}

void SqueezeExcitationLayer::build(const Node& n, Graph& g) {
  set_output(g, n, 0, se_params(n, g, p_));
}

size_t SqueezeExcitationLayer::workspace_bytes(const Backend& b) const {
  return b.squeeze_excitation_workspace(p_);
}

void SqueezeExcitationLayer::forward(Backend& b, const Tensor* const* in, Tensor* const* out,
                                     void* ws) {
  b.squeeze_excitation(p_, *in[0], *in[1], in[2], *in[3], in[4], *in[5], *out[0], ws);
}

namespace {

const char kSePrefix[] = "se_";
constexpr size_t kConvOperand = 6, kConvBias = 7, kConvResidual = 8;

// The SqueezeExcitation inside a SqueezeExcitationConv node, as a node of its own,
// with its six inputs (no outputs).
Node se_part(const Node& n) {
  Node se = folded_part(n, "SqueezeExcitation", kSePrefix, "se");
  se.inputs.assign(n.inputs.begin(), n.inputs.begin() + kConvOperand);
  return se;
}

}  // namespace

Node SqueezeExcitationConvLayer::fuse(const Node& se, const Node& conv) {
  const bool gates_weights = conv.inputs[1] == se.outputs[0];
  Node f;
  f.op_type = "SqueezeExcitationConv";
  f.name = conv.name;
  f.inputs = se.inputs;
  f.inputs.resize(kConvOperand, -1);
  f.inputs.push_back(conv.inputs[gates_weights ? 0 : 1]);
  f.inputs.push_back(optional_input(conv, 2));
  f.inputs.push_back(optional_input(conv, 3));
  f.outputs = conv.outputs;
  f.attrs = conv.attrs;
  for (const auto& a : se.attrs) f.attrs[kSePrefix + a.first] = a.second;
  f.attrs["gates_weights"].kind = Attribute::Kind::Int;
  f.attrs["gates_weights"].i = gates_weights ? 1 : 0;
  return f;
}

void SqueezeExcitationConvLayer::build(const Node& n, Graph& g) {
  const Shape gated = SqueezeExcitationLayer::se_params(se_part(n), g, se_);
  require_f32(g, n, kConvOperand);
  gates_weights_ = n.attr_int("gates_weights", 0) != 0;
  const Shape& other = input_value(g, n, kConvOperand).shape;
  conv_ = gates_weights_ ? conv2d_params(n, other, gated) : conv2d_params(n, gated, other);
  const Shape y = conv_.output_shape();
  check_conv_bias(n, g, conv_, kConvBias);
  check_conv_residual(n, g, conv_, kConvResidual, y);
  set_output(g, n, 0, y);
}

size_t SqueezeExcitationConvLayer::workspace_bytes(const Backend& b) const {
  return b.squeeze_excitation_conv2d_workspace(se_, conv_);
}

bool SqueezeExcitationConvLayer::stores_output_f32(const Backend& b) const {
  return b.conv2d_stores_f32(conv_);
}

void SqueezeExcitationConvLayer::forward(Backend& b, const Tensor* const* in,
                                         Tensor* const* out, void* ws) {
  b.squeeze_excitation_conv2d(se_, conv_, gates_weights_, *in[0], *in[1], in[2], *in[3], in[4],
                              *in[5], *in[kConvOperand], in[kConvBias], in[kConvResidual],
                              *out[0], ws);
}

}  // namespace repshare
