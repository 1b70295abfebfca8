// WeightedSum: y = act(sum_i w_i x_i), the form BiFPN's fast normalised fusion
// takes once its relu(w)/(sum relu(w) + eps) weights are folded at load.
#include "engine/error.h"
#include "layers/layers.h"

namespace repshare {

void WeightedSumLayer::build(const Node& n, Graph& g) {
  p_ = WeightedSumParams();
  auto w = n.attr_floats("weights");
  check(w.size() == n.inputs.size() && !w.empty() && w.size() <= kMaxFusionInputs,
        ErrorKind::Malformed, n.label(), ": ", w.size(), " weights for ", n.inputs.size(),
        " inputs (at most ", kMaxFusionInputs, ")");
  const Shape& x = input_value(g, n, 0).shape;
  for (size_t i = 0; i < w.size(); ++i) {
    require_f32(g, n, i);
    check(input_value(g, n, i).shape == x, ErrorKind::Shape, n.label(), ": input ", i, " is ",
          input_value(g, n, i).shape.str(), ", expected ", x.str());
    p_.weights[i] = w[i];
  }
  p_.count = static_cast<int>(w.size());
  p_.numel = x.numel();
  p_.act = fused_activation(n);
  set_output(g, n, 0, x);
}

void WeightedSumLayer::forward(Backend& b, const Tensor* const* in, Tensor* const* out, void*) {
  b.weighted_sum(p_, in, *out[0]);
}

}  // namespace repshare
