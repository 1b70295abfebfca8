#include "engine/session.h"

#include "engine/error.h"

namespace repshare {

Session::Session(const Model& model, Backend& backend, std::vector<std::string> wanted,
                 Outputs outputs)
    : backend_(backend), weights_(backend), wanted_(std::move(wanted)) {
  if (wanted_.empty()) wanted_ = model.info.outputs;
  input_name_ = model.info.input;
  // run() uploads the input every time.
  const bool downloaded = outputs == Outputs::Downloaded;
  executor_.reset(new Executor(model.graph, backend, weights_, {input_name_}, wanted_,
                               Executor::Inputs::EachRun,
                               downloaded ? std::vector<std::string>() : wanted_));
  weights_.commit();
  executor_->allocate();
  input_shape_ = executor_->input(input_name_).shape;
  input_ = HostArray<float>(backend, input_shape_.numel());
  for (const auto& w : wanted_) {
    const Tensor& t = executor_->output(w);
    check(!downloaded || t.dtype == DType::F32, ErrorKind::Unsupported, "output '", w,
          "' is not float32");
    outputs_.emplace_back(backend, downloaded ? t.numel() : 0);
    output_shapes_.push_back(t.shape);
  }
}

void Session::upload_input() {
  Tensor& in = executor_->input(input_name_);
  backend_.upload(in.data, input_.data(), input_.bytes());
}

void Session::run_profiled(std::vector<double>& seconds_per_step) {
  upload_input();
  executor_->run_profiled(seconds_per_step);
}

void Session::run_on_device_input(const void* device_input) {
  Tensor& in = executor_->input(input_name_);
  backend_.copy(in.data, device_input, in.bytes());
  executor_->run();
  backend_.synchronize();
}

void Session::run_queued() {
  upload_input();
  executor_->run();
}

void Session::run() {
  run_queued();
  for (size_t i = 0; i < wanted_.size(); ++i) {
    if (outputs_[i].empty()) continue;  // stays on the backend
    backend_.download_queued(outputs_[i].data(), executor_->output(wanted_[i]).data,
                             outputs_[i].bytes());
  }
  backend_.synchronize();  // one wait for every output
}

int Session::index(const std::string& name) const {
  for (size_t i = 0; i < wanted_.size(); ++i)
    if (wanted_[i] == name) return static_cast<int>(i);
  fail(ErrorKind::Argument, "output '", name, "' was not requested from this session");
}

const float* Session::host_output(const std::string& name) const {
  const int i = index(name);
  check(!outputs_[i].empty() || output_shapes_[i].numel() == 0, ErrorKind::Argument, "output '",
        name, "' stays on the backend in this session: read executor().output()");
  return outputs_[i].data();
}

const Shape& Session::output_shape(const std::string& name) const {
  return output_shapes_[index(name)];
}

}  // namespace repshare
