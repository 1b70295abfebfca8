// The CPU backend simulating fp16 mode (`--backend cpu --precision fp16`): float
// tensors are stored as fp16, as on `--backend cuda --precision fp16`, and each
// kernel widens its fp16 operands to fp32 copies, runs the CPU kernel on them and
// rounds its outputs back to fp16 (engine/half.h). That is what fp16 mode
// promises (fp16 storage, fp32 arithmetic inside every kernel), so on a machine
// without a GPU it shows what fp16 does to a model's accuracy and memory before
// deploying, and it is the fp16 reference the CUDA backend's fp16 kernels are
// tested against (tests/test_backend_ops.cpp).
//
// It is slower than the plain CPU backend (every operand converted on every call)
// and holds fp32 copies of the largest operands: a few scratch buffers, grown
// during the first run and reused after, reported by overhead().
#pragma once

#include <array>
#include <vector>

#include "kernels/cpu/cpu_backend.h"

namespace repshare {

class Fp16StorageCpuBackend : public CpuBackend {
 public:
  explicit Fp16StorageCpuBackend(int threads = 0) : CpuBackend(threads) {}
  DType float_storage() const override { return DType::F16; }
  std::vector<BackendMemoryItem> overhead() const override;

  void conv2d(const Conv2dParams& p, const Tensor& x, const Tensor& w, const Tensor* bias,
              Tensor& y, void* workspace) override;
  void conv2d_residual(const Conv2dParams& p, const Tensor& x, const Tensor& w, const Tensor* bias,
                       const Tensor& residual, Tensor& y, void* workspace) override;
  // An F32 output gets the CPU kernel's result without the rounding back to fp16.
  bool conv2d_stores_f32(const Conv2dParams&) const override { return true; }
  void conv2d_channel_mean(const Conv2dParams& p, const Tensor& x, const Tensor& w,
                           const Tensor* bias, Tensor& y, Tensor& mean, void* workspace) override;
  // The default composition: the conv2d and conv2d_channel_mean here, each rounding
  // its output to fp16 (the CPU backend's channel blocks read fp32 tensors).
  void pointwise_depthwise_conv2d(const Conv2dParams& pw, const Conv2dParams& dw, const Tensor& x,
                                  const Tensor& w_pw, const Tensor* b_pw, const Tensor& w_dw,
                                  const Tensor* b_dw, Tensor& y, Tensor* mean,
                                  void* workspace) override {
    Backend::pointwise_depthwise_conv2d(pw, dw, x, w_pw, b_pw, w_dw, b_dw, y, mean, workspace);
  }
  size_t pointwise_depthwise_conv2d_workspace(const Conv2dParams& pw,
                                              const Conv2dParams& dw) const override {
    return Backend::pointwise_depthwise_conv2d_workspace(pw, dw);
  }
  int64_t pointwise_depthwise_max_plane() const override {
    return Backend::pointwise_depthwise_max_plane();
  }
  bool prefers_pointwise_depthwise() const override {
    return Backend::prefers_pointwise_depthwise();
  }
  void squeeze_excitation(const SqueezeExcitationParams& p, const Tensor& mean,
                          const Tensor& w_reduce, const Tensor* b_reduce, const Tensor& w_expand,
                          const Tensor* b_expand, const Tensor& target, Tensor& y,
                          void* workspace) override;
  void activation(const Activation& a, const Tensor& x, Tensor& y) override;
  void binary(const BroadcastParams& p, const Tensor& a, const Tensor& b, Tensor& y) override;
  void channel_affine(const ChannelAffineParams& p, const Tensor& x, const Tensor& scale,
                      const Tensor& shift, Tensor& y) override;
  void pool2d(const Pool2dParams& p, const Tensor& x, Tensor& y) override;
  void reduce(const ReduceParams& p, const Tensor& x, Tensor& y) override;
  void gemm(const GemmParams& p, const Tensor& a, const Tensor& b, const Tensor* bias,
            Tensor& y) override;
  void resize(const ResizeParams& p, const Tensor& x, Tensor& y) override;
  void strided_copy(const CopyParams& p, const Tensor& x, Tensor& y) override;
  void pad(const PadParams& p, const Tensor& x, Tensor& y) override;
  void softmax(const SoftmaxParams& p, const Tensor& x, Tensor& y) override;
  void weighted_sum(const WeightedSumParams& p, const Tensor* const* xs, Tensor& y) override;
  void channel_gather(const ChannelGatherParams& p, const Tensor& x, const Tensor& index,
                      Tensor& y) override;
  // A detector's outputs in fp16 storage (Executor's in_storage) widened.
  void detection_select(const DetectionSelectParams& p, const Tensor* const* class_outputs,
                        const Tensor* const* box_outputs, const Tensor& anchors, Tensor& boxes,
                        Tensor& scores, Tensor& classes, void* workspace) override;
  // nms, gram_accumulate and convert take F32 (or float64, int64) tensors in every
  // mode: the CPU's own.

 private:
  // The fp32 copies of one kernel call's fp16 tensors, in the backend's scratch:
  // in() widens an operand, out() an output (with its current contents: some
  // kernels write only part of it, a Concat's strided copies), and the destructor
  // rounds the outputs back. Operands and outputs get separate copies, so kernels
  // that may run in place still do.
  class Widened {
   public:
    Widened(std::vector<std::vector<float>>& scratch, int threads)
        : scratch_(scratch), threads_(threads) {}
    Widened(const Widened&) = delete;
    Widened& operator=(const Widened&) = delete;
    ~Widened();
    const Tensor& in(const Tensor& t) { return t.dtype == DType::F16 ? widen(t) : t; }
    const Tensor* in(const Tensor* t) { return t ? &in(*t) : nullptr; }
    Tensor& out(Tensor& t);

   private:
    Tensor& widen(const Tensor& t);
    std::vector<std::vector<float>>& scratch_;
    int threads_;
    // At most a detector's class and box outputs (detection_select).
    std::array<Tensor, 2 * kMaxDetectionLevels> views_;
    std::array<Tensor*, 2 * kMaxDetectionLevels> narrow_to_;  // per view: its fp16 output
    size_t used_ = 0;
  };
  std::vector<std::vector<float>> scratch_;
};

}  // namespace repshare
