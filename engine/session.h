// Session: one model ready to run on one backend: its weights arena, its executor
// and host staging buffers for the input and the wanted outputs. This is the path
// image -> tensor -> graph -> arena -> backend -> output, top to bottom:
//
//   Model m = load_model("b0.onnx");
//   Session s(m, backend);              // plans and allocates everything once
//   preprocess(image, s.host_input());  // host memory (pinned on a GPU)
//   s.run();                            // upload, kernels, download
//   const float* logits = s.host_output("logits");
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "engine/arena.h"
#include "engine/executor.h"
#include "engine/model.h"

namespace repshare {

class Session {
 public:
  // Downloaded: host_output() has each wanted tensor after a run. StayOnBackend:
  // they are only kept, in the backend's float storage (Executor's
  // in_storage), for backend kernels that read them where they are
  // (executor().output(name)), as detection post-processing does.
  enum class Outputs { Downloaded, StayOnBackend };
  // wanted: tensors to keep after each run (default: the model's task outputs).
  Session(const Model& model, Backend& backend, std::vector<std::string> wanted = {},
          Outputs outputs = Outputs::Downloaded);

  float* host_input() { return input_.data(); }
  const Shape& input_shape() const { return input_shape_; }
  void run();
  // run() without its downloads and its wait: the input's upload and the steps are
  // queued on the backend, to be followed there by work that reads the outputs
  // where they stay (a detector's post-processing), which ends with the one wait.
  // host_input() must stay unchanged until the backend's next synchronize().
  void run_queued();
  // The input uploaded and every step timed (Executor::run_profiled); the outputs
  // are not downloaded.
  void run_profiled(std::vector<double>& seconds_per_step);
  // The network alone, as GPU benchmarks time a model (PyTorch's on an input already
  // on the device, its outputs left there): the input copied into place from
  // `device_input` (backend memory of the input's bytes), the steps, a
  // synchronisation. Outputs are not downloaded.
  void run_on_device_input(const void* device_input);
  const float* host_output(const std::string& name) const;
  const Shape& output_shape(const std::string& name) const;
  const std::vector<std::string>& wanted() const { return wanted_; }

  Executor& executor() { return *executor_; }
  const WeightsArena& weights() const { return weights_; }
  Backend& backend() { return backend_; }

 private:
  int index(const std::string& name) const;
  void upload_input();  // before every run: the executor may reuse its memory
  Backend& backend_;
  WeightsArena weights_;
  std::unique_ptr<Executor> executor_;
  std::string input_name_;
  Shape input_shape_;
  HostArray<float> input_;  // Backend::alloc_host: pinned on CUDA
  std::vector<std::string> wanted_;
  std::vector<HostArray<float>> outputs_;
  std::vector<Shape> output_shapes_;
};

}  // namespace repshare
