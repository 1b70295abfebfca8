#include "engine/executor.h"

#include <algorithm>

#include "engine/error.h"
#include "engine/half.h"

namespace repshare {

int Executor::value_id(const std::string& name, const char* role) const {
  int id = graph_.find(name);
  check(id >= 0, ErrorKind::Argument, "model '", graph_.name, "' has no tensor named '", name,
        "' (", role, ")");
  return id;
}

namespace {

// The step that converts between a tensor at the executor's edge (F32 for callers)
// and its copy in the backend's float storage.
class ConvertLayer : public Layer {
 public:
  void build(const Node&, Graph&) override {}
  void forward(Backend& backend, const Tensor* const* in, Tensor* const* out, void*) override {
    backend.convert(*in[0], *out[0]);
  }
};

}  // namespace

Executor::Executor(const Graph& graph, Backend& backend, WeightsArena& weights,
                   const std::vector<std::string>& supplied, const std::vector<std::string>& wanted,
                   Inputs inputs, const std::vector<std::string>& in_storage_names)
    : graph_(graph), backend_(backend), weights_(weights), inputs_(inputs) {
  const size_t nv = graph_.values.size();
  const DType storage = backend_.float_storage();
  auto stored = [storage](DType d) { return d == DType::F32 ? storage : d; };
  std::vector<bool> is_supplied(nv, false);
  for (const auto& s : supplied) {
    int id = value_id(s, "supplied");
    check(!graph_.values[id].is_constant(), ErrorKind::Argument, "tensor '", s, "' of model '",
          graph_.name, "' is a constant and cannot be supplied");
    check(graph_.values[id].dtype == DType::F32, ErrorKind::Unsupported, "supplied tensor '", s,
          "' is ", dtype_name(graph_.values[id].dtype), "; repshare computes in float32");
    is_supplied[id] = true;
    supplied_.push_back(id);
  }
  check(!wanted.empty(), ErrorKind::Argument, "no output tensors were asked of model '",
        graph_.name, "'");
  for (const auto& w : wanted) wanted_.push_back(value_id(w, "wanted"));

  // Walk back from the wanted tensors to find the nodes that must run.
  std::vector<int> producer = graph_.producers();
  std::vector<bool> needed_value(nv, false), needed_node(graph_.nodes.size(), false);
  std::vector<int> stack(wanted_.begin(), wanted_.end());
  while (!stack.empty()) {
    int v = stack.back();
    stack.pop_back();
    if (needed_value[v]) continue;
    needed_value[v] = true;
    if (is_supplied[v] || graph_.values[v].is_constant()) continue;
    int p = producer[v];
    check(p >= 0, ErrorKind::Argument, "model '", graph_.name, "': tensor '",
          graph_.values[v].name, "' is needed for the requested outputs but is not supplied");
    if (needed_node[p]) continue;
    needed_node[p] = true;
    for (int i : graph_.nodes[p].inputs)
      if (i >= 0) stack.push_back(i);
  }

  // One tensor per value, in the backend's storage; edge tensors (F32 copies of
  // supplied and wanted values when the storage is not F32) are added after them.
  // Reserved so that the steps' pointers into tensors_ stay valid.
  tensors_.reserve(nv + supplied_.size() + wanted_.size());
  tensors_.resize(nv);
  for (size_t v = 0; v < nv; ++v) {
    tensors_[v].shape = graph_.values[v].shape;
    tensors_[v].dtype = stored(graph_.values[v].dtype);
  }
  edge_.assign(nv, -1);
  weight_record_.assign(tensors_.capacity(), -1);
  lifetime_index_.assign(tensors_.capacity(), -1);
  auto lifetime_of = [&](int v) -> Lifetime& {
    if (lifetime_index_[v] < 0) {
      lifetime_index_[v] = static_cast<int>(lifetimes_.size());
      Lifetime l;
      l.bytes = tensors_[v].bytes();
      l.first = l.last = -1;
      lifetimes_.push_back(l);
    }
    return lifetimes_[lifetime_index_[v]];
  };
  // Registers host bytes of constant v with the weights arena, converted to the
  // tensor's dtype first when that differs (kept in converted_ until allocate()).
  auto register_weight = [&](int v, int tensor, const std::string& layer) {
    const Value& val = graph_.values[v];
    const void* host = val.data->data();
    size_t bytes = val.data->size();
    if (tensors_[tensor].dtype != val.dtype) {
      check(val.dtype == DType::F32 && tensors_[tensor].dtype == DType::F16,
            ErrorKind::Unsupported, "weight '", val.name, "' cannot be stored as ",
            dtype_name(tensors_[tensor].dtype));
      const float* f = reinterpret_cast<const float*>(host);
      std::vector<uint16_t> half(bytes / sizeof(float));
      for (size_t i = 0; i < half.size(); ++i) half[i] = float_to_half(f[i]);
      converted_.push_back(std::move(half));
      host = converted_.back().data();
      bytes = converted_.back().size() * sizeof(uint16_t);
    }
    weight_record_[tensor] = weights_.add(graph_.name, layer, val.name, host, bytes);
  };
  auto add_edge = [&](int v) {
    edge_[v] = static_cast<int>(tensors_.size());
    tensors_.push_back(tensors_[v]);
    tensors_.back().dtype = graph_.values[v].dtype;
    return edge_[v];
  };
  auto add_convert_step = [&](int from, int to, int value) {
    Step step;
    step.node = -1;
    step.converted_value = value;
    step.layer.reset(new ConvertLayer);
    step.in.assign(1, &tensors_[from]);
    step.out.assign(1, &tensors_[to]);
    const int s = static_cast<int>(steps_.size());
    lifetime_of(from).last = s;
    Lifetime& l = lifetime_of(to);
    l.first = s;
    l.last = std::max(l.last, s);
    steps_.push_back(std::move(step));
  };

  // Exchanged with the caller in the backend's storage: no F32 edge.
  std::vector<bool> is_wanted(nv, false), in_storage(nv, false);
  for (int v : wanted_) is_wanted[v] = true;
  for (const auto& name : in_storage_names) {
    const int v = value_id(name, "in storage");
    check(is_supplied[v] || is_wanted[v],
          ErrorKind::Argument, "tensor '", name, "' of model '", graph_.name,
          "' is to be kept in storage but is neither supplied nor wanted");
    in_storage[v] = true;
  }

  // Supplied tensors are filled by the caller in F32; in another storage the first
  // steps convert them.
  for (int v : supplied_) {
    if (tensors_[v].dtype == graph_.values[v].dtype || in_storage[v]) continue;
    add_convert_step(add_edge(v), v, v);
  }

  // Values a step reads (in the backend's storage), and the ones the caller reads.
  std::vector<bool> read_by_step(nv, false);
  for (size_t k = 0; k < graph_.nodes.size(); ++k)
    if (needed_node[k])
      for (int v : graph_.nodes[k].inputs)
        if (v >= 0) read_by_step[v] = true;

  for (size_t k = 0; k < graph_.nodes.size(); ++k) {
    if (!needed_node[k]) continue;
    const Node& n = graph_.nodes[k];
    Step step;
    step.node = static_cast<int>(k);
    step.layer = create_layer(n);
    step.layer->build(n, graph_);
    const int s = static_cast<int>(steps_.size());
    step.in.assign(n.inputs.size(), nullptr);
    for (size_t i = 0; i < n.inputs.size(); ++i) {
      int v = n.inputs[i];
      if (v < 0 || step.layer->reads_input_at_build(i)) continue;
      const Value& val = graph_.values[v];
      if (val.is_constant()) {
        if (weight_record_[v] < 0) register_weight(v, v, n.name);
      } else {
        check(val.dtype == DType::F32, ErrorKind::Unsupported, n.label(), ": tensor '",
              val.name, "' is ", dtype_name(val.dtype), " at run time");
        lifetime_of(v).last = s;
      }
      step.in[i] = &tensors_[v];
    }
    step.out.assign(n.outputs.size(), nullptr);
    for (size_t o = 0; o < n.outputs.size(); ++o) {
      int v = n.outputs[o];
      if (v < 0) continue;
      tensors_[v].shape = graph_.values[v].shape;
      tensors_[v].dtype = stored(graph_.values[v].dtype);
      // An output only the caller reads is stored as the caller reads it where the
      // layer can write it so: no convert step after it, no copy in storage.
      if (o == 0 && is_wanted[v] && !in_storage[v] && !read_by_step[v] &&
          tensors_[v].dtype != graph_.values[v].dtype &&
          step.layer->stores_output_f32(backend_))
        tensors_[v].dtype = graph_.values[v].dtype;
      Lifetime& l = lifetime_of(v);
      l.bytes = tensors_[v].bytes();
      l.first = l.last = s;  // an unused output still needs its slot during the step
      step.out[o] = &tensors_[v];
    }
    size_t ws = step.layer->workspace_bytes(backend_);
    if (ws > 0) {
      step.workspace = static_cast<int>(lifetimes_.size());
      lifetimes_.push_back(Lifetime{ws, s, s});
    }
    steps_.push_back(std::move(step));
    // Wanted outputs of this step in another storage: converted to F32 right away,
    // unless the caller takes them in storage.
    for (int v : n.outputs)
      if (v >= 0 && edge_[v] < 0 && tensors_[v].dtype != graph_.values[v].dtype &&
          is_wanted[v] && !in_storage[v])
        add_convert_step(v, add_edge(v), v);
  }
  // Wanted constants (outputs that folded away) are served from the weights arena,
  // in the backend's memory like every output: from a record of their own when no
  // step reads them, or in their own dtype where the steps read another storage.
  for (int v : wanted_) {
    if (!graph_.values[v].is_constant() || edge_[v] >= 0) continue;
    if (weight_record_[v] < 0) {
      tensors_[v].dtype = graph_.values[v].dtype;
      register_weight(v, v, graph_.values[v].name);
    } else if (tensors_[v].dtype != graph_.values[v].dtype) {
      register_weight(v, add_edge(v), graph_.values[v].name);
    }
  }

  // Wanted tensors stay alive to the end (the caller reads them after the steps).
  // Supplied ones are written before the first step; kept ones live to the end
  // too, so no step may reuse them; bound ones take no memory here (a zero-byte
  // tensor is placed nowhere).
  const int end = static_cast<int>(steps_.size());
  for (int v : wanted_) {
    const int t = edge_[v] >= 0 ? edge_[v] : v;
    if (weight_record_[t] < 0 && !graph_.values[v].is_constant()) lifetime_of(t).last = end;
  }
  for (int v : supplied_) {
    Lifetime& l = lifetime_of(edge_[v] >= 0 ? edge_[v] : v);
    l.first = -1;
    if (inputs_ == Inputs::Kept) l.last = end;
    if (inputs_ == Inputs::Bound) l.bytes = 0;
  }
  plan_queues_and_arena();
}

void Executor::plan_queues_and_arena() {
  // The schedule comes from the data flow alone: each tensor (and each step's
  // workspace) is one unit of memory. Where steps may run at once, the arena then
  // gives two tensors the same bytes only if every step using one is ordered before
  // every step using the other, which may take more memory than running in order.
  std::vector<StepAccess> by_tensor(steps_.size());
  std::vector<std::vector<int>> users(lifetimes_.size());
  auto use = [&](const Tensor* t, int s, std::vector<ByteRange>& ranges) {
    const size_t i = static_cast<size_t>(t - tensors_.data());
    ranges.push_back(ByteRange{i, i + 1});
    if (lifetime_index_[i] >= 0) users[lifetime_index_[i]].push_back(s);
  };
  for (size_t s = 0; s < steps_.size(); ++s) {
    const Step& st = steps_[s];
    const int si = static_cast<int>(s);
    for (const Tensor* t : st.in)
      if (t) use(t, si, by_tensor[s].reads);
    for (const Tensor* t : st.out)
      if (t) use(t, si, by_tensor[s].writes);
    if (st.workspace >= 0) {
      const size_t unit = tensors_.capacity() + s;
      by_tensor[s].writes.push_back(ByteRange{unit, unit + 1});
      users[st.workspace].push_back(si);
    }
  }
  // One queue: the sequential order and its plan. Then, with several, steps at once
  // wherever the arena stays within the backend's memory allowance.
  queues_ = schedule_steps(by_tensor, 1);
  plan_ = plan_activations(lifetimes_);
  if (backend_.queues() == 1) {
    number_marks();
    return;
  }
  const size_t limit = plan_.peak + static_cast<size_t>(
      static_cast<double>(plan_.peak) * std::max(0.0, backend_.concurrency_memory_allowance()));
  const int n = static_cast<int>(steps_.size());
  auto plan_for = [&](const std::vector<ScheduledStep>& schedule) {
    const StepOrder order(schedule);
    // Every user of a finishes before b is written first (a lifetime that reaches
    // the end is read by the caller after every step; one that starts before the
    // first step is the caller's input, read during all of them).
    auto precedes = [&](size_t a, size_t b) {
      if (lifetimes_[a].last >= n || lifetimes_[b].first < 0) return false;
      for (int u : users[a])
        if (!order.before(u, lifetimes_[b].first)) return false;
      return true;
    };
    return plan_activations(
        lifetimes_, [&](size_t a, size_t b) { return precedes(a, b) || precedes(b, a); });
  };
  std::vector<ScheduledStep> schedule =
      schedule_steps(by_tensor, backend_.queues(), [&](const std::vector<ScheduledStep>& trial) {
        return plan_for(trial).peak <= limit;
      });
  ActivationPlan plan = plan_for(schedule);
  if (plan.peak <= limit) {  // as schedule_steps checked it
    queues_ = std::move(schedule);
    plan_ = std::move(plan);
  }
  int used = 1;
  for (const ScheduledStep& st : queues_) used = std::max(used, st.queue + 1);
  backend_.prepare_queues(used);
  number_marks();
}

void Executor::number_marks() {
  mark_of_.assign(steps_.size(), -1);
  wait_marks_.assign(steps_.size(), {});
  marks_ = 0;
  for (size_t s = 0; s < steps_.size(); ++s)
    for (int w : queues_[s].waits) {
      if (mark_of_[w] < 0) mark_of_[w] = marks_++;
      wait_marks_[s].push_back(mark_of_[w]);
    }
}

Executor::~Executor() {
  if (arena_) backend_.free(arena_);
}

void Executor::allocate() {
  check(!allocated_, ErrorKind::Argument, "executor of '", graph_.name, "' allocated twice");
  check(weights_.committed(), ErrorKind::Argument, "weights arena of '", graph_.name,
        "' must be committed before allocate()");
  allocated_ = true;
  if (plan_.peak > 0) arena_ = backend_.alloc(plan_.peak);
  converted_.clear();  // the weights arena has uploaded them
  char* base = static_cast<char*>(arena_);
  for (size_t t = 0; t < tensors_.size(); ++t) {
    if (lifetime_index_[t] >= 0) tensors_[t].data = base + plan_.offsets[lifetime_index_[t]];
    if (weight_record_[t] >= 0) tensors_[t].data = weights_.data(weight_record_[t]);
  }
  if (inputs_ == Inputs::Bound)
    for (int v : supplied_) tensors_[edge_[v] >= 0 ? edge_[v] : v].data = nullptr;
  workspace_ptrs_.assign(steps_.size(), nullptr);
  for (size_t s = 0; s < steps_.size(); ++s)
    if (steps_[s].workspace >= 0) workspace_ptrs_[s] = base + plan_.offsets[steps_[s].workspace];
}

Tensor& Executor::input(const std::string& name) {
  int id = value_id(name, "input");
  check(std::find(supplied_.begin(), supplied_.end(), id) != supplied_.end(),
        ErrorKind::Argument, "tensor '", name, "' is not a supplied input of this executor");
  check(allocated_, ErrorKind::Argument, "executor used before allocate()");
  return tensors_[edge_[id] >= 0 ? edge_[id] : id];
}

void Executor::bind(const std::string& name, void* data) {
  Tensor& t = input(name);
  if (t.data == data) return;
  t.data = data;
  recorded_.reset();
  tried_recording_ = false;
}

const Tensor& Executor::output(const std::string& name) const {
  int id = value_id(name, "output");
  check(std::find(wanted_.begin(), wanted_.end(), id) != wanted_.end(), ErrorKind::Argument,
        "tensor '", name, "' was not asked of this executor");
  return tensors_[edge_[id] >= 0 ? edge_[id] : id];
}

void Executor::check_runnable() const {
  check(allocated_, ErrorKind::Argument, "executor of '", graph_.name, "' run before allocate()");
  for (int v : supplied_) {
    const Tensor& t = tensors_[edge_[v] >= 0 ? edge_[v] : v];
    check(t.data || t.numel() == 0, ErrorKind::Argument, "executor of '", graph_.name,
          "': supplied tensor '", graph_.values[v].name, "' was never bound");
  }
}

void Executor::run() {
  check_runnable();
  // The first run goes step by step: libraries set themselves up on first use
  // (cuBLAS and cuDNN state, lazily loaded CUDA kernels), which a capture must
  // not contain. The second records, and later runs replay the recording.
  if (warmed_up_ && !tried_recording_) {
    tried_recording_ = true;
    try {
      // The schedule assumed that steps touch only their tensors and workspace, in
      // the arena as planned; checked on the real pointers (bound inputs included)
      // where steps may overlap at all.
      std::pair<int, int> unordered;
      check(critical_path(queues_) == steps_.size() ||
                ordered_conflicts(step_accesses(), queues_, &unordered),
            ErrorKind::Backend, "steps ", unordered.first, " and ", unordered.second, " of '",
            graph_.name, "' share memory but may run at once");
      backend_.prepare_marks(marks_);
      recorded_ = backend_.record([this] { run_steps(true); });
    } catch (const Error& e) {
      recording_error_ = e.what();
    }
  }
  if (recorded_)
    backend_.run_inference([this] { recorded_->replay(); });
  else
    backend_.run_inference([this] { run_steps(false); });
  warmed_up_ = true;
}

void Executor::run_steps(bool on_queues) {
  for (size_t s = 0; s < steps_.size(); ++s) {
    if (on_queues) backend_.use_queue(queues_[s].queue, wait_marks_[s]);
    Step& st = steps_[s];
    st.layer->forward(backend_, st.in.data(), st.out.data(), workspace_ptrs_[s]);
    if (on_queues && mark_of_[s] >= 0) backend_.set_mark(mark_of_[s]);
  }
  if (on_queues) backend_.use_queue(0, {});
}

std::vector<StepAccess> Executor::step_accesses() const {
  check(allocated_, ErrorKind::Argument, "executor of '", graph_.name,
        "' asked for its memory before allocate()");
  auto range = [](const void* p, size_t bytes) {
    const uintptr_t b = reinterpret_cast<uintptr_t>(p);
    return ByteRange{b, b + bytes};
  };
  std::vector<StepAccess> accesses(steps_.size());
  for (size_t s = 0; s < steps_.size(); ++s) {
    const Step& st = steps_[s];
    for (const Tensor* t : st.in)
      if (t && t->data) accesses[s].reads.push_back(range(t->data, t->bytes()));
    for (const Tensor* t : st.out)
      if (t && t->data) accesses[s].writes.push_back(range(t->data, t->bytes()));
    if (st.workspace >= 0)
      accesses[s].writes.push_back(range(workspace_ptrs_[s], lifetimes_[st.workspace].bytes));
  }
  return accesses;
}

void Executor::run_profiled(std::vector<double>& seconds_per_step) {
  check_runnable();
  seconds_per_step.resize(steps_.size(), 0.0);
  const std::unique_ptr<StepTimer> timer = backend_.step_timer(steps_.size());
  backend_.run_inference([&] {
    for (size_t s = 0; s < steps_.size(); ++s) {
      Step& st = steps_[s];
      timer->start(s);
      st.layer->forward(backend_, st.in.data(), st.out.data(), workspace_ptrs_[s]);
      timer->stop(s);
    }
  });
  const std::vector<double> seconds = timer->seconds();
  for (size_t s = 0; s < steps_.size(); ++s) seconds_per_step[s] += seconds[s];
}

std::vector<std::string> Executor::step_names() const {
  std::vector<std::string> names;
  for (const auto& s : steps_)
    names.push_back(s.node >= 0 ? graph_.nodes[s.node].name
                                : "convert " + graph_.values[s.converted_value].name);
  return names;
}

size_t Executor::largest_workspace() const {
  size_t largest = 0;
  for (const auto& s : steps_)
    if (s.workspace >= 0) largest = std::max(largest, lifetimes_[s.workspace].bytes);
  return largest;
}

}  // namespace repshare
