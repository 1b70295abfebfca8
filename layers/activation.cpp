// Unary activations and elementwise math.
#include <limits>
#include <map>

#include "engine/error.h"
#include "layers/layers.h"

namespace repshare {

void ActivationLayer::build(const Node& n, Graph& g) {
  require_f32(g, n, 0);
  static const std::map<std::string, ActKind> kinds = {
      {"Relu", ActKind::Relu},         {"Sigmoid", ActKind::Sigmoid},
      {"Tanh", ActKind::Tanh},         {"Clip", ActKind::Clip},
      {"LeakyRelu", ActKind::LeakyRelu}, {"HardSigmoid", ActKind::HardSigmoid},
      {"HardSwish", ActKind::HardSwish}, {"Elu", ActKind::Elu},
      {"Exp", ActKind::Exp},           {"Log", ActKind::Log},
      {"Sqrt", ActKind::Sqrt},         {"Neg", ActKind::Neg},
      {"Abs", ActKind::Abs},           {"Reciprocal", ActKind::Reciprocal},
      {"Softplus", ActKind::Softplus}, {"Swish", ActKind::Swish}};
  auto it = kinds.find(n.op_type);
  check(it != kinds.end(), ErrorKind::Unsupported, n.label(), " is not an activation");
  act_ = Activation();
  act_.kind = it->second;
  switch (act_.kind) {
    case ActKind::LeakyRelu: act_.alpha = n.attr_float("alpha", 0.01f); break;
    case ActKind::Elu: act_.alpha = n.attr_float("alpha", 1.f); break;
    case ActKind::HardSigmoid:
      act_.alpha = n.attr_float("alpha", 0.2f);
      act_.beta = n.attr_float("beta", 0.5f);
      break;
    case ActKind::Clip: {
      // Clip's bounds are attributes before opset 11 and optional inputs after.
      act_.alpha = n.attr_float("min", -std::numeric_limits<float>::infinity());
      act_.beta = n.attr_float("max", std::numeric_limits<float>::infinity());
      for (size_t i = 1; i <= 2; ++i) {
        if (!has_input(n, i)) continue;
        const Value& v = input_value(g, n, i);
        check(v.is_constant() && v.shape.numel() == 1, ErrorKind::Unsupported, n.label(),
              ": bound '", v.name, "' must be a constant scalar");
        (i == 1 ? act_.alpha : act_.beta) = v.as_floats()[0];
      }
      break;
    }
    default: break;
  }
  set_output(g, n, 0, input_value(g, n, 0).shape);
}

void ActivationLayer::forward(Backend& b, const Tensor* const* in, Tensor* const* out, void*) {
  b.activation(act_, *in[0], *out[0]);
}

}  // namespace repshare
