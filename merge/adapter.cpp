#include "merge/adapter.h"

#include "engine/error.h"
#include "engine/passes.h"

namespace repshare {

ResizeMethod parse_resize_method(const std::string& s) {
  if (s == "bilinear") return ResizeMethod::Bilinear;
  if (s == "nearest") return ResizeMethod::Nearest;
  if (s == "area") return ResizeMethod::Area;
  fail(ErrorKind::Argument, "unknown resize method '", s, "' (bilinear, nearest or area)");
}

const char* resize_method_name(ResizeMethod m) {
  switch (m) {
    case ResizeMethod::Bilinear: return "bilinear";
    case ResizeMethod::Nearest: return "nearest";
    case ResizeMethod::Area: return "area";
  }
  return "?";
}

std::vector<int64_t> channel_index_map(int64_t donor_channels, int64_t receiver_channels) {
  check(donor_channels > 0 && receiver_channels > 0, ErrorKind::Shape,
        "channel map needs positive channel counts, got ", donor_channels, " -> ",
        receiver_channels);
  std::vector<int64_t> idx(receiver_channels);
  for (int64_t t = 0; t < receiver_channels; ++t) idx[t] = t * donor_channels / receiver_channels;
  return idx;
}

namespace {

// Appends g.make_node(...) to g's nodes; returns its output.
int add_node(Graph& g, const std::string& op, const std::string& name, std::vector<int> inputs,
             const std::string& output) {
  g.nodes.push_back(g.make_node(op, name, std::move(inputs), output));
  return g.nodes.back().outputs[0];
}

}  // namespace

Graph build_adapter_graph(const Shape& donor, const Shape& receiver,
                          const AdapterOptions& options) {
  check(donor.rank() == 4 && receiver.rank() == 4, ErrorKind::Shape,
        "adapters connect NCHW stage outputs; got donor ", donor.str(), " and receiver ",
        receiver.str());
  Graph g;
  g.name = "adapter";
  g.opset = 13;
  int cur = g.add_value("donor");
  g.values[cur].shape = donor;
  g.values[cur].shape_known = true;
  g.inputs.push_back(cur);

  const int64_t h = donor[2], w = donor[3], ht = receiver[2], wt = receiver[3];
  const bool sample = donor[1] != receiver[1], resize = h != ht || w != wt;
  if (sample) {
    const int c = g.add_constant_i64("channel_index", Shape{receiver[1]},
                                     channel_index_map(donor[1], receiver[1]));
    cur = add_node(g, "ChannelGather", "sample_channels", {cur, c},
                   resize ? "sampled" : "adapted");
  }
  if (resize) {
    const bool down = h >= ht && w >= wt, up = h <= ht && w <= wt;
    ResizeMethod m = down ? options.downsample : up ? options.upsample : ResizeMethod::Bilinear;
    if (m == ResizeMethod::Area && !(down && h % ht == 0 && w % wt == 0)) m = ResizeMethod::Bilinear;
    if (m == ResizeMethod::Area) {
      cur = add_node(g, "AveragePool", "resize_area", {cur}, "adapted");
      Node& n = g.nodes.back();
      n.attrs["kernel_shape"].kind = n.attrs["strides"].kind = Attribute::Kind::Ints;
      n.attrs["kernel_shape"].ints = n.attrs["strides"].ints = {h / ht, w / wt};
    } else {
      const int sz = g.add_constant_i64("resize_sizes", Shape{4}, {donor[0], receiver[1], ht, wt});
      cur = add_node(g, "Resize", "resize", {cur, -1, -1, sz}, "adapted");
      Node& n = g.nodes.back();
      n.attrs["mode"].kind = n.attrs["coordinate_transformation_mode"].kind = Attribute::Kind::String;
      n.attrs["mode"].s = m == ResizeMethod::Nearest ? "nearest" : "linear";
      n.attrs["coordinate_transformation_mode"].s = "half_pixel";
    }
  }
  if (!sample && !resize) cur = add_node(g, "Identity", "same_shape", {cur}, "adapted");
  g.outputs = {cur};
  infer_shapes(g);
  return g;
}

}  // namespace repshare
