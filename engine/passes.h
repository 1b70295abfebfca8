// Load-time graph passes: shape inference, constant folding, BatchNorm lowering,
// and fusions. Each fusion can be switched off so tests can compare outputs with
// and without it.
#pragma once

#include <set>
#include <string>

#include "engine/graph.h"

namespace repshare {

class Backend;

struct PassOptions {
  bool fold_constants = true;    // run nodes whose inputs are all constants, at load
  bool fuse_pad_conv = true;     // Pad(0 / -inf on H, W) -> Conv's / MaxPool's own pads
  bool fold_batchnorm = true;    // Conv -> BatchNorm: scale the weights, shift the bias
  bool fuse_swish = true;        // x * sigmoid(x) -> Swish
  bool fuse_activations = true;  // Conv/Gemm/ChannelAffine/binary/WeightedSum + activation
  bool fuse_weighted_sum = true; // BiFPN fast normalised fusion -> WeightedSum
  bool fold_resample = true;     // MaxPool / nearest Resize -> the WeightedSum reading it
  bool fold_channel_gate = true; // Mul(x, per-channel gate) -> 1x1 Conv: gate the weights
  bool fuse_channel_mean = true; // depthwise or 1x1 Conv -> mean over H, W: a second output
  bool fuse_residual_add = true; // Add(Conv without activation, r) -> the Conv adds r
  bool fold_reshape_into_gemm = true;  // Flatten/Reshape read only by Gemm -> its A as 2-D
  bool fuse_squeeze_excitation = true;  // SE's two 1x1 convs and gate -> SqueezeExcitation
  // SqueezeExcitation read only by a 1x1 Conv -> SqueezeExcitationConv
  bool fuse_squeeze_excitation_conv = true;
  bool fuse_separable_conv = true;  // depthwise Conv read only by a 1x1 Conv -> SeparableConv
  // WeightedSum read only by a SeparableConv -> WeightedSumSeparableConv
  bool fuse_weighted_sum_separable = true;
  // SeparableConv (or chain) without residual read only by a SeparableConv ->
  // SeparableConvChain
  bool fuse_separable_chain = true;
  // 1x1 Conv read only by a depthwise Conv -> PointwiseDepthwiseConv, on planes of at
  // most pointwise_depthwise_max_plane elements (the backend's say:
  // Backend::pointwise_depthwise_max_plane, through pass_options_for)
  bool fuse_pointwise_depthwise = true;
  int64_t pointwise_depthwise_max_plane = 8192;
  // A depthwise conv between an expansion and a projection (MobileNet-style blocks
  // without SE: EfficientNet-Lite) fuses with the expansion, not the projection
  // (Backend::prefers_pointwise_depthwise, through pass_options_for).
  bool prefer_pointwise_depthwise = false;
  // Tensors that must survive fusion (stage outputs a caller will cut at). Graph
  // outputs always survive.
  std::set<std::string> keep;

  // Every fusion on or off at once (constant folding stays as it is).
  void set_fusions(bool on) {
    fuse_pad_conv = fold_batchnorm = fuse_swish = fuse_activations = fuse_weighted_sum =
        fold_resample = fold_channel_gate = fuse_channel_mean = fold_reshape_into_gemm =
            fuse_residual_add = fuse_squeeze_excitation = fuse_squeeze_excitation_conv =
                fuse_separable_conv = fuse_weighted_sum_separable = fuse_separable_chain =
                    fuse_pointwise_depthwise = on;
  }
};

struct PassStats {
  int folded = 0, pad_conv = 0, batchnorm = 0, swish = 0, activations = 0, weighted_sum = 0,
      resample = 0, channel_gate = 0, channel_mean = 0, reshape_gemm = 0, residual_add = 0,
      squeeze_excitation = 0, squeeze_excitation_conv = 0, separable_conv = 0,
      weighted_sum_separable = 0, separable_chain = 0, pointwise_depthwise = 0;
};

// The default options, with the limits `backend`'s kernels set (the plane size up to
// which a PointwiseDepthwiseConv costs it no memory).
PassOptions pass_options_for(const Backend& backend);

// Infers every value's shape (throws naming the node on any mismatch), lowers
// BatchNormalization to ChannelAffine, folds constants, applies the fusions and
// drops what no graph output needs.
PassStats prepare_graph(Graph& g, const PassOptions& options = PassOptions());

// Shape inference only (layers' build()), in topological order.
void infer_shapes(Graph& g);

}  // namespace repshare
