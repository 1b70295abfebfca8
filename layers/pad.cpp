// Pad: constant, reflect, edge and wrap modes; negative pads crop.
#include "engine/error.h"
#include "layers/layers.h"

namespace repshare {

void PadLayer::build(const Node& n, Graph& g) {
  require_f32(g, n, 0);
  const Shape& x = input_value(g, n, 0).shape;
  const int64_t rank = static_cast<int64_t>(x.rank());
  check(rank <= kMaxRank, ErrorKind::Unsupported, n.label(), ": rank ", rank);
  p_ = PadParams();
  const std::string mode = n.attr_string("mode", "constant");
  if (mode == "constant") p_.mode = PadMode::Constant;
  else if (mode == "reflect") p_.mode = PadMode::Reflect;
  else if (mode == "edge") p_.mode = PadMode::Edge;
  else if (mode == "wrap") p_.mode = PadMode::Wrap;
  else fail(ErrorKind::Unsupported, n.label(), ": mode '", mode, "'");
  // Pads and value are attributes before opset 11 and inputs after.
  std::vector<int64_t> pads = n.attr_ints("pads");
  p_.value = n.attr_float("value", 0.f);
  std::vector<int64_t> axes;
  if (g.opset >= 11) {
    const Value& pv = input_value(g, n, 1);
    check(pv.is_constant(), ErrorKind::Unsupported, n.label(), ": pads must be a constant");
    pads = pv.as_ints();
    if (has_input(n, 2)) {
      const Value& vv = input_value(g, n, 2);
      check(vv.is_constant(), ErrorKind::Unsupported, n.label(), ": constant_value must be a constant");
      if (vv.shape.numel() > 0) p_.value = vv.as_floats()[0];
    }
    if (has_input(n, 3)) {
      const Value& av = input_value(g, n, 3);
      check(av.is_constant(), ErrorKind::Unsupported, n.label(), ": axes must be a constant");
      axes = av.as_ints();
    }
  }
  if (axes.empty())
    for (int64_t d = 0; d < rank; ++d) axes.push_back(d);
  const int64_t na = static_cast<int64_t>(axes.size());
  check(static_cast<int64_t>(pads.size()) == 2 * na, ErrorKind::Shape, n.label(), ": ",
        pads.size(), " pads for ", na, " axes");
  bounded_sizes(n, pads, "pads");
  std::vector<int64_t> begin(rank, 0), end(rank, 0);
  for (int64_t i = 0; i < na; ++i) {
    int64_t a = normalize_axis(n, axes[i], rank);
    begin[a] = pads[i];
    end[a] = pads[i + na];
  }
  Shape out;
  p_.rank = static_cast<int>(rank);
  for (int64_t d = 0; d < rank; ++d) {
    int64_t o = x[d] + begin[d] + end[d];
    check(o >= 0, ErrorKind::Shape, n.label(), ": pads crop axis ", d, " below zero");
    if (p_.mode == PadMode::Reflect)
      check(begin[d] < x[d] && end[d] < x[d], ErrorKind::Shape, n.label(),
            ": reflect pad wider than the axis");
    if (p_.mode != PadMode::Constant && (begin[d] > 0 || end[d] > 0))
      check(x[d] > 0, ErrorKind::Shape, n.label(), ": padding an empty axis");
    out.dims.push_back(o);
    p_.in_dims[d] = x[d];
    p_.out_dims[d] = o;
    p_.pad_begin[d] = begin[d];
  }
  set_output(g, n, 0, out);
}

void PadLayer::forward(Backend& b, const Tensor* const* in, Tensor* const* out, void*) {
  b.pad(p_, *in[0], *out[0]);
}

}  // namespace repshare
