#include "engine/backend.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>

#include "engine/error.h"

namespace repshare {

const char* act_name(ActKind k) {
  switch (k) {
    case ActKind::None: return "none";
    case ActKind::Relu: return "relu";
    case ActKind::Clip: return "clip";
    case ActKind::Sigmoid: return "sigmoid";
    case ActKind::Swish: return "swish";
    case ActKind::Tanh: return "tanh";
    case ActKind::LeakyRelu: return "leaky_relu";
    case ActKind::HardSigmoid: return "hard_sigmoid";
    case ActKind::HardSwish: return "hard_swish";
    case ActKind::Elu: return "elu";
    case ActKind::Exp: return "exp";
    case ActKind::Log: return "log";
    case ActKind::Sqrt: return "sqrt";
    case ActKind::Neg: return "neg";
    case ActKind::Abs: return "abs";
    case ActKind::Reciprocal: return "reciprocal";
    case ActKind::Softplus: return "softplus";
  }
  return "?";
}

void Backend::conv2d_residual(const Conv2dParams& p, const Tensor& x, const Tensor& w,
                              const Tensor* bias, const Tensor& residual, Tensor& y,
                              void* workspace) {
  check(p.act.kind == ActKind::None, ErrorKind::Unsupported,
        "conv2d_residual: the residual is added after the conv, so it takes no activation");
  conv2d(p, x, w, bias, y, workspace);
  BroadcastParams add;
  add.rank = 1;
  add.out_dims[0] = add.numel = y.numel();
  add.a_strides[0] = add.b_strides[0] = 1;
  add.op = BinaryOp::Add;
  binary(add, y, residual, y);
}

namespace {

class HostStepTimer : public StepTimer {
 public:
  HostStepTimer(Backend& backend, size_t steps) : backend_(backend), seconds_(steps, 0.0) {}
  void start(size_t) override { started_ = std::chrono::steady_clock::now(); }
  void stop(size_t step) override {
    backend_.synchronize();
    seconds_.at(step) +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
  }
  std::vector<double> seconds() override { return seconds_; }

 private:
  Backend& backend_;
  std::vector<double> seconds_;
  std::chrono::steady_clock::time_point started_;
};

}  // namespace

std::unique_ptr<StepTimer> Backend::step_timer(size_t steps) {
  return std::unique_ptr<StepTimer>(new HostStepTimer(*this, steps));
}

void* Backend::alloc_host(size_t bytes) {
  void* p = std::calloc(bytes == 0 ? 1 : bytes, 1);
  if (!p) fail(ErrorKind::Backend, "out of host memory allocating ", bytes, " bytes");
  return p;
}

void Backend::free_host(void* p) { std::free(p); }

void Backend::conv2d_channel_mean(const Conv2dParams& p, const Tensor& x, const Tensor& w,
                                  const Tensor* bias, Tensor& y, Tensor& mean, void* workspace) {
  conv2d(p, x, w, bias, y, workspace);
  ReduceParams r;
  r.kind = ReduceKind::Mean;
  r.outer = p.n * p.c_out;
  r.reduce = p.h_out * p.w_out;
  r.inner = 1;
  reduce(r, y, mean);
}

namespace {

// Bytes of a tensor of `numel` elements placed in a workspace, rounded up so that
// the next one starts 64-byte aligned.
size_t workspace_bytes(int64_t numel, DType storage) {
  return (static_cast<size_t>(numel) * dtype_size(storage) + 63) / 64 * 64;
}

}  // namespace

Tensor Backend::workspace_tensor(const Shape& shape, void* workspace, void** rest) const {
  Tensor t;
  t.shape = shape;
  t.dtype = float_storage();  // a conv's y may be F32 (conv2d_stores_f32)
  t.data = workspace;
  *rest = static_cast<unsigned char*>(workspace) + workspace_tensor_bytes(shape);
  return t;
}

size_t Backend::workspace_tensor_bytes(const Shape& shape) const {
  return workspace_bytes(shape.numel(), float_storage());
}

size_t Backend::chain_between_bytes(const std::vector<SeparableConvParams>& links) const {
  size_t largest = 0;
  for (size_t k = 0; k + 1 < links.size(); ++k)
    largest = std::max(largest, workspace_tensor_bytes(links[k].pw.output_shape()));
  return largest;
}

size_t Backend::separable_conv2d_workspace(const Conv2dParams& dw, const Conv2dParams& pw) const {
  return workspace_bytes(dw.output_shape().numel(), float_storage()) +
         std::max(conv2d_workspace(dw), conv2d_workspace(pw));
}

size_t Backend::pointwise_depthwise_conv2d_workspace(const Conv2dParams& pw,
                                                     const Conv2dParams& dw) const {
  return workspace_bytes(pw.output_shape().numel(), float_storage()) +
         std::max(conv2d_workspace(pw), conv2d_workspace(dw));
}

void Backend::pointwise_depthwise_conv2d(const Conv2dParams& pw, const Conv2dParams& dw,
                                         const Tensor& x, const Tensor& w_pw, const Tensor* b_pw,
                                         const Tensor& w_dw, const Tensor* b_dw, Tensor& y,
                                         Tensor* mean, void* workspace) {
  check(workspace != nullptr, ErrorKind::Backend,
        "pointwise_depthwise_conv2d: needs pointwise_depthwise_conv2d_workspace() bytes of "
        "workspace and got none");
  void* rest = nullptr;
  Tensor mid = workspace_tensor(pw.output_shape(), workspace, &rest);
  conv2d(pw, x, w_pw, b_pw, mid, rest);
  if (mean)
    conv2d_channel_mean(dw, mid, w_dw, b_dw, y, *mean, rest);
  else
    conv2d(dw, mid, w_dw, b_dw, y, rest);
}

void Backend::separable_conv2d(const Conv2dParams& dw, const Conv2dParams& pw, const Tensor& x,
                               const Tensor& w_dw, const Tensor* b_dw, const Tensor& w_pw,
                               const Tensor* b_pw, const Tensor* residual, Tensor& y,
                               void* workspace) {
  check(workspace != nullptr, ErrorKind::Backend,
        "separable_conv2d: needs separable_conv2d_workspace() bytes of workspace and got none");
  void* rest = nullptr;
  Tensor mid = workspace_tensor(dw.output_shape(), workspace, &rest);
  conv2d(dw, x, w_dw, b_dw, mid, rest);
  if (residual)
    conv2d_residual(pw, mid, w_pw, b_pw, *residual, y, rest);
  else
    conv2d(pw, mid, w_pw, b_pw, y, rest);
}

size_t Backend::weighted_sum_separable_conv2d_workspace(const WeightedSumParams& sum,
                                                        const FusionResample* resample,
                                                        const Conv2dParams& dw,
                                                        const Conv2dParams& pw) const {
  return workspace_bytes(sum.numel, float_storage()) +
         std::max(weighted_sum_resampled_workspace(sum, resample),
                  separable_conv2d_workspace(dw, pw));
}

void Backend::weighted_sum_separable_conv2d(const WeightedSumParams& sum,
                                            const FusionResample* resample,
                                            const Tensor* const* xs, const Conv2dParams& dw,
                                            const Conv2dParams& pw, const Tensor& w_dw,
                                            const Tensor* b_dw, const Tensor& w_pw,
                                            const Tensor* b_pw, const Tensor* residual,
                                            Tensor& y, void* workspace) {
  check(workspace != nullptr, ErrorKind::Backend,
        "weighted_sum_separable_conv2d: needs weighted_sum_separable_conv2d_workspace() bytes "
        "of workspace and got none");
  check(sum.numel == dw.n * dw.c_in * dw.h * dw.w, ErrorKind::Shape,
        "weighted_sum_separable_conv2d: a sum of ", sum.numel, " values into a conv over [",
        dw.n, ",", dw.c_in, ",", dw.h, ",", dw.w, "]");
  void* rest = nullptr;
  Tensor x = workspace_tensor(Shape{dw.n, dw.c_in, dw.h, dw.w}, workspace, &rest);
  weighted_sum_resampled(sum, resample, xs, x, rest);
  separable_conv2d(dw, pw, x, w_dw, b_dw, w_pw, b_pw, residual, y, rest);
}

// Each link but the last leaves its output at the start of the workspace, where it
// read its input: its depthwise conv has read that input into its own output, after
// it, before its 1x1 conv writes. The last link's separable conv follows.
size_t Backend::separable_conv_chain_workspace(
    const std::vector<SeparableConvParams>& links) const {
  const SeparableConvParams& last = links.back();
  size_t separable = separable_conv2d_workspace(last.dw, last.pw);
  for (size_t k = 0; k + 1 < links.size(); ++k)
    separable = std::max(separable, Backend::separable_conv2d_workspace(links[k].dw, links[k].pw));
  return chain_between_bytes(links) + separable;
}

void Backend::separable_conv_chain(const std::vector<SeparableConvParams>& links,
                                   const Tensor& x, const Tensor* const* weights,
                                   const Tensor* residual, Tensor& y, void* workspace) {
  check(workspace != nullptr, ErrorKind::Backend,
        "separable_conv_chain: needs separable_conv_chain_workspace() bytes of workspace and "
        "got none");
  unsigned char* const after_between =
      static_cast<unsigned char*>(workspace) + chain_between_bytes(links);
  Tensor between;
  const Tensor* in = &x;
  for (size_t k = 0; k + 1 < links.size(); ++k) {
    const Conv2dParams &dw = links[k].dw, &pw = links[k].pw;
    const Tensor* const* w = weights + 4 * k;
    void *rest = nullptr, *unused = nullptr;
    Tensor mid = workspace_tensor(dw.output_shape(), after_between, &rest);
    conv2d(dw, *in, *w[0], w[1], mid, rest);
    between = workspace_tensor(pw.output_shape(), workspace, &unused);
    conv2d(pw, mid, *w[2], w[3], between, rest);
    in = &between;
  }
  const SeparableConvParams& last = links.back();
  const Tensor* const* w = weights + 4 * (links.size() - 1);
  separable_conv2d(last.dw, last.pw, *in, *w[0], w[1], *w[2], w[3], residual, y, after_between);
}

size_t Backend::squeeze_excitation_conv2d_workspace(const SqueezeExcitationParams& se,
                                                    const Conv2dParams& conv) const {
  return workspace_bytes(se.outer * se.c * se.inner, float_storage()) +
         std::max(squeeze_excitation_workspace(se), conv2d_workspace(conv));
}

void Backend::squeeze_excitation_conv2d(const SqueezeExcitationParams& se,
                                        const Conv2dParams& conv, bool gates_weights,
                                        const Tensor& mean, const Tensor& w_reduce,
                                        const Tensor* b_reduce, const Tensor& w_expand,
                                        const Tensor* b_expand, const Tensor& target,
                                        const Tensor& other, const Tensor* bias,
                                        const Tensor* residual, Tensor& y, void* workspace) {
  check(workspace != nullptr, ErrorKind::Backend,
        "squeeze_excitation_conv2d: needs squeeze_excitation_conv2d_workspace() bytes of "
        "workspace and got none");
  void* rest = nullptr;
  Tensor gated = workspace_tensor(target.shape, workspace, &rest);
  squeeze_excitation(se, mean, w_reduce, b_reduce, w_expand, b_expand, target, gated, rest);
  const Tensor& x = gates_weights ? other : gated;
  const Tensor& w = gates_weights ? gated : other;
  if (residual)
    conv2d_residual(conv, x, w, bias, *residual, y, rest);
  else
    conv2d(conv, x, w, bias, y, rest);
}

size_t Backend::weighted_sum_resampled_workspace(const WeightedSumParams& p,
                                                 const FusionResample* resample) const {
  size_t bytes = 0;
  for (int i = 0; i < p.count; ++i)
    if (resample[i].kind != ResampleKind::None) bytes += workspace_bytes(p.numel, float_storage());
  return bytes;
}

void Backend::weighted_sum_resampled(const WeightedSumParams& p, const FusionResample* resample,
                                     const Tensor* const* xs, Tensor& y, void* workspace) {
  Tensor copies[kMaxFusionInputs];
  const Tensor* inputs[kMaxFusionInputs];
  auto* next = static_cast<unsigned char*>(workspace);
  for (int i = 0; i < p.count; ++i) {
    inputs[i] = xs[i];
    if (resample[i].kind == ResampleKind::None) continue;
    check(next != nullptr, ErrorKind::Backend, "weighted_sum_resampled: input ", i,
          " is resampled and there is no workspace");
    copies[i].shape = y.shape;
    copies[i].dtype = y.dtype;
    copies[i].data = next;
    next += workspace_bytes(p.numel, y.dtype);
    if (resample[i].kind == ResampleKind::MaxPool)
      pool2d(resample[i].pool, *xs[i], copies[i]);
    else
      resize(resample[i].upsample, *xs[i], copies[i]);
    inputs[i] = &copies[i];
  }
  weighted_sum(p, inputs, y);
}

}  // namespace repshare
