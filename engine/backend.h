// Backend: memory and kernels of one device kind (CPU, CUDA).
//
// Layers (layers/) translate graph nodes into the parameter structs below at load
// time and call these entry points at run time; graph and executor code never see
// a device. Every entry point has a CPU reference in kernels/cpu/<op>.cpp and a
// CUDA kernel in kernels/cuda/<op>.cu, and tests/test_backend_ops.cpp compares them.
//
// This header is included by CUDA sources and stays C++14-clean.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/tensor.h"

namespace repshare {

// Activation fused into the producing op, or run on its own.
enum class ActKind : uint8_t {
  None, Relu, Clip, Sigmoid, Swish, Tanh, LeakyRelu, HardSigmoid, HardSwish, Elu,
  Exp, Log, Sqrt, Neg, Abs, Reciprocal, Softplus
};
struct Activation {
  ActKind kind = ActKind::None;
  float alpha = 0.f;  // Clip: min; LeakyRelu/Elu/HardSigmoid: alpha
  float beta = 0.f;   // Clip: max; HardSigmoid: beta
};
const char* act_name(ActKind k);

// 2-D convolution, NCHW, weights [C_out, C_in/groups, KH, KW]; pads are explicit
// (TF "SAME" is resolved into asymmetric pads at load time).
struct Conv2dParams {
  int64_t n = 1, c_in = 0, h = 0, w = 0;
  int64_t c_out = 0, kh = 1, kw = 1;
  int64_t stride_h = 1, stride_w = 1, dil_h = 1, dil_w = 1;
  int64_t pad_top = 0, pad_left = 0, pad_bottom = 0, pad_right = 0;
  int64_t groups = 1;
  int64_t h_out = 0, w_out = 0;
  Activation act;
  Shape output_shape() const { return Shape{n, c_out, h_out, w_out}; }
  bool is_depthwise() const { return groups == c_in && groups == c_out; }
  bool is_pointwise() const {
    return kh == 1 && kw == 1 && stride_h == 1 && stride_w == 1 && pad_top == 0 &&
           pad_left == 0 && pad_bottom == 0 && pad_right == 0 && groups == 1;
  }
};

// A separable conv: a depthwise conv, then a pointwise one reading its output.
struct SeparableConvParams {
  Conv2dParams dw, pw;
};

enum class BinaryOp : uint8_t { Add, Sub, Mul, Div, Pow, Max, Min };

// Elementwise binary op with NumPy broadcasting, on shapes padded to kMaxRank.
constexpr int kMaxRank = 6;
struct BroadcastParams {
  int rank = 0;                    // number of dims used (<= kMaxRank)
  int64_t out_dims[kMaxRank] = {};
  int64_t a_strides[kMaxRank] = {};  // 0 where a is broadcast
  int64_t b_strides[kMaxRank] = {};
  int64_t numel = 0;
  BinaryOp op = BinaryOp::Add;
  Activation act;                  // fused activation on the result
};

// y[n, c, i] = x[n, c, i] * scale[c] + shift[c], then act (BatchNorm that could not
// be folded into a conv).
struct ChannelAffineParams {
  int64_t n = 1, c = 0, inner = 1;
  Activation act;
};

enum class PoolKind : uint8_t { Max, Average };
struct Pool2dParams {
  PoolKind kind = PoolKind::Max;
  int64_t n = 1, c = 0, h = 0, w = 0;
  int64_t kh = 1, kw = 1, stride_h = 1, stride_w = 1, dil_h = 1, dil_w = 1;
  int64_t pad_top = 0, pad_left = 0, pad_bottom = 0, pad_right = 0;
  int64_t h_out = 0, w_out = 0;
  bool count_include_pad = false;
};

enum class ReduceKind : uint8_t { Mean, Sum, Max, Min };
// Reduction of a tensor viewed as [outer, reduce, inner] (adjacent axes).
struct ReduceParams {
  ReduceKind kind = ReduceKind::Mean;
  int64_t outer = 1, reduce = 1, inner = 1;
};

// C[b] = alpha * op(A[b]) * op(B[b]) + beta * bias, bias broadcast from
// [bias_rows or 1, bias_cols or 1]. Strides of 0 broadcast a matrix over the batch.
struct GemmParams {
  int64_t batch = 1, m = 0, n = 0, k = 0;
  bool trans_a = false, trans_b = false;
  float alpha = 1.f, beta = 0.f;
  int64_t a_batch_stride = 0, b_batch_stride = 0, c_batch_stride = 0;
  int64_t bias_rows = 0, bias_cols = 0;  // 0 = no bias; 1 = broadcast
  Activation act;
};

enum class ResizeMode : uint8_t { Nearest, Linear, Cubic };
enum class CoordMode : uint8_t {
  HalfPixel, PytorchHalfPixel, AlignCorners, Asymmetric, TfHalfPixelForNn, TfCropAndResize,
  HalfPixelSymmetric
};
enum class NearestMode : uint8_t { RoundPreferFloor, RoundPreferCeil, Floor, Ceil };
// Resize of the last two axes of a [outer, H, W] view (N and C scales are 1).
struct ResizeParams {
  ResizeMode mode = ResizeMode::Nearest;
  CoordMode coord = CoordMode::HalfPixel;
  NearestMode nearest = NearestMode::RoundPreferFloor;
  int64_t outer = 1, h = 0, w = 0, h_out = 0, w_out = 0;
  float scale_h = 1.f, scale_w = 1.f;  // output / input, as ONNX defines them
  float cubic_a = -0.75f;
  bool exclude_outside = false;
  float extrapolation_value = 0.f;
  float roi[4] = {0.f, 0.f, 1.f, 1.f};  // tf_crop_and_resize: h0, w0, h1, w1
};

// Generic strided copy used by Transpose, Concat, Slice and Pad: out[i] =
// in[offset + sum_d idx_d * in_strides[d]] over out_dims.
struct CopyParams {
  int rank = 0;
  int64_t dims[kMaxRank] = {};
  int64_t in_strides[kMaxRank] = {};
  int64_t out_strides[kMaxRank] = {};
  int64_t in_offset = 0, out_offset = 0;
};

enum class PadMode : uint8_t { Constant, Reflect, Edge, Wrap };
struct PadParams {
  PadMode mode = PadMode::Constant;
  int rank = 0;
  int64_t in_dims[kMaxRank] = {};
  int64_t out_dims[kMaxRank] = {};
  int64_t pad_begin[kMaxRank] = {};
  float value = 0.f;
};

// Softmax / LogSoftmax over the middle axis of an [outer, axis, inner] view.
struct SoftmaxParams {
  int64_t outer = 1, axis = 1, inner = 1;
  bool log = false;
};

// BiFPN fast normalised fusion after folding: out = act(sum_i weight_i * x_i).
constexpr int kMaxFusionInputs = 4;
struct WeightedSumParams {
  int count = 0;
  float weights[kMaxFusionInputs] = {};
  int64_t numel = 0;
  Activation act;
};

// A fusion input's resampling folded into the sum (engine/passes
// fold_resample_into_weighted_sum): BiFPN's max-pool downsampling and nearest
// upsampling, read from the unresampled input instead of a tensor of their own.
enum class ResampleKind : uint8_t { None, MaxPool, NearestUp };
struct FusionResample {
  ResampleKind kind = ResampleKind::None;
  Pool2dParams pool;      // MaxPool (pool.kind Max): the input is [pool.n, pool.c, pool.h, pool.w]
  ResizeParams upsample;  // NearestUp: asymmetric, floor, h_out / h and w_out / w integers
};

// Sharing adapter: y[n, t, i] = x[n, index[t], i], index an int64 [c_out] tensor
// (receiver channel t reads donor channel index[t]; merge/adapter.h builds it).
struct ChannelGatherParams {
  int64_t n = 1, c_in = 0, c_out = 0, inner = 1;
};

// Squeeze-excitation after its pool (engine/passes fuse_squeeze_excitation): per
// image, hidden = act_reduce(w_reduce . mean + b_reduce) ([c_se]), gate =
// act_expand(w_expand . hidden + b_expand) ([c]); then y = target * gate along
// target's axis 1. The target is the expanded activation [n, c, h, w] (outer = n),
// or, batch 1, the projection conv's weights [c_out, c, 1, 1] that the gate was
// folded into (outer = c_out, n = 1: one gate for every row).
struct SqueezeExcitationParams {
  int64_t n = 1;     // images: mean [n, c]; gate n == outer, or 1 for all rows
  int64_t c = 0;     // channels of mean and gate
  int64_t c_se = 0;  // squeezed channels: w_reduce [c_se, c], w_expand [c, c_se]
  Activation act_reduce, act_expand;
  int64_t outer = 1, inner = 1;  // target and y viewed as [outer, c, inner]
};

// EfficientDet post-processing (tasks/detection.h drives it): the k best class
// logits over all levels with their decoded boxes, then per-class hard NMS.
constexpr int kMaxDetectionLevels = 8;
struct DetectionSelectParams {
  int levels = 0;
  int64_t positions[kMaxDetectionLevels] = {};  // H * W of each level's maps
  int64_t anchors_per_location = 0, classes = 0;
  int64_t k = 0;          // candidates wanted, at most the number of logits
  bool clip = false;      // clip boxes to [0, clip_w] x [0, clip_h]
  float clip_w = 0.f, clip_h = 0.f;
};
struct NmsParams {
  int64_t count = 0;         // candidates, best first
  double iou_threshold = 0.5;  // suppress when IoU > threshold
  int64_t max_keep = 0;      // size of the keep list
};

// Memory a backend holds outside the arenas: a GPU context, library handles and
// their workspaces, as measured when the backend was created.
struct BackendMemoryItem {
  std::string name;
  size_t bytes = 0;
};

// Backend calls recorded once and replayed as one unit (on CUDA, a CUDA graph:
// one launch instead of one per kernel).
class RecordedWork {
 public:
  virtual ~RecordedWork() {}
  // Queues the recorded calls again, with the pointers and parameters they had.
  virtual void replay() = 0;
  // What the recording holds: its calls (CUDA: the graph's nodes, a library call's
  // kernels each one) and the longest chain of them each waiting for the one before;
  // zeros where unknown. At batch 1 a replay's time follows that chain: each call on
  // it waits out the one before, however little work either has.
  struct Shape {
    size_t calls = 0, longest_chain = 0;
  };
  virtual Shape shape() const { return Shape(); }
};

// `repshare bench --profile`: the time each step of one run takes, as its backend
// can best tell. start(i) and stop(i) go around step i; seconds() after the run.
class StepTimer {
 public:
  virtual ~StepTimer() {}
  virtual void start(size_t step) = 0;
  virtual void stop(size_t step) = 0;
  virtual std::vector<double> seconds() = 0;
};

class Backend {
 public:
  virtual ~Backend() {}
  virtual std::string name() const = 0;

  // Records the calls `work` makes on this backend, without running them, for
  // replay. nullptr where the backend does not record (the CPU: nothing to save)
  // or recording is switched off. Throws Error(Backend) naming the reason when a
  // call cannot be recorded; the backend is then usable as before.
  virtual std::unique_ptr<RecordedWork> record(const std::function<void()>& work) {
    return nullptr;
  }
  // Recording on or off (on by default where supported; --cuda-graphs off).
  virtual void set_recording(bool on) {}
  // Queues inside a recording. A backend with several (CUDA: streams captured into
  // one graph) may run calls on different queues at the same time; calls on one
  // queue run in order. The executor puts each step on a queue (engine/schedule.h)
  // and orders queues with marks: set_mark(m) stands for every call queued so far on
  // the current queue, and use_queue(q, marks) sends later calls to queue q, after
  // what those marks stand for. A recording starts and ends on queue 0 (record()
  // joins the others); outside record() every call goes on queue 0 and these do
  // nothing.
  virtual int queues() const { return 1; }
  // Steps that may run at once cannot share memory, so concurrency can make the
  // activation arena larger: by at most this fraction of the sequential plan's size
  // (0: only where it costs no memory; a step that would need more waits for all
  // earlier ones instead).
  virtual double concurrency_memory_allowance() const { return 0.0; }
  // Called once an executor has put its steps on queues: its recordings will use
  // queues 0 .. count-1 (CUDA: a cuBLAS workspace for each, allocated here, so no
  // memory goes to queues no schedule uses).
  virtual void prepare_queues(int count) {}
  // Called before record(): the recording will use marks 0 .. count-1.
  virtual void prepare_marks(int count) {}
  virtual void use_queue(int queue, const std::vector<int>& after_marks) {}
  virtual void set_mark(int mark) {}
  // Runs `steps`, the calls of one whole inference (recorded or not), with any
  // per-thread state the backend wants for them set up around the calls and
  // restored after (the CPU: subnormal floats flushed to zero).
  virtual void run_inference(const std::function<void()>& steps) { steps(); }
  // A timer for `steps` steps. This one reads the host's clock and synchronises after
  // each step, which on a GPU adds a host round trip to every figure; the CUDA
  // backend's records device events instead.
  virtual std::unique_ptr<StepTimer> step_timer(size_t steps);

  // The dtype float tensors are kept in between kernels: F32, or F16 on a backend in
  // fp16 mode (fp16 storage, fp32 arithmetic inside every kernel). The executor
  // stores weights and activations in it and converts at its edges, so the tensors
  // callers supply and read stay F32 whatever the mode.
  virtual DType float_storage() const { return DType::F32; }
  // Whether fp32 GEMMs may round their operands to TF32 (10 fraction bits) for
  // tensor cores, products then summed in fp32: CUDA's --precision tf32, what
  // PyTorch does by default for convolutions.
  virtual bool tf32_products() const { return false; }

  // What the backend itself takes (empty on the CPU: nothing beyond the process).
  virtual std::vector<BackendMemoryItem> overhead() const { return {}; }
  // Device memory in use now, by every process (a GPU's total minus free), for
  // checking reported totals against reality; 0 for backends on host memory.
  virtual size_t device_bytes_in_use() const { return 0; }

  // Memory. alloc() is used only while planning, never in the run loop.
  virtual void* alloc(size_t bytes) = 0;
  virtual void free(void* p) = 0;
  // Host memory for what crosses to the backend every run (a session's input and
  // outputs: HostArray). CUDA's is pinned: the GPU copies it at full bus speed with
  // no staging copy on the host. Zero-filled.
  virtual void* alloc_host(size_t bytes);
  virtual void free_host(void* p);
  // upload() may return before the copy is done: from alloc_host() memory on CUDA it
  // does, so src must stay unchanged until the next download() or synchronize().
  // download() returns with dst filled. download_queued() may return before: dst
  // (alloc_host() memory) is filled by the next synchronize(), so that a session's
  // outputs cost the host one wait, not one per output.
  virtual void upload(void* dst, const void* src, size_t bytes) = 0;
  virtual void download(void* dst, const void* src, size_t bytes) = 0;
  virtual void download_queued(void* dst, const void* src, size_t bytes) {
    download(dst, src, bytes);
  }
  virtual void copy(void* dst, const void* src, size_t bytes) = 0;  // device to device
  virtual void synchronize() {}

  // Kernels. Shapes are static and already checked by the layers. Tensors are
  // contiguous row-major in their own dtype: float tensors in float_storage(),
  // int64 ones (indices) as they are.
  // Unless stated, y must not alias an input.
  //
  // conv2d: y = act(conv(x, w) + bias); bias may be null. workspace holds
  //   conv2d_workspace(p) bytes.
  // activation: y = act(x) elementwise over x.numel(); y may alias x.
  // binary: y[i] = act(a[.] op b[.]) over p.out_dims, a/b addressed through their
  //   strides (0 on broadcast dims); y contiguous; y may alias an operand of its
  //   own shape (each element is read before it is written).
  // channel_affine: scale and shift are [c].
  // pool2d: Max ignores padding; Average divides by the window's in-image element
  //   count, or by kh*kw clipped to the padded extent when count_include_pad.
  // reduce: x is [outer, reduce, inner], y is [outer, inner].
  // gemm: A row-major [m,k] ([k,m] if trans_a), B [k,n] ([n,k] if trans_b); bias
  //   element (i, j) is bias[(bias_rows == 1 ? 0 : i) * bias_cols +
  //   (bias_cols == 1 ? 0 : j)]; a bias is not batched.
  // resize: ONNX Resize semantics on the last two axes (see ResizeParams).
  // strided_copy: y[out_offset + sum idx*out_strides] = x[in_offset + sum idx*in_strides]
  //   for every idx < dims (Transpose, Concat, Slice, Split).
  // pad: out index o maps to input index o - pad_begin per axis; outside the input
  //   the mode decides (Constant: value; Reflect/Edge/Wrap as numpy.pad).
  // softmax: over the middle axis of [outer, axis, inner].
  // weighted_sum: y = act(sum weights[i] * xs[i]), all of p.numel elements.
  // weighted_sum_resampled: the same with xs[i] first resampled as resample[i] says
  //   (p.count entries; y's shape is what each resampling makes). This default
  //   resamples each such input into the workspace (weighted_sum_resampled_workspace
  //   bytes) with pool2d / resize, then sums; a backend may read the windows in
  //   place (CUDA: one launch instead of one per resampled input and the sum), and
  //   must then give the same bits (a max and a copy round nothing).
  // channel_gather: see ChannelGatherParams.
  // convert: y = x, x.numel() elements, each of x and y F32 or F16 (to F16: round to
  //   nearest even, as engine/half.h).
  // detection_select: the p.k best logits of class_outputs[l] ([1, A*C, H, W], A
  //   anchors per location, C classes) in effdet's flattened order (level, row,
  //   column, anchor, class), best first: logit descending, flat index ascending;
  //   NaN logits are never selected. For each: boxes [k, 4] (x_min, y_min, x_max,
  //   y_max) decoded from box_outputs[l] ([1, A*4, H, W]) against anchors [A_all, 4]
  //   (y_min, x_min, y_max, x_max), clipped when p.clip; scores [k] (sigmoid) and
  //   classes [k] (int64, 0-based; -1 in the rows after the last candidate when
  //   fewer than k logits are numbers). The class and box outputs are F32 or in
  //   float_storage() (a network's outputs kept in storage), all of one dtype.
  //   workspace holds detection_select_workspace(p) bytes.
  // nms: per-class hard NMS over the first p.count candidates, visited best first
  //   (rows of class -1 are skipped): a candidate is kept unless a kept one of its
  //   class overlaps it with IoU > threshold. keep [max_keep] int64: indices of the
  //   kept candidates best first, -1 after the last. workspace: nms_workspace(p).
  // gram_accumulate: k += x x^T in float64 (CKA's Gram matrices: merge/cka.h); x is
  //   [n, cols] row-major, k [n, n] row-major of which only the upper triangle
  //   (column >= row) is written.
  virtual void conv2d(const Conv2dParams& p, const Tensor& x, const Tensor& w, const Tensor* bias,
                      Tensor& y, void* workspace) = 0;
  virtual size_t conv2d_workspace(const Conv2dParams& p) const = 0;
  // Whether conv2d and conv2d_residual on p, and separable_conv2d with p its
  // pointwise half, take an F32 y while the other float tensors (and a separable
  // conv's depthwise output) are in an F16 float_storage(): y then gets the fp32
  // result as it is, instead of rounded to fp16. The executor stores a model output
  // that only the caller reads this way (EfficientDet's head outputs), so no convert
  // step follows it and it needs no fp16 copy in the arena.
  virtual bool conv2d_stores_f32(const Conv2dParams& p) const { return false; }
  // conv2d, and mean[n, c] = the mean of y[n, c, :, :] (squeeze-excitation's pool
  // of a depthwise conv's output, fused by the graph passes). This default runs
  // conv2d then reduce; a backend may compute the means while y is in cache, and
  // must then give reduce's result exactly.
  // y = conv2d(x) + residual, residual of y's shape and never y itself; p.act must
  // be None (MBConv's projection conv and its skip connection, fused by the graph
  // passes). This default runs conv2d then an elementwise add; a backend may add
  // the residual while the outputs are in registers, and must then give the same
  // bits in fp32 (the conv's rounded output plus the residual, one more rounding).
  // In fp16 storage it may skip rounding the conv's output to fp16 before the add
  // (the CUDA kernels do): one rounding fewer, so closer to fp32, not equal bits.
  virtual void conv2d_residual(const Conv2dParams& p, const Tensor& x, const Tensor& w,
                               const Tensor* bias, const Tensor& residual, Tensor& y,
                               void* workspace);
  // squeeze_excitation: see SqueezeExcitationParams; b_reduce and b_expand may be
  //   null; workspace holds squeeze_excitation_workspace(p) bytes.
  virtual void squeeze_excitation(const SqueezeExcitationParams& p, const Tensor& mean,
                                  const Tensor& w_reduce, const Tensor* b_reduce,
                                  const Tensor& w_expand, const Tensor* b_expand,
                                  const Tensor& target, Tensor& y, void* workspace) = 0;
  virtual size_t squeeze_excitation_workspace(const SqueezeExcitationParams& p) const = 0;
  virtual void conv2d_channel_mean(const Conv2dParams& p, const Tensor& x, const Tensor& w,
                                   const Tensor* bias, Tensor& y, Tensor& mean, void* workspace);
  // separable_conv2d: y = conv2d(pw, conv2d(dw, x, w_dw, b_dw), w_pw, b_pw), plus
  //   residual when not null (as conv2d_residual); dw a depthwise conv, pw a pointwise
  //   one reading dw's output (EfficientDet's separable convs, MobileNet-style
  //   blocks without squeeze-excitation; fused by the graph passes). This default
  //   runs the two convs with dw's output in the workspace
  //   (separable_conv2d_workspace bytes); a backend may compute dw's outputs as pw
  //   reads them, and must then round them to storage as conv2d stores them and sum
  //   pw's products as its own conv2d does. Where pw has a bias and neither an
  //   activation nor a residual, a backend may add the bias before pw's one rounding
  //   to storage, where conv2d rounds its product, then the sum: in fp16 storage
  //   such outputs may differ from the composition's by one fp16 rounding.
  virtual void separable_conv2d(const Conv2dParams& dw, const Conv2dParams& pw, const Tensor& x,
                                const Tensor& w_dw, const Tensor* b_dw, const Tensor& w_pw,
                                const Tensor* b_pw, const Tensor* residual, Tensor& y,
                                void* workspace);
  virtual size_t separable_conv2d_workspace(const Conv2dParams& dw, const Conv2dParams& pw) const;
  // weighted_sum_separable_conv2d: separable_conv2d of the weighted sum of xs (as
  //   weighted_sum_resampled: sum, resample) instead of x: a BiFPN node, its fusion
  //   and the conv that alone reads it (engine/passes fuse_weighted_sum_separable).
  //   This default stores the sum in the workspace
  //   (weighted_sum_separable_conv2d_workspace bytes) and runs the two; a backend may
  //   compute the sum as the depthwise half reads it, rounded to storage as
  //   weighted_sum stores it.
  virtual void weighted_sum_separable_conv2d(const WeightedSumParams& sum,
                                             const FusionResample* resample,
                                             const Tensor* const* xs, const Conv2dParams& dw,
                                             const Conv2dParams& pw, const Tensor& w_dw,
                                             const Tensor* b_dw, const Tensor& w_pw,
                                             const Tensor* b_pw, const Tensor* residual,
                                             Tensor& y, void* workspace);
  virtual size_t weighted_sum_separable_conv2d_workspace(const WeightedSumParams& sum,
                                                         const FusionResample* resample,
                                                         const Conv2dParams& dw,
                                                         const Conv2dParams& pw) const;
  // pointwise_depthwise_conv2d: y = conv2d(dw, conv2d(pw, x, w_pw, b_pw), w_dw, b_dw),
  //   with mean as conv2d_channel_mean's when not null: a 1x1 conv (MBConv's
  //   expansion) and the depthwise conv that alone reads its output (engine/passes
  //   fuse_pointwise_depthwise). This default stores pw's output in the workspace
  //   (pointwise_depthwise_conv2d_workspace bytes) and runs the two; a backend may
  //   apply pw's bias and activation as dw reads its product, rounded to storage as
  //   conv2d stores them, and must then give the composition's bits.
  virtual void pointwise_depthwise_conv2d(const Conv2dParams& pw, const Conv2dParams& dw,
                                          const Tensor& x, const Tensor& w_pw,
                                          const Tensor* b_pw, const Tensor& w_dw,
                                          const Tensor* b_dw, Tensor& y, Tensor* mean,
                                          void* workspace);
  virtual size_t pointwise_depthwise_conv2d_workspace(const Conv2dParams& pw,
                                                      const Conv2dParams& dw) const;
  // The largest plane (the 1x1 conv's H x W) engine/passes should fuse into one
  // pointwise_depthwise_conv2d for this backend (pass_options_for). The default
  // composition holds the 1x1 conv's input, its whole product and the depthwise
  // output at once, where two steps held two of them each: on the early blocks'
  // planes, which set the activation arena's peak, that raises the peak. 8192 is
  // what CUDA's fused kernel stages in shared memory.
  virtual int64_t pointwise_depthwise_max_plane() const { return 8192; }
  // Where a depthwise conv could fuse with the 1x1 conv before it or the one after
  // it: whether pointwise_depthwise_conv2d (the expansion) is the better of the two
  // (the CPU: it never holds the expansion whole, and its separable_conv2d is the
  // default composition, which saves nothing). CUDA saves a launch either way and
  // keeps the separable conv.
  virtual bool prefers_pointwise_depthwise() const { return false; }
  // separable_conv_chain: separable convs one after another, each reading only its
  //   predecessor's output (EfficientDet's class and box nets: three with their
  //   activation, then the prediction; engine/passes fuse_separable_chain). links[k]
  //   takes weights[4k .. 4k+3]: w_dw, b_dw, w_pw, b_pw (biases may be null);
  //   links[0] reads x, the last writes y, plus residual when not null (as
  //   separable_conv2d). This default runs each link but the last as its two convs,
  //   its output in the workspace (separable_conv_chain_workspace bytes), and the last
  //   as separable_conv2d; a backend may store a link's 1x1 product without its bias
  //   and activation and apply them as the next link's depthwise half reads it,
  //   rounded to storage as conv2d stores them, and must then give this default's
  //   bits.
  virtual void separable_conv_chain(const std::vector<SeparableConvParams>& links,
                                    const Tensor& x, const Tensor* const* weights,
                                    const Tensor* residual, Tensor& y, void* workspace);
  virtual size_t separable_conv_chain_workspace(
      const std::vector<SeparableConvParams>& links) const;
  // squeeze_excitation_conv2d: a squeeze-excitation whose output only a conv reads
  //   (engine/passes fuse_squeeze_excitation_conv; MBConv's projection): y =
  //   conv2d(conv, x, gated) when gates_weights (the gate folded into the conv's
  //   weights, `target`, and `other` is the conv's input), else conv2d(conv, gated,
  //   other) (`target` the activation gated, `other` the weights); gated is
  //   squeeze_excitation(se, ..., target), plus residual when not null (as
  //   conv2d_residual). This default stores gated in the workspace
  //   (squeeze_excitation_conv2d_workspace bytes) and runs the two. A backend may
  //   start a 1x1 conv's output from its bias plus residual, rounded to storage, and
  //   add the product to that: its one rounding then replaces conv2d_residual's
  //   rounding of the product and of the sum, so outputs may differ from the
  //   composition's by one rounding in fp32 as in fp16.
  virtual void squeeze_excitation_conv2d(const SqueezeExcitationParams& se,
                                         const Conv2dParams& conv, bool gates_weights,
                                         const Tensor& mean, const Tensor& w_reduce,
                                         const Tensor* b_reduce, const Tensor& w_expand,
                                         const Tensor* b_expand, const Tensor& target,
                                         const Tensor& other, const Tensor* bias,
                                         const Tensor* residual, Tensor& y, void* workspace);
  virtual size_t squeeze_excitation_conv2d_workspace(const SqueezeExcitationParams& se,
                                                     const Conv2dParams& conv) const;
  virtual void activation(const Activation& a, const Tensor& x, Tensor& y) = 0;
  virtual void binary(const BroadcastParams& p, const Tensor& a, const Tensor& b, Tensor& y) = 0;
  virtual void channel_affine(const ChannelAffineParams& p, const Tensor& x, const Tensor& scale,
                              const Tensor& shift, Tensor& y) = 0;
  virtual void pool2d(const Pool2dParams& p, const Tensor& x, Tensor& y) = 0;
  virtual void reduce(const ReduceParams& p, const Tensor& x, Tensor& y) = 0;
  virtual void gemm(const GemmParams& p, const Tensor& a, const Tensor& b, const Tensor* bias,
                    Tensor& y) = 0;
  virtual void resize(const ResizeParams& p, const Tensor& x, Tensor& y) = 0;
  virtual void strided_copy(const CopyParams& p, const Tensor& x, Tensor& y) = 0;
  virtual void pad(const PadParams& p, const Tensor& x, Tensor& y) = 0;
  virtual void softmax(const SoftmaxParams& p, const Tensor& x, Tensor& y) = 0;
  virtual void weighted_sum(const WeightedSumParams& p, const Tensor* const* xs, Tensor& y) = 0;
  virtual void weighted_sum_resampled(const WeightedSumParams& p, const FusionResample* resample,
                                      const Tensor* const* xs, Tensor& y, void* workspace);
  virtual size_t weighted_sum_resampled_workspace(const WeightedSumParams& p,
                                                  const FusionResample* resample) const;
  virtual void gram_accumulate(int64_t n, int64_t cols, const double* x, double* k) = 0;
  virtual size_t detection_select_workspace(const DetectionSelectParams& p) const = 0;
  virtual void detection_select(const DetectionSelectParams& p, const Tensor* const* class_outputs,
                                const Tensor* const* box_outputs, const Tensor& anchors,
                                Tensor& boxes, Tensor& scores, Tensor& classes,
                                void* workspace) = 0;
  virtual size_t nms_workspace(const NmsParams& p) const = 0;
  virtual void nms(const NmsParams& p, const Tensor& boxes, const Tensor& classes, Tensor& keep,
                   void* workspace) = 0;
  virtual void convert(const Tensor& x, Tensor& y) = 0;
  virtual void channel_gather(const ChannelGatherParams& p, const Tensor& x, const Tensor& index,
                              Tensor& y) = 0;

 protected:
  // The intermediate tensor of a fused op's default composition (separable_conv2d:
  // dw's output; pointwise_depthwise_conv2d: pw's; weighted_sum_separable_conv2d: the
  // sum; squeeze_excitation_conv2d: the gated tensor; separable_conv_chain: a link's
  // output), of `shape` in float_storage(),
  // at the start of its workspace; *rest is where the rest of the workspace starts,
  // 64-byte aligned.
  Tensor workspace_tensor(const Shape& shape, void* workspace, void** rest) const;
  // The bytes workspace_tensor takes for `shape` (aligned for what follows).
  size_t workspace_tensor_bytes(const Shape& shape) const;
  // The bytes of the largest output between a chain's links (separable_conv_chain).
  size_t chain_between_bytes(const std::vector<SeparableConvParams>& links) const;
};

// Backend memory held for a scope (a buffer outside the arenas: CKA's Gram blocks,
// bench's device copy of an input).
struct BackendBuffer {
  BackendBuffer(Backend& b, size_t bytes) : backend(b), data(b.alloc(bytes)) {}
  ~BackendBuffer() { backend.free(data); }
  BackendBuffer(const BackendBuffer&) = delete;
  BackendBuffer& operator=(const BackendBuffer&) = delete;
  template <typename T>
  T* as() const {
    return static_cast<T*>(data);
  }
  Backend& backend;
  void* data;
};

// Host staging held for a scope, from Backend::alloc_host: a session's or a
// pipeline's input and downloaded outputs, detection candidates.
template <typename T>
class HostArray {
 public:
  HostArray() = default;
  HostArray(Backend& b, size_t count)
      : backend_(count > 0 ? &b : nullptr),
        data_(count > 0 ? static_cast<T*>(b.alloc_host(count * sizeof(T))) : nullptr),
        size_(count) {}
  ~HostArray() {
    if (backend_) backend_->free_host(data_);
  }
  HostArray(HostArray&& o) noexcept : backend_(o.backend_), data_(o.data_), size_(o.size_) {
    o.backend_ = nullptr;
    o.data_ = nullptr;
    o.size_ = 0;
  }
  HostArray& operator=(HostArray&& o) noexcept {
    std::swap(backend_, o.backend_);
    std::swap(data_, o.data_);
    std::swap(size_, o.size_);
    return *this;
  }
  T* data() { return data_; }
  const T* data() const { return data_; }
  T& operator[](size_t i) { return data_[i]; }
  const T& operator[](size_t i) const { return data_[i]; }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  size_t bytes() const { return size_ * sizeof(T); }

 private:
  Backend* backend_ = nullptr;
  T* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace repshare
