// WeightedSum: y = act(sum_i w_i x_i), the form BiFPN's fast normalised fusion
// takes once its relu(w)/(sum relu(w) + eps) weights are folded at load; an input
// may arrive max-pooled or upsampled (see layers.h).
#include <string>

#include "engine/error.h"
#include "layers/layers.h"

namespace repshare {
namespace {

std::string maxpool_attr(size_t i) { return "maxpool" + std::to_string(i); }
std::string upsample_attr(size_t i) { return "upsample" + std::to_string(i); }

// The [N, C, H, W] shape input x takes after resampling r.
Shape resampled_shape(const Node& n, size_t i, const Shape& x, FusionResample& r) {
  const std::vector<int64_t> pool = n.attr_ints(maxpool_attr(i), {});
  const std::vector<int64_t> up = n.attr_ints(upsample_attr(i), {});
  if (pool.empty() && up.empty()) return x;
  check(pool.empty() || up.empty(), ErrorKind::Malformed, n.label(), ": input ", i,
        " is both max-pooled and upsampled");
  check(x.rank() == 4, ErrorKind::Shape, n.label(), ": resampled input ", i, " is ", x.str(),
        ", expected [N, C, H, W]");
  if (!pool.empty()) {
    bounded_sizes(n, pool, maxpool_attr(i).c_str());
    check(pool.size() == 10, ErrorKind::Malformed, n.label(), ": ", maxpool_attr(i), " has ",
          pool.size(), " values, expected 10");
    Pool2dParams& p = r.pool;
    r.kind = ResampleKind::MaxPool;
    p.kind = PoolKind::Max;
    p.n = x[0];
    p.c = x[1];
    p.h = x[2];
    p.w = x[3];
    p.kh = pool[0];
    p.kw = pool[1];
    p.stride_h = pool[2];
    p.stride_w = pool[3];
    p.dil_h = pool[4];
    p.dil_w = pool[5];
    p.pad_top = pool[6];
    p.pad_left = pool[7];
    p.pad_bottom = pool[8];
    p.pad_right = pool[9];
    bool positive = true;
    for (int k = 0; k < 6; ++k) positive = positive && pool[k] > 0;
    for (int k = 6; k < 10; ++k) positive = positive && pool[k] >= 0;
    check(positive, ErrorKind::Malformed, n.label(), ": ", maxpool_attr(i),
          " needs positive window, strides and dilations and pads >= 0");
    const int64_t span_h = p.h + p.pad_top + p.pad_bottom - ((p.kh - 1) * p.dil_h + 1);
    const int64_t span_w = p.w + p.pad_left + p.pad_right - ((p.kw - 1) * p.dil_w + 1);
    check(span_h >= 0 && span_w >= 0, ErrorKind::Shape, n.label(), ": ", maxpool_attr(i),
          " window larger than padded input ", x.str());
    p.h_out = span_h / p.stride_h + 1;
    p.w_out = span_w / p.stride_w + 1;
    return Shape{p.n, p.c, p.h_out, p.w_out};
  }
  check(up.size() == 2 && up[0] > 0 && up[1] > 0, ErrorKind::Malformed, n.label(), ": ",
        upsample_attr(i), " needs two positive factors");
  bounded_sizes(n, up, upsample_attr(i).c_str());
  ResizeParams& p = r.upsample;
  r.kind = ResampleKind::NearestUp;
  p.mode = ResizeMode::Nearest;
  p.coord = CoordMode::Asymmetric;
  p.nearest = NearestMode::Floor;
  p.outer = x[0] * x[1];
  p.h = x[2];
  p.w = x[3];
  p.h_out = x[2] * up[0];
  p.w_out = x[3] * up[1];
  p.scale_h = static_cast<float>(up[0]);
  p.scale_w = static_cast<float>(up[1]);
  return Shape{x[0], x[1], p.h_out, p.w_out};
}

}  // namespace

void WeightedSumLayer::attach_maxpool(Node& n, size_t input, const Pool2dParams& window) {
  Attribute& a = n.attrs[maxpool_attr(input)];
  a.kind = Attribute::Kind::Ints;
  a.ints = {window.kh,       window.kw,      window.stride_h,   window.stride_w,
            window.dil_h,    window.dil_w,   window.pad_top,    window.pad_left,
            window.pad_bottom, window.pad_right};
}

void WeightedSumLayer::attach_upsample(Node& n, size_t input, int64_t factor_h,
                                       int64_t factor_w) {
  Attribute& a = n.attrs[upsample_attr(input)];
  a.kind = Attribute::Kind::Ints;
  a.ints = {factor_h, factor_w};
}

Shape WeightedSumLayer::sum_params(const Node& n, const Graph& g, WeightedSumParams& p,
                                   FusionResample* resample) {
  p = WeightedSumParams();
  auto w = n.attr_floats("weights");
  check(w.size() == n.inputs.size() && !w.empty() && w.size() <= kMaxFusionInputs,
        ErrorKind::Malformed, n.label(), ": ", w.size(), " weights for ", n.inputs.size(),
        " inputs (at most ", kMaxFusionInputs, ")");
  Shape y;
  for (size_t i = 0; i < w.size(); ++i) {
    require_f32(g, n, i);
    resample[i] = FusionResample();
    const Shape& x = input_value(g, n, i).shape;
    const Shape s = resampled_shape(n, i, x, resample[i]);
    if (i == 0) y = s;
    check(s == y, ErrorKind::Shape, n.label(), ": input ", i, " is ", x.str(),
          s == x ? "" : " (" + s.str() + " resampled)", ", expected ", y.str());
    p.weights[i] = w[i];
  }
  p.count = static_cast<int>(w.size());
  p.numel = y.numel();
  p.act = fused_activation(n);
  return y;
}

void WeightedSumLayer::build(const Node& n, Graph& g) {
  const Shape y = sum_params(n, g, p_, resample_);
  resampled_ = false;
  for (int i = 0; i < p_.count; ++i)
    resampled_ = resampled_ || resample_[i].kind != ResampleKind::None;
  set_output(g, n, 0, y);
}

size_t WeightedSumLayer::workspace_bytes(const Backend& b) const {
  return resampled_ ? b.weighted_sum_resampled_workspace(p_, resample_) : 0;
}

void WeightedSumLayer::forward(Backend& b, const Tensor* const* in, Tensor* const* out,
                               void* workspace) {
  if (resampled_)
    b.weighted_sum_resampled(p_, resample_, in, *out[0], workspace);
  else
    b.weighted_sum(p_, in, *out[0]);
}

namespace {

const char kSumPrefix[] = "sum_";
constexpr size_t kSumInputsFrom = 6;  // after a SeparableConv's six inputs

// The WeightedSum inside a WeightedSumSeparableConv node, as a node of its own, with
// its inputs (no outputs).
Node sum_part(const Node& n) {
  Node s = folded_part(n, "WeightedSum", kSumPrefix, "sum");
  s.inputs = {n.inputs.at(0)};
  for (size_t i = kSumInputsFrom; i < n.inputs.size(); ++i) s.inputs.push_back(n.inputs[i]);
  return s;
}

}  // namespace

Node WeightedSumSeparableConvLayer::fuse(const Node& sum, const Node& separable) {
  Node f = separable;
  f.op_type = "WeightedSumSeparableConv";
  f.inputs.resize(kSumInputsFrom, -1);
  f.inputs[0] = sum.inputs.at(0);
  for (size_t i = 1; i < sum.inputs.size(); ++i) f.inputs.push_back(sum.inputs[i]);
  for (const auto& a : sum.attrs) f.attrs[kSumPrefix + a.first] = a.second;
  return f;
}

void WeightedSumSeparableConvLayer::build(const Node& n, Graph& g) {
  build_convs(n, g, WeightedSumLayer::sum_params(sum_part(n), g, sum_, resample_));
}

size_t WeightedSumSeparableConvLayer::workspace_bytes(const Backend& b) const {
  return b.weighted_sum_separable_conv2d_workspace(sum_, resample_, dw_, pw_);
}

void WeightedSumSeparableConvLayer::forward(Backend& b, const Tensor* const* in,
                                            Tensor* const* out, void* ws) {
  const Tensor* xs[kMaxFusionInputs] = {in[0]};
  for (int i = 1; i < sum_.count; ++i) xs[i] = in[kSumInputsFrom + i - 1];
  b.weighted_sum_separable_conv2d(sum_, resample_, xs, dw_, pw_, *in[1], in[2], *in[3], in[4],
                                  in[5], *out[0], ws);
}

}  // namespace repshare
