// The layer classes, one implementation file each (layers/<op>.cpp). Each turns a
// node into backend parameters in build() and calls one or a few backend entry
// points in forward().
#pragma once

#include <vector>

#include "layers/layer.h"

namespace repshare {

// Conv (fused bias and activation).
class ConvLayer : public Layer {
 public:
  void build(const Node& n, Graph& g) override;
  size_t workspace_bytes(const Backend& b) const override;
  bool stores_output_f32(const Backend& b) const override;
  void forward(Backend& b, const Tensor* const* in, Tensor* const* out, void* ws) override;
  const Conv2dParams& params() const { return p_; }

 private:
  Conv2dParams p_;
  bool has_bias_ = false;
  bool has_channel_mean_ = false;  // second output: [N, C, 1, 1] means (fuse_channel_mean)
  bool has_residual_ = false;      // fourth input, added to the output (fuse_residual_add)
};

// Checks a conv's optional bias (input `bias` of node n: c_out values) and residual
// (input `residual`: output y's shape, on a conv without activation) where n has them.
void check_conv_bias(const Node& n, const Graph& g, const Conv2dParams& p, size_t bias);
void check_conv_residual(const Node& n, const Graph& g, const Conv2dParams& p, size_t residual,
                         const Shape& y);

// Conv2dParams of Conv node n (its attributes: group, kernel_shape, strides,
// dilations, pads / auto_pad, a fused activation) on input x and weight w; throws
// naming the node when they do not fit.
Conv2dParams conv2d_params(const Node& n, const Shape& x, const Shape& w);

// SeparableConv: a depthwise Conv whose output only a pointwise Conv reads, as one
// node (fuse_separable_conv): inputs x, w_dw, b_dw, w_pw, b_pw, residual (biases and
// residual optional), the pointwise conv's attributes as they were and the
// depthwise conv's with the prefix "depthwise_". Backend::separable_conv2d.
class SeparableConvLayer : public Layer {
 public:
  static Node fuse(const Node& depthwise, const Node& pointwise);
  void build(const Node& n, Graph& g) override;
  size_t workspace_bytes(const Backend& b) const override;
  bool stores_output_f32(const Backend& b) const override;
  void forward(Backend& b, const Tensor* const* in, Tensor* const* out, void* ws) override;

 protected:
  // build() with the depthwise conv's input of shape x (inputs 1-5 as above).
  void build_convs(const Node& n, Graph& g, const Shape& x);
  Conv2dParams dw_, pw_;
};

// The two convs of SeparableConv node n (its inputs 1-5 and attributes as above)
// over an input of shape x, checked; throws naming the node when they do not fit.
SeparableConvParams separable_conv_params(const Node& n, const Graph& g, const Shape& x);

// The links of SeparableConvChain node n (see below) over its input, checked.
std::vector<SeparableConvParams> separable_chain_params(const Node& n, const Graph& g);

// SeparableConvChain: SeparableConvs one after another, each read only by the next
// (fuse_separable_chain; EfficientDet's class and box nets): inputs x, then each
// link's w_dw, b_dw, w_pw, b_pw, then the last link's residual (biases and residual
// optional); link k's SeparableConv attributes with the prefix "link<k>_".
// Backend::separable_conv_chain.
class SeparableConvChainLayer : public Layer {
 public:
  // prev a SeparableConv or SeparableConvChain without residual, next the
  // SeparableConv reading its output.
  static Node fuse(const Node& prev, const Node& next);
  void build(const Node& n, Graph& g) override;
  size_t workspace_bytes(const Backend& b) const override;
  bool stores_output_f32(const Backend& b) const override;
  void forward(Backend& b, const Tensor* const* in, Tensor* const* out, void* ws) override;

 private:
  std::vector<SeparableConvParams> links_;
  bool has_residual_ = false;
};

// PointwiseDepthwiseConv: a 1x1 Conv whose output only a depthwise Conv reads, as one
// node (fuse_pointwise_depthwise; MBConv's expansion and depthwise conv): inputs x,
// w_pw, b_pw, w_dw, b_dw (biases optional), outputs the depthwise conv's (y, and
// its channel means where fuse_channel_mean gave it them), its attributes as they
// were and the pointwise conv's with the prefix "pointwise_".
// Backend::pointwise_depthwise_conv2d.
class PointwiseDepthwiseConvLayer : public Layer {
 public:
  static Node fuse(const Node& pointwise, const Node& depthwise);
  void build(const Node& n, Graph& g) override;
  size_t workspace_bytes(const Backend& b) const override;
  void forward(Backend& b, const Tensor* const* in, Tensor* const* out, void* ws) override;

 private:
  Conv2dParams pw_, dw_;
  bool has_channel_mean_ = false;
};

// Relu, Sigmoid, Tanh, Clip, LeakyRelu, HardSigmoid, HardSwish, Elu, Exp, Log, Sqrt,
// Neg, Abs, Reciprocal, Softplus, and repshare's fused Swish (x * sigmoid(x)).
class ActivationLayer : public Layer {
 public:
  void build(const Node& n, Graph& g) override;
  bool reads_input_at_build(size_t i) const override { return i > 0; }  // Clip min/max
  void forward(Backend& b, const Tensor* const* in, Tensor* const* out, void* ws) override;

 private:
  Activation act_;
};

// Add, Sub, Mul, Div, Pow, Max, Min (two inputs, NumPy broadcasting); Sum, Mean,
// Max and Min with one input are copies.
class BinaryLayer : public Layer {
 public:
  void build(const Node& n, Graph& g) override;
  void forward(Backend& b, const Tensor* const* in, Tensor* const* out, void* ws) override;

 private:
  BroadcastParams p_;
  bool single_input_ = false;
};

// ChannelAffine: y = x * scale[c] + shift[c] (a BatchNormalization lowered at load).
class ChannelAffineLayer : public Layer {
 public:
  void build(const Node& n, Graph& g) override;
  void forward(Backend& b, const Tensor* const* in, Tensor* const* out, void* ws) override;

 private:
  ChannelAffineParams p_;
};

// MaxPool, AveragePool (2-D windows).
class Pool2dLayer : public Layer {
 public:
  void build(const Node& n, Graph& g) override;
  void forward(Backend& b, const Tensor* const* in, Tensor* const* out, void* ws) override;
  const Pool2dParams& params() const { return p_; }

 private:
  Pool2dParams p_;
};

// GlobalAveragePool, GlobalMaxPool, ReduceMean/Sum/Max/Min over adjacent axes.
class ReduceLayer : public Layer {
 public:
  void build(const Node& n, Graph& g) override;
  bool reads_input_at_build(size_t i) const override { return i > 0; }  // axes
  void forward(Backend& b, const Tensor* const* in, Tensor* const* out, void* ws) override;

 private:
  ReduceParams p_;
};

// Gemm and MatMul.
class GemmLayer : public Layer {
 public:
  void build(const Node& n, Graph& g) override;
  void forward(Backend& b, const Tensor* const* in, Tensor* const* out, void* ws) override;

 private:
  GemmParams p_;
  bool has_bias_ = false;
};

// Resize (opset 10+) and Upsample.
class ResizeLayer : public Layer {
 public:
  void build(const Node& n, Graph& g) override;
  bool reads_input_at_build(size_t i) const override { return i > 0; }  // roi, scales, sizes
  void forward(Backend& b, const Tensor* const* in, Tensor* const* out, void* ws) override;
  const ResizeParams& params() const { return p_; }

 private:
  ResizeParams p_;
};

// Reshape, Flatten, Squeeze, Unsqueeze, Identity, Dropout (inference): same bytes,
// new shape.
class ReshapeLayer : public Layer {
 public:
  void build(const Node& n, Graph& g) override;
  bool reads_input_at_build(size_t i) const override { return i > 0; }
  void forward(Backend& b, const Tensor* const* in, Tensor* const* out, void* ws) override;
};

// Transpose, Concat, Slice, Split: strided copies.
class CopyLayer : public Layer {
 public:
  void build(const Node& n, Graph& g) override;
  bool reads_input_at_build(size_t i) const override;
  void forward(Backend& b, const Tensor* const* in, Tensor* const* out, void* ws) override;

 private:
  // One strided copy per (input, output) pair, in order.
  struct Piece { int input, output; CopyParams p; };
  std::vector<Piece> pieces_;
  bool concat_ = false;
};

class PadLayer : public Layer {
 public:
  void build(const Node& n, Graph& g) override;
  bool reads_input_at_build(size_t i) const override { return i > 0; }
  void forward(Backend& b, const Tensor* const* in, Tensor* const* out, void* ws) override;

 private:
  PadParams p_;
};

// Softmax, LogSoftmax.
class SoftmaxLayer : public Layer {
 public:
  void build(const Node& n, Graph& g) override;
  void forward(Backend& b, const Tensor* const* in, Tensor* const* out, void* ws) override;

 private:
  SoftmaxParams p_;
};

// WeightedSum: BiFPN's fast normalised fusion after its weights were folded.
// Input i may come resampled (fold_resample_into_weighted_sum): attribute
// "maxpool<i>" (a max pool's window: kh, kw, stride h, w, dilation h, w, pads top,
// left, bottom, right; floor rounding) or "upsample<i>" (nearest, asymmetric,
// floor: integer factors h, w).
class WeightedSumLayer : public Layer {
 public:
  void build(const Node& n, Graph& g) override;
  size_t workspace_bytes(const Backend& b) const override;
  void forward(Backend& b, const Tensor* const* in, Tensor* const* out, void* ws) override;
  static void attach_maxpool(Node& n, size_t input, const Pool2dParams& window);
  static void attach_upsample(Node& n, size_t input, int64_t factor_h, int64_t factor_w);
  // The sum's parameters and shape from WeightedSum node n over its inputs; throws
  // naming the node when they do not fit.
  static Shape sum_params(const Node& n, const Graph& g, WeightedSumParams& p,
                          FusionResample* resample);

 private:
  WeightedSumParams p_;
  FusionResample resample_[kMaxFusionInputs];
  bool resampled_ = false;
};

// WeightedSumSeparableConv: a WeightedSum that only a SeparableConv reads, as one
// node (fuse_weighted_sum_separable; BiFPN's nodes): the SeparableConv's inputs with
// input 0 the sum's first input and the sum's others appended (inputs 6 on), its
// attributes, and the sum's with the prefix "sum_".
// Backend::weighted_sum_separable_conv2d.
class WeightedSumSeparableConvLayer : public SeparableConvLayer {
 public:
  static Node fuse(const Node& sum, const Node& separable);
  void build(const Node& n, Graph& g) override;
  size_t workspace_bytes(const Backend& b) const override;
  void forward(Backend& b, const Tensor* const* in, Tensor* const* out, void* ws) override;

 private:
  WeightedSumParams sum_;
  FusionResample resample_[kMaxFusionInputs];
};

// ChannelGather: the sharing adapter's channel sampling (input 1: int64 indices).
class ChannelGatherLayer : public Layer {
 public:
  void build(const Node& n, Graph& g) override;
  void forward(Backend& b, const Tensor* const* in, Tensor* const* out, void* ws) override;

 private:
  ChannelGatherParams p_;
};

class SqueezeExcitationLayer : public Layer {
 public:
  void build(const Node& n, Graph& g) override;
  size_t workspace_bytes(const Backend& b) const override;
  void forward(Backend& b, const Tensor* const* in, Tensor* const* out, void* ws) override;
  // The parameters of SqueezeExcitation node n (inputs 0-5) from its inputs' shapes;
  // throws naming the node when they do not fit. Returns the target's shape.
  static Shape se_params(const Node& n, const Graph& g, SqueezeExcitationParams& p);

 private:
  SqueezeExcitationParams p_;
};

// SqueezeExcitationConv: a SqueezeExcitation that only a Conv reads, as one node
// (fuse_squeeze_excitation_conv; MBConv's projection): the SqueezeExcitation's six
// inputs, then the conv's other operand (its input when the gate scales its weights,
// attribute gates_weights 1, else its weights), bias and residual (both optional);
// the conv's attributes, and the SqueezeExcitation's with the prefix "se_".
// Backend::squeeze_excitation_conv2d.
class SqueezeExcitationConvLayer : public Layer {
 public:
  static Node fuse(const Node& se, const Node& conv);
  void build(const Node& n, Graph& g) override;
  size_t workspace_bytes(const Backend& b) const override;
  bool stores_output_f32(const Backend& b) const override;
  void forward(Backend& b, const Tensor* const* in, Tensor* const* out, void* ws) override;

 private:
  SqueezeExcitationParams se_;
  Conv2dParams conv_;
  bool gates_weights_ = false;
};

// Constant and Shape: outputs known at load time; they never run.
class ConstantLayer : public Layer {
 public:
  void build(const Node& n, Graph& g) override;
  void forward(Backend& b, const Tensor* const* in, Tensor* const* out, void* ws) override;
};

}  // namespace repshare
