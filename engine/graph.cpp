#include "engine/graph.h"

#include <algorithm>

#include "engine/error.h"

namespace repshare {

int64_t Node::attr_int(const std::string& a, int64_t def) const {
  auto it = attrs.find(a);
  return it == attrs.end() ? def : it->second.i;
}
float Node::attr_float(const std::string& a, float def) const {
  auto it = attrs.find(a);
  return it == attrs.end() ? def : it->second.f;
}
std::string Node::attr_string(const std::string& a, const std::string& def) const {
  auto it = attrs.find(a);
  return it == attrs.end() ? def : it->second.s;
}
std::vector<int64_t> Node::attr_ints(const std::string& a, std::vector<int64_t> def) const {
  auto it = attrs.find(a);
  return it == attrs.end() ? def : it->second.ints;
}
std::vector<float> Node::attr_floats(const std::string& a, std::vector<float> def) const {
  auto it = attrs.find(a);
  return it == attrs.end() ? def : it->second.floats;
}
std::string Node::label() const { return op_type + " node '" + name + "'"; }

std::vector<int64_t> Value::as_ints() const {
  check(is_constant(), ErrorKind::Unsupported, "value '", name, "' must be a constant");
  int64_t n = shape.numel();
  std::vector<int64_t> out(n);
  for (int64_t i = 0; i < n; ++i)
    out[i] = dtype == DType::I64 ? i64()[i] : static_cast<int64_t>(f32()[i]);
  return out;
}

std::vector<float> Value::as_floats() const {
  check(is_constant(), ErrorKind::Unsupported, "value '", name, "' must be a constant");
  int64_t n = shape.numel();
  std::vector<float> out(n);
  for (int64_t i = 0; i < n; ++i)
    out[i] = dtype == DType::I64 ? static_cast<float>(i64()[i]) : f32()[i];
  return out;
}

int Graph::add_value(const std::string& n) {
  auto it = by_name_.find(n);
  if (it != by_name_.end()) return it->second;
  Value v;
  v.name = n;
  values.push_back(std::move(v));
  int id = static_cast<int>(values.size()) - 1;
  by_name_[n] = id;
  return id;
}

int Graph::find(const std::string& n) const {
  auto it = by_name_.find(n);
  return it == by_name_.end() ? -1 : it->second;
}

int Graph::require(const std::string& n) const {
  int id = find(n);
  check(id >= 0, ErrorKind::Argument, "model '", name, "' has no tensor named '", n, "'");
  return id;
}

int Graph::add_constant(const std::string& n, Shape shape, DType dtype,
                        std::shared_ptr<std::vector<uint8_t>> data) {
  int id = add_value(n);
  Value& v = values[id];
  check(data->size() == static_cast<size_t>(shape.numel()) * dtype_size(dtype),
        ErrorKind::Malformed, "constant '", n, "' has ", data->size(), " bytes, shape ",
        shape.str(), " needs ", shape.numel() * dtype_size(dtype));
  v.shape = std::move(shape);
  v.dtype = dtype;
  v.shape_known = true;
  v.data = std::move(data);
  return id;
}

int Graph::add_constant_f32(const std::string& n, Shape shape, const std::vector<float>& f) {
  // Copied as a byte range: memcpy from an empty vector's null data() is undefined.
  const auto* begin = reinterpret_cast<const uint8_t*>(f.data());
  auto bytes = std::make_shared<std::vector<uint8_t>>(begin, begin + f.size() * sizeof(float));
  return add_constant(n, std::move(shape), DType::F32, std::move(bytes));
}

int Graph::add_constant_i64(const std::string& n, Shape shape, const std::vector<int64_t>& v) {
  const auto* begin = reinterpret_cast<const uint8_t*>(v.data());
  auto bytes = std::make_shared<std::vector<uint8_t>>(begin, begin + v.size() * sizeof(int64_t));
  return add_constant(n, std::move(shape), DType::I64, std::move(bytes));
}

Node Graph::make_node(const std::string& op, const std::string& name, std::vector<int> inputs,
                      const std::string& output) {
  Node n;
  n.op_type = op;
  n.name = name;
  n.inputs = std::move(inputs);
  n.outputs = {add_value(output)};
  return n;
}

std::vector<int> Graph::producers() const {
  std::vector<int> p(values.size(), -1);
  for (size_t n = 0; n < nodes.size(); ++n)
    for (int o : nodes[n].outputs)
      if (o >= 0) p[o] = static_cast<int>(n);
  return p;
}

std::vector<std::vector<int>> Graph::consumers() const {
  std::vector<std::vector<int>> c(values.size());
  for (size_t n = 0; n < nodes.size(); ++n)
    for (int i : nodes[n].inputs)
      if (i >= 0 && (c[i].empty() || c[i].back() != static_cast<int>(n)))
        c[i].push_back(static_cast<int>(n));
  return c;
}

void Graph::sort_topologically() {
  std::vector<int> prod = producers();
  for (size_t n = 0; n < nodes.size(); ++n)
    for (int o : nodes[n].outputs)
      if (o >= 0 && prod[o] != static_cast<int>(n))
        fail(ErrorKind::Malformed, "tensor '", values[o].name, "' is produced by two nodes");
  std::vector<bool> ready(values.size(), false);
  for (size_t v = 0; v < values.size(); ++v)
    ready[v] = values[v].is_constant() || prod[v] < 0;
  for (int v : inputs) ready[v] = true;
  // Kahn's algorithm with a stable order: repeatedly take the first node whose
  // inputs are ready. Graphs here have a few thousand nodes; the quadratic worst
  // case is not reached because loaders emit nearly sorted graphs.
  std::vector<Node> sorted;
  sorted.reserve(nodes.size());
  std::vector<bool> done(nodes.size(), false);
  size_t remaining = nodes.size();
  size_t start = 0;
  while (remaining > 0) {
    bool progressed = false;
    for (size_t n = start; n < nodes.size(); ++n) {
      if (done[n]) continue;
      bool ok = true;
      for (int i : nodes[n].inputs)
        if (i >= 0 && !ready[i]) { ok = false; break; }
      if (!ok) continue;
      done[n] = true;
      --remaining;
      progressed = true;
      for (int o : nodes[n].outputs)
        if (o >= 0) ready[o] = true;
      sorted.push_back(nodes[n]);
      while (start < nodes.size() && done[start]) ++start;
      n = start - 1;  // restart from the first pending node to keep file order
    }
    if (!progressed) {
      for (size_t n = 0; n < nodes.size(); ++n)
        if (!done[n])
          fail(ErrorKind::Malformed, "graph '", name, "' has a cycle or an undefined input at ",
               nodes[n].label());
    }
  }
  nodes = std::move(sorted);
}

void Graph::order_readers_together() {
  const std::vector<std::vector<int>> readers = consumers();
  const std::vector<int> prod = producers();
  // Whether input k of node n is a value, and its first mention there.
  auto distinct_input = [&](size_t n, size_t k) {
    const std::vector<int>& in = nodes[n].inputs;
    const auto at = in.begin() + static_cast<std::ptrdiff_t>(k);
    return in[k] >= 0 && std::find(in.begin(), at, in[k]) == at;
  };
  std::vector<int> waiting(nodes.size(), 0);  // distinct inputs not yet produced
  for (size_t n = 0; n < nodes.size(); ++n)
    for (size_t k = 0; k < nodes[n].inputs.size(); ++k)
      if (distinct_input(n, k) && prod[nodes[n].inputs[k]] >= 0) ++waiting[n];
  std::vector<int> unread(values.size(), 0);  // readers not yet placed
  for (size_t v = 0; v < values.size(); ++v) unread[v] = static_cast<int>(readers[v].size());
  // Whether n is the last reader of a value another node has read.
  auto finishes_a_value = [&](size_t n) {
    for (int i : nodes[n].inputs)
      if (i >= 0 && prod[i] >= 0 && unread[i] == 1 && readers[i].size() > 1) return true;
    return false;
  };
  std::vector<size_t> ready;  // kept in the current order
  for (size_t n = 0; n < nodes.size(); ++n)
    if (waiting[n] == 0) ready.push_back(n);
  std::vector<Node> ordered;
  ordered.reserve(nodes.size());
  while (!ready.empty()) {
    size_t pick = 0;
    for (size_t k = 0; k < ready.size(); ++k)
      if (finishes_a_value(ready[k])) {
        pick = k;
        break;
      }
    const size_t n = ready[pick];
    ready.erase(ready.begin() + static_cast<std::ptrdiff_t>(pick));
    for (size_t k = 0; k < nodes[n].inputs.size(); ++k)
      if (distinct_input(n, k)) --unread[nodes[n].inputs[k]];
    for (int o : nodes[n].outputs) {
      if (o < 0) continue;
      for (int r : readers[o])
        if (--waiting[r] == 0)
          ready.insert(std::upper_bound(ready.begin(), ready.end(), static_cast<size_t>(r)),
                       static_cast<size_t>(r));
    }
    ordered.push_back(nodes[n]);
  }
  check(ordered.size() == nodes.size(), ErrorKind::Malformed, "graph '", name,
        "' is not topologically sorted");
  nodes = std::move(ordered);
}

void Graph::remove_dead() {
  std::vector<bool> needed(values.size(), false);
  for (int o : outputs) needed[o] = true;
  std::vector<bool> keep(nodes.size(), false);
  for (size_t k = nodes.size(); k-- > 0;) {
    for (int o : nodes[k].outputs)
      if (o >= 0 && needed[o]) keep[k] = true;
    if (keep[k])
      for (int i : nodes[k].inputs)
        if (i >= 0) needed[i] = true;
  }
  std::vector<Node> kept;
  for (size_t k = 0; k < nodes.size(); ++k)
    if (keep[k]) kept.push_back(std::move(nodes[k]));
  nodes = std::move(kept);
}

}  // namespace repshare
