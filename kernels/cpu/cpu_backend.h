// The CPU backend: the reference every other backend is tested against, and fast
// enough for studies on a 2-core machine (OpenBLAS GEMM for 1x1 and dense convs,
// direct AVX2 depthwise convs, OpenMP across channels).
//
// One file per entry point: kernels/cpu/<op>.cpp.
#pragma once

#include <cstdint>
#include <vector>

#include "engine/backend.h"

namespace repshare {

class CpuBackend : public Backend {
 public:
  // threads <= 0: OpenMP's default (all cores).
  explicit CpuBackend(int threads = 0);
  std::string name() const override { return "cpu"; }
  int threads() const { return threads_; }

  // Flushes subnormal floats to zero (inputs and results) on the calling thread
  // and the OpenMP team for the inference, restoring each thread's mode after:
  // on x86 every multiply with a subnormal operand or result is a microcode
  // assist, 100x a normal one. Real images push some activations there (D0 with
  // random weights on a COCO frame: one 1x1 conv 1.4 -> 9.3 ms, 86 ms an image
  // against 63 on noise), and the results differ from unflushed ones by less
  // than 1.2e-38 per value.
  void run_inference(const std::function<void()>& steps) override;

  void* alloc(size_t bytes) override;
  void free(void* p) override;
  void upload(void* dst, const void* src, size_t bytes) override;
  void download(void* dst, const void* src, size_t bytes) override;
  void copy(void* dst, const void* src, size_t bytes) override;

  void conv2d(const Conv2dParams& p, const Tensor& x, const Tensor& w, const Tensor* bias,
              Tensor& y, void* workspace) override;
  // Dense and pointwise convs add the residual in the GEMM's epilogue.
  void conv2d_residual(const Conv2dParams& p, const Tensor& x, const Tensor& w, const Tensor* bias,
                       const Tensor& residual, Tensor& y, void* workspace) override;
  // Depthwise convs average each output plane right after computing it (in L1/L2)
  // instead of reading the whole output again; others take the default.
  void squeeze_excitation(const SqueezeExcitationParams& p, const Tensor& mean,
                          const Tensor& w_reduce, const Tensor* b_reduce, const Tensor& w_expand,
                          const Tensor* b_expand, const Tensor& target, Tensor& y,
                          void* workspace) override;
  size_t squeeze_excitation_workspace(const SqueezeExcitationParams& p) const override;
  void conv2d_channel_mean(const Conv2dParams& p, const Tensor& x, const Tensor& w,
                           const Tensor* bias, Tensor& y, Tensor& mean, void* workspace) override;
  size_t conv2d_workspace(const Conv2dParams& p) const override;
  // A few channels at a time per thread: their 1x1 product into the thread's
  // workspace (still in L2), then their depthwise conv. The workspace holds those
  // channels' planes, not the whole product, so planes of any size are fused where
  // the blocks run: 1x1 convs that the AVX2 or AVX-512 GEMMs take (every expansion
  // of EfficientNet and EfficientDet on x86-64). Builds without AVX2 (the aarch64
  // edge build) run the composition, and fuse planes up to Backend's limit.
  void pointwise_depthwise_conv2d(const Conv2dParams& pw, const Conv2dParams& dw, const Tensor& x,
                                  const Tensor& w_pw, const Tensor* b_pw, const Tensor& w_dw,
                                  const Tensor* b_dw, Tensor& y, Tensor* mean,
                                  void* workspace) override;
  size_t pointwise_depthwise_conv2d_workspace(const Conv2dParams& pw,
                                              const Conv2dParams& dw) const override;
  int64_t pointwise_depthwise_max_plane() const override;
  bool prefers_pointwise_depthwise() const override;
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
  void gram_accumulate(int64_t n, int64_t cols, const double* x, double* k) override;
  size_t detection_select_workspace(const DetectionSelectParams& p) const override;
  void detection_select(const DetectionSelectParams& p, const Tensor* const* class_outputs,
                        const Tensor* const* box_outputs, const Tensor& anchors, Tensor& boxes,
                        Tensor& scores, Tensor& classes, void* workspace) override;
  size_t nms_workspace(const NmsParams& p) const override;
  void nms(const NmsParams& p, const Tensor& boxes, const Tensor& classes, Tensor& keep,
           void* workspace) override;
  void convert(const Tensor& x, Tensor& y) override;
  void channel_gather(const ChannelGatherParams& p, const Tensor& x, const Tensor& index,
                      Tensor& y) override;

 private:
  int threads_;
  std::vector<uint64_t> saved_fp_modes_;  // per thread, during run_inference
};

}  // namespace repshare
