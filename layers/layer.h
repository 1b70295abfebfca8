// Layer: the compiled form of one graph node (ncnn-style tiny classes).
//
// build() reads the node's attributes and its input shapes, checks them, and sets
// the output values' shapes in the graph (static shape inference). forward() calls
// the backend's kernel entry points with parameters computed in build(); it never
// allocates.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "engine/backend.h"
#include "engine/graph.h"

namespace repshare {

class Layer {
 public:
  virtual ~Layer() = default;

  // Infers output shapes (writing graph.values[out].shape/dtype) and prepares the
  // kernel parameters. Throws Error naming the node on bad attributes or shapes.
  virtual void build(const Node& node, Graph& graph) = 0;

  // Inputs read only while building (shape operands such as Reshape's shape or
  // Resize's scales): the executor neither uploads nor passes them.
  virtual bool reads_input_at_build(size_t input_index) const { return false; }

  // Scratch memory forward() needs, planned by the executor.
  virtual size_t workspace_bytes(const Backend& backend) const { return 0; }

  // Whether forward() can write output 0 as F32 where the backend stores floats in
  // F16 (Backend::conv2d_stores_f32). The executor asks for a model output that no
  // step reads: stored F32, it needs no convert step after it.
  virtual bool stores_output_f32(const Backend& backend) const { return false; }

  // in[i] is nullptr for omitted optional inputs and for build-time inputs.
  virtual void forward(Backend& backend, const Tensor* const* in, Tensor* const* out,
                       void* workspace) = 0;

  // Layers whose output is fully known from shapes alone (Shape, Size) set the
  // output value's constant data in build() and never run.
};

// Creates the layer for an op type; throws ErrorKind::Unsupported naming the node
// when the op is not implemented.
std::unique_ptr<Layer> create_layer(const Node& node);
bool is_supported_op(const std::string& op_type);
std::vector<std::string> supported_ops();

// Helpers shared by layer implementations.
const Value& input_value(const Graph& g, const Node& n, size_t i);  // checks presence
bool has_input(const Node& n, size_t i);
int optional_input(const Node& n, size_t i);  // input i, or -1 where it is missing
void set_output(Graph& g, const Node& n, size_t i, const Shape& s, DType t = DType::F32);
// s.numel(), its error (a negative or absurd, overflowing size) naming the node.
int64_t numel_for(const Node& n, const Shape& s);
// Requires float32 input i (the engine computes in fp32).
void require_f32(const Graph& g, const Node& n, size_t i);
// The activation a fusion pass attached to a node (attributes "activation",
// "activation_alpha", "activation_beta", or with another name in place of
// "activation" for nodes that carry two); ActKind::None when there is none.
Activation fused_activation(const Node& n, const std::string& name = "activation");
void attach_activation(Node& n, const Activation& a, const std::string& name = "activation");
ActKind act_kind_from_name(const std::string& name);  // Unsupported on unknown names
// A node a fusion folded into n, its attributes kept under `prefix`, as a node of its
// own: op_type, the name n.name + "/" + part, and n's attributes that start with
// prefix, without it (for its parameters and error messages; no inputs or outputs).
Node folded_part(const Node& n, const std::string& op_type, const std::string& prefix,
                 const std::string& part);
// Resolves ONNX pads / auto_pad for the spatial axes of a conv or pool window.
// in, kernel (dilated extent), stride per axis; returns {begin..., end...}.
std::vector<int64_t> resolve_pads(const Node& n, const std::vector<int64_t>& in,
                                  const std::vector<int64_t>& kernel_extent,
                                  const std::vector<int64_t>& strides);
// Normalises a possibly negative axis against rank; throws naming the node.
int64_t normalize_axis(const Node& n, int64_t axis, int64_t rank);
// Window and padding sizes from a file (pads, strides, dilations, kernel_shape)
// must be within +-2^31 before they enter size arithmetic, where larger ones
// overflow int64 (found by scripts/fuzz.sh); returns `values`, or throws
// Malformed naming the node and what.
const std::vector<int64_t>& bounded_sizes(const Node& n, const std::vector<int64_t>& values,
                                          const char* what);

}  // namespace repshare
