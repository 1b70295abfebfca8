// Op type -> layer class. An explicit table (not static self-registration) so that
// linking the static library can never silently drop an op.
#include <functional>
#include <map>

#include "engine/error.h"
#include "layers/layers.h"

namespace repshare {
namespace {

using Factory = std::function<std::unique_ptr<Layer>()>;

template <typename T>
Factory make() {
  return [] { return std::unique_ptr<Layer>(new T()); };
}

const std::map<std::string, Factory>& registry() {
  static const std::map<std::string, Factory> table = {
      {"Conv", make<ConvLayer>()},
      {"SeparableConv", make<SeparableConvLayer>()},
      {"WeightedSumSeparableConv", make<WeightedSumSeparableConvLayer>()},
      {"SeparableConvChain", make<SeparableConvChainLayer>()},
      {"Relu", make<ActivationLayer>()},
      {"Sigmoid", make<ActivationLayer>()},
      {"Tanh", make<ActivationLayer>()},
      {"Clip", make<ActivationLayer>()},
      {"LeakyRelu", make<ActivationLayer>()},
      {"HardSigmoid", make<ActivationLayer>()},
      {"HardSwish", make<ActivationLayer>()},
      {"Elu", make<ActivationLayer>()},
      {"Exp", make<ActivationLayer>()},
      {"Log", make<ActivationLayer>()},
      {"Sqrt", make<ActivationLayer>()},
      {"Neg", make<ActivationLayer>()},
      {"Abs", make<ActivationLayer>()},
      {"Reciprocal", make<ActivationLayer>()},
      {"Softplus", make<ActivationLayer>()},
      {"Swish", make<ActivationLayer>()},
      {"Add", make<BinaryLayer>()},
      {"Sub", make<BinaryLayer>()},
      {"Mul", make<BinaryLayer>()},
      {"Div", make<BinaryLayer>()},
      {"Pow", make<BinaryLayer>()},
      {"Max", make<BinaryLayer>()},
      {"Min", make<BinaryLayer>()},
      {"Sum", make<BinaryLayer>()},
      {"Mean", make<BinaryLayer>()},
      {"ChannelAffine", make<ChannelAffineLayer>()},
      {"MaxPool", make<Pool2dLayer>()},
      {"AveragePool", make<Pool2dLayer>()},
      {"GlobalAveragePool", make<ReduceLayer>()},
      {"GlobalMaxPool", make<ReduceLayer>()},
      {"ReduceMean", make<ReduceLayer>()},
      {"ReduceSum", make<ReduceLayer>()},
      {"ReduceMax", make<ReduceLayer>()},
      {"ReduceMin", make<ReduceLayer>()},
      {"Gemm", make<GemmLayer>()},
      {"MatMul", make<GemmLayer>()},
      {"Resize", make<ResizeLayer>()},
      {"Upsample", make<ResizeLayer>()},
      {"Reshape", make<ReshapeLayer>()},
      {"Flatten", make<ReshapeLayer>()},
      {"Squeeze", make<ReshapeLayer>()},
      {"Unsqueeze", make<ReshapeLayer>()},
      {"Identity", make<ReshapeLayer>()},
      {"Dropout", make<ReshapeLayer>()},
      {"Transpose", make<CopyLayer>()},
      {"Concat", make<CopyLayer>()},
      {"Slice", make<CopyLayer>()},
      {"Split", make<CopyLayer>()},
      {"Pad", make<PadLayer>()},
      {"Softmax", make<SoftmaxLayer>()},
      {"LogSoftmax", make<SoftmaxLayer>()},
      {"WeightedSum", make<WeightedSumLayer>()},
      {"ChannelGather", make<ChannelGatherLayer>()},
      {"SqueezeExcitation", make<SqueezeExcitationLayer>()},
      {"SqueezeExcitationConv", make<SqueezeExcitationConvLayer>()},
      {"PointwiseDepthwiseConv", make<PointwiseDepthwiseConvLayer>()},
      {"Constant", make<ConstantLayer>()},
      {"Shape", make<ConstantLayer>()},
  };
  return table;
}

}  // namespace

std::unique_ptr<Layer> create_layer(const Node& node) {
  auto it = registry().find(node.op_type);
  if (it == registry().end()) {
    if (node.op_type == "BatchNormalization")
      fail(ErrorKind::Unsupported, node.label(), ": BatchNormalization needs constant scale, ",
           "bias, mean and variance (inference mode)");
    fail(ErrorKind::Unsupported, node.label(), ": op '", node.op_type,
         "' is not implemented by repshare");
  }
  return it->second();
}

bool is_supported_op(const std::string& op_type) {
  return registry().count(op_type) != 0 || op_type == "BatchNormalization";
}

std::vector<std::string> supported_ops() {
  std::vector<std::string> ops;
  for (const auto& kv : registry()) ops.push_back(kv.first);
  ops.push_back("BatchNormalization");
  return ops;
}

}  // namespace repshare
