// Global pooling and ReduceMean/Sum/Max/Min over adjacent axes.
#include <algorithm>

#include "engine/error.h"
#include "layers/layers.h"

namespace repshare {

void ReduceLayer::build(const Node& n, Graph& g) {
  require_f32(g, n, 0);
  const Shape& x = input_value(g, n, 0).shape;
  const int64_t rank = static_cast<int64_t>(x.rank());
  p_ = ReduceParams();
  std::vector<int64_t> axes;
  bool keepdims = true;
  if (n.op_type == "GlobalAveragePool" || n.op_type == "GlobalMaxPool") {
    check(rank >= 3, ErrorKind::Shape, n.label(), ": input ", x.str(), " has no spatial axes");
    p_.kind = n.op_type == "GlobalAveragePool" ? ReduceKind::Mean : ReduceKind::Max;
    for (int64_t d = 2; d < rank; ++d) axes.push_back(d);
  } else {
    p_.kind = n.op_type == "ReduceMean" ? ReduceKind::Mean
              : n.op_type == "ReduceSum" ? ReduceKind::Sum
              : n.op_type == "ReduceMax" ? ReduceKind::Max
                                         : ReduceKind::Min;
    keepdims = n.attr_int("keepdims", 1) != 0;
    // Axes are an attribute until opset 18 (13 for ReduceSum) and an input after.
    if (n.has("axes")) axes = n.attr_ints("axes");
    if (has_input(n, 1)) {
      const Value& a = input_value(g, n, 1);
      check(a.is_constant(), ErrorKind::Unsupported, n.label(), ": axes must be a constant");
      axes = a.as_ints();
    }
    if (axes.empty()) {
      if (n.attr_int("noop_with_empty_axes", 0)) {
        p_.outer = 1;
        p_.reduce = 1;
        p_.inner = x.numel();
        set_output(g, n, 0, x);
        return;
      }
      for (int64_t d = 0; d < rank; ++d) axes.push_back(d);
    }
  }
  for (auto& a : axes) a = normalize_axis(n, a, rank);
  std::sort(axes.begin(), axes.end());
  axes.erase(std::unique(axes.begin(), axes.end()), axes.end());
  for (size_t i = 1; i < axes.size(); ++i)
    check(axes[i] == axes[i - 1] + 1, ErrorKind::Unsupported, n.label(),
          ": reduction over non-adjacent axes");
  p_.outer = p_.reduce = p_.inner = 1;
  Shape out;
  for (int64_t d = 0; d < rank; ++d) {
    bool reduced = !axes.empty() && d >= axes.front() && d <= axes.back();
    if (reduced) {
      p_.reduce *= x[d];
      if (keepdims) out.dims.push_back(1);
    } else {
      (axes.empty() || d < axes.front() ? p_.outer : p_.inner) *= x[d];
      out.dims.push_back(x[d]);
    }
  }
  check(p_.reduce > 0 || p_.kind == ReduceKind::Sum, ErrorKind::Unsupported, n.label(),
        ": reduction over an empty axis");
  set_output(g, n, 0, out);
}

void ReduceLayer::forward(Backend& b, const Tensor* const* in, Tensor* const* out, void*) {
  b.reduce(p_, *in[0], *out[0]);
}

}  // namespace repshare
