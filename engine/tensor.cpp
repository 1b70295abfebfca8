#include "engine/tensor.h"

#include <limits>

#include "engine/error.h"

namespace repshare {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::F16: return 2;
    case DType::I64: return 8;
  }
  return 0;
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "float32";
    case DType::F16: return "float16";
    case DType::I64: return "int64";
  }
  return "?";
}

const char* error_kind_name(ErrorKind k) {
  switch (k) {
    case ErrorKind::Io: return "io";
    case ErrorKind::Malformed: return "malformed";
    case ErrorKind::Unsupported: return "unsupported";
    case ErrorKind::Shape: return "shape";
    case ErrorKind::Argument: return "argument";
    case ErrorKind::Backend: return "backend";
  }
  return "?";
}

int64_t Shape::numel() const {
  // 2^40 elements is far beyond any model here; refusing it early keeps byte
  // counts (numel * 8) far from overflow and turns absurd files into errors.
  constexpr int64_t kMaxElements = int64_t(1) << 40;
  // Not check(): its message arguments are built before the call, and numel() runs
  // in every kernel call (a shape string per dimension cost D0 0.6 s of bench's set-up).
  int64_t n = 1;
  for (int64_t d : dims) {
    if (d < 0) fail(ErrorKind::Shape, "negative dimension in shape ", str());
    if (d != 0 && n > kMaxElements / d) fail(ErrorKind::Shape, "shape ", str(), " is too large");
    n *= d;
  }
  return n;
}

std::string Shape::str() const {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) {
    if (i) s += ",";
    s += std::to_string(dims[i]);
  }
  return s + "]";
}

}  // namespace repshare
