#include "kernels/cpu/fp16_storage_backend.h"

#include "engine/error.h"
#include "kernels/cpu/cpu_kernels.h"

namespace repshare {

Fp16StorageCpuBackend::Widened::~Widened() {
  for (size_t k = 0; k < used_; ++k) {
    if (!narrow_to_[k]) continue;
    cpu::floats_to_halves(views_[k].f32(), static_cast<uint16_t*>(narrow_to_[k]->data),
                          views_[k].numel(), threads_);
  }
}

Tensor& Fp16StorageCpuBackend::Widened::widen(const Tensor& t) {
  check(used_ < views_.size(), ErrorKind::Backend, "fp16 simulation: more than ", views_.size(),
        " fp16 tensors in one call");
  if (used_ == scratch_.size()) scratch_.emplace_back();
  std::vector<float>& wide = scratch_[used_];
  const size_t n = static_cast<size_t>(t.numel());
  if (wide.size() < n) wide.resize(n);  // grows in the first run only
  cpu::halves_to_floats(static_cast<const uint16_t*>(t.data), wide.data(), t.numel(), threads_);
  Tensor& view = views_[used_];
  view = t;
  view.dtype = DType::F32;
  view.data = wide.data();
  narrow_to_[used_] = nullptr;
  ++used_;
  return view;
}

Tensor& Fp16StorageCpuBackend::Widened::out(Tensor& t) {
  if (t.dtype != DType::F16) return t;
  Tensor& view = widen(t);
  narrow_to_[used_ - 1] = &t;
  return view;
}

std::vector<BackendMemoryItem> Fp16StorageCpuBackend::overhead() const {
  size_t bytes = 0;
  for (const auto& s : scratch_) bytes += s.capacity() * sizeof(float);
  return {{"fp32 copies of the fp16 simulation's operands", bytes}};
}

void Fp16StorageCpuBackend::conv2d(const Conv2dParams& p, const Tensor& x, const Tensor& w,
                                   const Tensor* bias, Tensor& y, void* workspace) {
  Widened c(scratch_, threads());
  CpuBackend::conv2d(p, c.in(x), c.in(w), c.in(bias), c.out(y), workspace);
}

void Fp16StorageCpuBackend::conv2d_residual(const Conv2dParams& p, const Tensor& x,
                                            const Tensor& w, const Tensor* bias,
                                            const Tensor& residual, Tensor& y, void* workspace) {
  Widened c(scratch_, threads());
  CpuBackend::conv2d_residual(p, c.in(x), c.in(w), c.in(bias), c.in(residual), c.out(y),
                              workspace);
}

// The means of the stored (fp16) outputs, as reduce gives them: the CPU's fused
// kernel would average the fp32 outputs before they are rounded.
void Fp16StorageCpuBackend::conv2d_channel_mean(const Conv2dParams& p, const Tensor& x,
                                                const Tensor& w, const Tensor* bias, Tensor& y,
                                                Tensor& mean, void* workspace) {
  Backend::conv2d_channel_mean(p, x, w, bias, y, mean, workspace);
}

void Fp16StorageCpuBackend::squeeze_excitation(const SqueezeExcitationParams& p,
                                               const Tensor& mean, const Tensor& w_reduce,
                                               const Tensor* b_reduce, const Tensor& w_expand,
                                               const Tensor* b_expand, const Tensor& target,
                                               Tensor& y, void* workspace) {
  Widened c(scratch_, threads());
  CpuBackend::squeeze_excitation(p, c.in(mean), c.in(w_reduce), c.in(b_reduce), c.in(w_expand),
                                 c.in(b_expand), c.in(target), c.out(y), workspace);
}

void Fp16StorageCpuBackend::detection_select(const DetectionSelectParams& p,
                                             const Tensor* const* class_outputs,
                                             const Tensor* const* box_outputs,
                                             const Tensor& anchors, Tensor& boxes, Tensor& scores,
                                             Tensor& classes, void* workspace) {
  Widened c(scratch_, threads());
  const Tensor* cls[kMaxDetectionLevels];
  const Tensor* box[kMaxDetectionLevels];
  for (int l = 0; l < p.levels; ++l) {
    cls[l] = c.in(class_outputs[l]);
    box[l] = c.in(box_outputs[l]);
  }
  CpuBackend::detection_select(p, cls, box, anchors, boxes, scores, classes, workspace);
}

void Fp16StorageCpuBackend::activation(const Activation& a, const Tensor& x, Tensor& y) {
  Widened c(scratch_, threads());
  CpuBackend::activation(a, c.in(x), c.out(y));
}

void Fp16StorageCpuBackend::binary(const BroadcastParams& p, const Tensor& a, const Tensor& b,
                                   Tensor& y) {
  Widened c(scratch_, threads());
  CpuBackend::binary(p, c.in(a), c.in(b), c.out(y));
}

void Fp16StorageCpuBackend::channel_affine(const ChannelAffineParams& p, const Tensor& x,
                                           const Tensor& scale, const Tensor& shift, Tensor& y) {
  Widened c(scratch_, threads());
  CpuBackend::channel_affine(p, c.in(x), c.in(scale), c.in(shift), c.out(y));
}

void Fp16StorageCpuBackend::pool2d(const Pool2dParams& p, const Tensor& x, Tensor& y) {
  Widened c(scratch_, threads());
  CpuBackend::pool2d(p, c.in(x), c.out(y));
}

void Fp16StorageCpuBackend::reduce(const ReduceParams& p, const Tensor& x, Tensor& y) {
  Widened c(scratch_, threads());
  CpuBackend::reduce(p, c.in(x), c.out(y));
}

void Fp16StorageCpuBackend::gemm(const GemmParams& p, const Tensor& a, const Tensor& b,
                                 const Tensor* bias, Tensor& y) {
  Widened c(scratch_, threads());
  CpuBackend::gemm(p, c.in(a), c.in(b), c.in(bias), c.out(y));
}

void Fp16StorageCpuBackend::resize(const ResizeParams& p, const Tensor& x, Tensor& y) {
  Widened c(scratch_, threads());
  CpuBackend::resize(p, c.in(x), c.out(y));
}

void Fp16StorageCpuBackend::strided_copy(const CopyParams& p, const Tensor& x, Tensor& y) {
  Widened c(scratch_, threads());
  CpuBackend::strided_copy(p, c.in(x), c.out(y));
}

void Fp16StorageCpuBackend::pad(const PadParams& p, const Tensor& x, Tensor& y) {
  Widened c(scratch_, threads());
  CpuBackend::pad(p, c.in(x), c.out(y));
}

void Fp16StorageCpuBackend::softmax(const SoftmaxParams& p, const Tensor& x, Tensor& y) {
  Widened c(scratch_, threads());
  CpuBackend::softmax(p, c.in(x), c.out(y));
}

void Fp16StorageCpuBackend::weighted_sum(const WeightedSumParams& p, const Tensor* const* xs,
                                         Tensor& y) {
  Widened c(scratch_, threads());
  const Tensor* wide[kMaxFusionInputs] = {};
  for (int i = 0; i < p.count && i < kMaxFusionInputs; ++i) wide[i] = &c.in(*xs[i]);
  CpuBackend::weighted_sum(p, wide, c.out(y));
}

void Fp16StorageCpuBackend::channel_gather(const ChannelGatherParams& p, const Tensor& x,
                                           const Tensor& index, Tensor& y) {
  Widened c(scratch_, threads());
  CpuBackend::channel_gather(p, c.in(x), index, c.out(y));
}

}  // namespace repshare
