// ChannelAffine: what a BatchNormalization becomes when it cannot be folded into a
// preceding conv (engine/passes.cpp computes scale and shift at load).
#include "engine/error.h"
#include "layers/layers.h"

namespace repshare {

void ChannelAffineLayer::build(const Node& n, Graph& g) {
  require_f32(g, n, 0);
  const Shape& x = input_value(g, n, 0).shape;
  check(x.rank() >= 2, ErrorKind::Shape, n.label(), ": input ", x.str(), " has no channel axis");
  p_ = ChannelAffineParams();
  p_.n = x[0];
  p_.c = x[1];
  p_.inner = 1;
  for (size_t d = 2; d < x.rank(); ++d) p_.inner *= x[d];
  for (size_t i = 1; i <= 2; ++i)
    check(input_value(g, n, i).shape.numel() == p_.c, ErrorKind::Shape, n.label(), ": '",
          input_value(g, n, i).name, "' must have ", p_.c, " values");
  p_.act = fused_activation(n);
  set_output(g, n, 0, x);
}

void ChannelAffineLayer::forward(Backend& b, const Tensor* const* in, Tensor* const* out, void*) {
  b.channel_affine(p_, *in[0], *in[1], *in[2], *out[0]);
}

}  // namespace repshare
