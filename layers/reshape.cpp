// Reshape, Flatten, Squeeze, Unsqueeze, Identity, Dropout: the output has the
// input's bytes under a new shape.
#include <algorithm>

#include "engine/error.h"
#include "layers/layers.h"

namespace repshare {
namespace {

std::vector<int64_t> axes_operand(const Node& n, const Graph& g) {
  // An attribute until opset 13, then an optional constant input.
  if (n.has("axes")) return n.attr_ints("axes");
  if (has_input(n, 1)) {
    const Value& v = input_value(g, n, 1);
    check(v.is_constant(), ErrorKind::Unsupported, n.label(), ": axes must be a constant");
    return v.as_ints();
  }
  return {};
}

}  // namespace

void ReshapeLayer::build(const Node& n, Graph& g) {
  const Value& xv = input_value(g, n, 0);
  const Shape x = xv.shape;
  const int64_t rank = static_cast<int64_t>(x.rank());
  Shape out;
  if (n.op_type == "Reshape") {
    const Value& sv = input_value(g, n, 1);
    check(sv.is_constant(), ErrorKind::Unsupported, n.label(), ": shape must be a constant");
    auto spec = sv.as_ints();
    const bool allowzero = n.attr_int("allowzero", 0) != 0;
    int64_t infer_at = -1;
    for (size_t i = 0; i < spec.size(); ++i) {
      int64_t d = spec[i];
      if (d == 0 && !allowzero) {
        check(static_cast<int64_t>(i) < rank, ErrorKind::Shape, n.label(), ": 0 at axis ", i,
              " copies a dimension the input ", x.str(), " lacks");
        d = x[i];
      }
      if (d == -1) {
        check(infer_at < 0, ErrorKind::Shape, n.label(), ": more than one -1 in shape");
        infer_at = static_cast<int64_t>(i);
      } else {
        check(d >= 0, ErrorKind::Shape, n.label(), ": bad dimension ", d);
      }
      out.dims.push_back(d);
    }
    if (infer_at >= 0) {
      int64_t known = 1;  // the product of the given dimensions, which may be absurd
      for (int64_t i = 0; i < static_cast<int64_t>(out.rank()); ++i)
        check(i == infer_at || !__builtin_mul_overflow(known, out[i], &known), ErrorKind::Shape,
              n.label(), ": shape ", out.str(), " is too large");
      check(known > 0 && x.numel() % known == 0, ErrorKind::Shape, n.label(), ": cannot reshape ",
            x.str(), " with a -1");
      out[infer_at] = x.numel() / known;
    }
  } else if (n.op_type == "Flatten") {
    int64_t axis = n.attr_int("axis", 1);
    axis = axis < 0 ? axis + rank : axis;
    check(axis >= 0 && axis <= rank, ErrorKind::Shape, n.label(), ": axis out of range");
    int64_t outer = 1;
    for (int64_t d = 0; d < axis; ++d) outer *= x[d];
    out = Shape{outer, outer ? x.numel() / outer : 0};
  } else if (n.op_type == "Squeeze") {
    auto axes = axes_operand(n, g);
    for (auto& a : axes) a = normalize_axis(n, a, rank);
    for (int64_t d = 0; d < rank; ++d) {
      bool listed = std::find(axes.begin(), axes.end(), d) != axes.end();
      if (listed) check(x[d] == 1, ErrorKind::Shape, n.label(), ": axis ", d, " of ", x.str(),
                        " is not 1");
      if (listed || (axes.empty() && x[d] == 1)) continue;
      out.dims.push_back(x[d]);
    }
  } else if (n.op_type == "Unsqueeze") {
    auto axes = axes_operand(n, g);
    const int64_t out_rank = rank + static_cast<int64_t>(axes.size());
    for (auto& a : axes) a = normalize_axis(n, a, out_rank);
    std::sort(axes.begin(), axes.end());
    check(std::adjacent_find(axes.begin(), axes.end()) == axes.end(), ErrorKind::Shape,
          n.label(), ": repeated axis");
    size_t next = 0;
    for (int64_t d = 0; d < out_rank; ++d) {
      if (std::binary_search(axes.begin(), axes.end(), d)) out.dims.push_back(1);
      else out.dims.push_back(x[next++]);
    }
  } else {  // Identity, Dropout (inference)
    check(n.outputs.size() == 1 || n.op_type != "Dropout", ErrorKind::Unsupported, n.label(),
          ": the mask output");
    out = x;
  }
  check(numel_for(n, out) == x.numel(), ErrorKind::Shape, n.label(), ": cannot reshape ", x.str(),
        " into ", out.str());
  set_output(g, n, 0, out, xv.dtype);
  // Reshaping a constant is itself constant: pass the bytes through (this is how
  // int64 shape computations fold).
  if (xv.is_constant()) g.values[n.outputs[0]].data = xv.data;
}

void ReshapeLayer::forward(Backend& b, const Tensor* const* in, Tensor* const* out, void*) {
  b.copy(out[0]->data, in[0]->data, in[0]->bytes());
}

}  // namespace repshare
