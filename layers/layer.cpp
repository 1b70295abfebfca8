#include "layers/layer.h"

#include <algorithm>

#include "engine/error.h"

namespace repshare {

bool has_input(const Node& n, size_t i) { return i < n.inputs.size() && n.inputs[i] >= 0; }

int optional_input(const Node& n, size_t i) { return has_input(n, i) ? n.inputs[i] : -1; }

const Value& input_value(const Graph& g, const Node& n, size_t i) {
  check(has_input(n, i), ErrorKind::Malformed, n.label(), " is missing input ", i);
  const Value& v = g.values[n.inputs[i]];
  check(v.shape_known, ErrorKind::Shape, n.label(), " input '", v.name, "' has no known shape");
  return v;
}

void set_output(Graph& g, const Node& n, size_t i, const Shape& s, DType t) {
  check(i < n.outputs.size() && n.outputs[i] >= 0, ErrorKind::Malformed, n.label(),
        " is missing output ", i);
  Value& v = g.values[n.outputs[i]];
  numel_for(n, s);  // overflow / absurd-size check before anything is planned
  v.shape = s;
  v.dtype = t;
  v.shape_known = true;
}

int64_t numel_for(const Node& n, const Shape& s) {
  try {
    return s.numel();
  } catch (const Error& e) {
    fail(e.kind(), n.label(), ": ", e.what());
  }
}

void require_f32(const Graph& g, const Node& n, size_t i) {
  const Value& v = input_value(g, n, i);
  check(v.dtype == DType::F32, ErrorKind::Unsupported, n.label(), " input '", v.name, "' is ",
        dtype_name(v.dtype), "; repshare computes in float32");
}

int64_t normalize_axis(const Node& n, int64_t axis, int64_t rank) {
  int64_t a = axis < 0 ? axis + rank : axis;
  check(a >= 0 && a < rank, ErrorKind::Shape, n.label(), ": axis ", axis,
        " is out of range for rank ", rank);
  return a;
}

const std::vector<int64_t>& bounded_sizes(const Node& n, const std::vector<int64_t>& values,
                                          const char* what) {
  constexpr int64_t kLimit = int64_t(1) << 31;
  for (int64_t v : values)
    check(v >= -kLimit && v <= kLimit, ErrorKind::Malformed, n.label(), ": ", what, " value ", v,
          " is out of range");
  return values;
}

ActKind act_kind_from_name(const std::string& name) {
  for (int k = 0; k <= static_cast<int>(ActKind::Softplus); ++k)
    if (name == act_name(static_cast<ActKind>(k))) return static_cast<ActKind>(k);
  fail(ErrorKind::Unsupported, "unknown activation '", name, "'");
}

Activation fused_activation(const Node& n, const std::string& name) {
  Activation a;
  if (!n.has(name)) return a;
  a.kind = act_kind_from_name(n.attr_string(name, "none"));
  a.alpha = n.attr_float(name + "_alpha", 0.f);
  a.beta = n.attr_float(name + "_beta", 0.f);
  return a;
}

Node folded_part(const Node& n, const std::string& op_type, const std::string& prefix,
                 const std::string& part) {
  Node d;
  d.op_type = op_type;
  d.name = n.name + "/" + part;
  for (const auto& a : n.attrs)
    if (a.first.compare(0, prefix.size(), prefix) == 0)
      d.attrs[a.first.substr(prefix.size())] = a.second;
  return d;
}

void attach_activation(Node& n, const Activation& a, const std::string& name) {
  Attribute kind, alpha, beta;
  kind.kind = Attribute::Kind::String;
  kind.s = act_name(a.kind);
  alpha.kind = beta.kind = Attribute::Kind::Float;
  alpha.f = a.alpha;
  beta.f = a.beta;
  n.attrs[name] = kind;
  n.attrs[name + "_alpha"] = alpha;
  n.attrs[name + "_beta"] = beta;
}

std::vector<int64_t> resolve_pads(const Node& n, const std::vector<int64_t>& in,
                                  const std::vector<int64_t>& kernel_extent,
                                  const std::vector<int64_t>& strides) {
  const size_t r = in.size();
  const std::string auto_pad = n.attr_string("auto_pad", "NOTSET");
  std::vector<int64_t> pads(2 * r, 0);
  if (auto_pad == "NOTSET") {
    if (n.has("pads")) {
      pads = bounded_sizes(n, n.attr_ints("pads"), "pads");
      check(pads.size() == 2 * r, ErrorKind::Malformed, n.label(), " has ", pads.size(),
            " pads for ", r, " spatial axes");
    }
  } else if (auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER") {
    // TF "SAME": out = ceil(in / stride); the odd pixel of padding goes at the end
    // (SAME_UPPER, TensorFlow's choice) or the beginning (SAME_LOWER).
    for (size_t d = 0; d < r; ++d) {
      int64_t out = (in[d] + strides[d] - 1) / strides[d];
      int64_t total = std::max<int64_t>(0, (out - 1) * strides[d] + kernel_extent[d] - in[d]);
      int64_t small = total / 2, big = total - small;
      pads[d] = auto_pad == "SAME_UPPER" ? small : big;
      pads[d + r] = auto_pad == "SAME_UPPER" ? big : small;
    }
  } else {
    check(auto_pad == "VALID", ErrorKind::Malformed, n.label(), " has auto_pad '", auto_pad, "'");
  }
  for (int64_t p : pads) check(p >= 0, ErrorKind::Malformed, n.label(), " has a negative pad");
  return pads;
}

}  // namespace repshare
