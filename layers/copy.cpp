// Transpose, Concat, Slice and Split as strided copies (one per input/output pair).
#include <algorithm>
#include <cstring>
#include <limits>

#include "engine/error.h"
#include "layers/layers.h"

namespace repshare {
namespace {

std::vector<int64_t> contiguous_strides(const Shape& s) {
  std::vector<int64_t> st(s.rank(), 1);
  for (size_t d = s.rank(); d-- > 1;) st[d - 1] = st[d] * s[d];
  return st;
}

CopyParams make_copy(const Shape& dims, const std::vector<int64_t>& in_strides,
                     const std::vector<int64_t>& out_strides, int64_t in_off, int64_t out_off,
                     const Node& n) {
  check(dims.rank() <= static_cast<size_t>(kMaxRank), ErrorKind::Unsupported, n.label(),
        ": rank ", dims.rank(), " > ", kMaxRank);
  CopyParams p;
  p.rank = static_cast<int>(dims.rank());
  for (size_t d = 0; d < dims.rank(); ++d) {
    p.dims[d] = dims[d];
    p.in_strides[d] = in_strides[d];
    p.out_strides[d] = out_strides[d];
  }
  p.in_offset = in_off;
  p.out_offset = out_off;
  return p;
}

// Runs a CopyParams on host int64 data (folding shape computations at load).
void host_copy_i64(const CopyParams& p, const int64_t* in, int64_t* out) {
  int64_t total = 1;
  for (int d = 0; d < p.rank; ++d) total *= p.dims[d];
  for (int64_t i = 0; i < total; ++i) {
    int64_t rem = i, src = p.in_offset, dst = p.out_offset;
    for (int d = p.rank - 1; d >= 0; --d) {
      int64_t idx = rem % p.dims[d];
      rem /= p.dims[d];
      src += idx * p.in_strides[d];
      dst += idx * p.out_strides[d];
    }
    out[dst] = in[src];
  }
}

std::vector<int64_t> const_ints(const Graph& g, const Node& n, size_t i, const char* what) {
  const Value& v = input_value(g, n, i);
  check(v.is_constant(), ErrorKind::Unsupported, n.label(), ": ", what, " must be a constant");
  return v.as_ints();
}

}  // namespace

bool CopyLayer::reads_input_at_build(size_t i) const { return !concat_ && i > 0; }

void CopyLayer::build(const Node& n, Graph& g) {
  pieces_.clear();
  concat_ = n.op_type == "Concat";
  const DType dtype = input_value(g, n, 0).dtype;
  for (size_t i = 0; i < (concat_ ? n.inputs.size() : 1); ++i)
    check(input_value(g, n, i).dtype == dtype, ErrorKind::Shape, n.label(), ": mixed dtypes");
  const Shape x = input_value(g, n, 0).shape;
  const int64_t rank = static_cast<int64_t>(x.rank());
  const auto xs = contiguous_strides(x);
  std::vector<Shape> outs;

  if (n.op_type == "Transpose") {
    std::vector<int64_t> perm = n.attr_ints("perm");
    if (perm.empty())
      for (int64_t d = rank - 1; d >= 0; --d) perm.push_back(d);
    check(static_cast<int64_t>(perm.size()) == rank, ErrorKind::Shape, n.label(), ": perm has ",
          perm.size(), " entries for rank ", rank);
    Shape out;
    std::vector<int64_t> in_strides;
    std::vector<bool> seen(rank, false);
    for (int64_t p : perm) {
      check(p >= 0 && p < rank && !seen[p], ErrorKind::Shape, n.label(), ": bad perm");
      seen[p] = true;
      out.dims.push_back(x[p]);
      in_strides.push_back(xs[p]);
    }
    outs.push_back(out);
    pieces_.push_back({0, 0, make_copy(out, in_strides, contiguous_strides(out), 0, 0, n)});
  } else if (concat_) {
    const int64_t axis = normalize_axis(n, n.attr_int("axis", 0), rank);
    Shape out = x;
    out[axis] = 0;
    for (size_t i = 0; i < n.inputs.size(); ++i) {
      const Shape& s = input_value(g, n, i).shape;
      check(static_cast<int64_t>(s.rank()) == rank, ErrorKind::Shape, n.label(), ": input ", i,
            " ", s.str(), " has a different rank from ", x.str());
      for (int64_t d = 0; d < rank; ++d)
        check(d == axis || s[d] == x[d], ErrorKind::Shape, n.label(), ": input ", i, " ",
              s.str(), " does not match ", x.str(), " off the concat axis");
      out[axis] += s[axis];
    }
    const auto os = contiguous_strides(out);
    int64_t offset = 0;
    for (size_t i = 0; i < n.inputs.size(); ++i) {
      const Shape& s = input_value(g, n, i).shape;
      pieces_.push_back({static_cast<int>(i), 0,
                         make_copy(s, contiguous_strides(s), os, 0, offset * os[axis], n)});
      offset += s[axis];
    }
    outs.push_back(out);
  } else if (n.op_type == "Slice") {
    std::vector<int64_t> starts, ends, axes, steps;
    if (g.opset < 10) {
      starts = n.attr_ints("starts");
      ends = n.attr_ints("ends");
      axes = n.attr_ints("axes");
    } else {
      starts = const_ints(g, n, 1, "starts");
      ends = const_ints(g, n, 2, "ends");
      if (has_input(n, 3)) axes = const_ints(g, n, 3, "axes");
      if (has_input(n, 4)) steps = const_ints(g, n, 4, "steps");
    }
    if (axes.empty())
      for (size_t i = 0; i < starts.size(); ++i) axes.push_back(static_cast<int64_t>(i));
    if (steps.empty()) steps.assign(starts.size(), 1);
    check(ends.size() == starts.size() && axes.size() == starts.size() &&
              steps.size() == starts.size(),
          ErrorKind::Malformed, n.label(), ": starts/ends/axes/steps differ in length");
    Shape out = x;
    std::vector<int64_t> in_strides = xs;
    int64_t in_off = 0;
    for (size_t i = 0; i < starts.size(); ++i) {
      const int64_t a = normalize_axis(n, axes[i], rank), dim = x[a], step = steps[i];
      check(step != 0, ErrorKind::Malformed, n.label(), ": step 0");
      auto clampi = [](int64_t v, int64_t lo, int64_t hi) { return std::max(lo, std::min(v, hi)); };
      int64_t s = starts[i] < 0 ? starts[i] + dim : starts[i];
      int64_t e = ends[i] < 0 ? ends[i] + dim : ends[i];
      // ONNX clamps starts/ends into [0, dim] for positive steps and [-1, dim-1]
      // for negative ones (ends may be INT64_MIN/MAX sentinels).
      if (ends[i] == std::numeric_limits<int64_t>::min()) e = -1;
      if (step > 0) {
        s = clampi(s, 0, dim);
        e = clampi(e, 0, dim);
      } else {
        s = clampi(s, -1, dim - 1);
        e = clampi(e, -1, dim - 1);
      }
      int64_t len = step > 0 ? (e - s + step - 1) / step : (s - e + (-step) - 1) / (-step);
      out[a] = std::max<int64_t>(0, len);
      in_off += s * xs[a];
      in_strides[a] = xs[a] * step;
    }
    outs.push_back(out);
    pieces_.push_back({0, 0, make_copy(out, in_strides, contiguous_strides(out),
                                       out.numel() ? in_off : 0, 0, n)});
  } else {  // Split
    const int64_t axis = normalize_axis(n, n.attr_int("axis", 0), rank);
    std::vector<int64_t> split = n.attr_ints("split");
    if (has_input(n, 1)) split = const_ints(g, n, 1, "split");
    const int64_t count = static_cast<int64_t>(n.outputs.size());
    if (split.empty()) {
      // Equal parts; with num_outputs (opset 18) the last part may be smaller.
      const int64_t part = (x[axis] + count - 1) / count;
      check(n.has("num_outputs") || x[axis] % count == 0, ErrorKind::Shape, n.label(),
            ": axis of ", x[axis], " does not split into ", count, " equal parts");
      for (int64_t i = 0; i < count; ++i)
        split.push_back(std::min(part, x[axis] - part * i));
    }
    check(static_cast<int64_t>(split.size()) == count, ErrorKind::Shape, n.label(), ": ",
          split.size(), " split sizes for ", count, " outputs");
    int64_t offset = 0;
    for (int64_t i = 0; i < count; ++i) {
      Shape out = x;
      out[axis] = split[i];
      pieces_.push_back({0, static_cast<int>(i),
                         make_copy(out, xs, contiguous_strides(out), offset * xs[axis], 0, n)});
      offset += split[i];
      outs.push_back(out);
    }
    check(offset == x[axis], ErrorKind::Shape, n.label(), ": split sizes add up to ", offset,
          ", axis has ", x[axis]);
  }
  for (size_t o = 0; o < outs.size(); ++o) set_output(g, n, o, outs[o], dtype);

  // Shape computations in int64 are folded here, on the host.
  bool all_const = true;
  for (size_t i = 0; i < (concat_ ? n.inputs.size() : 1); ++i)
    all_const = all_const && input_value(g, n, i).is_constant();
  if (dtype == DType::I64 && all_const) {
    for (size_t o = 0; o < outs.size(); ++o)
      g.values[n.outputs[o]].data =
          std::make_shared<std::vector<uint8_t>>(outs[o].numel() * sizeof(int64_t));
    for (const Piece& pc : pieces_)
      host_copy_i64(pc.p, g.values[n.inputs[pc.input]].i64(),
                    reinterpret_cast<int64_t*>(g.values[n.outputs[pc.output]].data->data()));
  }
}

void CopyLayer::forward(Backend& b, const Tensor* const* in, Tensor* const* out, void*) {
  for (const Piece& pc : pieces_) b.strided_copy(pc.p, *in[pc.input], *out[pc.output]);
}

}  // namespace repshare
