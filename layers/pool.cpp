// MaxPool and AveragePool over 2-D windows.
#include <algorithm>

#include "engine/error.h"
#include "layers/layers.h"

namespace repshare {

void Pool2dLayer::build(const Node& n, Graph& g) {
  require_f32(g, n, 0);
  const Shape& x = input_value(g, n, 0).shape;
  check(x.rank() == 4, ErrorKind::Unsupported, n.label(), ": only 2-D pooling (4-D input) is ",
        "implemented, input is ", x.str());
  check(n.outputs.size() == 1, ErrorKind::Unsupported, n.label(),
        ": the Indices output is not implemented");
  check(n.attr_int("storage_order", 0) == 0, ErrorKind::Unsupported, n.label(),
        ": storage_order 1");
  p_ = Pool2dParams();
  p_.kind = n.op_type == "MaxPool" ? PoolKind::Max : PoolKind::Average;
  p_.n = x[0];
  p_.c = x[1];
  p_.h = x[2];
  p_.w = x[3];
  auto k = bounded_sizes(n, n.attr_ints("kernel_shape"), "kernel_shape");
  check(k.size() == 2 && k[0] > 0 && k[1] > 0, ErrorKind::Malformed, n.label(),
        ": kernel_shape must have two positive values");
  auto s = bounded_sizes(n, n.attr_ints("strides", {1, 1}), "strides");
  auto d = bounded_sizes(n, n.attr_ints("dilations", {1, 1}), "dilations");
  check(s.size() == 2 && d.size() == 2 && s[0] > 0 && s[1] > 0 && d[0] > 0 && d[1] > 0,
        ErrorKind::Malformed, n.label(), ": bad strides or dilations");
  p_.kh = k[0];
  p_.kw = k[1];
  p_.stride_h = s[0];
  p_.stride_w = s[1];
  p_.dil_h = d[0];
  p_.dil_w = d[1];
  p_.count_include_pad = n.attr_int("count_include_pad", 0) != 0;
  const int64_t ext_h = (p_.kh - 1) * p_.dil_h + 1, ext_w = (p_.kw - 1) * p_.dil_w + 1;
  auto pads = resolve_pads(n, {p_.h, p_.w}, {ext_h, ext_w}, {p_.stride_h, p_.stride_w});
  p_.pad_top = pads[0];
  p_.pad_left = pads[1];
  p_.pad_bottom = pads[2];
  p_.pad_right = pads[3];
  const bool ceil_mode = n.attr_int("ceil_mode", 0) != 0;
  auto out_size = [&](int64_t in, int64_t pb, int64_t pe, int64_t ext, int64_t st) {
    int64_t span = in + pb + pe - ext;
    check(span >= 0, ErrorKind::Shape, n.label(), ": window larger than padded input ", x.str());
    int64_t o = (ceil_mode ? (span + st - 1) / st : span / st) + 1;
    // A window may not start in the end padding (PyTorch's and ONNX's rule).
    if (ceil_mode && (o - 1) * st >= in + pb) --o;
    return o;
  };
  p_.h_out = out_size(p_.h, p_.pad_top, p_.pad_bottom, ext_h, p_.stride_h);
  p_.w_out = out_size(p_.w, p_.pad_left, p_.pad_right, ext_w, p_.stride_w);
  set_output(g, n, 0, Shape{p_.n, p_.c, p_.h_out, p_.w_out});
}

void Pool2dLayer::forward(Backend& b, const Tensor* const* in, Tensor* const* out, void*) {
  b.pool2d(p_, *in[0], *out[0]);
}

}  // namespace repshare
