#include "kernels/cuda/cudnn_conv.h"

#ifdef REPSHARE_WITH_CUDNN
#include "engine/error.h"

namespace repshare {

namespace {
// Algorithms needing more scratch than this are passed over (cuDNN's FFT variants
// can ask for hundreds of MB, which an edge GPU does not have to spare).
constexpr size_t kMaxWorkspaceBytes = size_t(64) << 20;
}  // namespace

void check_cudnn(cudnnStatus_t s, const char* call) {
  if (s != CUDNN_STATUS_SUCCESS)
    fail(ErrorKind::Backend, "cuDNN: ", call, " failed: ", cudnnGetErrorString(s));
}

CudnnKey cudnn_key(const Conv2dParams& p) {
  return {p.n,        p.c_in,     p.h,     p.w,     p.c_out,   p.kh,       p.kw,
          p.stride_h, p.stride_w, p.dil_h, p.dil_w, p.pad_top, p.pad_left, p.groups};
}

CudnnConv::CudnnConv(cudnnHandle_t handle, const Conv2dParams& p, DType storage,
                     bool tensor_ops) {
  auto i = [](int64_t v) { return static_cast<int>(v); };
  const cudnnDataType_t type = storage == DType::F16 ? CUDNN_DATA_HALF : CUDNN_DATA_FLOAT;
  REPSHARE_CUDNN(cudnnCreateTensorDescriptor(&x_));
  REPSHARE_CUDNN(cudnnCreateTensorDescriptor(&y_));
  REPSHARE_CUDNN(cudnnCreateFilterDescriptor(&w_));
  REPSHARE_CUDNN(cudnnCreateConvolutionDescriptor(&conv_));
  REPSHARE_CUDNN(cudnnSetTensor4dDescriptor(x_, CUDNN_TENSOR_NCHW, type, i(p.n), i(p.c_in),
                                            i(p.h), i(p.w)));
  REPSHARE_CUDNN(cudnnSetFilter4dDescriptor(w_, type, CUDNN_TENSOR_NCHW, i(p.c_out),
                                            i(p.c_in / p.groups), i(p.kh), i(p.kw)));
  REPSHARE_CUDNN(cudnnSetConvolution2dDescriptor(conv_, i(p.pad_top), i(p.pad_left),
                                                 i(p.stride_h), i(p.stride_w), i(p.dil_h),
                                                 i(p.dil_w), CUDNN_CROSS_CORRELATION,
                                                 CUDNN_DATA_FLOAT));
  REPSHARE_CUDNN(cudnnSetConvolutionGroupCount(conv_, i(p.groups)));
  REPSHARE_CUDNN(
      cudnnSetConvolutionMathType(conv_, tensor_ops ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH));
  int n = 0, c = 0, h = 0, w = 0;
  REPSHARE_CUDNN(cudnnGetConvolution2dForwardOutputDim(conv_, x_, w_, &n, &c, &h, &w));
  check(n == p.n && c == p.c_out && h == p.h_out && w == p.w_out, ErrorKind::Backend,
        "cuDNN computes a ", n, "x", c, "x", h, "x", w, " output for a convolution planned as ",
        p.n, "x", p.c_out, "x", p.h_out, "x", p.w_out);
  REPSHARE_CUDNN(cudnnSetTensor4dDescriptor(y_, CUDNN_TENSOR_NCHW, type, n, c, h, w));

  cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
  int found = 0;
  REPSHARE_CUDNN(cudnnGetConvolutionForwardAlgorithm_v7(
      handle, x_, w_, conv_, y_, CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &found, perf));
  bool chosen = false;
  for (int a = 0; a < found && !chosen; ++a) {  // best first
    if (perf[a].status != CUDNN_STATUS_SUCCESS || perf[a].memory > kMaxWorkspaceBytes) continue;
    algo_ = perf[a].algo;
    chosen = true;
  }
  check(chosen, ErrorKind::Backend, "cuDNN offers no algorithm for a ", p.kh, "x", p.kw,
        " convolution of ", p.c_in, "x", p.h, "x", p.w, " (stride ", p.stride_h, ", groups ",
        p.groups, ") within ", kMaxWorkspaceBytes >> 20, " MiB of workspace");
  REPSHARE_CUDNN(
      cudnnGetConvolutionForwardWorkspaceSize(handle, x_, w_, conv_, y_, algo_, &workspace_bytes_));
}

CudnnConv::~CudnnConv() {
  if (conv_) cudnnDestroyConvolutionDescriptor(conv_);
  if (w_) cudnnDestroyFilterDescriptor(w_);
  if (y_) cudnnDestroyTensorDescriptor(y_);
  if (x_) cudnnDestroyTensorDescriptor(x_);
}

void CudnnConv::forward(cudnnHandle_t handle, const void* x, const void* w, void* y,
                        void* workspace) const {
  const float one = 1.f, zero = 0.f;
  REPSHARE_CUDNN(cudnnConvolutionForward(handle, &one, x_, x, w_, w, conv_, algo_, workspace,
                                         workspace_bytes_, &zero, y_, y));
}

}  // namespace repshare
#endif  // REPSHARE_WITH_CUDNN
