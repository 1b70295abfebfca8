#include "loaders/onnx_loader.h"

#include <cstring>
#include <limits>

#include "engine/error.h"
#include "loaders/input_file.h"
#include "onnx/onnx.pb.h"

namespace repshare {
namespace {

std::string directory_of(const std::string& path) {
  auto slash = path.find_last_of('/');
  return slash == std::string::npos ? std::string(".") : path.substr(0, slash);
}

// ONNX TensorProto.DataType values used here.
enum OnnxType { kFloat = 1, kInt32 = 6, kInt64 = 7, kFloat16 = 10, kDouble = 11 };

const char* onnx_type_name(int t) {
  static const char* names[] = {"undefined", "float",  "uint8",  "int8",    "uint16",
                                "int16",     "int32",  "int64",  "string",  "bool",
                                "float16",   "double", "uint32", "uint64",  "complex64",
                                "complex128", "bfloat16"};
  return t >= 0 && t < 17 ? names[t] : "unknown";
}

Shape proto_dims(const google::protobuf::RepeatedField<int64_t>& dims, const std::string& what) {
  Shape s;
  for (int64_t d : dims) {
    check(d >= 0, ErrorKind::Malformed, what, " has a negative dimension ", d);
    s.dims.push_back(d);
  }
  s.numel();  // throws on overflow or absurd sizes before anything is allocated
  return s;
}

// A decimal integer field of the file; Malformed naming it otherwise.
int64_t parse_int(const std::string& text, const std::string& what) {
  size_t used = 0;
  int64_t v = 0;
  try {
    v = std::stoll(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  check(used == text.size() && !text.empty(), ErrorKind::Malformed, what, " '", text,
        "' is not an integer");
  return v;
}

// Converts a TensorProto into host bytes in a repshare dtype. int32 becomes int64
// (it only appears in shape-like operands); other dtypes are unsupported.
void decode_tensor(const onnx::TensorProto& t, const std::string& model_dir, Shape* shape,
                   DType* dtype, std::vector<uint8_t>* out) {
  const std::string what = "tensor '" + t.name() + "'";
  *shape = proto_dims(t.dims(), what);
  const int64_t n = shape->numel();
  const int type = t.data_type();
  check(type == kFloat || type == kInt64 || type == kInt32, ErrorKind::Unsupported, what,
        " has dtype ", onnx_type_name(type), "; repshare supports float32 (and int64/int32 "
        "shape operands)");
  *dtype = type == kFloat ? DType::F32 : DType::I64;
  const size_t src_elem = type == kFloat ? 4 : type == kInt64 ? 8 : 4;

  std::string external;
  const std::string* raw = nullptr;
  if (t.data_location() == onnx::TensorProto::EXTERNAL) {
    std::string location;
    int64_t offset = 0, length = -1;
    for (const auto& kv : t.external_data()) {
      if (kv.key() == "location") location = kv.value();
      if (kv.key() == "offset") offset = parse_int(kv.value(), what + " external offset");
      if (kv.key() == "length") length = parse_int(kv.value(), what + " external length");
    }
    check(!location.empty(), ErrorKind::Malformed, what, " is external but names no file");
    check(location.find("..") == std::string::npos && location[0] != '/', ErrorKind::Malformed,
          what, " external location '", location, "' leaves the model's folder");
    std::string data = read_input_file(model_dir + "/" + location, "external data file");
    check(offset >= 0 && static_cast<size_t>(offset) <= data.size(), ErrorKind::Malformed, what,
          " external offset ", offset, " is past the end of '", location, "'");
    size_t len = length < 0 ? data.size() - offset : static_cast<size_t>(length);
    check(offset + len <= data.size(), ErrorKind::Malformed, what, " external data of ", len,
          " bytes at ", offset, " is past the end of '", location, "'");
    external = data.substr(offset, len);
    raw = &external;
  } else if (t.has_raw_data()) {
    raw = &t.raw_data();
  }

  // The data must fit the shape before anything is allocated: a few bytes of file
  // can declare a tensor of many gigabytes (found by scripts/fuzz.sh).
  if (raw) {
    check(raw->size() == static_cast<size_t>(n) * src_elem, ErrorKind::Malformed, what, " has ",
          raw->size(), " bytes of data, shape ", shape->str(), " needs ", n * src_elem);
  } else {
    const int64_t have = type == kFloat   ? t.float_data_size()
                         : type == kInt64 ? t.int64_data_size()
                                          : t.int32_data_size();
    check(have == n, ErrorKind::Malformed, what, " has ", have, " values, shape ", shape->str(),
          " needs ", n);
  }
  out->assign(static_cast<size_t>(n) * dtype_size(*dtype), 0);
  if (n == 0) return;  // (memcpy from an empty tensor's null data is undefined)
  if (type == kInt32) {  // widened to int64
    int64_t* dst = reinterpret_cast<int64_t*>(out->data());
    for (int64_t i = 0; i < n; ++i) {
      int32_t v;
      if (raw)
        std::memcpy(&v, raw->data() + 4 * i, 4);
      else
        v = t.int32_data(static_cast<int>(i));
      dst[i] = v;
    }
  } else if (raw) {
    std::memcpy(out->data(), raw->data(), out->size());
  } else if (type == kFloat) {
    std::memcpy(out->data(), t.float_data().data(), out->size());
  } else {
    std::memcpy(out->data(), t.int64_data().data(), out->size());
  }
}

DType value_dtype(int elem_type, const std::string& name) {
  if (elem_type == kFloat) return DType::F32;
  if (elem_type == kInt64 || elem_type == kInt32) return DType::I64;
  fail(ErrorKind::Unsupported, "tensor '", name, "' has dtype ", onnx_type_name(elem_type),
       "; repshare computes in float32");
}

Attribute decode_attribute(const onnx::AttributeProto& a, const std::string& model_dir,
                           const std::string& node_label) {
  Attribute out;
  switch (a.type()) {
    case onnx::AttributeProto::INT: out.kind = Attribute::Kind::Int; out.i = a.i(); break;
    case onnx::AttributeProto::FLOAT: out.kind = Attribute::Kind::Float; out.f = a.f(); break;
    case onnx::AttributeProto::STRING: out.kind = Attribute::Kind::String; out.s = a.s(); break;
    case onnx::AttributeProto::INTS:
      out.kind = Attribute::Kind::Ints;
      out.ints.assign(a.ints().begin(), a.ints().end());
      break;
    case onnx::AttributeProto::FLOATS:
      out.kind = Attribute::Kind::Floats;
      out.floats.assign(a.floats().begin(), a.floats().end());
      break;
    case onnx::AttributeProto::TENSOR: {
      out.kind = Attribute::Kind::Tensor;
      out.tensor_data = std::make_shared<std::vector<uint8_t>>();
      decode_tensor(a.t(), model_dir, &out.tensor_shape, &out.tensor_dtype, out.tensor_data.get());
      break;
    }
    default:
      // Graph-valued and string-list attributes belong to ops repshare does not
      // implement (If, Loop, ...); keep the name so the layer reports the op.
      out.kind = Attribute::Kind::String;
      out.s = "<unsupported attribute type " + std::to_string(a.type()) + ">";
      break;
  }
  (void)node_label;
  return out;
}

}  // namespace

Graph load_onnx(const std::string& path, const OnnxLoadOptions& options) {
  std::string bytes = read_input_file(path, "model");
  check(!bytes.empty(), ErrorKind::Malformed, "model '", path, "' is empty (0 bytes)");
  onnx::ModelProto model;
  check(bytes.size() <= static_cast<size_t>(std::numeric_limits<int>::max()), ErrorKind::Malformed,
        "model '", path, "' is larger than 2 GiB; use external data");
  check(model.ParseFromString(bytes), ErrorKind::Malformed, "'", path,
        "' is not a valid ONNX model (protobuf parse failed: truncated or not ONNX)");
  check(model.has_graph(), ErrorKind::Malformed, "'", path, "' has no graph");
  const std::string dir = directory_of(path);
  const onnx::GraphProto& gp = model.graph();

  Graph g;
  g.name = gp.name().empty() ? path : gp.name();
  for (const auto& op : model.opset_import())
    if (op.domain().empty() || op.domain() == "ai.onnx") g.opset = op.version();

  for (const auto& init : gp.initializer()) {
    check(!init.name().empty(), ErrorKind::Malformed, "'", path, "' has an unnamed initializer");
    Shape shape;
    DType dtype;
    auto data = std::make_shared<std::vector<uint8_t>>();
    decode_tensor(init, dir, &shape, &dtype, data.get());
    g.add_constant(init.name(), shape, dtype, data);
  }

  for (const auto& in : gp.input()) {
    int id = g.add_value(in.name());
    if (g.values[id].is_constant()) continue;  // old-style: initializers listed as inputs
    Value& v = g.values[id];
    const auto& tt = in.type().tensor_type();
    check(in.type().has_tensor_type(), ErrorKind::Unsupported, "graph input '", in.name(),
          "' is not a tensor");
    v.dtype = value_dtype(tt.elem_type(), in.name());
    auto override_it = options.input_shapes.find(in.name());
    if (override_it != options.input_shapes.end()) {
      v.shape = override_it->second;
    } else {
      for (const auto& d : tt.shape().dim()) {
        check(d.has_dim_value(), ErrorKind::Shape, "graph input '", in.name(),
              "' has a dynamic dimension '", d.dim_param(), "'; give it a fixed shape");
        check(d.dim_value() >= 0, ErrorKind::Malformed, "graph input '", in.name(),
              "' has a negative dimension");
        v.shape.dims.push_back(d.dim_value());
      }
    }
    v.shape.numel();
    v.shape_known = true;
    g.inputs.push_back(id);
  }
  for (const auto& kv : options.input_shapes)
    check(g.find(kv.first) >= 0, ErrorKind::Argument, "model '", path, "' has no input '",
          kv.first, "'");

  int unnamed = 0;
  for (const auto& np : gp.node()) {
    Node n;
    n.op_type = np.op_type();
    n.name = np.name().empty() ? np.op_type() + "_" + std::to_string(unnamed++) : np.name();
    check(np.domain().empty() || np.domain() == "ai.onnx", ErrorKind::Unsupported, n.label(),
          " is in domain '", np.domain(), "', repshare implements the default ONNX domain");
    check(g.opset > 0, ErrorKind::Malformed, "'", path, "' uses ", n.label(),
          " but imports no default-domain opset");
    for (const auto& i : np.input()) n.inputs.push_back(i.empty() ? -1 : g.add_value(i));
    for (const auto& o : np.output()) n.outputs.push_back(o.empty() ? -1 : g.add_value(o));
    for (const auto& a : np.attribute()) n.attrs[a.name()] = decode_attribute(a, dir, n.label());
    g.nodes.push_back(std::move(n));
  }
  for (const auto& o : gp.output()) {
    int id = g.find(o.name());
    check(id >= 0, ErrorKind::Malformed, "graph output '", o.name(), "' is never produced");
    g.outputs.push_back(id);
  }
  // Every value a node reads must be a graph input, a constant, or another node's output.
  std::vector<bool> defined(g.values.size(), false);
  for (int i : g.inputs) defined[i] = true;
  for (size_t v = 0; v < g.values.size(); ++v)
    if (g.values[v].is_constant()) defined[v] = true;
  for (const auto& n : g.nodes)
    for (int o : n.outputs)
      if (o >= 0) defined[o] = true;
  // (fail, not check: check's message parts are evaluated first, and values[-1] of
  // an omitted optional input does not exist.)
  for (const auto& n : g.nodes)
    for (int i : n.inputs)
      if (i >= 0 && !defined[i])
        fail(ErrorKind::Malformed, n.label(), " reads '", g.values[i].name,
             "', which is neither an input, an initializer nor any node's output");
  for (int o : g.outputs)
    check(defined[o], ErrorKind::Malformed, "graph output '", g.values[o].name,
          "' is never produced");
  g.sort_topologically();
  return g;
}

HostTensor load_tensor_pb(const std::string& path) {
  std::string bytes = read_input_file(path, "tensor file");
  onnx::TensorProto t;
  check(t.ParseFromString(bytes), ErrorKind::Malformed, "'", path,
        "' is not a serialized ONNX TensorProto");
  HostTensor h;
  h.name = t.name();
  decode_tensor(t, directory_of(path), &h.shape, &h.dtype, &h.bytes);
  return h;
}

}  // namespace repshare
