// Softmax and LogSoftmax. Before opset 13 the input is coerced to 2-D at `axis`
// (all trailing axes together); from 13 on the op works on the one axis.
#include "engine/error.h"
#include "layers/layers.h"

namespace repshare {

void SoftmaxLayer::build(const Node& n, Graph& g) {
  require_f32(g, n, 0);
  const Shape& x = input_value(g, n, 0).shape;
  const int64_t rank = static_cast<int64_t>(x.rank());
  p_ = SoftmaxParams();
  p_.log = n.op_type == "LogSoftmax";
  const bool legacy = g.opset < 13;
  const int64_t axis = normalize_axis(n, n.attr_int("axis", legacy ? 1 : -1), rank);
  p_.outer = p_.axis = p_.inner = 1;
  for (int64_t d = 0; d < rank; ++d) {
    if (d < axis) p_.outer *= x[d];
    else if (d == axis || legacy) p_.axis *= x[d];
    else p_.inner *= x[d];
  }
  set_output(g, n, 0, x);
}

void SoftmaxLayer::forward(Backend& b, const Tensor* const* in, Tensor* const* out, void*) {
  b.softmax(p_, *in[0], *out[0]);
}

}  // namespace repshare
