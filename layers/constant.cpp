// Constant and Shape: their outputs are known at load time, so build() makes them
// constants and the executor never runs them.
#include <cstring>

#include "engine/error.h"
#include "layers/layers.h"

namespace repshare {

void ConstantLayer::build(const Node& n, Graph& g) {
  auto bytes = std::make_shared<std::vector<uint8_t>>();
  Shape shape;
  DType dtype = DType::F32;
  auto put = [&](const void* src, size_t count, size_t elem) {
    bytes->resize(count * elem);
    if (count) std::memcpy(bytes->data(), src, count * elem);
  };
  if (n.op_type == "Shape") {
    const Shape& x = input_value(g, n, 0).shape;
    const int64_t rank = static_cast<int64_t>(x.rank());
    int64_t start = n.attr_int("start", 0), end = n.attr_int("end", rank);
    if (start < 0) start += rank;
    if (end < 0) end += rank;
    start = std::max<int64_t>(0, std::min(start, rank));
    end = std::max<int64_t>(start, std::min(end, rank));
    std::vector<int64_t> dims(x.dims.begin() + start, x.dims.begin() + end);
    put(dims.data(), dims.size(), 8);
    shape = Shape{static_cast<int64_t>(dims.size())};
    dtype = DType::I64;
  } else if (n.has("value")) {
    const Attribute& a = n.attrs.at("value");
    check(a.kind == Attribute::Kind::Tensor, ErrorKind::Malformed, n.label(), ": value is not a tensor");
    shape = a.tensor_shape;
    dtype = a.tensor_dtype;
    bytes = a.tensor_data;
  } else if (n.has("value_float") || n.has("value_floats")) {
    auto f = n.has("value_float") ? std::vector<float>{n.attr_float("value_float", 0)}
                                  : n.attr_floats("value_floats");
    put(f.data(), f.size(), 4);
    shape = n.has("value_float") ? Shape{} : Shape{static_cast<int64_t>(f.size())};
  } else if (n.has("value_int") || n.has("value_ints")) {
    auto v = n.has("value_int") ? std::vector<int64_t>{n.attr_int("value_int", 0)}
                                : n.attr_ints("value_ints");
    put(v.data(), v.size(), 8);
    shape = n.has("value_int") ? Shape{} : Shape{static_cast<int64_t>(v.size())};
    dtype = DType::I64;
  } else {
    fail(ErrorKind::Unsupported, n.label(), ": only tensor, float(s) and int(s) values");
  }
  set_output(g, n, 0, shape, dtype);
  check(bytes->size() == static_cast<size_t>(shape.numel()) * dtype_size(dtype),
        ErrorKind::Malformed, n.label(), ": value has the wrong number of bytes");
  g.values[n.outputs[0]].data = bytes;
}

void ConstantLayer::forward(Backend&, const Tensor* const*, Tensor* const*, void*) {
  fail(ErrorKind::Backend, "Constant/Shape layers are folded at load and never run");
}

}  // namespace repshare
