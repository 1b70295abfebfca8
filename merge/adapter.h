// Sharing adapters (the seed paper's): make a donor stage output fit where the
// receiver expects its own stage output.
//
//  - Channels: when the counts differ, the receiver's C_t channels are sampled
//    uniformly from the donor's C_s, with repetition when C_t > C_s:
//    receiver channel t reads donor channel floor(t * C_s / C_t). Deterministic,
//    order-preserving, and every donor channel is used when C_t >= C_s.
//  - Resolution: when H x W differ, upsample (donor smaller) or downsample (donor
//    larger) to the receiver's H x W. Defaults: bilinear upsampling (ONNX Resize,
//    half_pixel) and area downsampling (average pooling over exact integer
//    factors; bilinear when the factor is not an integer). Both configurable.
//
// An adapter is a small graph ("donor" -> "adapted") run by an Executor on any
// backend, so it needs no code of its own beyond the ChannelGather kernel.
#pragma once

#include <string>
#include <vector>

#include "engine/graph.h"

namespace repshare {

enum class ResizeMethod { Bilinear, Nearest, Area };
ResizeMethod parse_resize_method(const std::string& s);  // "bilinear", "nearest", "area"
const char* resize_method_name(ResizeMethod m);

struct AdapterOptions {
  ResizeMethod upsample = ResizeMethod::Bilinear;
  ResizeMethod downsample = ResizeMethod::Area;
};

// Receiver channel t reads donor channel index[t].
std::vector<int64_t> channel_index_map(int64_t donor_channels, int64_t receiver_channels);

// A graph with input "donor" of shape `donor` (NCHW) and output "adapted" of the
// receiver's shape (N from the donor). Throws Shape when a side is not 4-D.
Graph build_adapter_graph(const Shape& donor, const Shape& receiver,
                          const AdapterOptions& options = AdapterOptions());

}  // namespace repshare
