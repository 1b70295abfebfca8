// A CPU backend in fp16 mode, for tests. Float tensors are stored as fp16, as on
// `--backend cuda --precision fp16`: the executor converts the weights and adds its
// conversion steps at the edges exactly as it does for CUDA. Each kernel widens its
// fp16 operands to fp32 copies, runs the CPU reference kernel on them and rounds
// its outputs back to fp16 (engine/half.h), which is what fp16 mode promises:
// fp16 storage, fp32 arithmetic inside every kernel.
//
// Slow, and it allocates in every call: it exists so that machines without a GPU
// test what fp16 mode does above the kernels (executor edges, weights, arena
// sizes, the accuracy of whole models and merged plans), and as the fp16
// reference the CUDA backend's fp16 kernels are compared with.
#pragma once

#include <deque>
#include <utility>
#include <vector>

#include "engine/half.h"
#include "kernels/cpu/cpu_backend.h"

namespace repshare {

// The fp32 copies of one kernel call's fp16 tensors: in() widens an operand,
// out() an output (with its current contents: some kernels write only part of it,
// a Concat's strided copies), and the destructor rounds the outputs back. Operands
// and outputs get separate copies, so kernels that may run in place still do.
class WidenedCall {
 public:
  WidenedCall() = default;
  WidenedCall(const WidenedCall&) = delete;
  WidenedCall& operator=(const WidenedCall&) = delete;
  ~WidenedCall() {
    for (const auto& o : outputs_) {
      const std::vector<float>& wide = buffers_[o.second];
      uint16_t* narrow = static_cast<uint16_t*>(o.first->data);
      for (size_t i = 0; i < wide.size(); ++i) narrow[i] = float_to_half(wide[i]);
    }
  }

  const Tensor& in(const Tensor& t) { return t.dtype == DType::F16 ? widen(t) : t; }
  const Tensor* in(const Tensor* t) { return t ? &in(*t) : nullptr; }
  Tensor& out(Tensor& t) {
    if (t.dtype != DType::F16) return t;
    Tensor& wide = widen(t);
    outputs_.emplace_back(&t, buffers_.size() - 1);
    return wide;
  }

 private:
  Tensor& widen(const Tensor& t) {
    const uint16_t* narrow = static_cast<const uint16_t*>(t.data);
    std::vector<float> wide(static_cast<size_t>(t.numel()));
    for (size_t i = 0; i < wide.size(); ++i) wide[i] = half_to_float(narrow[i]);
    buffers_.push_back(std::move(wide));
    views_.push_back(t);
    views_.back().dtype = DType::F32;
    views_.back().data = buffers_.back().data();
    return views_.back();
  }

  std::deque<std::vector<float>> buffers_;
  std::deque<Tensor> views_;  // deques: references handed out stay valid
  std::vector<std::pair<Tensor*, size_t>> outputs_;
};

class Fp16StorageCpuBackend : public CpuBackend {
 public:
  explicit Fp16StorageCpuBackend(int threads = 0) : CpuBackend(threads) {}
  std::string name() const override { return "cpu-fp16-storage"; }
  DType float_storage() const override { return DType::F16; }

  void conv2d(const Conv2dParams& p, const Tensor& x, const Tensor& w, const Tensor* bias,
              Tensor& y, void* workspace) override {
    WidenedCall c;
    CpuBackend::conv2d(p, c.in(x), c.in(w), c.in(bias), c.out(y), workspace);
  }
  void conv2d_residual(const Conv2dParams& p, const Tensor& x, const Tensor& w, const Tensor* bias,
                       const Tensor& residual, Tensor& y, void* workspace) override {
    WidenedCall c;
    CpuBackend::conv2d_residual(p, c.in(x), c.in(w), c.in(bias), c.in(residual), c.out(y),
                                workspace);
  }
  void conv2d_channel_mean(const Conv2dParams& p, const Tensor& x, const Tensor& w,
                           const Tensor* bias, Tensor& y, Tensor& mean, void* workspace) override {
    WidenedCall c;
    CpuBackend::conv2d_channel_mean(p, c.in(x), c.in(w), c.in(bias), c.out(y), c.out(mean),
                                    workspace);
  }
  void squeeze_excitation(const SqueezeExcitationParams& p, const Tensor& mean,
                          const Tensor& w_reduce, const Tensor* b_reduce, const Tensor& w_expand,
                          const Tensor* b_expand, const Tensor& target, Tensor& y,
                          void* workspace) override {
    WidenedCall c;
    CpuBackend::squeeze_excitation(p, c.in(mean), c.in(w_reduce), c.in(b_reduce), c.in(w_expand),
                                   c.in(b_expand), c.in(target), c.out(y), workspace);
  }
  void activation(const Activation& a, const Tensor& x, Tensor& y) override {
    WidenedCall c;
    CpuBackend::activation(a, c.in(x), c.out(y));
  }
  void binary(const BroadcastParams& p, const Tensor& a, const Tensor& b, Tensor& y) override {
    WidenedCall c;
    CpuBackend::binary(p, c.in(a), c.in(b), c.out(y));
  }
  void channel_affine(const ChannelAffineParams& p, const Tensor& x, const Tensor& scale,
                      const Tensor& shift, Tensor& y) override {
    WidenedCall c;
    CpuBackend::channel_affine(p, c.in(x), c.in(scale), c.in(shift), c.out(y));
  }
  void pool2d(const Pool2dParams& p, const Tensor& x, Tensor& y) override {
    WidenedCall c;
    CpuBackend::pool2d(p, c.in(x), c.out(y));
  }
  void reduce(const ReduceParams& p, const Tensor& x, Tensor& y) override {
    WidenedCall c;
    CpuBackend::reduce(p, c.in(x), c.out(y));
  }
  void gemm(const GemmParams& p, const Tensor& a, const Tensor& b, const Tensor* bias,
            Tensor& y) override {
    WidenedCall c;
    CpuBackend::gemm(p, c.in(a), c.in(b), c.in(bias), c.out(y));
  }
  void resize(const ResizeParams& p, const Tensor& x, Tensor& y) override {
    WidenedCall c;
    CpuBackend::resize(p, c.in(x), c.out(y));
  }
  void strided_copy(const CopyParams& p, const Tensor& x, Tensor& y) override {
    WidenedCall c;
    CpuBackend::strided_copy(p, c.in(x), c.out(y));
  }
  void pad(const PadParams& p, const Tensor& x, Tensor& y) override {
    WidenedCall c;
    CpuBackend::pad(p, c.in(x), c.out(y));
  }
  void softmax(const SoftmaxParams& p, const Tensor& x, Tensor& y) override {
    WidenedCall c;
    CpuBackend::softmax(p, c.in(x), c.out(y));
  }
  void weighted_sum(const WeightedSumParams& p, const Tensor* const* xs, Tensor& y) override {
    WidenedCall c;
    std::vector<const Tensor*> wide;
    for (int i = 0; i < p.count; ++i) wide.push_back(&c.in(*xs[i]));
    CpuBackend::weighted_sum(p, wide.data(), c.out(y));
  }
  void channel_gather(const ChannelGatherParams& p, const Tensor& x, const Tensor& index,
                      Tensor& y) override {
    WidenedCall c;
    CpuBackend::channel_gather(p, c.in(x), index, c.out(y));
  }
  // detection_select, nms, gram_accumulate and convert take F32 (or float64, int64)
  // tensors in every mode: the CPU's own.
};

}  // namespace repshare
