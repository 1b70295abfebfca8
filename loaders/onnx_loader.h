// ONNX loader: a .onnx file (protobuf, onnx.proto) into a repshare Graph.
//
// Reads the graph, initializers (raw_data, typed fields, external data files next
// to the model), attributes and opset. Malformed or truncated files, missing
// initializers, unsupported dtypes and absurd dimensions become repshare::Error
// naming what is wrong; nothing here crashes on bad input.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "engine/graph.h"

namespace repshare {

struct OnnxLoadOptions {
  // Fixed shapes for graph inputs whose file shape is dynamic or must change
  // (e.g. batch size). Inputs not named keep the file's static shape.
  std::map<std::string, Shape> input_shapes;
};

// Loads `path` into a Graph with values, constants and nodes in topological order.
// Shapes of non-constant values are inferred later (see engine/passes.h).
Graph load_onnx(const std::string& path, const OnnxLoadOptions& options = {});

// Reads one serialized TensorProto (.pb, as in ONNX's node tests). Returns the
// tensor's name (may be empty), shape, dtype and bytes.
struct HostTensor {
  std::string name;
  Shape shape;
  DType dtype = DType::F32;
  std::vector<uint8_t> bytes;
  const float* f32() const { return reinterpret_cast<const float*>(bytes.data()); }
};
HostTensor load_tensor_pb(const std::string& path);

}  // namespace repshare
