// Conv: 2-D convolution (dense, grouped, depthwise) with an optional fused bias and
// activation (set by the Conv+activation fusion pass), and from the other fusion
// passes a second output (channel means) or a fourth input (a residual to add).
#include "engine/error.h"
#include "layers/layers.h"

namespace repshare {

Conv2dParams conv2d_params(const Node& n, const Shape& x, const Shape& w) {
  check(x.rank() == 4, ErrorKind::Unsupported, n.label(), ": only 2-D convolution (4-D input) ",
        "is implemented, input is ", x.str());
  check(w.rank() == 4, ErrorKind::Shape, n.label(), ": weight shape ", w.str(), " is not 4-D");
  Conv2dParams p;
  p.n = x[0];
  p.c_in = x[1];
  p.h = x[2];
  p.w = x[3];
  p.c_out = w[0];
  p.kh = w[2];
  p.kw = w[3];
  p.groups = n.attr_int("group", 1);
  check(p.groups > 0 && p.c_in % p.groups == 0 && p.c_out % p.groups == 0 &&
            w[1] * p.groups == p.c_in,
        ErrorKind::Shape, n.label(), ": input ", x.str(), ", weight ", w.str(), " and group ",
        p.groups, " do not fit together");
  auto ks = n.attr_ints("kernel_shape", {p.kh, p.kw});
  check(ks.size() == 2 && ks[0] == p.kh && ks[1] == p.kw, ErrorKind::Shape, n.label(),
        ": kernel_shape does not match the weight ", w.str());
  auto strides = bounded_sizes(n, n.attr_ints("strides", {1, 1}), "strides");
  auto dil = bounded_sizes(n, n.attr_ints("dilations", {1, 1}), "dilations");
  check(strides.size() == 2 && dil.size() == 2 && strides[0] > 0 && strides[1] > 0 &&
            dil[0] > 0 && dil[1] > 0,
        ErrorKind::Malformed, n.label(), ": bad strides or dilations");
  p.stride_h = strides[0];
  p.stride_w = strides[1];
  p.dil_h = dil[0];
  p.dil_w = dil[1];
  auto pads = resolve_pads(n, {p.h, p.w}, {(p.kh - 1) * p.dil_h + 1, (p.kw - 1) * p.dil_w + 1},
                           {p.stride_h, p.stride_w});
  p.pad_top = pads[0];
  p.pad_left = pads[1];
  p.pad_bottom = pads[2];
  p.pad_right = pads[3];
  const int64_t eh = p.h + p.pad_top + p.pad_bottom - (p.kh - 1) * p.dil_h - 1;
  const int64_t ew = p.w + p.pad_left + p.pad_right - (p.kw - 1) * p.dil_w - 1;
  check(eh >= 0 && ew >= 0, ErrorKind::Shape, n.label(), ": kernel larger than padded input ",
        x.str());
  p.h_out = eh / p.stride_h + 1;
  p.w_out = ew / p.stride_w + 1;
  p.act = fused_activation(n);
  return p;
}

void check_conv_bias(const Node& n, const Graph& g, const Conv2dParams& p, size_t bias) {
  if (!has_input(n, bias)) return;
  require_f32(g, n, bias);
  check(input_value(g, n, bias).shape.numel() == p.c_out, ErrorKind::Shape, n.label(),
        ": bias has ", input_value(g, n, bias).shape.numel(), " values for ", p.c_out,
        " output channels");
}

void check_conv_residual(const Node& n, const Graph& g, const Conv2dParams& p, size_t residual,
                         const Shape& y) {
  if (!has_input(n, residual)) return;
  require_f32(g, n, residual);
  check(input_value(g, n, residual).shape == y, ErrorKind::Shape, n.label(), ": residual ",
        input_value(g, n, residual).shape.str(), " is not the output's shape ", y.str());
  check(p.act.kind == ActKind::None, ErrorKind::Unsupported, n.label(),
        ": a residual is added to a convolution without activation only");
}

void ConvLayer::build(const Node& n, Graph& g) {
  require_f32(g, n, 0);
  require_f32(g, n, 1);
  p_ = conv2d_params(n, input_value(g, n, 0).shape, input_value(g, n, 1).shape);
  has_bias_ = has_input(n, 2);
  const Shape y = p_.output_shape();
  // A fourth input, a tensor of the output's shape added to it, is the skip
  // connection the fuse_residual_add pass folds in (after the bias, no activation).
  has_residual_ = has_input(n, 3);
  check_conv_bias(n, g, p_, 2);
  check_conv_residual(n, g, p_, 3, y);
  set_output(g, n, 0, y);
  // A second output, the mean of each output plane, is made by the
  // fuse_channel_mean pass (the squeeze-excitation pool of a depthwise conv, a
  // classifier's global pool).
  has_channel_mean_ = n.outputs.size() > 1;
  if (has_channel_mean_) {
    check(n.outputs.size() == 2, ErrorKind::Unsupported, n.label(),
          ": outputs are the convolution's and, optionally, its channel means");
    set_output(g, n, 1, Shape{p_.n, p_.c_out, 1, 1});
  }
  check(!has_residual_ || !has_channel_mean_, ErrorKind::Unsupported, n.label(),
        ": a residual is added to a convolution without channel means only");
}

size_t ConvLayer::workspace_bytes(const Backend& b) const { return b.conv2d_workspace(p_); }

// Not with channel means: conv2d_channel_mean takes y in storage.
bool ConvLayer::stores_output_f32(const Backend& b) const {
  return !has_channel_mean_ && b.conv2d_stores_f32(p_);
}

void ConvLayer::forward(Backend& b, const Tensor* const* in, Tensor* const* out, void* ws) {
  if (has_channel_mean_)
    b.conv2d_channel_mean(p_, *in[0], *in[1], has_bias_ ? in[2] : nullptr, *out[0], *out[1], ws);
  else if (has_residual_)
    b.conv2d_residual(p_, *in[0], *in[1], has_bias_ ? in[2] : nullptr, *in[3], *out[0], ws);
  else
    b.conv2d(p_, *in[0], *in[1], has_bias_ ? in[2] : nullptr, *out[0], ws);
}

namespace {

const char kDepthwisePrefix[] = "depthwise_", kPointwisePrefix[] = "pointwise_";

// The depthwise conv inside a SeparableConv node, as a Conv node of its own.
Node depthwise_part(const Node& n) { return folded_part(n, "Conv", kDepthwisePrefix, "depthwise"); }

}  // namespace

Node SeparableConvLayer::fuse(const Node& depthwise, const Node& pointwise) {
  Node f;
  f.op_type = "SeparableConv";
  f.name = pointwise.name;
  f.inputs = {depthwise.inputs[0], depthwise.inputs[1], optional_input(depthwise, 2),
              pointwise.inputs[1], optional_input(pointwise, 2), optional_input(pointwise, 3)};
  f.outputs = pointwise.outputs;
  f.attrs = pointwise.attrs;
  for (const auto& a : depthwise.attrs) f.attrs[kDepthwisePrefix + a.first] = a.second;
  return f;
}

void SeparableConvLayer::build(const Node& n, Graph& g) {
  require_f32(g, n, 0);
  build_convs(n, g, input_value(g, n, 0).shape);
}

void SeparableConvLayer::build_convs(const Node& n, Graph& g, const Shape& x) {
  const SeparableConvParams p = separable_conv_params(n, g, x);
  dw_ = p.dw;
  pw_ = p.pw;
  set_output(g, n, 0, pw_.output_shape());
}

SeparableConvParams separable_conv_params(const Node& n, const Graph& g, const Shape& x) {
  for (size_t i : {1, 3}) require_f32(g, n, i);
  const Node d = depthwise_part(n);
  SeparableConvParams p;
  p.dw = conv2d_params(d, x, input_value(g, n, 1).shape);
  check(p.dw.is_depthwise(), ErrorKind::Unsupported, d.label(), ": not a depthwise convolution");
  p.pw = conv2d_params(n, p.dw.output_shape(), input_value(g, n, 3).shape);
  check(p.pw.is_pointwise(), ErrorKind::Unsupported, n.label(),
        ": the second convolution is not pointwise (1x1, stride 1, no padding, one group)");
  if (has_input(n, 2)) {
    require_f32(g, n, 2);
    check(input_value(g, n, 2).shape.numel() == p.dw.c_out, ErrorKind::Shape, d.label(),
          ": bias has ", input_value(g, n, 2).shape.numel(), " values for ", p.dw.c_out,
          " channels");
  }
  check_conv_bias(n, g, p.pw, 4);
  check_conv_residual(n, g, p.pw, 5, p.pw.output_shape());
  return p;
}

size_t SeparableConvLayer::workspace_bytes(const Backend& b) const {
  return b.separable_conv2d_workspace(dw_, pw_);
}

bool SeparableConvLayer::stores_output_f32(const Backend& b) const {
  return b.conv2d_stores_f32(pw_);
}

void SeparableConvLayer::forward(Backend& b, const Tensor* const* in, Tensor* const* out,
                                 void* ws) {
  b.separable_conv2d(dw_, pw_, *in[0], *in[1], in[2], *in[3], in[4], in[5], *out[0], ws);
}

namespace {

std::string link_prefix(size_t k) { return "link" + std::to_string(k) + "_"; }

// Links of a SeparableConvChain node: its inputs less x and the residual, four each.
size_t chain_links(const Node& n) { return (n.inputs.size() - 2) / 4; }

// Link k of a SeparableConvChain node as a SeparableConv node of its own: its
// attributes, and inputs 1-5 as SeparableConvLayer's (the residual on the last
// link only; input 0, x, is not its own).
Node chain_link(const Node& n, size_t k) {
  Node link = folded_part(n, "SeparableConv", link_prefix(k), "link" + std::to_string(k));
  link.inputs.assign(n.inputs.begin() + 1 + 4 * k, n.inputs.begin() + 5 + 4 * k);
  link.inputs.insert(link.inputs.begin(), -1);
  link.inputs.push_back(k + 1 == chain_links(n) ? n.inputs.back() : -1);
  return link;
}

}  // namespace

Node SeparableConvChainLayer::fuse(const Node& prev, const Node& next) {
  Node f;
  f.op_type = "SeparableConvChain";
  f.name = next.name;
  f.outputs = next.outputs;
  f.inputs = {prev.inputs[0]};
  size_t links = 0;
  auto append = [&](const Node& link) {  // link: a SeparableConv, as SeparableConvLayer's
    f.inputs.insert(f.inputs.end(), link.inputs.begin() + 1, link.inputs.begin() + 5);
    for (const auto& a : link.attrs) f.attrs[link_prefix(links) + a.first] = a.second;
    ++links;
  };
  if (prev.op_type == "SeparableConvChain") {
    for (size_t k = 0; k < chain_links(prev); ++k) append(chain_link(prev, k));
  } else {
    append(prev);
  }
  append(next);
  f.inputs.push_back(optional_input(next, 5));
  return f;
}

std::vector<SeparableConvParams> separable_chain_params(const Node& n, const Graph& g) {
  check(n.inputs.size() >= 10 && (n.inputs.size() - 2) % 4 == 0, ErrorKind::Malformed,
        n.label(), ": has ", n.inputs.size(),
        " inputs, not x, four for each of two or more links, then the residual");
  require_f32(g, n, 0);
  Shape x = input_value(g, n, 0).shape;
  std::vector<SeparableConvParams> links;
  for (size_t k = 0; k < chain_links(n); ++k) {
    links.push_back(separable_conv_params(chain_link(n, k), g, x));
    x = links.back().pw.output_shape();
  }
  return links;
}

void SeparableConvChainLayer::build(const Node& n, Graph& g) {
  links_ = separable_chain_params(n, g);
  has_residual_ = has_input(n, n.inputs.size() - 1);
  set_output(g, n, 0, links_.back().pw.output_shape());
}

size_t SeparableConvChainLayer::workspace_bytes(const Backend& b) const {
  return b.separable_conv_chain_workspace(links_);
}

bool SeparableConvChainLayer::stores_output_f32(const Backend& b) const {
  return b.conv2d_stores_f32(links_.back().pw);
}

void SeparableConvChainLayer::forward(Backend& b, const Tensor* const* in, Tensor* const* out,
                                      void* ws) {
  b.separable_conv_chain(links_, *in[0], in + 1,
                         has_residual_ ? in[1 + 4 * links_.size()] : nullptr, *out[0], ws);
}

Node PointwiseDepthwiseConvLayer::fuse(const Node& pointwise, const Node& depthwise) {
  Node f;
  f.op_type = "PointwiseDepthwiseConv";
  f.name = depthwise.name;
  f.inputs = {pointwise.inputs[0], pointwise.inputs[1], optional_input(pointwise, 2),
              depthwise.inputs[1], optional_input(depthwise, 2)};
  f.outputs = depthwise.outputs;
  f.attrs = depthwise.attrs;
  for (const auto& a : pointwise.attrs) f.attrs[kPointwisePrefix + a.first] = a.second;
  return f;
}

void PointwiseDepthwiseConvLayer::build(const Node& n, Graph& g) {
  for (size_t i : {0, 1, 3}) require_f32(g, n, i);
  const Node pw = folded_part(n, "Conv", kPointwisePrefix, "pointwise");
  pw_ = conv2d_params(pw, input_value(g, n, 0).shape, input_value(g, n, 1).shape);
  check(pw_.is_pointwise(), ErrorKind::Unsupported, pw.label(),
        ": not a pointwise convolution (1x1, stride 1, no padding, one group)");
  check_conv_bias(n, g, pw_, 2);
  const Shape mid = pw_.output_shape();
  dw_ = conv2d_params(n, mid, input_value(g, n, 3).shape);
  check(dw_.is_depthwise(), ErrorKind::Unsupported, n.label(), ": not a depthwise convolution");
  check_conv_bias(n, g, dw_, 4);
  set_output(g, n, 0, dw_.output_shape());
  check(n.outputs.size() <= 2, ErrorKind::Unsupported, n.label(),
        ": outputs are the depthwise conv's and, optionally, its channel means");
  has_channel_mean_ = n.outputs.size() > 1;
  if (has_channel_mean_) set_output(g, n, 1, Shape{dw_.n, dw_.c_out, 1, 1});
}

size_t PointwiseDepthwiseConvLayer::workspace_bytes(const Backend& b) const {
  return b.pointwise_depthwise_conv2d_workspace(pw_, dw_);
}

void PointwiseDepthwiseConvLayer::forward(Backend& b, const Tensor* const* in,
                                          Tensor* const* out, void* ws) {
  b.pointwise_depthwise_conv2d(pw_, dw_, *in[0], *in[1], in[2], *in[3], in[4], *out[0],
                               has_channel_mean_ ? out[1] : nullptr, ws);
}

}  // namespace repshare
