// ChannelGather: receiver channel t takes donor channel index[t] (merge/adapter.h).
#include "engine/error.h"
#include "layers/layers.h"

namespace repshare {

void ChannelGatherLayer::build(const Node& n, Graph& g) {
  require_f32(g, n, 0);
  const Shape& x = input_value(g, n, 0).shape;
  const Value& idx = input_value(g, n, 1);
  check(x.rank() >= 2, ErrorKind::Shape, n.label(), ": input ", x.str(), " has no channel axis");
  check(idx.is_constant() && idx.dtype == DType::I64 && idx.shape.rank() == 1, ErrorKind::Shape,
        n.label(), ": indices must be a constant int64 vector");
  p_ = ChannelGatherParams();
  p_.n = x[0];
  p_.c_in = x[1];
  p_.c_out = idx.shape[0];
  p_.inner = x.numel() / std::max<int64_t>(1, p_.n * p_.c_in);
  for (int64_t i : idx.as_ints())
    check(i >= 0 && i < p_.c_in, ErrorKind::Shape, n.label(), ": channel index ", i,
          " outside 0..", p_.c_in - 1);
  Shape out = x;
  out[1] = p_.c_out;
  set_output(g, n, 0, out);
}

void ChannelGatherLayer::forward(Backend& b, const Tensor* const* in, Tensor* const* out, void*) {
  b.channel_gather(p_, *in[0], *in[1], *out[0]);
}

}  // namespace repshare
