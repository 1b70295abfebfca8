// Tensor: a shape, a dtype and a non-owning pointer into an arena.
//
// Tensors never allocate. Their storage lives in a weights arena, an activation
// arena or a host buffer owned by the graph (constants used only at load time).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace repshare {

enum class DType : uint8_t { F32, F16, I64 };

size_t dtype_size(DType t);
const char* dtype_name(DType t);

// A static shape. Dimensions are int64 like ONNX's; models here are at most 5-D.
struct Shape {
  std::vector<int64_t> dims;

  Shape() = default;
  Shape(std::initializer_list<int64_t> d) : dims(d) {}
  explicit Shape(std::vector<int64_t> d) : dims(std::move(d)) {}

  size_t rank() const { return dims.size(); }
  int64_t operator[](size_t i) const { return dims[i]; }
  int64_t& operator[](size_t i) { return dims[i]; }
  // Number of elements; throws if the product overflows or a dimension is negative.
  int64_t numel() const;
  bool operator==(const Shape& o) const { return dims == o.dims; }
  bool operator!=(const Shape& o) const { return dims != o.dims; }
  std::string str() const;
};

struct Tensor {
  Shape shape;
  DType dtype = DType::F32;
  void* data = nullptr;  // view: owned by an arena or the graph

  int64_t numel() const { return shape.numel(); }
  size_t bytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype); }
  float* f32() const { return static_cast<float*>(data); }
  int64_t* i64() const { return static_cast<int64_t*>(data); }
  // Dimension i of an NCHW tensor counted from the right, 1 when missing:
  // dim_r(0) is W, dim_r(1) is H, dim_r(2) is C, dim_r(3) is N.
  int64_t dim_r(size_t i) const {
    return i < shape.rank() ? shape.dims[shape.rank() - 1 - i] : 1;
  }
};

}  // namespace repshare
