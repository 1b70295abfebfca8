// Conv: 2-D convolution (dense, grouped, depthwise) with an optional fused bias and
// activation (set by the Conv+activation fusion pass), and from the other fusion
// passes a second output (channel means) or a fourth input (a residual to add).
#include "engine/error.h"
#include "layers/layers.h"

namespace repshare {

void ConvLayer::build(const Node& n, Graph& g) {
  require_f32(g, n, 0);
  require_f32(g, n, 1);
  const Shape& x = input_value(g, n, 0).shape;
  const Shape& w = input_value(g, n, 1).shape;
  check(x.rank() == 4, ErrorKind::Unsupported, n.label(), ": only 2-D convolution (4-D input) ",
        "is implemented, input is ", x.str());
  check(w.rank() == 4, ErrorKind::Shape, n.label(), ": weight shape ", w.str(), " is not 4-D");
  p_ = Conv2dParams();
  p_.n = x[0];
  p_.c_in = x[1];
  p_.h = x[2];
  p_.w = x[3];
  p_.c_out = w[0];
  p_.kh = w[2];
  p_.kw = w[3];
  p_.groups = n.attr_int("group", 1);
  check(p_.groups > 0 && p_.c_in % p_.groups == 0 && p_.c_out % p_.groups == 0 &&
            w[1] * p_.groups == p_.c_in,
        ErrorKind::Shape, n.label(), ": input ", x.str(), ", weight ", w.str(), " and group ",
        p_.groups, " do not fit together");
  auto ks = n.attr_ints("kernel_shape", {p_.kh, p_.kw});
  check(ks.size() == 2 && ks[0] == p_.kh && ks[1] == p_.kw, ErrorKind::Shape, n.label(),
        ": kernel_shape does not match the weight ", w.str());
  auto strides = bounded_sizes(n, n.attr_ints("strides", {1, 1}), "strides");
  auto dil = bounded_sizes(n, n.attr_ints("dilations", {1, 1}), "dilations");
  check(strides.size() == 2 && dil.size() == 2 && strides[0] > 0 && strides[1] > 0 &&
            dil[0] > 0 && dil[1] > 0,
        ErrorKind::Malformed, n.label(), ": bad strides or dilations");
  p_.stride_h = strides[0];
  p_.stride_w = strides[1];
  p_.dil_h = dil[0];
  p_.dil_w = dil[1];
  auto pads = resolve_pads(n, {p_.h, p_.w}, {(p_.kh - 1) * p_.dil_h + 1, (p_.kw - 1) * p_.dil_w + 1},
                           {p_.stride_h, p_.stride_w});
  p_.pad_top = pads[0];
  p_.pad_left = pads[1];
  p_.pad_bottom = pads[2];
  p_.pad_right = pads[3];
  const int64_t eh = p_.h + p_.pad_top + p_.pad_bottom - (p_.kh - 1) * p_.dil_h - 1;
  const int64_t ew = p_.w + p_.pad_left + p_.pad_right - (p_.kw - 1) * p_.dil_w - 1;
  check(eh >= 0 && ew >= 0, ErrorKind::Shape, n.label(), ": kernel larger than padded input ",
        x.str());
  p_.h_out = eh / p_.stride_h + 1;
  p_.w_out = ew / p_.stride_w + 1;
  has_bias_ = has_input(n, 2);
  if (has_bias_) {
    require_f32(g, n, 2);
    check(input_value(g, n, 2).shape.numel() == p_.c_out, ErrorKind::Shape, n.label(),
          ": bias has ", input_value(g, n, 2).shape.numel(), " values for ", p_.c_out,
          " output channels");
  }
  p_.act = fused_activation(n);
  set_output(g, n, 0, Shape{p_.n, p_.c_out, p_.h_out, p_.w_out});
  // A second output, the mean of each output plane, is made by the
  // fuse_channel_mean pass for depthwise convs (the squeeze-excitation pool).
  has_channel_mean_ = n.outputs.size() > 1;
  if (has_channel_mean_) {
    check(n.outputs.size() == 2 && p_.is_depthwise(), ErrorKind::Unsupported, n.label(),
          ": a second output (channel means) is made for depthwise convolutions only");
    set_output(g, n, 1, Shape{p_.n, p_.c_out, 1, 1});
  }
  // A fourth input, a tensor of the output's shape added to it, is the skip
  // connection the fuse_residual_add pass folds in (after the bias, no activation).
  has_residual_ = has_input(n, 3);
  if (has_residual_) {
    require_f32(g, n, 3);
    check(input_value(g, n, 3).shape == g.values[n.outputs[0]].shape, ErrorKind::Shape, n.label(),
          ": residual ", input_value(g, n, 3).shape.str(), " is not the output's shape ",
          g.values[n.outputs[0]].shape.str());
    check(p_.act.kind == ActKind::None && !has_channel_mean_, ErrorKind::Unsupported, n.label(),
          ": a residual is added to a convolution without activation or channel means only");
  }
}

size_t ConvLayer::workspace_bytes(const Backend& b) const { return b.conv2d_workspace(p_); }

void ConvLayer::forward(Backend& b, const Tensor* const* in, Tensor* const* out, void* ws) {
  if (has_channel_mean_)
    b.conv2d_channel_mean(p_, *in[0], *in[1], has_bias_ ? in[2] : nullptr, *out[0], *out[1], ws);
  else if (has_residual_)
    b.conv2d_residual(p_, *in[0], *in[1], has_bias_ ? in[2] : nullptr, *in[3], *out[0], ws);
  else
    b.conv2d(p_, *in[0], *in[1], has_bias_ ? in[2] : nullptr, *out[0], ws);
}

}  // namespace repshare
