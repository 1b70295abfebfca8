// ONNX Resize on the last two axes, written after onnx/reference/ops/op_resize.py.
// Which input elements each output reads, and with what weights, is
// kernels/cpu/resize_math.h, shared with the CUDA kernel; here the column taps are
// tabulated per chunk and reused by every output row.
#include <algorithm>
#include <cmath>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/resize_math.h"

namespace repshare {

void CpuBackend::resize(const ResizeParams& p, const Tensor& x, Tensor& y) {
  const float* xd = x.f32();
  float* yd = y.f32();
  const ResizeAxis ay{p.h, p.h_out, p.scale_h, p.roi[0], p.roi[2]};
  const ResizeAxis ax{p.w, p.w_out, p.scale_w, p.roi[1], p.roi[3]};
  const int taps = resize_taps_of(p.mode);
  // Column taps are computed once per plane for a chunk of columns and kept on the
  // stack (kernels allocate nothing), then reused by every output row.
  constexpr int64_t kChunk = 256;
#pragma omp parallel for num_threads(threads_) schedule(static) if (p.outer * p.h_out * p.w_out * taps * taps >= cpu::kMinParallelWork)
  for (int64_t plane = 0; plane < p.outer; ++plane) {
    const float* in = xd + plane * p.h * p.w;
    float* out = yd + plane * p.h_out * p.w_out;
    ResizeTaps cols[kChunk];
    for (int64_t c0 = 0; c0 < p.w_out; c0 += kChunk) {
      const int64_t c1 = std::min(p.w_out, c0 + kChunk);
      for (int64_t ox = c0; ox < c1; ++ox) cols[ox - c0] = resize_axis_taps(p, ax, ox);
      for (int64_t oy = 0; oy < p.h_out; ++oy) {
        const ResizeTaps row = resize_axis_taps(p, ay, oy);
        float* orow = out + oy * p.w_out;
        if (p.mode == ResizeMode::Nearest && !row.outside &&
            p.coord != CoordMode::TfCropAndResize) {  // a gather from one input row
          const float* irow = in + row.index[0] * p.w;
          for (int64_t ox = c0; ox < c1; ++ox) orow[ox] = irow[cols[ox - c0].index[0]];
          continue;
        }
        for (int64_t ox = c0; ox < c1; ++ox) {
          const ResizeTaps& col = cols[ox - c0];
          if (row.outside || col.outside) {
            orow[ox] = p.extrapolation_value;
            continue;
          }
          // Rows first, then across them, as the reference interpolates.
          float acc = 0.f;
          for (int i = 0; i < taps; ++i) {
            const float* irow = in + row.index[i] * p.w;
            float line = 0.f;
            for (int j = 0; j < taps; ++j) line += col.weight[j] * irow[col.index[j]];
            acc += row.weight[i] * line;
          }
          orow[ox] = acc;
        }
      }
    }
  }
}

}  // namespace repshare
