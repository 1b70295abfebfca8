// Gemm (with transposes, alpha, beta and a broadcast C) and MatMul (NumPy
// semantics: 1-D operands, and a batch on one side or equal batches on both).
#include <algorithm>

#include "engine/error.h"
#include "layers/layers.h"

namespace repshare {

void GemmLayer::build(const Node& n, Graph& g) {
  require_f32(g, n, 0);
  require_f32(g, n, 1);
  Shape a = input_value(g, n, 0).shape;
  Shape bs = input_value(g, n, 1).shape;
  p_ = GemmParams();
  has_bias_ = false;
  if (n.op_type == "Gemm") {
    if (n.has("a_shape")) {  // a reshape folded in (fold_reshape_into_gemm)
      const Shape as(bounded_sizes(n, n.attr_ints("a_shape"), "a_shape"));
      check(as.rank() == 2 && as[0] >= 0 && as[1] >= 0 && as.numel() == a.numel(),
            ErrorKind::Shape, n.label(), ": A ", a.str(), " is not of a_shape ", as.str());
      a = as;
    }
    check(a.rank() == 2 && bs.rank() == 2, ErrorKind::Shape, n.label(), ": A ", a.str(),
          " and B ", bs.str(), " must be 2-D");
    p_.trans_a = n.attr_int("transA", 0) != 0;
    p_.trans_b = n.attr_int("transB", 0) != 0;
    p_.alpha = n.attr_float("alpha", 1.f);
    p_.beta = n.attr_float("beta", 1.f);
    p_.m = p_.trans_a ? a[1] : a[0];
    p_.k = p_.trans_a ? a[0] : a[1];
    p_.n = p_.trans_b ? bs[0] : bs[1];
    const int64_t kb = p_.trans_b ? bs[1] : bs[0];
    check(kb == p_.k, ErrorKind::Shape, n.label(), ": A ", a.str(), " and B ", bs.str(),
          " do not multiply");
    if (has_input(n, 2)) {
      require_f32(g, n, 2);
      const Shape& c = input_value(g, n, 2).shape;
      check(c.rank() <= 2, ErrorKind::Shape, n.label(), ": C ", c.str(), " is not 2-D");
      const int64_t rows = c.rank() == 2 ? c[0] : 1;
      const int64_t cols = c.rank() >= 1 ? c[c.rank() - 1] : 1;
      check((rows == 1 || rows == p_.m) && (cols == 1 || cols == p_.n), ErrorKind::Shape,
            n.label(), ": C ", c.str(), " does not broadcast to [", p_.m, ",", p_.n, "]");
      p_.bias_rows = rows;
      p_.bias_cols = cols;
      has_bias_ = true;
    }
    p_.act = fused_activation(n);
    set_output(g, n, 0, Shape{p_.m, p_.n});
    return;
  }
  // MatMul
  check(a.rank() >= 1 && bs.rank() >= 1, ErrorKind::Shape, n.label(), ": scalar operand");
  const bool a_vec = a.rank() == 1, b_vec = bs.rank() == 1;
  if (a_vec) a.dims.insert(a.dims.begin(), 1);
  if (b_vec) bs.dims.push_back(1);
  p_.m = a[a.rank() - 2];
  p_.k = a[a.rank() - 1];
  p_.n = bs[bs.rank() - 1];
  check(bs[bs.rank() - 2] == p_.k, ErrorKind::Shape, n.label(), ": ",
        input_value(g, n, 0).shape.str(), " and ", input_value(g, n, 1).shape.str(),
        " do not multiply");
  Shape batch_a(std::vector<int64_t>(a.dims.begin(), a.dims.end() - 2));
  Shape batch_b(std::vector<int64_t>(bs.dims.begin(), bs.dims.end() - 2));
  const int64_t na = batch_a.numel(), nb = batch_b.numel();
  Shape out_batch;
  if (na == nb && batch_a.rank() == batch_b.rank()) {
    check(batch_a == batch_b, ErrorKind::Unsupported, n.label(), ": mixed batch broadcasting");
    out_batch = batch_a;
  } else if (nb == 1) {
    out_batch = batch_a;
  } else if (na == 1) {
    out_batch = batch_b;
  } else {
    fail(ErrorKind::Unsupported, n.label(), ": batch dims ", batch_a.str(), " and ",
         batch_b.str(), " broadcast in both directions");
  }
  p_.batch = out_batch.numel();
  p_.a_batch_stride = na == 1 ? 0 : p_.m * p_.k;
  p_.b_batch_stride = nb == 1 ? 0 : p_.k * p_.n;
  p_.c_batch_stride = p_.m * p_.n;
  Shape out = out_batch;
  if (!a_vec) out.dims.push_back(p_.m);
  if (!b_vec) out.dims.push_back(p_.n);
  p_.act = fused_activation(n);
  set_output(g, n, 0, out);
}

void GemmLayer::forward(Backend& b, const Tensor* const* in, Tensor* const* out, void*) {
  b.gemm(p_, *in[0], *in[1], has_bias_ ? in[2] : nullptr, *out[0]);
}

}  // namespace repshare
