// The CUDA backend: every Backend entry point as CUDA kernels on its streams (one
// outside recordings, several inside a CUDA graph's capture), with cuBLAS for the
// GEMM-shaped convolutions and Gemm.
//
// One file per entry point: kernels/cuda/<op>.cu (named like kernels/cpu/<op>.cpp);
// memory, the stream and the cuBLAS handle live in cuda_backend.cpp. Compiled only
// when CMake finds nvcc (REPSHARE_WITH_CUDA); make_backend() in
// engine/backend_registry.h is the way to get one.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "engine/backend.h"

// Opaque handles, so that C++ code including this header needs no CUDA headers.
struct CUstream_st;
struct CUevent_st;
struct cublasContext;
struct cudnnContext;

namespace repshare {

class CudnnConv;  // kernels/cuda/cudnn_conv.h

class CudaBackend : public Backend {
 public:
  // Throws Error(Backend) naming the CUDA error when there is no usable device.
  // float_storage F16 is fp16 mode: weights and activations stored as fp16, every
  // kernel (and cuBLAS / cuDNN) accumulating in fp32. tf32_products (fp32 storage,
  // compute capability 8.0+, cuBLAS 11+): cuBLAS's GEMMs on TF32 tensor cores.
  explicit CudaBackend(int device = 0, DType float_storage = DType::F32,
                       bool tf32_products = false);
  ~CudaBackend() override;
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  std::string name() const override { return "cuda"; }
  DType float_storage() const override { return storage_; }
  bool tf32_products() const override { return tf32_; }
  int device() const { return device_; }
  const std::string& device_name() const { return device_name_; }
  // Device memory in use once the CUDA context, the stream and the cuBLAS handle
  // (with its workspace) exist: total minus free, so it also counts other processes
  // on the same GPU. context_bytes() - cublas_bytes() is the context's share.
  size_t context_bytes() const { return context_bytes_; }
  // What creating the cuBLAS handle and its workspace took (free before - after).
  size_t cublas_bytes() const { return cublas_bytes_; }
  std::vector<BackendMemoryItem> overhead() const override;
  size_t device_bytes_in_use() const override;

  void* alloc(size_t bytes) override;
  void free(void* p) override;
  void* alloc_host(size_t bytes) override;  // pinned
  void free_host(void* p) override;
  void upload(void* dst, const void* src, size_t bytes) override;
  void download(void* dst, const void* src, size_t bytes) override;
  void download_queued(void* dst, const void* src, size_t bytes) override;
  void copy(void* dst, const void* src, size_t bytes) override;
  void synchronize() override;
  // CUDA graphs: the stream's launches captured (not run) into a graph that
  // replays them with one cudaGraphLaunch. Off with REPSHARE_CUDA_SYNC=1, whose
  // per-launch synchronisation cannot be captured.
  std::unique_ptr<RecordedWork> record(const std::function<void()>& work) override;
  // Device events around each step (see the base class).
  std::unique_ptr<StepTimer> step_timer(size_t steps) override;
  void set_recording(bool on) override { recording_ = on; }
  // Queues are streams captured into the recording's graph, marks are events. 10 by
  // default, one per head branch of D0 (the widest part of these models; with 8, two
  // branches shared a stream: the emulated fp32 graph's longest chain was 149 launches
  // instead of 133); set by REPSHARE_CUDA_STREAMS, 1 for one stream. Concurrency that takes memory is
  // allowed by REPSHARE_CUDA_CONCURRENCY_MEMORY (a fraction; 0 by default: an edge
  // GPU's memory is what repshare saves).
  int queues() const override { return static_cast<int>(streams_.size()); }
  double concurrency_memory_allowance() const override { return concurrency_memory_; }
  void prepare_queues(int count) override;
  void prepare_marks(int count) override;
  void use_queue(int queue, const std::vector<int>& after_marks) override;
  void set_mark(int mark) override;

  void conv2d(const Conv2dParams& p, const Tensor& x, const Tensor& w, const Tensor* bias,
              Tensor& y, void* workspace) override;
  // The residual is added in the conv's epilogue (or its depthwise kernel).
  void conv2d_channel_mean(const Conv2dParams& p, const Tensor& x, const Tensor& w,
                           const Tensor* bias, Tensor& y, Tensor& mean, void* workspace) override;
  // 1x1 then depthwise with channel means: the depthwise kernel applies the 1x1
  // conv's bias and activation as it stages each input plane in shared memory.
  void pointwise_depthwise_conv2d(const Conv2dParams& pw, const Conv2dParams& dw,
                                  const Tensor& x, const Tensor& w_pw, const Tensor* b_pw,
                                  const Tensor& w_dw, const Tensor* b_dw, Tensor& y,
                                  Tensor* mean, void* workspace) override;
  void separable_conv2d(const Conv2dParams& dw, const Conv2dParams& pw, const Tensor& x,
                        const Tensor& w_dw, const Tensor* b_dw, const Tensor& w_pw,
                        const Tensor* b_pw, const Tensor* residual, Tensor& y,
                        void* workspace) override;
  size_t separable_conv2d_workspace(const Conv2dParams& dw, const Conv2dParams& pw) const override;
  void weighted_sum_separable_conv2d(const WeightedSumParams& sum, const FusionResample* resample,
                                     const Tensor* const* xs, const Conv2dParams& dw,
                                     const Conv2dParams& pw, const Tensor& w_dw,
                                     const Tensor* b_dw, const Tensor& w_pw, const Tensor* b_pw,
                                     const Tensor* residual, Tensor& y, void* workspace) override;
  size_t weighted_sum_separable_conv2d_workspace(const WeightedSumParams& sum,
                                                 const FusionResample* resample,
                                                 const Conv2dParams& dw,
                                                 const Conv2dParams& pw) const override;
  // Each link's 1x1 product is stored without its bias and activation, which the
  // next link's depthwise kernel applies as it reads it: no epilogue launch between.
  // Where a link's 1x1 conv is fused, each link is a separable_conv2d instead, from
  // one buffer of the workspace into the other.
  void separable_conv_chain(const std::vector<SeparableConvParams>& links, const Tensor& x,
                            const Tensor* const* weights, const Tensor* residual, Tensor& y,
                            void* workspace) override;
  size_t separable_conv_chain_workspace(
      const std::vector<SeparableConvParams>& links) const override;
  void conv2d_residual(const Conv2dParams& p, const Tensor& x, const Tensor& w, const Tensor* bias,
                       const Tensor& residual, Tensor& y, void* workspace) override;
  size_t conv2d_workspace(const Conv2dParams& p) const override;
  // fp16 storage, except the convs cuDNN runs (its fp16 convolutions store fp16).
  bool conv2d_stores_f32(const Conv2dParams& p) const override;
  void squeeze_excitation(const SqueezeExcitationParams& p, const Tensor& mean,
                          const Tensor& w_reduce, const Tensor* b_reduce, const Tensor& w_expand,
                          const Tensor* b_expand, const Tensor& target, Tensor& y,
                          void* workspace) override;
  size_t squeeze_excitation_workspace(const SqueezeExcitationParams& p) const override;
  // At batch 1 with a pointwise conv without activation, the squeeze-excitation
  // kernel also fills the conv's output with its bias plus residual, and cuBLAS adds
  // the product to it: no epilogue launch.
  void squeeze_excitation_conv2d(const SqueezeExcitationParams& se, const Conv2dParams& conv,
                                 bool gates_weights, const Tensor& mean, const Tensor& w_reduce,
                                 const Tensor* b_reduce, const Tensor& w_expand,
                                 const Tensor* b_expand, const Tensor& target,
                                 const Tensor& other, const Tensor* bias, const Tensor* residual,
                                 Tensor& y, void* workspace) override;
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
  void weighted_sum_resampled(const WeightedSumParams& p, const FusionResample* resample,
                              const Tensor* const* xs, Tensor& y, void* workspace) override;
  size_t weighted_sum_resampled_workspace(const WeightedSumParams& p,
                                          const FusionResample* resample) const override;
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

  // For the kernel files: the stream of the current queue, the cuBLAS handle, and
  // what a cuBLAS or cuDNN call must be preceded by (below), and the check
  // every launch is followed by (it names the kernel; with REPSHARE_CUDA_SYNC=1 in
  // the environment it also waits for the kernel, so that an asynchronous fault is
  // reported by the launch that caused it).
  CUstream_st* stream() const { return stream_; }
  cublasContext* cublas() const { return cublas_; }
  void after_launch(const char* kernel) const;
  // Around every cuBLAS and cuDNN call. Their handles keep state (cuBLAS its
  // workspace), so calls sharing it must not overlap: inside a recording, such a
  // call on another queue than the previous one waits for that call to finish.
  // Each queue a schedule uses has a cuBLAS workspace of its own (prepare_queues;
  // PyTorch keeps one per stream too), so only cuDNN calls wait so, and D0's head
  // branches run their GEMMs at once: the emulated fp32 graph's longest chain of
  // launches is 127 of 209, against 193 with one workspace. With
  // REPSHARE_CUDA_LIBRARY_OVERLAP=0 the queues share one workspace and every call
  // waits, as cuBLAS 10 (JetPack 4, no cublasSetWorkspace) always does. Before also
  // points the handles at the current stream (with its cuBLAS workspace, which
  // setting a stream resets).
  enum class Library { Cublas, Cudnn };
  void before_library_call(Library library = Library::Cublas);
  void after_library_call(Library library = Library::Cublas);

 private:
  int device_ = 0;
  DType storage_ = DType::F32;
  bool tf32_ = false;
  std::string device_name_;
  CUstream_st* stream_ = nullptr;          // the current queue's
  std::vector<CUstream_st*> streams_;      // per queue; [0] runs everything outside record()
  std::vector<CUevent_st*> marks_;         // prepare_marks()
  std::vector<CUevent_st*> queue_events_;  // per queue: its end of work so far, for
                                           // another queue to wait on
  std::vector<bool> queue_joined_;         // per queue: part of the current recording
  bool capturing_ = false;
  double concurrency_memory_ = 0.0;
  int queue_ = 0;                          // the current queue
  CUstream_st* library_stream_ = nullptr;  // where the handles point
  int library_queue_ = -1;                 // queue of the last library call recorded
  CUevent_st* library_done_ = nullptr;     // recorded after it
  void wait_for_queue(int queue);          // the current queue waits for its work so far
  cublasContext* cublas_ = nullptr;
  std::vector<void*> cublas_workspaces_;  // [0], and one per further queue prepared
  size_t cublas_workspace_bytes_ = size_t(4) << 20;  // each (REPSHARE_CUDA_CUBLAS_WORKSPACE_MIB)
  size_t queue_workspace_bytes_ = 0;      // what the further ones took
  bool library_overlap_ = false;
  bool waits_for_library(Library library) const;  // must not overlap other such calls
  size_t context_bytes_ = 0;
  size_t cublas_bytes_ = 0;
  // separable_conv2d and weighted_sum_separable_conv2d (conv2d.cu): the depthwise
  // half reads x, or else computes the weighted sum of xs as it reads it.
  void separable_conv2d_of(const Tensor* x, const WeightedSumParams* sum,
                           const FusionResample* resample, const Tensor* const* xs,
                           const Conv2dParams& dw, const Conv2dParams& pw, const Tensor& w_dw,
                           const Tensor* b_dw, const Tensor& w_pw, const Tensor* b_pw,
                           const Tensor* residual, Tensor& y, void* workspace);
  // Their pointwise half, and a chain's last, over the depthwise output mid: cuBLAS
  // adds its product to y where the depthwise kernel filled y with the bias
  // (from_bias), else conv2d or conv2d_residual.
  void separable_pointwise(const Conv2dParams& pw, const Tensor& mid, const Tensor& w_pw,
                           const Tensor* b_pw, const Tensor* residual, bool from_bias, Tensor& y,
                           void* workspace);
  // conv2d_channel_mean's means in the kernel storing the conv's outputs (conv2d.cu):
  // a block per plane where the planes fill the GPU or are small, else, for a
  // depthwise conv, a block per chunk of a plane (plane_mean_split_kernel) where the
  // split scratch holds the planes' chunks.
  bool means_in_conv_kernel(const Conv2dParams& p) const;
  bool mean_block_per_plane(const Conv2dParams& p) const;
  bool splits_means(const Conv2dParams& p) const;
  // plane_mean_split_kernel's scratch for every stream, one allocation, zeroed once:
  // per stream kSplitMeanPlanes counts of finished chunks (each launch leaves them at
  // zero) and kSplitMeanChunkSums floats. A stream's launches run one after another,
  // so each stream needs one.
  static constexpr int64_t kSplitMeanPlanes = 1024, kSplitMeanChunkSums = 4096;
  static constexpr size_t kSplitMeanScratchBytes =
      kSplitMeanPlanes * sizeof(unsigned) + kSplitMeanChunkSums * sizeof(float);
  void* split_mean_scratch_ = nullptr;
  size_t split_mean_scratch_bytes_ = 0;  // the device memory it took, measured
  // y = w . x + beta * y for pointwise conv p (conv2d.cu): cuBLAS alone, image by
  // image, no bias, activation or residual; beta 1 adds the product to what y holds.
  void pointwise_gemm(const Conv2dParams& p, const Tensor& x, const Tensor& w, Tensor& y,
                      float beta);
  void conv2d_with_residual(const Conv2dParams& p, const Tensor& x, const Tensor& w,
                            const Tensor* bias, const Tensor* residual, Tensor& y,
                            void* workspace);
#ifdef REPSHARE_WITH_CUDNN
  // Dense convolutions through cuDNN: the handle (its memory measured like
  // cuBLAS's) and one set-up per distinct convolution, made when the executor asks
  // for the workspace size while planning.
  cudnnContext* cudnn_ = nullptr;
  size_t cudnn_bytes_ = 0;
  mutable std::map<std::array<int64_t, 14>, std::shared_ptr<CudnnConv>> cudnn_convs_;
  const CudnnConv& cudnn_conv(const Conv2dParams& p) const;
#endif
  bool sync_each_launch_ = false;
  // Which 1x1 convs pointwise_conv_kernel (conv2d.cu) runs, epilogue included (a
  // separable conv's depthwise half computed as it loads its input), instead of
  // cuBLAS then the epilogue kernel: none by default; every one with
  // REPSHARE_CUDA_POINTWISE=fused; with =small only those of at most 64 output
  // channels on planes of at most 1024 elements (BiFPN's nodes from P4 down, its P6
  // input and P4/P5 laterals, and their head branches: a launch fewer each where one
  // launch's latency is most of the time). Experiments: gpu-check times them against
  // the default.
  enum class Pointwise { Cublas, Fused, FusedSmall };
  Pointwise pointwise_ = Pointwise::Cublas;
  bool fuses_pointwise(const Conv2dParams& p) const;  // a 1x1 conv the fused kernels take
  bool fuses_a_link(const std::vector<SeparableConvParams>& links) const;
  // separable_conv2d and weighted_sum_separable_conv2d in one launch where
  // fuses_pointwise(pw): x, or else the weighted sum of xs, as separable_conv2d_of.
  void separable_fused(const Tensor* x, const WeightedSumParams* sum,
                       const FusionResample* resample, const Tensor* const* xs,
                       const Conv2dParams& dw, const Conv2dParams& pw, const Tensor& w_dw,
                       const Tensor* b_dw, const Tensor& w_pw, const Tensor* b_pw,
                       const Tensor* residual, Tensor& y);
  // Compute capability 7.0+: fp16 fused pointwise convs on tensor cores (wmma).
  bool tensor_cores_ = false;
  int multiprocessors_ = 1;  // the GPU's SMs: a kernel of fewer blocks leaves some idle
  bool recording_ = true;
};

}  // namespace repshare
