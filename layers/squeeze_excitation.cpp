// SqueezeExcitation: repshare's fused squeeze-excitation after its pool (made by the
// fuse_squeeze_excitation pass from two 1x1 convs on [N, C, 1, 1] and the Mul that
// applies the gate). Inputs: mean [N, C, 1, 1], w_reduce [Cse, C, 1, 1], b_reduce
// [Cse] (optional), w_expand [C, Cse, 1, 1], b_expand [C] (optional), target
// [outer, C, ...]; output target * gate, target's shape. Attributes
// reduce_activation* and expand_activation* are the convs' fused activations.
#include "engine/error.h"
#include "layers/layers.h"

namespace repshare {

void SqueezeExcitationLayer::build(const Node& n, Graph& g) {
  for (size_t i : {0, 1, 3, 5}) require_f32(g, n, i);
  const Shape& mean = input_value(g, n, 0).shape;
  const Shape& wr = input_value(g, n, 1).shape;
  const Shape& we = input_value(g, n, 3).shape;
  const Shape& target = input_value(g, n, 5).shape;
  check(mean.rank() == 4 && mean[2] == 1 && mean[3] == 1, ErrorKind::Shape, n.label(),
        ": mean ", mean.str(), " is not [N, C, 1, 1]");
  p_ = SqueezeExcitationParams();
  p_.n = mean[0];
  p_.c = mean[1];
  p_.c_se = wr.rank() == 4 ? wr[0] : 0;
  check(wr == Shape{p_.c_se, p_.c, 1, 1} && we == Shape{p_.c, p_.c_se, 1, 1}, ErrorKind::Shape,
        n.label(), ": weights ", wr.str(), " and ", we.str(), " do not squeeze ", p_.c,
        " channels and expand them back");
  has_b_reduce_ = has_input(n, 2);
  has_b_expand_ = has_input(n, 4);
  check(!has_b_reduce_ || input_value(g, n, 2).shape.numel() == p_.c_se, ErrorKind::Shape,
        n.label(), ": reduce bias is not [", p_.c_se, "]");
  check(!has_b_expand_ || input_value(g, n, 4).shape.numel() == p_.c, ErrorKind::Shape,
        n.label(), ": expand bias is not [", p_.c, "]");
  check(target.rank() >= 2 && target[1] == p_.c && (p_.n == 1 || target[0] == p_.n),
        ErrorKind::Shape, n.label(), ": the gate of ", p_.n, " image(s) x ", p_.c,
        " channels does not apply to ", target.str());
  p_.outer = target[0];
  p_.inner = target.numel() / std::max<int64_t>(1, p_.outer * p_.c);
  p_.act_reduce = fused_activation(n, "reduce_activation");
  p_.act_expand = fused_activation(n, "expand_activation");
  set_output(g, n, 0, target);
}

size_t SqueezeExcitationLayer::workspace_bytes(const Backend& b) const {
  return b.squeeze_excitation_workspace(p_);
}

void SqueezeExcitationLayer::forward(Backend& b, const Tensor* const* in, Tensor* const* out,
                                     void* ws) {
  b.squeeze_excitation(p_, *in[0], *in[1], has_b_reduce_ ? in[2] : nullptr, *in[3],
                       has_b_expand_ ? in[4] : nullptr, *in[5], *out[0], ws);
}

}  // namespace repshare
