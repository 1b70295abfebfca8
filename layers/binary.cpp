// Elementwise binary ops with NumPy broadcasting.
#include <algorithm>
#include <map>

#include "engine/error.h"
#include "layers/layers.h"

namespace repshare {

void BinaryLayer::build(const Node& n, Graph& g) {
  static const std::map<std::string, BinaryOp> ops = {
      {"Add", BinaryOp::Add}, {"Sub", BinaryOp::Sub}, {"Mul", BinaryOp::Mul},
      {"Div", BinaryOp::Div}, {"Pow", BinaryOp::Pow}, {"Max", BinaryOp::Max},
      {"Min", BinaryOp::Min}, {"Sum", BinaryOp::Add}, {"Mean", BinaryOp::Add}};
  auto it = ops.find(n.op_type);
  check(it != ops.end(), ErrorKind::Unsupported, n.label(), " is not a binary op");
  size_t count = 0;
  for (size_t i = 0; i < n.inputs.size(); ++i) count += has_input(n, i);
  single_input_ = count == 1 && n.inputs.size() == 1;
  if (single_input_) {  // Sum/Mean/Max/Min of one tensor
    require_f32(g, n, 0);
    set_output(g, n, 0, input_value(g, n, 0).shape);
    return;
  }
  check(count == 2 && n.inputs.size() == 2 && n.op_type != "Mean", ErrorKind::Unsupported,
        n.label(), " with ", count, " inputs: repshare implements the two-input form");
  require_f32(g, n, 0);
  require_f32(g, n, 1);
  const Shape& a = input_value(g, n, 0).shape;
  const Shape& bs = input_value(g, n, 1).shape;
  const int rank = static_cast<int>(std::max(a.rank(), bs.rank()));
  check(rank <= kMaxRank, ErrorKind::Unsupported, n.label(), ": rank ", rank, " > ", kMaxRank);
  p_ = BroadcastParams();
  p_.op = it->second;
  p_.rank = rank;
  p_.act = fused_activation(n);
  Shape out;
  int64_t sa = 1, sb = 1;
  int64_t a_strides[kMaxRank], b_strides[kMaxRank];
  for (int d = rank - 1; d >= 0; --d) {
    const int ia = d - (rank - static_cast<int>(a.rank()));
    const int ib = d - (rank - static_cast<int>(bs.rank()));
    const int64_t da = ia >= 0 ? a[ia] : 1, db = ib >= 0 ? bs[ib] : 1;
    check(da == db || da == 1 || db == 1, ErrorKind::Shape, n.label(), ": shapes ", a.str(),
          " and ", bs.str(), " do not broadcast");
    p_.out_dims[d] = std::max(da, db);
    if (da == 0 || db == 0) p_.out_dims[d] = 0;
    a_strides[d] = da == 1 ? 0 : sa;
    b_strides[d] = db == 1 ? 0 : sb;
    sa *= da;
    sb *= db;
  }
  for (int d = 0; d < rank; ++d) {
    p_.a_strides[d] = a_strides[d];
    p_.b_strides[d] = b_strides[d];
    out.dims.push_back(p_.out_dims[d]);
  }
  p_.numel = out.numel();
  if (rank == 0) {  // scalar op scalar: one element, kernels loop over one axis
    p_.rank = 1;
    p_.out_dims[0] = 1;
  }
  set_output(g, n, 0, out);
}

void BinaryLayer::forward(Backend& b, const Tensor* const* in, Tensor* const* out, void*) {
  if (single_input_) {
    b.copy(out[0]->data, in[0]->data, in[0]->bytes());
    return;
  }
  b.binary(p_, *in[0], *in[1], *out[0]);
}

}  // namespace repshare
