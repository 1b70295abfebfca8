// Executor: runs the part of a graph that computes the wanted tensors from the
// supplied ones.
//
// Construction plans everything: which nodes are needed (walking back from the
// wanted tensors, stopping at supplied ones and constants), their layers, the
// weights they read (registered in a WeightsArena: nodes that are not needed never
// have their weights loaded), and the activation arena offsets from tensor
// lifetimes. After the arena is committed, allocate() makes the one activation
// allocation. run() then only calls kernels: no allocation, no lookups.
//
// Float tensors are kept in the backend's float_storage(). When that is F16, the
// weights are converted as they are registered, and conversion steps at the edges
// keep what callers see in F32: input(), bind() and output() are F32 tensors,
// except those a caller asks to exchange in storage (in_storage).
//
//   Executor ex(graph, backend, weights, {"input"}, {"logits"}, Executor::Inputs::EachRun);
//   weights.commit();
//   ex.allocate();
//   fill(ex.input("input"));  ex.run();  read(ex.output("logits"));
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/arena.h"
#include "engine/graph.h"
#include "engine/schedule.h"
#include "layers/layer.h"

namespace repshare {

class Executor {
 public:
  // How the caller provides the supplied tensors, which decides their memory.
  enum class Inputs {
    // Filled through input() once, and run() may be repeated on them: they keep
    // their memory to the end.
    Kept,
    // Filled through input() before every run(): the steps after a tensor's last
    // reader may reuse its memory (D0's 3 MiB image, once the stem has read it).
    EachRun,
    // bind() points them at memory owned elsewhere before the first run(): they
    // have none in the arena.
    Bound,
  };
  // in_storage: supplied or wanted tensors the caller exchanges with backend kernels
  // rather than host code (a detector's outputs, which post-processing reads where
  // they are; a donor's stage output bound to an adapter, and the adapter's output
  // bound to a receiver): input() and output() give them in the backend's float
  // storage, with no step converting them from or to F32 (in fp16 mode half the
  // memory, and no conversion kernels).
  Executor(const Graph& graph, Backend& backend, WeightsArena& weights,
           const std::vector<std::string>& supplied, const std::vector<std::string>& wanted,
           Inputs inputs = Inputs::Kept, const std::vector<std::string>& in_storage = {});
  ~Executor();
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  // Allocates the activation arena; the weights arena must be committed.
  void allocate();

  // A supplied tensor's storage in this executor's arena (backend memory); with
  // Inputs::Bound, what bind() gave it (null before).
  Tensor& input(const std::string& name);
  // Points a supplied tensor at memory owned elsewhere (e.g. a donor model's
  // stage output in its own arena) instead of copying it in. A new pointer drops
  // the recording (below): the next run records again.
  void bind(const std::string& name, void* data);
  const Tensor& output(const std::string& name) const;

  // Runs the steps. On a backend that records (CUDA graphs), the second run records
  // them and every run replays the recording: the pointers never change after
  // allocate(), so one recording serves all runs. Where recording fails the steps
  // run one by one, and recording_error() says why.
  void run();
  bool recorded() const { return recorded_ != nullptr; }
  RecordedWork::Shape recorded_shape() const {
    return recorded_ ? recorded_->shape() : RecordedWork::Shape();
  }
  const std::string& recording_error() const { return recording_error_; }
  // run() step by step (never a recording) that also adds each step's time, as the
  // backend's step_timer() measures it, to seconds_per_step (resized to
  // num_steps()); for `repshare bench --profile`.
  void run_profiled(std::vector<double>& seconds_per_step);

  const Graph& graph() const { return graph_; }
  Backend& backend() { return backend_; }
  size_t activation_bytes() const { return plan_.peak; }
  size_t activation_lower_bound() const { return plan_.lower_bound; }
  // The largest scratch buffer one step asks for (planned inside the arena).
  size_t largest_workspace() const;
  size_t num_steps() const { return steps_.size(); }
  // The memory each step reads and writes (after allocate()), and the steps on the
  // backend's queues as a recording runs them (engine/schedule.h).
  std::vector<StepAccess> step_accesses() const;
  const std::vector<ScheduledStep>& schedule() const { return queues_; }
  // Names of the nodes that run, in order ("convert <tensor>" for the steps that
  // convert between F32 and the backend's float storage at the edges).
  std::vector<std::string> step_names() const;

 private:
  struct Step {
    int node;  // -1: a conversion step
    int converted_value = -1;
    std::unique_ptr<Layer> layer;
    std::vector<const Tensor*> in;
    std::vector<Tensor*> out;
    int workspace = -1;  // index into lifetimes_/plan_ for this step's scratch, -1 if none
  };

  int value_id(const std::string& name, const char* role) const;
  void check_runnable() const;  // allocated, and every bound input bound
  // All steps in order; on queues_ with waits when recording with several queues.
  void run_steps(bool on_queues);
  // queues_, mark_of_ and plan_ (the arena, for the steps as queues_ runs them).
  void plan_queues_and_arena();
  void number_marks();  // mark_of_ and wait_marks_ from queues_

  Graph graph_;
  Backend& backend_;
  WeightsArena& weights_;
  // Per value id (in the backend's float storage), then the F32 edge tensors of
  // supplied and wanted values when that storage is not F32.
  std::vector<Tensor> tensors_;
  std::vector<int> edge_;              // per value id: its edge tensor, -1 if none
  std::vector<std::vector<uint16_t>> converted_;  // fp16 weights until allocate()
  std::vector<int> weight_record_;     // per tensor: WeightsArena record, -1 if none
  std::vector<int> lifetime_index_;    // per tensor: index into lifetimes_, -1 if none
  std::vector<Lifetime> lifetimes_;
  std::vector<int> supplied_, wanted_;
  Inputs inputs_;
  std::vector<Step> steps_;
  ActivationPlan plan_;
  void* arena_ = nullptr;
  std::vector<void*> workspace_ptrs_;
  bool allocated_ = false;
  bool warmed_up_ = false;  // run once step by step (see run())
  bool tried_recording_ = false;
  std::unique_ptr<RecordedWork> recorded_;
  std::vector<ScheduledStep> queues_;  // per step, for the recording
  std::vector<int> mark_of_;           // per step: its mark when another waits for it, or -1
  std::vector<std::vector<int>> wait_marks_;  // per step: the marks of queues_[s].waits
  int marks_ = 0;
  std::string recording_error_;
};

}  // namespace repshare
