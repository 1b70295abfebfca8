// ONNX Resize on the last two axes, one thread per output element. Which input
// elements each output reads, and with what weights, is kernels/cpu/resize_math.h,
// shared with the CPU reference so both backends compute the same taps.
#include "kernels/cpu/resize_math.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_storage.cuh"
#include "kernels/cuda/cuda_util.h"

namespace repshare {
namespace {

// One thread per output element. The taps are recomputed per element (a few
// double operations) instead of tabulated: the kernel allocates nothing.
template <typename T>
__global__ void resize_kernel(ResizeParams p, ResizeAxis ay, ResizeAxis ax, const T* __restrict__ x,
                              T* __restrict__ y, int total) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= total) return;
  const int w_out = static_cast<int>(ax.out), h_out = static_cast<int>(ay.out);
  const int ox = i % w_out;
  const int oy = (i / w_out) % h_out;
  const int plane = i / (w_out * h_out);
  const ResizeTaps row = resize_axis_taps(p, ay, oy);
  const ResizeTaps col = resize_axis_taps(p, ax, ox);
  if (row.outside || col.outside) {
    y[i] = cuda::stored<T>(p.extrapolation_value);
    return;
  }
  const T* in = x + static_cast<size_t>(plane) * ay.in * ax.in;
  const int taps = resize_taps_of(p.mode);
  // Rows first, then across them, in the CPU reference's order.
  float acc = 0.f;
  for (int r = 0; r < taps; ++r) {
    const T* irow = in + row.index[r] * ax.in;
    float line = 0.f;
    for (int c = 0; c < taps; ++c) line += col.weight[c] * cuda::as_float(irow[col.index[c]]);
    acc += row.weight[r] * line;
  }
  y[i] = cuda::stored<T>(acc);
}

}  // namespace

void CudaBackend::resize(const ResizeParams& p, const Tensor& x, Tensor& y) {
  const char* op = "resize";
  cuda::to_int(p.h_out, op, "h_out");
  cuda::to_int(p.w_out, op, "w_out");
  const ResizeAxis ay{p.h, p.h_out, p.scale_h, p.roi[0], p.roi[2]};
  const ResizeAxis ax{p.w, p.w_out, p.scale_w, p.roi[1], p.roi[3]};
  cuda::to_int(p.outer * p.h * p.w, op, "input numel");
  const int total = cuda::to_int(p.outer * p.h_out * p.w_out, op, "output numel");
  if (total == 0) return;
  check(p.h > 0 && p.w > 0, ErrorKind::Shape, "cuda resize: empty input plane");
  cuda::with_storage(y.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    resize_kernel<T><<<cuda::blocks_for(total), cuda::kBlock, 0, stream_>>>(
        p, ay, ax, cuda::data<T>(x), cuda::data<T>(y), total);
  });
  after_launch("resize_kernel");
}

}  // namespace repshare
