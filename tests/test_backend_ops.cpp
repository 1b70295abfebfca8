// Backend comparison (the idea of ggml's test-backend-ops): every Backend entry
// point runs on random inputs of odd shapes on the CPU reference and on the CUDA
// backend, and the outputs must agree to a normalized error
// ||cuda - cpu|| / ||cpu||. Without a GPU (or a CUDA build) the comparisons skip.
// In fp16 mode (float tensors stored as fp16) the reference is the CPU's kernels
// in the same storage (kernels/cpu/fp16_storage_backend.h), so that both sides start
// from the same rounded inputs; on the CPU alone, that reference is checked
// against fp32 for every case.
//
// The table is all_cases(): adding an op or a shape is one entry there.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "engine/backend_registry.h"
#include "engine/error.h"
#include "engine/half.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/fp16_storage_backend.h"
#include "tests/scoped_env.h"

#ifdef REPSHARE_WITH_CUDA
#include "kernels/cuda/cuda_backend.h"
#endif

namespace repshare {
namespace {

using Floats = std::vector<float>;

// fp32 kernels that sum in a different order (cuBLAS vs OpenBLAS, warp shuffles
// vs serial loops) differ by a few ulps per element: 1e-5 of the norm.
constexpr double kFp32Tolerance = 1e-5;
// Transcendental activations: CUDA's expf/logf/powf/tanhf are within 2 ulp and the
// CPU's vectorised sigmoid polynomial within ~1e-7 relative; still far below 1e-4.
constexpr double kTranscendentalTolerance = 1e-4;
// fp16 storage on both sides: the outputs are rounded to 11 significant bits
// (2^-11 = 4.9e-4 relative at most) from fp32 results that differ in the last
// bits, so an element differs by one fp16 step where the two land on either side
// of a rounding boundary; where CUDA stores a GEMM's result before its bias and
// activation epilogue, by two. 2e-3 bounds that; exact cases stay exact. TF32
// products (--precision tf32) round GEMM operands to the same 11 significant bits
// and sum in fp32: the same bound against the CPU's fp32.
constexpr double kFp16Tolerance = 2e-3;

Floats random_floats(size_t n, uint32_t seed, float lo = -1.f, float hi = 1.f) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  Floats v(n);
  for (float& f : v) f = dist(gen);
  return v;
}

size_t count(const Shape& s) { return static_cast<size_t>(s.numel()); }

// A float tensor in one backend's memory, freed with it: in the backend's float
// storage unless the entry point takes F32 in every mode (detection's anchors and
// results, nms, convert).
// Host values are float either way, converted on upload and download.
class DeviceTensor {
 public:
  DeviceTensor(Backend& be, const Shape& shape, const Floats& host, DType dtype)
      : be_(be) {
    t.shape = shape;
    t.dtype = dtype;
    EXPECT_EQ(host.size(), count(shape)) << "host data for " << shape.str();
    t.data = be.alloc(t.bytes());
    if (dtype == DType::F16) {
      std::vector<uint16_t> narrow(host.size());
      for (size_t i = 0; i < host.size(); ++i) narrow[i] = float_to_half(host[i]);
      be.upload(t.data, narrow.data(), t.bytes());
    } else {
      be.upload(t.data, host.data(), t.bytes());
    }
  }
  DeviceTensor(Backend& be, const Shape& shape, const Floats& host)
      : DeviceTensor(be, shape, host, be.float_storage()) {}
  // An output: filled with NaN, so an element the kernel never writes fails the
  // comparison instead of matching stale memory.
  DeviceTensor(Backend& be, const Shape& shape, DType dtype)
      : DeviceTensor(be, shape, Floats(count(shape), std::numeric_limits<float>::quiet_NaN()),
                     dtype) {}
  DeviceTensor(Backend& be, const Shape& shape) : DeviceTensor(be, shape, be.float_storage()) {}
  ~DeviceTensor() { be_.free(t.data); }
  DeviceTensor(const DeviceTensor&) = delete;
  DeviceTensor& operator=(const DeviceTensor&) = delete;

  Floats download() const {
    Floats host(count(t.shape));
    if (t.dtype == DType::F16) {
      std::vector<uint16_t> narrow(host.size());
      be_.download(narrow.data(), t.data, t.bytes());
      for (size_t i = 0; i < host.size(); ++i) host[i] = half_to_float(narrow[i]);
    } else {
      be_.download(host.data(), t.data, t.bytes());
    }
    return host;
  }

  Tensor t;

 private:
  Backend& be_;
};

// Raw workspace bytes (conv2d).
class DeviceBytes {
 public:
  DeviceBytes(Backend& be, size_t bytes) : be_(be), data(be.alloc(bytes)) {}
  ~DeviceBytes() { be_.free(data); }
  DeviceBytes(const DeviceBytes&) = delete;
  DeviceBytes& operator=(const DeviceBytes&) = delete;

 private:
  Backend& be_;

 public:
  void* data;
};

struct OpCase {
  std::string name;  // letters, digits and '_' (a gtest parameter name)
  double tolerance;
  // Runs the op on `be` with inputs fixed when the case was made; returns the output.
  std::function<Floats(Backend& be)> run;
};

// gtest prints a parameter on failure and in test listings: the name, not bytes.
void PrintTo(const OpCase& op, std::ostream* os) { *os << op.name; }

// ||b - a|| / ||a||; infinite when either holds a non-finite value or a is zero.
double normalized_error(const Floats& a, const Floats& b) {
  if (a.size() != b.size()) return std::numeric_limits<double>::infinity();
  double diff = 0.0, ref = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i]) || !std::isfinite(b[i])) return std::numeric_limits<double>::infinity();
    diff += (double(b[i]) - a[i]) * (double(b[i]) - a[i]);
    ref += double(a[i]) * a[i];
  }
  if (ref == 0.0) return diff == 0.0 && !a.empty() ? 0.0 : std::numeric_limits<double>::infinity();
  return std::sqrt(diff / ref);
}

// ---- case builders: one per entry point ----

int64_t conv_out(int64_t in, int64_t k, int64_t stride, int64_t dil, int64_t pad0, int64_t pad1) {
  return (in + pad0 + pad1 - dil * (k - 1) - 1) / stride + 1;
}

Activation act(ActKind kind, float alpha = 0.f, float beta = 0.f) {
  Activation a;
  a.kind = kind;
  a.alpha = alpha;
  a.beta = beta;
  return a;
}

OpCase conv_case(const std::string& name, Conv2dParams p, bool with_bias) {
  p.h_out = conv_out(p.h, p.kh, p.stride_h, p.dil_h, p.pad_top, p.pad_bottom);
  p.w_out = conv_out(p.w, p.kw, p.stride_w, p.dil_w, p.pad_left, p.pad_right);
  const Shape xs{p.n, p.c_in, p.h, p.w}, ws{p.c_out, p.c_in / p.groups, p.kh, p.kw};
  const Shape bs{p.c_out}, ys{p.n, p.c_out, p.h_out, p.w_out};
  const Floats x = random_floats(count(xs), 1), w = random_floats(count(ws), 2);
  const Floats b = random_floats(count(bs), 3);
  return {"conv2d_" + name, kTranscendentalTolerance, [=](Backend& be) {
            DeviceTensor X(be, xs, x), W(be, ws, w), B(be, bs, b), Y(be, ys);
            DeviceBytes workspace(be, be.conv2d_workspace(p));
            be.conv2d(p, X.t, W.t, with_bias ? &B.t : nullptr, Y.t, workspace.data);
            return Y.download();
          }};
}

// conv2d_channel_mean: the conv's output, then the plane means, in one vector.
OpCase conv_mean_case(const std::string& name, Conv2dParams p) {
  p.h_out = conv_out(p.h, p.kh, p.stride_h, p.dil_h, p.pad_top, p.pad_bottom);
  p.w_out = conv_out(p.w, p.kw, p.stride_w, p.dil_w, p.pad_left, p.pad_right);
  const Shape xs{p.n, p.c_in, p.h, p.w}, ws{p.c_out, p.c_in / p.groups, p.kh, p.kw};
  const Shape bs{p.c_out}, ys{p.n, p.c_out, p.h_out, p.w_out}, ms{p.n, p.c_out, 1, 1};
  const Floats x = random_floats(count(xs), 1), w = random_floats(count(ws), 2);
  const Floats b = random_floats(count(bs), 3);
  return {"conv2d_channel_mean_" + name, kTranscendentalTolerance, [=](Backend& be) {
            DeviceTensor X(be, xs, x), W(be, ws, w), B(be, bs, b), Y(be, ys), M(be, ms);
            DeviceBytes workspace(be, be.conv2d_workspace(p));
            be.conv2d_channel_mean(p, X.t, W.t, &B.t, Y.t, M.t, workspace.data);
            Floats out = Y.download(), mean = M.download();
            out.insert(out.end(), mean.begin(), mean.end());
            return out;
          }};
}

// conv2d_residual: conv(x) + bias + r (no activation).
OpCase conv_residual_case(const std::string& name, Conv2dParams p, bool with_bias = true) {
  p.h_out = conv_out(p.h, p.kh, p.stride_h, p.dil_h, p.pad_top, p.pad_bottom);
  p.w_out = conv_out(p.w, p.kw, p.stride_w, p.dil_w, p.pad_left, p.pad_right);
  const Shape xs{p.n, p.c_in, p.h, p.w}, ws{p.c_out, p.c_in / p.groups, p.kh, p.kw};
  const Shape bs{p.c_out}, ys{p.n, p.c_out, p.h_out, p.w_out};
  const Floats x = random_floats(count(xs), 1), w = random_floats(count(ws), 2);
  const Floats b = random_floats(count(bs), 3), r = random_floats(count(ys), 4);
  return {"conv2d_residual_" + name, kFp32Tolerance, [=](Backend& be) {
            DeviceTensor X(be, xs, x), W(be, ws, w), B(be, bs, b), R(be, ys, r), Y(be, ys);
            DeviceBytes workspace(be, be.conv2d_workspace(p));
            be.conv2d_residual(p, X.t, W.t, with_bias ? &B.t : nullptr, R.t, Y.t, workspace.data);
            return Y.download();
          }};
}

Conv2dParams conv(int64_t n, int64_t c_in, int64_t h, int64_t w, int64_t c_out, int64_t k,
                  int64_t stride, int64_t groups, Activation a) {
  Conv2dParams p;
  p.n = n;
  p.c_in = c_in;
  p.h = h;
  p.w = w;
  p.c_out = c_out;
  p.kh = p.kw = k;
  p.stride_h = p.stride_w = stride;
  p.groups = groups;
  p.act = a;
  return p;
}

Conv2dParams with_pads(Conv2dParams p, int64_t top, int64_t left, int64_t bottom, int64_t right) {
  p.pad_top = top;
  p.pad_left = left;
  p.pad_bottom = bottom;
  p.pad_right = right;
  return p;
}

// separable_conv2d: depthwise dw (its bias), then a 1x1 conv to c_out channels (its
// bias, activation), and a residual when with_residual (c_out == channels).
OpCase separable_case(const std::string& name, Conv2dParams dw, int64_t c_out, Activation act,
                      bool with_residual) {
  dw.h_out = conv_out(dw.h, dw.kh, dw.stride_h, dw.dil_h, dw.pad_top, dw.pad_bottom);
  dw.w_out = conv_out(dw.w, dw.kw, dw.stride_w, dw.dil_w, dw.pad_left, dw.pad_right);
  Conv2dParams pw = conv(dw.n, dw.c_out, dw.h_out, dw.w_out, c_out, 1, 1, 1, act);
  pw.h_out = dw.h_out;
  pw.w_out = dw.w_out;
  const Shape xs{dw.n, dw.c_in, dw.h, dw.w}, wds{dw.c_out, 1, dw.kh, dw.kw}, bds{dw.c_out};
  const Shape wps{c_out, dw.c_out, 1, 1}, bps{c_out}, ys{dw.n, c_out, dw.h_out, dw.w_out};
  const Floats x = random_floats(count(xs), 1), wd = random_floats(count(wds), 2);
  const Floats bd = random_floats(count(bds), 3), wp = random_floats(count(wps), 4);
  const Floats bp = random_floats(count(bps), 5), r = random_floats(count(ys), 6);
  return {"separable_conv2d_" + name, kTranscendentalTolerance, [=](Backend& be) {
            DeviceTensor X(be, xs, x), WD(be, wds, wd), BD(be, bds, bd), WP(be, wps, wp);
            DeviceTensor BP(be, bps, bp), R(be, ys, r), Y(be, ys);
            DeviceBytes workspace(be, std::max<size_t>(be.separable_conv2d_workspace(dw, pw), 1));
            be.separable_conv2d(dw, pw, X.t, WD.t, &BD.t, WP.t, &BP.t, with_residual ? &R.t : nullptr,
                                Y.t, workspace.data);
            return Y.download();
          }};
}

// separable_conv_chain: links one after another from x [n, c, h, w] (its depthwise
// half's channels are the previous link's outputs).
struct ChainLink {
  int64_t k, stride, c_out;  // depthwise k x k taps ("SAME" pads), then 1x1 to c_out
  Activation pw_act;
  bool biases;
};

struct SeparableChain {
  std::vector<SeparableConvParams> links;
  bool with_residual = false;
  bool f32_y = false;  // y F32 where the backend's last 1x1 conv stores it so
  Floats x, r;
  std::vector<Floats> weights;  // w_dw, b_dw, w_pw, b_pw per link; empty: no bias

  // y on be, by its own separable_conv_chain or else Backend's composition.
  Floats run(Backend& be, bool composition) const {
    const Conv2dParams& first = links[0].dw;
    DeviceTensor X(be, Shape{first.n, first.c_in, first.h, first.w}, x);
    std::vector<std::unique_ptr<DeviceTensor>> owned;
    std::vector<const Tensor*> ptrs;
    for (size_t i = 0; i < weights.size(); ++i) {
      const SeparableConvParams& l = links[i / 4];
      const Shape shapes[4] = {Shape{l.dw.c_out, 1, l.dw.kh, l.dw.kw}, Shape{l.dw.c_out},
                               Shape{l.pw.c_out, l.pw.c_in, 1, 1}, Shape{l.pw.c_out}};
      if (weights[i].empty()) {
        ptrs.push_back(nullptr);
        continue;
      }
      owned.emplace_back(new DeviceTensor(be, shapes[i % 4], weights[i]));
      ptrs.push_back(&owned.back()->t);
    }
    const Conv2dParams& last = links.back().pw;
    const Shape ys = last.output_shape();
    DeviceTensor R(be, ys, r);
    DeviceTensor Y(be, ys,
                   f32_y && be.conv2d_stores_f32(last) ? DType::F32 : be.float_storage());
    const size_t bytes = composition ? be.Backend::separable_conv_chain_workspace(links)
                                     : be.separable_conv_chain_workspace(links);
    DeviceBytes workspace(be, std::max<size_t>(bytes, 1));
    const Tensor* residual = with_residual ? &R.t : nullptr;
    if (composition)
      be.Backend::separable_conv_chain(links, X.t, ptrs.data(), residual, Y.t, workspace.data);
    else
      be.separable_conv_chain(links, X.t, ptrs.data(), residual, Y.t, workspace.data);
    return Y.download();
  }
};

SeparableChain separable_chain(int64_t n, int64_t c, int64_t h, int64_t w,
                               const std::vector<ChainLink>& specs, bool with_residual,
                               bool f32_y = false) {
  SeparableChain chain;
  chain.with_residual = with_residual;
  chain.f32_y = f32_y;
  chain.x = random_floats(static_cast<size_t>(n * c * h * w), 80);
  uint32_t seed = 81;
  for (const ChainLink& l : specs) {
    SeparableConvParams p;
    const int64_t pad = l.k - 1;
    p.dw = with_pads(conv(n, c, h, w, c, l.k, l.stride, c, act(ActKind::Relu)), pad / 2,
                     pad / 2, pad - pad / 2, pad - pad / 2);
    p.dw.h_out = conv_out(h, l.k, l.stride, 1, pad / 2, pad - pad / 2);
    p.dw.w_out = conv_out(w, l.k, l.stride, 1, pad / 2, pad - pad / 2);
    p.pw = conv(n, c, p.dw.h_out, p.dw.w_out, l.c_out, 1, 1, 1, l.pw_act);
    p.pw.h_out = p.dw.h_out;
    p.pw.w_out = p.dw.w_out;
    const size_t sizes[4] = {static_cast<size_t>(c * l.k * l.k), static_cast<size_t>(c),
                             static_cast<size_t>(l.c_out * c), static_cast<size_t>(l.c_out)};
    for (int i = 0; i < 4; ++i) {
      const bool bias = i % 2 == 1;
      // 1x1 weights scaled by 1/sqrt(c), as trained nets keep activations in range
      const float scale = i == 2 ? 1.f / std::sqrt(static_cast<float>(c)) : 1.f;
      chain.weights.push_back(bias && !l.biases ? Floats()
                                                : random_floats(sizes[i], seed, -scale, scale));
      ++seed;
    }
    chain.links.push_back(p);
    c = l.c_out;
    h = p.pw.h_out;
    w = p.pw.w_out;
  }
  chain.r = random_floats(static_cast<size_t>(chain.links.back().pw.output_shape().numel()), 99);
  return chain;
}

OpCase separable_chain_case(const std::string& name, const SeparableChain& c) {
  return {"separable_conv_chain_" + name, kTranscendentalTolerance,
          [=](Backend& be) { return c.run(be, false); }};
}

// Inputs in the activation's domain: positive for Log/Sqrt, away from 0 for
// Reciprocal; wide enough to reach every branch (Clip bounds, HardSigmoid's ends).
Floats activation_input(ActKind k, size_t n) {
  switch (k) {
    case ActKind::Log:
    case ActKind::Sqrt: return random_floats(n, 4, 0.05f, 5.f);
    case ActKind::Reciprocal: return random_floats(n, 4, 0.5f, 4.f);
    default: return random_floats(n, 4, -6.f, 6.f);
  }
}

OpCase activation_case(Activation a, bool in_place) {
  const Shape s{2, 13, 7, 15};
  const Floats x = activation_input(a.kind, count(s));
  return {std::string("activation_") + act_name(a.kind) + (in_place ? "_in_place" : ""),
          kTranscendentalTolerance, [=](Backend& be) {
            DeviceTensor X(be, s, x);
            if (in_place) {
              be.activation(a, X.t, X.t);
              return X.download();
            }
            DeviceTensor Y(be, s);
            be.activation(a, X.t, Y.t);
            return Y.download();
          }};
}

// NumPy broadcasting of two shapes of equal rank (size-1 dims broadcast).
OpCase binary_case(const std::string& name, BinaryOp op, const Shape& as, const Shape& bs,
                   Activation a = Activation()) {
  BroadcastParams p;
  p.op = op;
  p.act = a;
  p.rank = static_cast<int>(as.rank());
  Shape ys = as;
  int64_t sa = 1, sb = 1;
  for (int d = p.rank - 1; d >= 0; --d) {
    ys[d] = std::max(as[d], bs[d]);
    p.out_dims[d] = ys[d];
    p.a_strides[d] = as[d] == 1 ? 0 : sa;
    p.b_strides[d] = bs[d] == 1 ? 0 : sb;
    sa *= as[d];
    sb *= bs[d];
  }
  p.numel = ys.numel();
  // Pow wants a positive base; Div a divisor away from 0.
  const Floats x = random_floats(count(as), 5, op == BinaryOp::Pow ? 0.1f : -2.f, 2.f);
  const Floats y = op == BinaryOp::Div ? random_floats(count(bs), 6, 0.5f, 2.f)
                                       : random_floats(count(bs), 6, -2.f, 2.f);
  return {"binary_" + name, kTranscendentalTolerance, [=](Backend& be) {
            DeviceTensor A(be, as, x), B(be, bs, y), Y(be, ys);
            be.binary(p, A.t, B.t, Y.t);
            return Y.download();
          }};
}

OpCase channel_affine_case(const std::string& name, int64_t n, int64_t c, int64_t inner,
                           Activation a) {
  ChannelAffineParams p;
  p.n = n;
  p.c = c;
  p.inner = inner;
  p.act = a;
  const Shape xs{n, c, inner}, cs{c};
  const Floats x = random_floats(count(xs), 7), scale = random_floats(count(cs), 8);
  const Floats shift = random_floats(count(cs), 9);
  return {"channel_affine_" + name, kTranscendentalTolerance, [=](Backend& be) {
            DeviceTensor X(be, xs, x), S(be, cs, scale), T(be, cs, shift), Y(be, xs);
            be.channel_affine(p, X.t, S.t, T.t, Y.t);
            return Y.download();
          }};
}

// squeeze_excitation on n images of c channels squeezed to c_se, gating a target
// [outer, c, inner] (outer == n, or n == 1: folded projection weights).
OpCase squeeze_excitation_case(const std::string& name, int64_t n, int64_t c, int64_t c_se,
                               int64_t outer, int64_t inner, bool biases) {
  SqueezeExcitationParams p;
  p.n = n;
  p.c = c;
  p.c_se = c_se;
  p.outer = outer;
  p.inner = inner;
  p.act_reduce = act(ActKind::Swish);
  p.act_expand = act(ActKind::Sigmoid);
  const Shape ms{n, c, 1, 1}, wrs{c_se, c, 1, 1}, wes{c, c_se, 1, 1}, ts{outer, c, inner};
  const Floats mean = random_floats(count(ms), 80, -2.f, 2.f);
  const Floats wr = random_floats(count(wrs), 81), br = random_floats(size_t(c_se), 82);
  const Floats we = random_floats(count(wes), 83), bexp = random_floats(size_t(c), 84);
  const Floats target = random_floats(count(ts), 85);
  return {"squeeze_excitation_" + name, kTranscendentalTolerance, [=](Backend& be) {
            DeviceTensor M(be, ms, mean), WR(be, wrs, wr), BR(be, Shape{c_se}, br);
            DeviceTensor WE(be, wes, we), BE(be, Shape{c}, bexp), T(be, ts, target), Y(be, ts);
            DeviceBytes workspace(be, be.squeeze_excitation_workspace(p));
            be.squeeze_excitation(p, M.t, WR.t, biases ? &BR.t : nullptr, WE.t,
                                  biases ? &BE.t : nullptr, T.t, Y.t, workspace.data);
            return Y.download();
          }};
}

// pointwise_depthwise_conv2d: a 1x1 conv from c_in to dw.c_in channels (bias,
// pw_act) over dw's input map, then depthwise dw (its bias), with its channel means
// when with_mean (returned after y).
struct PointwiseDepthwise {
  Conv2dParams pw, dw;
  bool with_mean = true;
  Floats x, w_pw, b_pw, w_dw, b_dw;

  // y (then the means) on be, by its own pointwise_depthwise_conv2d or else
  // Backend's composition.
  Floats run(Backend& be, bool composition) const {
    const Shape ys{dw.n, dw.c_out, dw.h_out, dw.w_out}, ms{dw.n, dw.c_out, 1, 1};
    DeviceTensor X(be, Shape{pw.n, pw.c_in, pw.h, pw.w}, x);
    DeviceTensor WP(be, Shape{pw.c_out, pw.c_in, 1, 1}, w_pw), BP(be, Shape{pw.c_out}, b_pw);
    DeviceTensor WD(be, Shape{dw.c_out, 1, dw.kh, dw.kw}, w_dw), BD(be, Shape{dw.c_out}, b_dw);
    DeviceTensor Y(be, ys), M(be, ms);
    const size_t bytes = composition ? be.Backend::pointwise_depthwise_conv2d_workspace(pw, dw)
                                     : be.pointwise_depthwise_conv2d_workspace(pw, dw);
    DeviceBytes workspace(be, std::max<size_t>(bytes, 1));
    Tensor* mean = with_mean ? &M.t : nullptr;
    if (composition)
      be.Backend::pointwise_depthwise_conv2d(pw, dw, X.t, WP.t, &BP.t, WD.t, &BD.t, Y.t, mean,
                                             workspace.data);
    else
      be.pointwise_depthwise_conv2d(pw, dw, X.t, WP.t, &BP.t, WD.t, &BD.t, Y.t, mean,
                                    workspace.data);
    Floats out = Y.download();
    if (with_mean) {
      const Floats m = M.download();
      out.insert(out.end(), m.begin(), m.end());
    }
    return out;
  }
};

PointwiseDepthwise pointwise_depthwise(int64_t c_in, Activation pw_act, Conv2dParams dw,
                                       bool with_mean) {
  PointwiseDepthwise c;
  dw.h_out = conv_out(dw.h, dw.kh, dw.stride_h, dw.dil_h, dw.pad_top, dw.pad_bottom);
  dw.w_out = conv_out(dw.w, dw.kw, dw.stride_w, dw.dil_w, dw.pad_left, dw.pad_right);
  c.dw = dw;
  c.pw = conv(dw.n, c_in, dw.h, dw.w, dw.c_in, 1, 1, 1, pw_act);
  c.pw.h_out = dw.h;
  c.pw.w_out = dw.w;
  c.with_mean = with_mean;
  c.x = random_floats(static_cast<size_t>(dw.n * c_in * dw.h * dw.w), 70);
  c.w_pw = random_floats(static_cast<size_t>(dw.c_in * c_in), 71);
  c.b_pw = random_floats(static_cast<size_t>(dw.c_in), 72);
  c.w_dw = random_floats(static_cast<size_t>(dw.c_out * dw.kh * dw.kw), 73);
  c.b_dw = random_floats(static_cast<size_t>(dw.c_out), 74);
  return c;
}

OpCase pointwise_depthwise_case(const std::string& name, const PointwiseDepthwise& c) {
  return {"pointwise_depthwise_conv2d_" + name, kTranscendentalTolerance,
          [=](Backend& be) { return c.run(be, false); }};
}

// squeeze_excitation_conv2d: a squeeze-excitation (n images, c channels squeezed to
// c_se) gating the 1x1 conv to c_out channels over an h x w map that alone reads
// it: its weights (gates_weights: target [c_out, c, 1, 1], n 1) or its input (target
// [n, c, h, w]); the conv's bias and residual where asked, its activation a.
struct SeConv {
  SqueezeExcitationParams se;
  Conv2dParams conv;
  bool gates_weights = false;
  Floats mean, w_reduce, b_reduce, w_expand, b_expand, target, other, bias, residual;

  Shape target_shape() const {
    return gates_weights ? Shape{conv.c_out, conv.c_in, 1, 1}
                         : Shape{conv.n, conv.c_in, conv.h, conv.w};
  }
  Shape other_shape() const {
    return gates_weights ? Shape{conv.n, conv.c_in, conv.h, conv.w}
                         : Shape{conv.c_out, conv.c_in, 1, 1};
  }
  Shape y_shape() const { return Shape{conv.n, conv.c_out, conv.h, conv.w}; }

  // y on be, by its own squeeze_excitation_conv2d or else Backend's composition; an
  // F32 y (conv2d_stores_f32) when f32_y.
  Floats run(Backend& be, bool composition, bool f32_y = false) const {
    const int64_t c = se.c, c_se = se.c_se;
    DeviceTensor M(be, Shape{se.n, c, 1, 1}, mean), WR(be, Shape{c_se, c, 1, 1}, w_reduce);
    DeviceTensor BR(be, Shape{c_se}, b_reduce), WE(be, Shape{c, c_se, 1, 1}, w_expand);
    DeviceTensor BE(be, Shape{c}, b_expand), T(be, target_shape(), target);
    DeviceTensor O(be, other_shape(), other);
    DeviceTensor Y(be, y_shape(), f32_y ? DType::F32 : be.float_storage());
    DeviceTensor B(be, Shape{conv.c_out}, bias.empty() ? Floats(size_t(conv.c_out)) : bias);
    DeviceTensor R(be, y_shape(), residual.empty() ? Floats(count(y_shape())) : residual);
    const Tensor* b = bias.empty() ? nullptr : &B.t;
    const Tensor* r = residual.empty() ? nullptr : &R.t;
    const size_t bytes = composition ? be.Backend::squeeze_excitation_conv2d_workspace(se, conv)
                                     : be.squeeze_excitation_conv2d_workspace(se, conv);
    DeviceBytes workspace(be, std::max<size_t>(bytes, 1));
    if (composition)
      be.Backend::squeeze_excitation_conv2d(se, conv, gates_weights, M.t, WR.t, &BR.t, WE.t,
                                            &BE.t, T.t, O.t, b, r, Y.t, workspace.data);
    else
      be.squeeze_excitation_conv2d(se, conv, gates_weights, M.t, WR.t, &BR.t, WE.t, &BE.t, T.t,
                                   O.t, b, r, Y.t, workspace.data);
    return Y.download();
  }
};

SeConv se_conv(int64_t n, int64_t c, int64_t c_se, int64_t h, int64_t w, int64_t c_out,
               bool gates_weights, bool with_bias, bool with_residual, Activation a) {
  SeConv s;
  s.gates_weights = gates_weights;
  s.se.n = n;
  s.se.c = c;
  s.se.c_se = c_se;
  s.se.act_reduce = act(ActKind::Swish);
  s.se.act_expand = act(ActKind::Sigmoid);
  s.se.outer = gates_weights ? c_out : n;
  s.se.inner = gates_weights ? 1 : h * w;
  s.conv = conv(n, c, h, w, c_out, 1, 1, 1, a);
  s.conv.h_out = h;
  s.conv.w_out = w;
  s.mean = random_floats(static_cast<size_t>(n * c), 90, -2.f, 2.f);
  s.w_reduce = random_floats(static_cast<size_t>(c_se * c), 91);
  s.b_reduce = random_floats(static_cast<size_t>(c_se), 92);
  s.w_expand = random_floats(static_cast<size_t>(c * c_se), 93);
  s.b_expand = random_floats(static_cast<size_t>(c), 94);
  s.target = random_floats(count(s.target_shape()), 95);
  s.other = random_floats(count(s.other_shape()), 96);
  if (with_bias) s.bias = random_floats(static_cast<size_t>(c_out), 97);
  if (with_residual) s.residual = random_floats(count(s.y_shape()), 98);
  return s;
}

OpCase squeeze_excitation_conv_case(const std::string& name, const SeConv& c) {
  return {"squeeze_excitation_conv2d_" + name, kTranscendentalTolerance,
          [=](Backend& be) { return c.run(be, false); }};
}

// h_out/w_out from floor division, or ceil division when ceil_mode (the last
// window may then run past the padded extent).
OpCase pool_case(const std::string& name, Pool2dParams p, bool ceil_mode) {
  auto out = [&](int64_t in, int64_t k, int64_t s, int64_t d, int64_t p0, int64_t p1) {
    const int64_t span = in + p0 + p1 - d * (k - 1) - 1;
    return (ceil_mode ? (span + s - 1) / s : span / s) + 1;
  };
  p.h_out = out(p.h, p.kh, p.stride_h, p.dil_h, p.pad_top, p.pad_bottom);
  p.w_out = out(p.w, p.kw, p.stride_w, p.dil_w, p.pad_left, p.pad_right);
  const Shape xs{p.n, p.c, p.h, p.w}, ys{p.n, p.c, p.h_out, p.w_out};
  const Floats x = random_floats(count(xs), 10);
  return {"pool2d_" + name, kFp32Tolerance, [=](Backend& be) {
            DeviceTensor X(be, xs, x), Y(be, ys);
            be.pool2d(p, X.t, Y.t);
            return Y.download();
          }};
}

Pool2dParams pool(PoolKind kind, int64_t c, int64_t h, int64_t w, int64_t k, int64_t stride,
                  int64_t pad) {
  Pool2dParams p;
  p.kind = kind;
  p.n = 2;
  p.c = c;
  p.h = h;
  p.w = w;
  p.kh = p.kw = k;
  p.stride_h = p.stride_w = stride;
  p.pad_top = p.pad_left = p.pad_bottom = p.pad_right = pad;
  return p;
}

OpCase reduce_case(const std::string& name, ReduceKind kind, int64_t outer, int64_t len,
                   int64_t inner) {
  ReduceParams p;
  p.kind = kind;
  p.outer = outer;
  p.reduce = len;
  p.inner = inner;
  const Shape xs{outer, len, inner}, ys{outer, inner};
  const Floats x = random_floats(count(xs), 11);
  return {"reduce_" + name, kFp32Tolerance, [=](Backend& be) {
            DeviceTensor X(be, xs, x), Y(be, ys);
            be.reduce(p, X.t, Y.t);
            return Y.download();
          }};
}

// Batch strides: 0 broadcasts a matrix; otherwise matrices are packed.
OpCase gemm_case(const std::string& name, GemmParams p, bool broadcast_b) {
  const int64_t a_size = p.m * p.k, b_size = p.k * p.n;
  p.a_batch_stride = p.batch > 1 ? a_size : 0;
  p.b_batch_stride = p.batch > 1 && !broadcast_b ? b_size : 0;
  p.c_batch_stride = p.m * p.n;
  const Shape as{p.a_batch_stride ? p.batch : 1, a_size};
  const Shape bs{p.b_batch_stride ? p.batch : 1, b_size};
  const Shape bias_s{std::max<int64_t>(p.bias_rows * p.bias_cols, 1)};
  const Shape ys{p.batch, p.m, p.n};
  const Floats a = random_floats(count(as), 12), b = random_floats(count(bs), 13);
  const Floats bias = random_floats(count(bias_s), 14);
  const bool has_bias = p.bias_rows > 0;
  return {"gemm_" + name, kTranscendentalTolerance, [=](Backend& be) {
            DeviceTensor A(be, as, a), B(be, bs, b), Bias(be, bias_s, bias), Y(be, ys);
            be.gemm(p, A.t, B.t, has_bias ? &Bias.t : nullptr, Y.t);
            return Y.download();
          }};
}

GemmParams gemm(int64_t batch, int64_t m, int64_t n, int64_t k, bool trans_a, bool trans_b,
                int64_t bias_rows, int64_t bias_cols, Activation a = Activation()) {
  GemmParams p;
  p.batch = batch;
  p.m = m;
  p.n = n;
  p.k = k;
  p.trans_a = trans_a;
  p.trans_b = trans_b;
  p.bias_rows = bias_rows;
  p.bias_cols = bias_cols;
  p.act = a;
  return p;
}

const char* resize_mode_name(ResizeMode m) {
  switch (m) {
    case ResizeMode::Nearest: return "nearest";
    case ResizeMode::Linear: return "linear";
    case ResizeMode::Cubic: return "cubic";
  }
  return "?";
}

const char* coord_name(CoordMode c) {
  switch (c) {
    case CoordMode::HalfPixel: return "half_pixel";
    case CoordMode::PytorchHalfPixel: return "pytorch_half_pixel";
    case CoordMode::AlignCorners: return "align_corners";
    case CoordMode::Asymmetric: return "asymmetric";
    case CoordMode::TfHalfPixelForNn: return "tf_half_pixel_for_nn";
    case CoordMode::TfCropAndResize: return "tf_crop_and_resize";
    case CoordMode::HalfPixelSymmetric: return "half_pixel_symmetric";
  }
  return "?";
}

const char* nearest_name(NearestMode n) {
  switch (n) {
    case NearestMode::RoundPreferFloor: return "round_prefer_floor";
    case NearestMode::RoundPreferCeil: return "round_prefer_ceil";
    case NearestMode::Floor: return "floor";
    case NearestMode::Ceil: return "ceil";
  }
  return "?";
}

// Scales are output/input, as ONNX derives them from `sizes`.
OpCase resize_case(const std::string& suffix, ResizeParams p, int64_t h, int64_t w,
                   int64_t h_out, int64_t w_out) {
  p.outer = 3;
  p.h = h;
  p.w = w;
  p.h_out = h_out;
  p.w_out = w_out;
  p.scale_h = static_cast<float>(h_out) / static_cast<float>(h);
  p.scale_w = static_cast<float>(w_out) / static_cast<float>(w);
  const Shape xs{p.outer, h, w}, ys{p.outer, h_out, w_out};
  const Floats x = random_floats(count(xs), 15);
  std::string name = std::string("resize_") + resize_mode_name(p.mode) + "_" + coord_name(p.coord);
  if (p.mode == ResizeMode::Nearest) name += std::string("_") + nearest_name(p.nearest);
  return {name + "_" + suffix, kFp32Tolerance, [=](Backend& be) {
            DeviceTensor X(be, xs, x), Y(be, ys);
            be.resize(p, X.t, Y.t);
            return Y.download();
          }};
}

// Copies x (shape xs) through `p` into an output of shape ys that starts as
// `initial` (so the elements a Concat-like copy leaves alone are compared too).
OpCase copy_case(const std::string& name, const CopyParams& p, const Shape& xs, const Shape& ys) {
  const Floats x = random_floats(count(xs), 16), initial = random_floats(count(ys), 17);
  return {"strided_copy_" + name, 0.0, [=](Backend& be) {
            DeviceTensor X(be, xs, x), Y(be, ys, initial);
            be.strided_copy(p, X.t, Y.t);
            return Y.download();
          }};
}

// Transpose of a contiguous tensor by `perm`.
OpCase transpose_case(const std::string& name, const Shape& xs, const std::vector<int>& perm) {
  CopyParams p;
  p.rank = static_cast<int>(xs.rank());
  std::vector<int64_t> in_strides(xs.rank());
  int64_t s = 1;
  for (int d = p.rank - 1; d >= 0; --d) {
    in_strides[d] = s;
    s *= xs[d];
  }
  Shape ys = xs;
  for (int d = 0; d < p.rank; ++d) ys[d] = xs[perm[d]];
  s = 1;
  for (int d = p.rank - 1; d >= 0; --d) {
    p.dims[d] = ys[d];
    p.in_strides[d] = in_strides[perm[d]];
    p.out_strides[d] = s;
    s *= ys[d];
  }
  return copy_case(name, p, xs, ys);
}

OpCase pad_case(const std::string& name, PadMode mode, const Shape& xs,
                const std::vector<int64_t>& begin, const std::vector<int64_t>& end,
                float value = 0.f) {
  PadParams p;
  p.mode = mode;
  p.value = value;
  p.rank = static_cast<int>(xs.rank());
  Shape ys = xs;
  for (int d = 0; d < p.rank; ++d) {
    ys[d] = xs[d] + begin[d] + end[d];
    p.in_dims[d] = xs[d];
    p.out_dims[d] = ys[d];
    p.pad_begin[d] = begin[d];
  }
  const Floats x = random_floats(count(xs), 18);
  return {"pad_" + name, 0.0, [=](Backend& be) {
            DeviceTensor X(be, xs, x), Y(be, ys);
            be.pad(p, X.t, Y.t);
            return Y.download();
          }};
}

OpCase softmax_case(const std::string& name, int64_t outer, int64_t axis, int64_t inner,
                    bool log) {
  SoftmaxParams p;
  p.outer = outer;
  p.axis = axis;
  p.inner = inner;
  p.log = log;
  const Shape s{outer, axis, inner};
  const Floats x = random_floats(count(s), 19, -8.f, 8.f);
  return {std::string(log ? "log_softmax_" : "softmax_") + name, kTranscendentalTolerance,
          [=](Backend& be) {
            DeviceTensor X(be, s, x), Y(be, s);
            be.softmax(p, X.t, Y.t);
            return Y.download();
          }};
}

OpCase weighted_sum_case(int inputs, Activation a) {
  WeightedSumParams p;
  p.count = inputs;
  p.act = a;
  const Shape s{1, 13, 15, 33};
  p.numel = s.numel();
  const Floats w = random_floats(kMaxFusionInputs, 20, 0.f, 1.f);
  for (int i = 0; i < inputs; ++i) p.weights[i] = w[i];
  std::vector<Floats> xs;
  for (int i = 0; i < inputs; ++i) xs.push_back(random_floats(count(s), 21 + i));
  return {"weighted_sum_" + std::to_string(inputs) + "_" + act_name(a.kind),
          kTranscendentalTolerance, [=](Backend& be) {
            std::vector<std::unique_ptr<DeviceTensor>> owned;
            std::vector<const Tensor*> ptrs;
            for (const Floats& x : xs) {
              owned.emplace_back(new DeviceTensor(be, s, x));
              ptrs.push_back(&owned.back()->t);
            }
            DeviceTensor Y(be, s);
            be.weighted_sum(p, ptrs.data(), Y.t);
            return Y.download();
          }};
}

// weighted_sum_resampled into y [2, 5, 7, 6]: input 0 as it is, then one input per
// entry of `resamples`, of the shape that resampling turns into y's.
struct ResampledInput {
  Shape shape;
  FusionResample r;
};

ResampledInput maxpool_input(int64_t h, int64_t w, int64_t kh, int64_t kw, int64_t sh,
                             int64_t sw, int64_t dil, std::array<int64_t, 4> pads) {
  ResampledInput in{Shape{2, 5, h, w}, FusionResample()};
  Pool2dParams& p = in.r.pool;
  in.r.kind = ResampleKind::MaxPool;
  p.n = 2;
  p.c = 5;
  p.h = h;
  p.w = w;
  p.kh = kh;
  p.kw = kw;
  p.stride_h = sh;
  p.stride_w = sw;
  p.dil_h = p.dil_w = dil;
  p.pad_top = pads[0];
  p.pad_left = pads[1];
  p.pad_bottom = pads[2];
  p.pad_right = pads[3];
  p.h_out = (h + pads[0] + pads[2] - dil * (kh - 1) - 1) / sh + 1;
  p.w_out = (w + pads[1] + pads[3] - dil * (kw - 1) - 1) / sw + 1;
  EXPECT_EQ(p.h_out * 100 + p.w_out, 706) << "max-pool input " << in.shape.str();
  return in;
}

ResampledInput upsample_input(int64_t factor_h, int64_t factor_w) {
  ResampledInput in{Shape{2, 5, 7 / factor_h, 6 / factor_w}, FusionResample()};
  ResizeParams& p = in.r.upsample;
  in.r.kind = ResampleKind::NearestUp;
  p.mode = ResizeMode::Nearest;
  p.coord = CoordMode::Asymmetric;
  p.nearest = NearestMode::Floor;
  p.outer = 10;
  p.h = in.shape[2];
  p.w = in.shape[3];
  p.h_out = 7;
  p.w_out = 6;
  p.scale_h = static_cast<float>(factor_h);
  p.scale_w = static_cast<float>(factor_w);
  EXPECT_EQ(p.h * factor_h * 100 + p.w * factor_w, 706) << "upsampled input " << in.shape.str();
  return in;
}

OpCase weighted_sum_resampled_case(const std::string& name, Activation a,
                                   const std::vector<ResampledInput>& resampled) {
  const Shape ys{2, 5, 7, 6};
  WeightedSumParams p;
  p.count = 1 + static_cast<int>(resampled.size());
  p.act = a;
  p.numel = ys.numel();
  const Floats w = random_floats(kMaxFusionInputs, 22, 0.f, 1.f);
  std::vector<Shape> shapes = {ys};
  std::array<FusionResample, kMaxFusionInputs> r = {};
  for (size_t i = 0; i < resampled.size(); ++i) {
    shapes.push_back(resampled[i].shape);
    r[i + 1] = resampled[i].r;
  }
  std::vector<Floats> xs;
  for (int i = 0; i < p.count; ++i) {
    p.weights[i] = w[i];
    xs.push_back(random_floats(count(shapes[i]), 23 + i));
  }
  return {"weighted_sum_resampled_" + name, kTranscendentalTolerance, [=](Backend& be) {
            std::vector<std::unique_ptr<DeviceTensor>> owned;
            std::vector<const Tensor*> ptrs;
            for (size_t i = 0; i < xs.size(); ++i) {
              owned.emplace_back(new DeviceTensor(be, shapes[i], xs[i]));
              ptrs.push_back(&owned.back()->t);
            }
            DeviceTensor Y(be, ys);
            DeviceBytes workspace(
                be, std::max<size_t>(be.weighted_sum_resampled_workspace(p, r.data()), 1));
            be.weighted_sum_resampled(p, r.data(), ptrs.data(), Y.t, workspace.data);
            return Y.download();
          }};
}

// weighted_sum_separable_conv2d: the fusion of weighted_sum_resampled_case (into
// [2, 5, 7, 6]) read by a separable conv, a depthwise dw over it (its bias) then a 1x1
// to c_out channels (its bias, pw_act), plus a residual when with_residual.
struct SumSeparable {
  WeightedSumParams sum;
  std::array<FusionResample, kMaxFusionInputs> r = {};
  std::vector<Shape> shapes;
  std::vector<Floats> xs;
  Conv2dParams dw, pw;
  Floats w_dw, b_dw, w_pw, b_pw, residual;  // residual empty: none

  // y on be, by its own weighted_sum_separable_conv2d or else Backend's composition.
  Floats run(Backend& be, bool composition) const {
    std::vector<std::unique_ptr<DeviceTensor>> owned;
    std::vector<const Tensor*> ptrs;
    for (size_t i = 0; i < xs.size(); ++i) {
      owned.emplace_back(new DeviceTensor(be, shapes[i], xs[i]));
      ptrs.push_back(&owned.back()->t);
    }
    const Shape ys{pw.n, pw.c_out, pw.h_out, pw.w_out};
    DeviceTensor WD(be, Shape{dw.c_out, 1, dw.kh, dw.kw}, w_dw), BD(be, Shape{dw.c_out}, b_dw);
    DeviceTensor WP(be, Shape{pw.c_out, pw.c_in, 1, 1}, w_pw), BP(be, Shape{pw.c_out}, b_pw);
    DeviceTensor Y(be, ys), R(be, ys, residual.empty() ? Floats(count(ys)) : residual);
    const Tensor* res = residual.empty() ? nullptr : &R.t;
    const size_t bytes =
        composition ? be.Backend::weighted_sum_separable_conv2d_workspace(sum, r.data(), dw, pw)
                    : be.weighted_sum_separable_conv2d_workspace(sum, r.data(), dw, pw);
    DeviceBytes workspace(be, std::max<size_t>(bytes, 1));
    if (composition)
      be.Backend::weighted_sum_separable_conv2d(sum, r.data(), ptrs.data(), dw, pw, WD.t, &BD.t,
                                                WP.t, &BP.t, res, Y.t, workspace.data);
    else
      be.weighted_sum_separable_conv2d(sum, r.data(), ptrs.data(), dw, pw, WD.t, &BD.t, WP.t,
                                       &BP.t, res, Y.t, workspace.data);
    return Y.download();
  }
};

SumSeparable sum_separable(const std::vector<ResampledInput>& resampled, Activation sum_act,
                           Conv2dParams dw, int64_t c_out, Activation pw_act,
                           bool with_residual) {
  SumSeparable c;
  const Shape sum_shape{dw.n, dw.c_in, dw.h, dw.w};
  c.sum.count = 1 + static_cast<int>(resampled.size());
  c.sum.act = sum_act;
  c.sum.numel = sum_shape.numel();
  const Floats w = random_floats(kMaxFusionInputs, 40, 0.f, 1.f);
  c.shapes = {sum_shape};
  for (size_t i = 0; i < resampled.size(); ++i) {
    c.shapes.push_back(resampled[i].shape);
    c.r[i + 1] = resampled[i].r;
  }
  for (int i = 0; i < c.sum.count; ++i) {
    c.sum.weights[i] = w[i];
    c.xs.push_back(random_floats(count(c.shapes[i]), 41 + i));
  }
  dw.h_out = conv_out(dw.h, dw.kh, dw.stride_h, dw.dil_h, dw.pad_top, dw.pad_bottom);
  dw.w_out = conv_out(dw.w, dw.kw, dw.stride_w, dw.dil_w, dw.pad_left, dw.pad_right);
  c.dw = dw;
  c.pw = conv(dw.n, dw.c_out, dw.h_out, dw.w_out, c_out, 1, 1, 1, pw_act);
  c.pw.h_out = dw.h_out;
  c.pw.w_out = dw.w_out;
  c.w_dw = random_floats(static_cast<size_t>(dw.c_out * dw.kh * dw.kw), 46);
  c.b_dw = random_floats(static_cast<size_t>(dw.c_out), 47);
  c.w_pw = random_floats(static_cast<size_t>(c_out * dw.c_out), 48);
  c.b_pw = random_floats(static_cast<size_t>(c_out), 49);
  if (with_residual) c.residual = random_floats(static_cast<size_t>(c_out * dw.n * dw.h_out * dw.w_out), 50);
  return c;
}

OpCase weighted_sum_separable_case(const std::string& name, const SumSeparable& c) {
  return {"weighted_sum_separable_conv2d_" + name, kTranscendentalTolerance,
          [=](Backend& be) { return c.run(be, false); }};
}

// index: int64 [c_out] of donor channels, repeats allowed (c_out may exceed c_in).
OpCase channel_gather_case(const std::string& name, int64_t n, int64_t c_in, int64_t c_out,
                           int64_t inner) {
  ChannelGatherParams p;
  p.n = n;
  p.c_in = c_in;
  p.c_out = c_out;
  p.inner = inner;
  const Shape xs{n, c_in, inner}, is{c_out}, ys{n, c_out, inner};
  const Floats x = random_floats(count(xs), 30);
  std::vector<int64_t> index(static_cast<size_t>(c_out));
  std::mt19937 gen(31);
  for (int64_t& i : index) i = static_cast<int64_t>(gen() % static_cast<uint32_t>(c_in));
  return {"channel_gather_" + name, 0.0, [=](Backend& be) {
            DeviceTensor X(be, xs, x), Y(be, ys);
            DeviceBytes index_data(be, index.size() * sizeof(int64_t));
            be.upload(index_data.data, index.data(), index.size() * sizeof(int64_t));
            Tensor I;
            I.shape = is;
            I.dtype = DType::I64;
            I.data = index_data.data;
            be.channel_gather(p, X.t, I, Y.t);
            return Y.download();
          }};
}

// Backend memory holding host values of any type, with a Tensor view of it.
template <class T>
class DeviceArray {
 public:
  DeviceArray(Backend& be, const Shape& shape, DType dtype, const std::vector<T>& host)
      : bytes_(be, host.size() * sizeof(T)) {
    be.upload(bytes_.data, host.data(), host.size() * sizeof(T));
    t.shape = shape;
    t.dtype = dtype;
    t.data = bytes_.data;
  }
  std::vector<T> download(Backend& be) const {
    std::vector<T> host(static_cast<size_t>(t.numel()));
    be.download(host.data(), t.data, host.size() * sizeof(T));
    return host;
  }
  Tensor t;

 private:
  DeviceBytes bytes_;
};

// detection_select on `levels` maps (h, w) with A anchors and C classes per
// location. Logits come from a coarse grid (many ties, broken by flat index),
// every `nan_every`-th of each level NaN (never selected; 0: none, 1: all). The output lists each row's class,
// then for rows holding a candidate its box and score: a different order or
// selection shows as a large error.
OpCase detection_select_case(const std::string& name, std::vector<std::array<int64_t, 2>> levels,
                             int64_t anchors, int64_t classes, int64_t k, bool clip,
                             int nan_every) {
  DetectionSelectParams p;
  p.levels = static_cast<int>(levels.size());
  p.anchors_per_location = anchors;
  p.classes = classes;
  p.k = k;
  p.clip = clip;
  p.clip_w = 40.f;
  p.clip_h = 30.f;
  std::vector<Floats> logits, deltas;
  int64_t anchor_count = 0;
  std::mt19937 gen(40);
  for (size_t l = 0; l < levels.size(); ++l) {
    const int64_t positions = levels[l][0] * levels[l][1];
    p.positions[l] = positions;
    anchor_count += positions * anchors;
    Floats x = random_floats(static_cast<size_t>(positions * anchors * classes), 41 + l, -4.f, 4.f);
    for (float& v : x) v = std::round(v * 4.f) / 4.f;  // 33 distinct values
    if (nan_every > 0)
      for (size_t i = 0; i < x.size(); i += nan_every) x[i] = std::numeric_limits<float>::quiet_NaN();
    logits.push_back(x);
    deltas.push_back(random_floats(static_cast<size_t>(positions * anchors * 4), 51 + l, -0.5f, 0.5f));
  }
  Floats anchor_boxes(static_cast<size_t>(anchor_count * 4));
  std::uniform_real_distribution<float> centre(0.f, 40.f), half(1.f, 12.f);
  for (int64_t a = 0; a < anchor_count; ++a) {
    const float y = centre(gen), x = centre(gen), hy = half(gen), hx = half(gen);
    const float box[4] = {y - hy, x - hx, y + hy, x + hx};
    std::copy(box, box + 4, anchor_boxes.begin() + a * 4);
  }
  return {"detection_select_" + name, kTranscendentalTolerance, [=](Backend& be) {
            std::vector<std::unique_ptr<DeviceTensor>> cls, box;
            std::vector<const Tensor*> cls_t, box_t;
            for (size_t l = 0; l < levels.size(); ++l) {
              const int64_t h = levels[l][0], w = levels[l][1];
              // In the backend's float storage, as a network keeps a detector's outputs.
              cls.emplace_back(new DeviceTensor(be, Shape{1, anchors * classes, h, w}, logits[l]));
              box.emplace_back(new DeviceTensor(be, Shape{1, anchors * 4, h, w}, deltas[l]));
              cls_t.push_back(&cls.back()->t);
              box_t.push_back(&box.back()->t);
            }
            DeviceTensor A(be, Shape{anchor_count, 4}, anchor_boxes, DType::F32);
            DeviceTensor boxes(be, Shape{k, 4}, DType::F32), scores(be, Shape{k}, DType::F32);
            DeviceArray<int64_t> labels(be, Shape{k}, DType::I64, std::vector<int64_t>(k, -7));
            DeviceBytes workspace(be, std::max<size_t>(be.detection_select_workspace(p), 1));
            be.detection_select(p, cls_t.data(), box_t.data(), A.t, boxes.t, scores.t, labels.t,
                                workspace.data);
            const Floats b = boxes.download(), sc = scores.download();
            const std::vector<int64_t> lab = labels.download(be);
            Floats out;
            for (int64_t r = 0; r < k; ++r) {
              out.push_back(static_cast<float>(lab[r]));
              if (lab[r] < 0) continue;
              out.insert(out.end(), b.begin() + r * 4, b.begin() + r * 4 + 4);
              out.push_back(sc[r]);
            }
            return out;
          }};
}

// nms over n candidates (best first) of `classes` classes, every
// `background_every`-th row class -1 (1: all); boxes clustered so that many
// overlap. Output: the keep list.
OpCase nms_case(const std::string& name, int64_t n, int64_t classes, int64_t max_keep,
                int64_t background_every = 11) {
  NmsParams p;
  p.count = n;
  p.iou_threshold = 0.5;
  p.max_keep = max_keep;
  Floats boxes;
  std::vector<int64_t> labels;
  std::mt19937 gen(60);
  std::uniform_real_distribution<float> pos(0.f, 50.f), size(5.f, 25.f);
  for (int64_t i = 0; i < n; ++i) {
    const float x = pos(gen), y = pos(gen);
    const float box[4] = {x, y, x + size(gen), y + size(gen)};
    boxes.insert(boxes.end(), box, box + 4);
    labels.push_back(i % background_every == background_every / 2
                         ? -1
                         : static_cast<int64_t>(gen() % classes));
  }
  return {"nms_" + name, 0.0, [=](Backend& be) {
            DeviceTensor B(be, Shape{n, 4}, boxes, DType::F32);
            DeviceArray<int64_t> L(be, Shape{n}, DType::I64, labels);
            DeviceArray<int64_t> keep(be, Shape{max_keep}, DType::I64,
                                      std::vector<int64_t>(max_keep, -7));
            DeviceBytes workspace(be, std::max<size_t>(be.nms_workspace(p), 1));
            be.nms(p, B.t, L.t, keep.t, workspace.data);
            Floats out;
            // Shifted by 2 so that a -1 pad counts in the norm too.
            for (int64_t v : keep.download(be)) out.push_back(static_cast<float>(v + 2));
            return out;
          }};
}

// convert between F32 and F16 (the executor's edges in fp16 mode), over values
// from fp16's subnormals to near its largest, with exact ties: bit-exact.
OpCase convert_case(const std::string& name, DType from, DType to, int64_t n) {
  Floats x = random_floats(static_cast<size_t>(n), 70, -1.f, 1.f);
  for (size_t i = 0; i < x.size(); ++i) x[i] *= std::ldexp(1.f, static_cast<int>(i % 40) - 24);
  x[0] = 1.f + std::ldexp(1.f, -11);  // halfway between two halves: to the even one
  x[1] = 65504.f;
  return {"convert_" + name, 0.0, [=](Backend& be) {
            DeviceTensor X(be, Shape{n}, x, from), Y(be, Shape{n}, to);
            be.convert(X.t, Y.t);
            return Y.download();
          }};
}

// ---- the table ----

std::vector<OpCase> all_cases() {
  std::vector<OpCase> c;
  const Activation none, relu = act(ActKind::Relu), swish = act(ActKind::Swish);
  const Activation sigmoid = act(ActKind::Sigmoid);

  // conv2d: depthwise (direct kernel), pointwise (GEMM on the input), dense and
  // grouped (direct kernel up to 32 taps, else im2col + GEMM); odd channels and
  // sizes, strides 1/2, TF-SAME-style asymmetric pads, dilation, batch 2.
  c.push_back(conv_case("depthwise3_s1", with_pads(conv(1, 13, 15, 15, 13, 3, 1, 13, swish), 1, 1, 1, 1), true));
  c.push_back(conv_case("depthwise5_s2_asym", with_pads(conv(2, 3, 33, 7, 3, 5, 2, 3, relu), 1, 1, 2, 2), true));
  c.push_back(conv_case("depthwise3_s2_same", with_pads(conv(1, 13, 33, 33, 13, 3, 2, 13, none), 0, 0, 1, 1), false));
  Conv2dParams dw_dil = with_pads(conv(1, 1, 15, 15, 1, 3, 1, 1, none), 2, 2, 2, 2);
  dw_dil.dil_h = dw_dil.dil_w = 2;
  c.push_back(conv_case("depthwise3_dilated_c1", dw_dil, true));
  c.push_back(conv_case("depthwise_1x1_spatial", with_pads(conv(1, 13, 1, 1, 13, 3, 1, 13, sigmoid), 1, 1, 1, 1), true));
  c.push_back(conv_case("pointwise_13_to_7", conv(2, 13, 15, 33, 7, 1, 1, 1, sigmoid), true));
  c.push_back(conv_case("pointwise_1_to_3_1x1", conv(1, 1, 1, 1, 3, 1, 1, 1, none), false));
  c.push_back(conv_case("pointwise_grouped", conv(1, 6, 7, 15, 4, 1, 1, 2, relu), true));
  c.push_back(conv_case("pointwise_s2", conv(1, 13, 15, 15, 7, 1, 2, 1, none), true));
  // more output channels than one tile of the fused 1x1 kernel (64), K = 300;
  // an activation without a bias
  c.push_back(conv_case("pointwise_300_to_130", conv(1, 300, 9, 13, 130, 1, 1, 1, swish), true));
  c.push_back(conv_case("pointwise_70_swish_no_bias", conv(2, 37, 7, 9, 70, 1, 1, 1, swish), false));
  // K = 150 into 20 outputs: a 1x1 conv REPSHARE_CUDA_POINTWISE=small fuses (it bounds
  // only the output), as D0's P6 input conv (320 -> 64 channels on 8x8)
  c.push_back(conv_case("pointwise_150_to_20", conv(1, 150, 8, 9, 20, 1, 1, 1, swish), true));
  c.push_back(conv_case("dense3_s2_stem", with_pads(conv(1, 3, 33, 33, 13, 3, 2, 1, swish), 0, 0, 1, 1), true));
  c.push_back(conv_case("dense3_s1_n2", with_pads(conv(2, 3, 7, 15, 13, 3, 1, 1, relu), 1, 1, 1, 1), true));
  Conv2dParams dense_dil = with_pads(conv(1, 3, 15, 15, 7, 3, 1, 1, none), 2, 2, 2, 2);
  dense_dil.dil_h = dense_dil.dil_w = 2;
  c.push_back(conv_case("dense3_dilated", dense_dil, false));
  c.push_back(conv_case("grouped3", with_pads(conv(1, 6, 15, 7, 9, 3, 1, 3, relu), 1, 0, 1, 2), true));
  // Groups of 10 output channels, n = 2: CUDA's direct kernel splits each group's
  // channels into blocks of 8 and 2.
  c.push_back(conv_case("grouped3_wide_n2", with_pads(conv(2, 4, 9, 9, 20, 3, 1, 2, relu), 1, 1, 1, 1), true));
  c.push_back(conv_case("depthwise_multiplier", with_pads(conv(1, 3, 7, 7, 6, 3, 1, 3, none), 1, 1, 1, 1), true));
  // with squeeze-excitation's pool fused: depthwise (the CPU's own path, batch 2)
  // and a dense conv (the default: conv2d, then reduce)
  c.push_back(conv_mean_case("depthwise5_s2_n2", with_pads(conv(2, 13, 17, 15, 13, 5, 2, 13, swish), 1, 1, 2, 2)));
  c.push_back(conv_mean_case("dense3", with_pads(conv(1, 3, 9, 11, 5, 3, 1, 1, relu), 1, 1, 1, 1)));
  // and 1x1 convs: B0's last conv before its pool (CUDA: the GEMM's epilogue makes the
  // means), two images of long planes
  c.push_back(conv_mean_case("pointwise_7x7", conv(1, 32, 7, 7, 40, 1, 1, 1, swish)));
  c.push_back(conv_mean_case("pointwise_long_n2", conv(2, 9, 33, 33, 150, 1, 1, 1, swish)));
  // separable_conv2d: BiFPN's 3x3 (no activation) then 1x1 with bias, the head's
  // prediction conv (810 outputs: 13 row tiles each making the depthwise tile again),
  // a stride-2 5x5 with an activation between, a residual (MobileNet blocks), and two
  // images into fewer outputs than the depthwise half makes (CUDA fills the output
  // with the bias as it computes the depthwise half: threads for the larger).
  c.push_back(separable_case("bifpn_64", with_pads(conv(1, 64, 16, 16, 64, 3, 1, 64, none), 1, 1, 1, 1), 64, none, false));
  c.push_back(separable_case("head_810", with_pads(conv(1, 13, 9, 7, 13, 3, 1, 13, none), 1, 1, 1, 1), 810, none, false));
  c.push_back(separable_case("s2_5x5_swish", with_pads(conv(2, 21, 17, 19, 21, 5, 2, 21, relu), 1, 2, 2, 1), 37, swish, false));
  c.push_back(separable_case("residual", with_pads(conv(1, 24, 13, 11, 24, 3, 1, 24, relu), 1, 1, 1, 1), 24, none, true));
  c.push_back(separable_case("n2_to_7", with_pads(conv(2, 21, 11, 9, 21, 3, 2, 21, relu), 0, 0, 1, 1), 7, none, false));
  // separable_conv_chain: EfficientDet's head on one level (three links with SiLU,
  // then the prediction ending at its bias), two images through a stride-2 5x5 link
  // and one without biases, a residual after the last link.
  c.push_back(separable_chain_case(
      "head", separable_chain(1, 13, 9, 7,
                              {{3, 1, 13, swish, true}, {3, 1, 13, swish, true},
                               {3, 1, 13, swish, true}, {3, 1, 27, none, true}},
                              false)));
  c.push_back(separable_chain_case(
      "n2_s2_5x5", separable_chain(2, 6, 11, 10,
                                   {{5, 2, 9, relu, true}, {3, 1, 7, swish, false},
                                    {3, 1, 5, swish, true}},
                                   false)));
  c.push_back(separable_chain_case(
      "residual", separable_chain(1, 8, 6, 5, {{3, 1, 11, swish, true}, {3, 1, 8, none, true}},
                                  true)));
  // Rows wide enough that CUDA's depthwise kernels reading a product take a plane in
  // bands of rows (separable_depthwise_band_kernel), the last band partial.
  c.push_back(separable_chain_case(
      "wide_bands", separable_chain(1, 3, 25, 150,
                                    {{3, 1, 3, swish, true}, {3, 2, 3, relu, true},
                                     {5, 1, 4, none, true}},
                                    false)));

  c.push_back(conv_mean_case("depthwise3_plane1024", with_pads(conv(1, 5, 32, 32, 5, 3, 1, 5, swish), 1, 1, 1, 1)));
  // Planes above 1024 outputs. Few (D0's 32 of 256x256): on CUDA a block per chunk of
  // 4096 outputs of a plane (one chunk, two, the last one partial); 2 per SM or more
  // (270 on the emulation's 132): a block per plane.
  c.push_back(conv_mean_case("depthwise3_plane1089_n2", with_pads(conv(2, 6, 33, 33, 6, 3, 1, 6, swish), 1, 1, 1, 1)));
  c.push_back(conv_mean_case("depthwise3_s2_plane4096", with_pads(conv(1, 4, 128, 128, 4, 3, 2, 4, swish), 0, 0, 1, 1)));
  c.push_back(conv_mean_case("depthwise3_plane4550_n2", with_pads(conv(2, 5, 70, 65, 5, 3, 1, 5, swish), 1, 1, 1, 1)));
  c.push_back(conv_mean_case("depthwise3_270_planes1089", with_pads(conv(1, 270, 33, 33, 270, 3, 1, 270, swish), 1, 1, 1, 1)));
  c.push_back(conv_mean_case("depthwise3_300x7x9", with_pads(conv(1, 300, 7, 9, 300, 3, 1, 300, swish), 1, 1, 1, 1)));
  // conv2d_residual: MBConv's projection conv plus its skip connection (pointwise,
  // batch 2, odd sizes), and a dense conv through the same entry point.
  c.push_back(conv_residual_case("pointwise_n2", conv(2, 37, 13, 11, 19, 1, 1, 1, none)));
  c.push_back(conv_residual_case("dense3", with_pads(conv(1, 5, 9, 11, 7, 3, 1, 1, none), 1, 1, 1, 1)));
  c.push_back(conv_residual_case("depthwise3",
                                 with_pads(conv(1, 13, 9, 11, 13, 3, 1, 13, none), 1, 1, 1, 1)));
  // without a bias; 1x1 with stride 2 (im2col, then the epilogue); grouped.
  c.push_back(conv_residual_case("pointwise_70_no_bias", conv(1, 40, 7, 9, 70, 1, 1, 1, none), false));
  c.push_back(conv_residual_case("pointwise_s2", conv(1, 13, 15, 15, 7, 1, 2, 1, none)));
  c.push_back(conv_residual_case("grouped3", with_pads(conv(1, 6, 15, 7, 9, 3, 1, 3, none), 1, 1, 1, 1)));
  // Planes of a multiple of 8 outputs (CUDA's epilogue: 16 bytes per thread, packs of 8
  // fp16 or 4 fp32 values, each within one channel plane): two images with a residual,
  // one with an activation.
  c.push_back(conv_residual_case("pointwise_n2_planes_48", conv(2, 13, 8, 6, 11, 1, 1, 1, none)));
  c.push_back(conv_case("pointwise_planes_16", conv(1, 9, 4, 4, 5, 1, 1, 1, swish), true));
  Conv2dParams rect = with_pads(conv(1, 3, 15, 33, 7, 1, 1, 1, none), 0, 2, 0, 2);
  rect.kh = 3;
  rect.kw = 5;
  rect.stride_h = 2;
  rect.pad_top = 1;
  c.push_back(conv_case("dense_3x5_rect", rect, true));
  // Exactly 32 taps per output (2 channels of 4x4, padded on every side): CUDA's direct
  // kernel stages the weights of every one.
  c.push_back(conv_case("dense4x4_32_taps", with_pads(conv(1, 2, 9, 10, 5, 4, 1, 1, relu), 1, 2, 2, 1), true));
  // More than 32 taps per output (CUDA: im2col + GEMM + epilogue; fewer, as in the
  // stems above, take its direct kernel).
  c.push_back(conv_case("dense3_s2_k63_n2", with_pads(conv(2, 7, 11, 9, 10, 3, 2, 1, swish), 0, 0, 1, 1), true));

  // activation: every kind, out of place and in place.
  const Activation kinds[] = {
      act(ActKind::None),        act(ActKind::Relu),     act(ActKind::Clip, -1.5f, 2.5f),
      act(ActKind::Sigmoid),     act(ActKind::Swish),    act(ActKind::Tanh),
      act(ActKind::LeakyRelu, 0.1f), act(ActKind::HardSigmoid, 0.2f, 0.5f),
      act(ActKind::HardSwish),   act(ActKind::Elu, 0.7f), act(ActKind::Exp),
      act(ActKind::Log),         act(ActKind::Sqrt),     act(ActKind::Neg),
      act(ActKind::Abs),         act(ActKind::Reciprocal), act(ActKind::Softplus)};
  for (const Activation& a : kinds) c.push_back(activation_case(a, false));
  c.push_back(activation_case(swish, true));
  c.push_back(activation_case(act(ActKind::Clip, 0.f, 6.f), true));

  // binary: every op on same shapes, and the broadcasting patterns of the models
  // (per-channel scale, SE gating, both sides broadcast), with a fused activation.
  const std::pair<const char*, BinaryOp> ops[] = {
      {"add", BinaryOp::Add}, {"sub", BinaryOp::Sub}, {"mul", BinaryOp::Mul},
      {"div", BinaryOp::Div}, {"pow", BinaryOp::Pow}, {"max", BinaryOp::Max},
      {"min", BinaryOp::Min}};
  for (const auto& op : ops) c.push_back(binary_case(std::string(op.first) + "_same", op.second, {2, 13, 7, 15}, {2, 13, 7, 15}));
  c.push_back(binary_case("mul_channel", BinaryOp::Mul, {2, 13, 7, 15}, {1, 13, 1, 1}));
  c.push_back(binary_case("mul_se_gate", BinaryOp::Mul, {2, 13, 33, 1}, {2, 13, 1, 1}, sigmoid));
  c.push_back(binary_case("add_both_broadcast", BinaryOp::Add, {3, 1, 7}, {1, 5, 1}, relu));
  c.push_back(binary_case("sub_scalar", BinaryOp::Sub, {1, 13, 15}, {1, 1, 1}));
  c.push_back(binary_case("div_lhs_broadcast", BinaryOp::Div, {1, 1, 33}, {3, 7, 33}, swish));
  c.push_back(binary_case("add_rank6", BinaryOp::Add, {2, 1, 3, 1, 5, 7}, {1, 3, 3, 2, 1, 7}));

  // channel_affine
  c.push_back(channel_affine_case("n2_c13_relu", 2, 13, 33 * 7, relu));
  c.push_back(channel_affine_case("c1", 1, 1, 15, none));
  c.push_back(channel_affine_case("inner1_swish", 3, 13, 1, swish));
  // squeeze_excitation: per-image gates on activations (odd sizes, c above the
  // block size, c_se not a warp multiple), one gate on folded weights, no biases;
  // at batch 1, small planes in one launch (B0's last stage) and larger in two.
  c.push_back(squeeze_excitation_case("n2_activation", 2, 13, 5, 2, 7 * 9, true));
  c.push_back(squeeze_excitation_case("c300_activation", 1, 300, 37, 1, 11, true));
  c.push_back(squeeze_excitation_case("b0_7x7_activation", 1, 1152, 48, 1, 49, true));
  c.push_back(squeeze_excitation_case("plane257_activation", 1, 13, 5, 1, 257, true));
  c.push_back(squeeze_excitation_case("folded_weights", 1, 1152, 48, 320, 1, true));
  c.push_back(squeeze_excitation_case("folded_weights_partial_slice", 1, 100, 7, 13, 1, false));
  // CUDA: a slice's 8,320 elements on 3 blocks, of the last slice's 4,680 on 2 (one idle)
  c.push_back(squeeze_excitation_case("folded_weights_parts", 1, 100, 7, 130, 1, true));
  c.push_back(squeeze_excitation_case("no_bias", 3, 40, 10, 3, 5, false));
  // pointwise_depthwise_conv2d: MBConv's expansion then depthwise conv with its means,
  // on short planes (a warp's row) and long ones (a block per plane: 300 planes of
  // 36x36 fill the GPU; 7 of 40x33 take one block each, split or not), strided 5x5
  // with TF "SAME" pads, two images; and what CUDA leaves to the composition: no
  // means, few planes over 4096 outputs (split into chunks).
  auto depthwise = [](int64_t n, int64_t c, int64_t h, int64_t w, int64_t k, int64_t stride,
                      Activation a, int64_t pad0, int64_t pad1) {
    return with_pads(conv(n, c, h, w, c, k, stride, c, a), pad0, pad0, pad1, pad1);
  };
  c.push_back(pointwise_depthwise_case(
      "short_3x3",
      pointwise_depthwise(7, swish, depthwise(1, 13, 9, 11, 3, 1, swish, 1, 1), true)));
  c.push_back(pointwise_depthwise_case(
      "s2_5x5_n2",
      pointwise_depthwise(5, swish, depthwise(2, 12, 15, 13, 5, 2, swish, 1, 2), true)));
  c.push_back(pointwise_depthwise_case(
      "long_planes",
      pointwise_depthwise(6, swish, depthwise(1, 300, 36, 36, 3, 1, swish, 1, 1), true)));
  c.push_back(pointwise_depthwise_case(
      "few_long_planes",
      pointwise_depthwise(6, relu, depthwise(1, 7, 40, 33, 3, 1, swish, 1, 1), true)));
  c.push_back(pointwise_depthwise_case(
      "few_planes_over_4096",
      pointwise_depthwise(4, swish, depthwise(1, 5, 70, 65, 3, 1, swish, 1, 1), true)));
  c.push_back(pointwise_depthwise_case(
      "no_means", pointwise_depthwise(6, swish, depthwise(1, 13, 9, 11, 3, 1, none, 1, 1), false)));
  // squeeze_excitation_conv2d: MBConv projections reading gated weights (bias and
  // residual, or bias alone, odd sizes) and a gated 7x7 activation (B0's last
  // stage); and what CUDA leaves to the composition: a plane over 256, two images,
  // an activation, neither bias nor residual.
  c.push_back(squeeze_excitation_conv_case(
      "weights_bias_residual", se_conv(1, 40, 10, 9, 11, 24, true, true, true, none)));
  c.push_back(squeeze_excitation_conv_case(
      "weights_bias", se_conv(1, 13, 5, 7, 5, 37, true, true, false, none)));
  c.push_back(squeeze_excitation_conv_case(
      "input_b0_7x7", se_conv(1, 1152, 48, 7, 7, 192, false, true, true, none)));
  c.push_back(squeeze_excitation_conv_case(
      "input_plane257", se_conv(1, 13, 5, 1, 257, 7, false, true, true, none)));
  c.push_back(squeeze_excitation_conv_case(
      "input_n2", se_conv(2, 13, 5, 3, 5, 7, false, true, true, none)));
  c.push_back(squeeze_excitation_conv_case(
      "weights_swish", se_conv(1, 13, 5, 3, 5, 7, true, true, false, swish)));
  c.push_back(squeeze_excitation_conv_case(
      "weights_no_bias", se_conv(1, 13, 5, 3, 5, 7, true, false, false, none)));

  // pool2d: max and average (both padding conventions), ceil-mode windows that
  // run past the padded extent, dilation, a global-sized window.
  c.push_back(pool_case("max3_s2_p1", pool(PoolKind::Max, 13, 15, 15, 3, 2, 1), false));
  c.push_back(pool_case("max2_s2_odd", pool(PoolKind::Max, 3, 33, 7, 2, 2, 0), false));
  c.push_back(pool_case("max3_s2_ceil", pool(PoolKind::Max, 3, 8, 8, 3, 2, 0), true));
  c.push_back(pool_case("avg3_s1_p1_exclude_pad", pool(PoolKind::Average, 13, 15, 7, 3, 1, 1), false));
  Pool2dParams avg_include = pool(PoolKind::Average, 13, 15, 7, 3, 1, 1);
  avg_include.count_include_pad = true;
  c.push_back(pool_case("avg3_s1_p1_include_pad", avg_include, false));
  Pool2dParams avg_ceil = pool(PoolKind::Average, 3, 8, 9, 3, 2, 1);
  avg_ceil.count_include_pad = true;
  c.push_back(pool_case("avg3_s2_ceil_include_pad", avg_ceil, true));
  Pool2dParams avg_asym = pool(PoolKind::Average, 1, 15, 15, 3, 2, 0);
  avg_asym.pad_bottom = avg_asym.pad_right = 1;
  c.push_back(pool_case("avg3_s2_asym_pad", avg_asym, false));
  Pool2dParams max_dil = pool(PoolKind::Max, 3, 15, 15, 3, 1, 2);
  max_dil.dil_h = max_dil.dil_w = 2;
  c.push_back(pool_case("max3_dilated", max_dil, false));
  c.push_back(pool_case("avg_global_7x7", pool(PoolKind::Average, 13, 7, 7, 7, 1, 0), false));

  // reduce: the global-pooling shape (inner 1, long rows, one row per warp) and
  // strided ones, for every kind.
  c.push_back(reduce_case("mean_rows", ReduceKind::Mean, 26, 225, 1));
  c.push_back(reduce_case("mean_se_112x112", ReduceKind::Mean, 3, 112 * 112, 1));
  c.push_back(reduce_case("sum_strided", ReduceKind::Sum, 3, 13, 33));
  c.push_back(reduce_case("max_rows_1000", ReduceKind::Max, 1, 1000, 1));
  c.push_back(reduce_case("min_strided", ReduceKind::Min, 7, 15, 3));
  c.push_back(reduce_case("sum_len1", ReduceKind::Sum, 13, 1, 7));
  c.push_back(reduce_case("max_rows_short", ReduceKind::Max, 33, 7, 1));
  // Rows longer than one warp takes (row_reduce.cuh's kWarpRow): a block per row.
  c.push_back(reduce_case("max_long_rows_1025", ReduceKind::Max, 5, 1025, 1));
  c.push_back(reduce_case("min_long_rows", ReduceKind::Min, 2, 4099, 1));

  // gemm: each transpose combination, every bias broadcast, alpha/beta, batches
  // with a packed or a broadcast B, the classifier shape (1x1280 . 1280x1000^T).
  GemmParams g = gemm(1, 13, 33, 7, false, false, 1, 33);
  g.beta = 1.f;
  c.push_back(gemm_case("nn_row_bias", g, false));
  g = gemm(1, 13, 33, 7, true, true, 13, 1, relu);
  g.alpha = 0.5f;
  g.beta = 2.f;
  c.push_back(gemm_case("tt_col_bias_alpha_beta", g, false));
  g = gemm(1, 7, 15, 13, true, false, 7, 15);
  g.beta = 1.f;
  c.push_back(gemm_case("tn_full_bias", g, false));
  g = gemm(1, 15, 7, 33, false, true, 1, 1, sigmoid);
  g.beta = 1.f;
  c.push_back(gemm_case("nt_scalar_bias", g, false));
  c.push_back(gemm_case("batch3_packed", gemm(3, 13, 7, 15, false, false, 0, 0, relu), false));
  c.push_back(gemm_case("batch2_broadcast_b", gemm(2, 7, 13, 15, false, true, 0, 0), true));
  g = gemm(1, 1, 1000, 1280, false, true, 1, 1000);
  g.beta = 1.f;
  c.push_back(gemm_case("classifier", g, false));
  // One output row, which CUDA computes in a kernel of its own: B not transposed, an
  // odd k, alpha, beta, a scalar bias and an activation; and no bias at all.
  g = gemm(1, 1, 37, 45, true, false, 1, 1, sigmoid);
  g.alpha = 0.5f;
  g.beta = 2.f;
  c.push_back(gemm_case("row_nn_scalar_bias", g, false));
  c.push_back(gemm_case("row_no_bias", gemm(1, 1, 9, 70, false, true, 0, 0, relu), false));
  c.push_back(gemm_case("k1", gemm(1, 13, 7, 1, false, false, 0, 0), false));
  g = gemm(1, 13, 7, 0, false, false, 13, 1);  // no products: beta * bias alone
  g.beta = 1.5f;
  c.push_back(gemm_case("k0_bias", g, false));

  // resize: every mode with every coordinate transformation, every nearest
  // rounding, upsampling by 2 (exact rounding ties), odd ratios, downsampling and
  // a 1-pixel output axis.
  struct Sizes {
    const char* name;
    int64_t h, w, h_out, w_out;
  };
  const Sizes sizes[] = {{"up2", 7, 15, 14, 30}, {"odd", 15, 7, 7, 15}, {"to1", 33, 1, 1, 3}};
  const CoordMode coords[] = {CoordMode::HalfPixel, CoordMode::PytorchHalfPixel,
                              CoordMode::AlignCorners, CoordMode::Asymmetric,
                              CoordMode::TfHalfPixelForNn, CoordMode::HalfPixelSymmetric};
  const NearestMode roundings[] = {NearestMode::RoundPreferFloor, NearestMode::RoundPreferCeil,
                                   NearestMode::Floor, NearestMode::Ceil};
  for (const Sizes& s : sizes) {
    for (CoordMode coord : coords) {
      ResizeParams p;
      p.coord = coord;
      p.mode = ResizeMode::Nearest;
      for (NearestMode r : roundings) {
        p.nearest = r;
        c.push_back(resize_case(s.name, p, s.h, s.w, s.h_out, s.w_out));
      }
      p.mode = ResizeMode::Linear;
      c.push_back(resize_case(s.name, p, s.h, s.w, s.h_out, s.w_out));
      p.mode = ResizeMode::Cubic;
      c.push_back(resize_case(s.name, p, s.h, s.w, s.h_out, s.w_out));
    }
  }
  ResizeParams cubic;
  cubic.mode = ResizeMode::Cubic;
  cubic.cubic_a = -0.5f;
  cubic.exclude_outside = true;
  c.push_back(resize_case("a05_exclude_outside", cubic, 7, 15, 15, 7));
  ResizeParams crop;
  crop.coord = CoordMode::TfCropAndResize;
  crop.extrapolation_value = 0.25f;
  const float roi[4] = {-0.2f, 0.1f, 0.9f, 1.3f};  // partly outside: extrapolates
  std::memcpy(crop.roi, roi, sizeof(roi));
  for (ResizeMode m : {ResizeMode::Nearest, ResizeMode::Linear, ResizeMode::Cubic}) {
    crop.mode = m;
    c.push_back(resize_case("roi", crop, 15, 7, 7, 15));
    c.push_back(resize_case("roi_to1", crop, 15, 7, 1, 15));
  }

  // strided_copy: transposes, a Concat-like copy into a slab of a bigger output,
  // a strided and a reversed Slice.
  c.push_back(transpose_case("nchw_to_nhwc", {2, 13, 7, 15}, {0, 2, 3, 1}));
  c.push_back(transpose_case("rank6", {2, 3, 1, 5, 7, 3}, {5, 3, 1, 0, 4, 2}));
  CopyParams concat;  // x [2,3,7,15] into channels 5..7 of y [2,13,7,15]
  concat.rank = 4;
  const int64_t concat_dims[] = {2, 3, 7, 15}, concat_in[] = {3 * 105, 105, 15, 1};
  const int64_t concat_out[] = {13 * 105, 105, 15, 1};
  for (int d = 0; d < 4; ++d) {
    concat.dims[d] = concat_dims[d];
    concat.in_strides[d] = concat_in[d];
    concat.out_strides[d] = concat_out[d];
  }
  concat.out_offset = 5 * 105;
  c.push_back(copy_case("concat_slab", concat, {2, 3, 7, 15}, {2, 13, 7, 15}));
  CopyParams slice;  // x [13, 33]: rows 1, 3, .., 11 reversed columns 32..1
  slice.rank = 2;
  slice.dims[0] = 6;
  slice.dims[1] = 32;
  slice.in_strides[0] = 2 * 33;
  slice.in_strides[1] = -1;
  slice.out_strides[0] = 32;
  slice.out_strides[1] = 1;
  slice.in_offset = 33 + 32;
  c.push_back(copy_case("slice_step2_reversed", slice, {13, 33}, {6, 32}));

  // pad: each mode, asymmetric pads, pads wider than the axis (reflect repeats),
  // a negative pad (crop).
  c.push_back(pad_case("constant_asym", PadMode::Constant, {1, 3, 7, 15}, {0, 0, 1, 2}, {0, 0, 3, 0}, 0.5f));
  c.push_back(pad_case("constant_crop", PadMode::Constant, {2, 3, 7, 15}, {0, 1, -2, 1}, {0, 0, 1, -3}, -1.f));
  c.push_back(pad_case("reflect", PadMode::Reflect, {1, 3, 7, 15}, {0, 0, 2, 3}, {0, 0, 3, 1}));
  c.push_back(pad_case("reflect_wider_than_axis", PadMode::Reflect, {2, 3, 4}, {0, 5, 9}, {1, 7, 6}));
  c.push_back(pad_case("edge", PadMode::Edge, {1, 13, 7, 1}, {0, 0, 3, 2}, {0, 1, 1, 4}));
  c.push_back(pad_case("wrap", PadMode::Wrap, {3, 5, 7}, {1, 6, 2}, {2, 0, 9}));

  // softmax over the classifier row, a middle axis, a length-1 axis.
  c.push_back(softmax_case("classifier_1000", 2, 1000, 1, false));
  c.push_back(softmax_case("classifier_1000", 2, 1000, 1, true));
  c.push_back(softmax_case("middle_axis", 3, 13, 33, false));
  c.push_back(softmax_case("middle_axis", 3, 13, 33, true));
  c.push_back(softmax_case("axis1", 7, 1, 15, false));

  // weighted_sum: BiFPN fusions of 2, 3 and 4 inputs.
  c.push_back(weighted_sum_case(2, swish));
  c.push_back(weighted_sum_case(3, none));
  c.push_back(weighted_sum_case(4, relu));
  // ... with inputs max-pooled (BiFPN's SAME 3x3 stride 2: pads only bottom/right;
  // dilated, uneven strides) and upsampled by integer factors, odd ones too.
  c.push_back(weighted_sum_resampled_case(
      "bifpn_down_up", swish,
      {maxpool_input(14, 12, 3, 3, 2, 2, 1, {0, 0, 1, 1}), upsample_input(1, 2)}));
  c.push_back(weighted_sum_resampled_case(
      "dilated_odd_factors", none,
      {maxpool_input(9, 16, 2, 3, 1, 2, 2, {0, 0, 0, 0}), upsample_input(7, 3),
       upsample_input(1, 1)}));

  // weighted_sum_separable_conv2d: a BiFPN node (a fusion with one input max-pooled
  // and one upsampled, then a 3x3 separable conv whose 1x1 half ends at its bias: on
  // CUDA the sum computed by the depthwise kernel, which also starts the GEMM's
  // output), and the other pointwise paths: an activation, and a residual after a
  // strided depthwise half over three resampled inputs.
  c.push_back(weighted_sum_separable_case(
      "bifpn_node", sum_separable({maxpool_input(14, 12, 3, 3, 2, 2, 1, {0, 0, 1, 1}),
                                   upsample_input(1, 2)},
                                  swish, with_pads(conv(2, 5, 7, 6, 5, 3, 1, 5, none), 1, 1, 1, 1),
                                  9, none, false)));
  c.push_back(weighted_sum_separable_case(
      "pw_swish", sum_separable({maxpool_input(9, 16, 2, 3, 1, 2, 2, {0, 0, 0, 0})}, none,
                                with_pads(conv(2, 5, 7, 6, 5, 3, 1, 5, relu), 1, 1, 1, 1), 4,
                                swish, false)));
  c.push_back(weighted_sum_separable_case(
      "s2_residual", sum_separable({maxpool_input(9, 16, 2, 3, 1, 2, 2, {0, 0, 0, 0}),
                                    upsample_input(7, 3), upsample_input(1, 1)},
                                   relu, with_pads(conv(2, 5, 7, 6, 5, 3, 2, 5, none), 1, 1, 1, 1),
                                   5, none, true)));

  // channel_gather: the sharing adapter, narrowing and widening.
  c.push_back(channel_gather_case("narrow", 2, 13, 7, 15 * 7));
  c.push_back(channel_gather_case("widen_inner1", 1, 3, 13, 1));

  // detection_select: odd maps, ties everywhere, NaNs; k below the number of
  // logits, and above the number of non-NaN ones (rows padded with class -1).
  c.push_back(detection_select_case("ties", {{{7, 5}}, {{4, 3}}, {{2, 1}}}, 3, 13, 50, true, 0));
  c.push_back(detection_select_case("nans_unclipped", {{{7, 5}}, {{4, 3}}}, 3, 13, 333, false, 7));
  c.push_back(detection_select_case("fewer_than_k", {{{3, 1}}, {{1, 1}}}, 2, 5, 38, true, 7));
  // k exactly the 33 non-NaN logits; none at all (every row class -1); 110,592
  // logits (flat indices past 2^16, so every byte of the index passes splits, and
  // the grid's stride loops turn).
  c.push_back(detection_select_case("k_equals_candidates", {{{3, 1}}, {{1, 1}}}, 2, 5, 33, true, 7));
  c.push_back(detection_select_case("all_nan", {{{3, 1}}, {{1, 1}}}, 2, 5, 10, true, 1));
  c.push_back(detection_select_case("large_level", {{{64, 64}}}, 9, 3, 100, true, 0));
  // nms: 150 candidates (three mask words, the last partial), a short and a full
  // keep list.
  c.push_back(nms_case("keep40", 150, 3, 40));
  c.push_back(nms_case("keep_all", 150, 3, 150));
  c.push_back(nms_case("one_class_of_65", 65, 1, 65));
  // no candidates; all background; 2,000 (32 mask words, a 32 x 32 grid).
  c.push_back(nms_case("empty", 0, 3, 5));
  c.push_back(nms_case("all_background", 40, 3, 10, 1));
  c.push_back(nms_case("keep100_of_2000", 2000, 3, 100));
  // one candidate; two whole mask words, every candidate kept that survives.
  c.push_back(nms_case("one", 1, 1, 3));
  c.push_back(nms_case("two_whole_words", 128, 2, 128));
  c.push_back(convert_case("f32_to_f16", DType::F32, DType::F16, 10007));
  c.push_back(convert_case("f16_to_f32", DType::F16, DType::F32, 10007));
  return c;
}

// ---- the tests ----

// The two backends are made once for the whole table: creating a CUDA context and
// cuBLAS handle per case would dominate the run (and more so under
// compute-sanitizer, which scripts/gpu-check.sh runs these under).
class BackendOps : public ::testing::TestWithParam<OpCase> {
 protected:
  static void SetUpTestSuite() {
    if (!cuda_available(&no_cuda_reason_)) return;
    try {
      cpu_ = make_backend("cpu", 0).release();
      cpu_fp16_ = new Fp16StorageCpuBackend(0);
      gpu_ = make_backend("cuda", 0).release();
      gpu_fp16_ = make_backend("cuda", 0, DType::F16).release();
      if (tf32_available(&no_tf32_reason_))
        gpu_tf32_ = make_backend("cuda", 0, DType::F32, true).release();
    } catch (const Error& e) {
      setup_error_ = e.what();  // a GPU is there but unusable: every case fails
    }
  }
  static void TearDownTestSuite() {
    for (Backend* b : {gpu_tf32_, gpu_fp16_, gpu_, cpu_fp16_, cpu_}) delete b;
    gpu_tf32_ = gpu_fp16_ = gpu_ = cpu_fp16_ = cpu_ = nullptr;
  }
  // Runs the case on both backends and compares the outputs.
  static void compare(const OpCase& op, Backend& reference, Backend& cuda, double tolerance) {
    const Floats expected = op.run(reference);
    const Floats actual = op.run(cuda);
    ASSERT_EQ(expected.size(), actual.size());
    double ref_norm = 0.0;
    for (float v : expected) ref_norm += double(v) * v;
    ASSERT_GT(ref_norm, 0.0) << op.name
                             << ": the CPU reference is all zero, the case tests nothing";
    const double err = normalized_error(expected, actual);
    EXPECT_LE(err, tolerance) << op.name << ": normalized error " << err;
    if (err > tolerance) {
      // The first few disagreeing elements say where the index math went wrong.
      int shown = 0;
      for (size_t i = 0; i < expected.size() && shown < 5; ++i) {
        const double scale = std::max(1.0, std::fabs(double(expected[i])));
        if (!(std::fabs(double(actual[i]) - expected[i]) <= 1e-3 * scale)) {
          ADD_FAILURE() << op.name << " element " << i << ": cpu " << expected[i] << ", cuda "
                        << actual[i];
          ++shown;
        }
      }
    }
  }
  static std::string no_cuda_reason_;
  static std::string setup_error_;
  static Backend* cpu_;
  static Backend* cpu_fp16_;
  static Backend* gpu_;
  static Backend* gpu_fp16_;
  static Backend* gpu_tf32_;
  static std::string no_tf32_reason_;
};
std::string BackendOps::no_cuda_reason_;
std::string BackendOps::setup_error_;
Backend* BackendOps::cpu_ = nullptr;
Backend* BackendOps::cpu_fp16_ = nullptr;
Backend* BackendOps::gpu_ = nullptr;
Backend* BackendOps::gpu_fp16_ = nullptr;
Backend* BackendOps::gpu_tf32_ = nullptr;
std::string BackendOps::no_tf32_reason_;

// fp16 storage and TF32 products keep 11 significant bits (kFp16Tolerance).
double eleven_bit_tolerance(const OpCase& op) {
  return op.tolerance == 0.0 ? 0.0 : std::max(op.tolerance, kFp16Tolerance);
}

TEST_P(BackendOps, CudaMatchesCpu) {
  ASSERT_TRUE(setup_error_.empty()) << setup_error_;
  if (!gpu_) GTEST_SKIP() << no_cuda_reason_;
  compare(GetParam(), *cpu_, *gpu_, GetParam().tolerance);
}

TEST_P(BackendOps, CudaFp16MatchesCpuInFp16Storage) {
  ASSERT_TRUE(setup_error_.empty()) << setup_error_;
  if (!gpu_fp16_) GTEST_SKIP() << no_cuda_reason_;
  compare(GetParam(), *cpu_fp16_, *gpu_fp16_, eleven_bit_tolerance(GetParam()));
}

TEST_P(BackendOps, CudaTf32MatchesCpu) {
  ASSERT_TRUE(setup_error_.empty()) << setup_error_;
  if (!gpu_) GTEST_SKIP() << no_cuda_reason_;
  if (!gpu_tf32_) GTEST_SKIP() << no_tf32_reason_;
  compare(GetParam(), *cpu_, *gpu_tf32_, eleven_bit_tolerance(GetParam()));
}

INSTANTIATE_TEST_SUITE_P(All, BackendOps, ::testing::ValuesIn(all_cases()),
                         [](const ::testing::TestParamInfo<OpCase>& info) {
                           return info.param.name;
                         });

// The table's names must be unique gtest names, and every case must run on the CPU
// (this part needs no GPU: it catches a broken case before the GPU slot does).
TEST(BackendOpsTable, EveryCaseRunsOnCpuAndIsFinite) {
  std::unique_ptr<Backend> cpu = make_backend("cpu", 1);
  for (const OpCase& op : all_cases()) {
    const Floats out = op.run(*cpu);
    ASSERT_FALSE(out.empty()) << op.name;
    for (size_t i = 0; i < out.size(); ++i)
      ASSERT_TRUE(std::isfinite(out[i])) << op.name << ": element " << i << " not written";
    EXPECT_EQ(normalized_error(out, out), 0.0) << op.name;
  }
}

// The fp16 reference itself, on every case without a GPU: the CPU kernels in fp16
// storage against fp32. Inputs and outputs rounded to 11 significant bits move a
// result by ~1e-3 of its norm at most (2^-11 relative each).
TEST(BackendOpsTable, Fp16StorageReferenceIsFp32WithinHalfPrecision) {
  std::unique_ptr<Backend> cpu = make_backend("cpu", 1);
  Fp16StorageCpuBackend cpu_fp16(1);
  for (const OpCase& op : all_cases()) {
    const Floats want = op.run(*cpu), got = op.run(cpu_fp16);
    const double err = normalized_error(want, got);
    ::testing::Test::RecordProperty(op.name, std::to_string(err));
    EXPECT_LE(err, 3e-3) << op.name;
  }
}

TEST(BackendOpsTable, NormalizedErrorDetectsDifferences) {
  const Floats a = {1.f, 2.f, 3.f};
  EXPECT_EQ(normalized_error(a, a), 0.0);
  EXPECT_GT(normalized_error(a, {1.f, 2.f, 3.1f}), 1e-2);
  EXPECT_TRUE(std::isinf(normalized_error(a, {1.f, 2.f, std::nanf("")})));
  EXPECT_TRUE(std::isinf(normalized_error(a, {1.f, 2.f})));
}

// The fused entry points promise the unfused composition's bits (backend.h):
// conv2d_channel_mean's means are reduce's over its output, and
// weighted_sum_resampled's sum is weighted_sum over the resampled inputs. Checked on
// every backend there is, in both storages, against Backend's own composition run
// on that same backend, on shapes the fused CUDA kernels take and shapes they leave.
std::vector<std::unique_ptr<Backend>> contract_backends() {
  std::vector<std::unique_ptr<Backend>> backends;
  backends.push_back(make_backend("cpu", 1));
  backends.emplace_back(new Fp16StorageCpuBackend(1));
  std::string why;
  if (cuda_available(&why)) {
    backends.push_back(make_backend("cuda", 0));
    backends.push_back(make_backend("cuda", 0, DType::F16));
  }
  return backends;
}

TEST(BackendOpsContract, ChannelMeanHasTheBitsOfConvThenReduce) {
  const Activation swish = act(ActKind::Swish);
  const std::vector<Conv2dParams> convs = {
      with_pads(conv(1, 7, 32, 32, 7, 3, 1, 7, swish), 1, 1, 1, 1),   // a 1024-output plane
      with_pads(conv(2, 30, 27, 25, 30, 5, 2, 30, swish), 1, 2, 2, 1),  // odd planes, n = 2
      with_pads(conv(1, 3, 33, 33, 3, 3, 1, 3, Activation()), 1, 1, 1, 1),  // 1089 outputs
      with_pads(conv(2, 150, 33, 33, 150, 3, 1, 150, swish), 1, 1, 1, 1),  // 300 of them
      // few planes over 4096 outputs, split into chunks on CUDA: 2 (the last of 454)
      // and 3 per plane
      with_pads(conv(1, 4, 70, 65, 4, 3, 1, 4, swish), 1, 1, 1, 1),
      with_pads(conv(2, 3, 100, 90, 3, 5, 1, 3, Activation()), 2, 2, 2, 2),
      // 1x1 convs (a classifier's last conv before its pool): 7x7 planes as B0's, 300
      // long ones, and a few long ones (the composition)
      conv(1, 32, 7, 7, 40, 1, 1, 1, swish), conv(2, 9, 33, 33, 150, 1, 1, 1, swish),
      conv(1, 5, 40, 33, 7, 1, 1, 1, act(ActKind::Relu))};
  for (const auto& be : contract_backends()) {
    for (Conv2dParams p : convs) {
      p.h_out = conv_out(p.h, p.kh, p.stride_h, p.dil_h, p.pad_top, p.pad_bottom);
      p.w_out = conv_out(p.w, p.kw, p.stride_w, p.dil_w, p.pad_left, p.pad_right);
      SCOPED_TRACE(be->name() + " " + dtype_name(be->float_storage()) + " " +
                   std::to_string(p.c_out) + " planes of " + std::to_string(p.h_out) + "x" +
                   std::to_string(p.w_out));
      const Shape xs{p.n, p.c_in, p.h, p.w}, ws{p.c_out, p.c_in / p.groups, p.kh, p.kw};
      const Shape bs{p.c_out}, ys{p.n, p.c_out, p.h_out, p.w_out}, ms{p.n, p.c_out, 1, 1};
      DeviceTensor X(*be, xs, random_floats(count(xs), 1)), W(*be, ws, random_floats(count(ws), 2));
      DeviceTensor B(*be, bs, random_floats(count(bs), 3));
      DeviceTensor fused_y(*be, ys), fused_mean(*be, ms), y(*be, ys), mean(*be, ms);
      DeviceTensor again_y(*be, ys), again_mean(*be, ms);
      DeviceBytes workspace(*be, std::max<size_t>(be->conv2d_workspace(p), 1));
      be->conv2d_channel_mean(p, X.t, W.t, &B.t, fused_y.t, fused_mean.t, workspace.data);
      // Twice: CUDA's split means leave their chunk counts ready for the next launch.
      be->conv2d_channel_mean(p, X.t, W.t, &B.t, again_y.t, again_mean.t, workspace.data);
      be->Backend::conv2d_channel_mean(p, X.t, W.t, &B.t, y.t, mean.t, workspace.data);
      EXPECT_EQ(fused_y.download(), y.download());
      EXPECT_EQ(fused_mean.download(), mean.download());
      EXPECT_EQ(again_mean.download(), mean.download());
    }
  }
}

// Host floats as fp16 storage holds them.
Floats rounded_to_half(Floats v) {
  for (float& x : v) x = half_to_float(float_to_half(x));
  return v;
}

// The distance between fp16 values next to magnitude v (normal range): 2^(e - 11)
// for v in [2^(e-1), 2^e), fp16 having 10 fraction bits.
float half_spacing(float v) {
  int e = 0;
  std::frexp(std::max(v, 6.103515625e-05f), &e);  // fp16's smallest normal
  return std::ldexp(1.f, e - 11);
}

TEST(BackendOpsContract, SeparableConvMatchesItsTwoConvs) {
  const Activation relu = act(ActKind::Relu), swish = act(ActKind::Swish);
  struct Case {
    Conv2dParams dw;
    int64_t c_out;
    Activation act;
    bool residual;
  };
  const std::vector<Case> cases = {
      {with_pads(conv(1, 64, 16, 16, 64, 3, 1, 64, Activation()), 1, 1, 1, 1), 810, Activation(), false},
      {with_pads(conv(2, 21, 17, 19, 21, 5, 2, 21, relu), 1, 2, 2, 1), 37, swish, false},
      {with_pads(conv(1, 24, 13, 11, 24, 3, 1, 24, relu), 1, 1, 1, 1), 24, Activation(), true},
      {with_pads(conv(2, 21, 11, 9, 21, 3, 2, 21, relu), 0, 0, 1, 1), 7, Activation(), false}};
  for (const auto& be : contract_backends()) {
    for (Case c : cases) {
      Conv2dParams& dw = c.dw;
      dw.h_out = conv_out(dw.h, dw.kh, dw.stride_h, dw.dil_h, dw.pad_top, dw.pad_bottom);
      dw.w_out = conv_out(dw.w, dw.kw, dw.stride_w, dw.dil_w, dw.pad_left, dw.pad_right);
      Conv2dParams pw = conv(dw.n, dw.c_out, dw.h_out, dw.w_out, c.c_out, 1, 1, 1, c.act);
      pw.h_out = dw.h_out;
      pw.w_out = dw.w_out;
      SCOPED_TRACE(be->name() + " " + dtype_name(be->float_storage()) + " " +
                   std::to_string(dw.c_out) + " -> " + std::to_string(c.c_out) + " channels");
      const Shape xs{dw.n, dw.c_in, dw.h, dw.w}, wds{dw.c_out, 1, dw.kh, dw.kw}, bds{dw.c_out};
      const Shape wps{c.c_out, dw.c_out, 1, 1}, bps{c.c_out}, ys{dw.n, c.c_out, dw.h_out, dw.w_out};
      DeviceTensor X(*be, xs, random_floats(count(xs), 1)), WD(*be, wds, random_floats(count(wds), 2));
      DeviceTensor BD(*be, bds, random_floats(count(bds), 3)), WP(*be, wps, random_floats(count(wps), 4));
      DeviceTensor BP(*be, bps, random_floats(count(bps), 5)), R(*be, ys, random_floats(count(ys), 6));
      DeviceTensor fused(*be, ys), composed(*be, ys);
      const Tensor* r = c.residual ? &R.t : nullptr;
      DeviceBytes workspace(*be, be->Backend::separable_conv2d_workspace(dw, pw));
      be->separable_conv2d(dw, pw, X.t, WD.t, &BD.t, WP.t, &BP.t, r, fused.t, workspace.data);
      be->Backend::separable_conv2d(dw, pw, X.t, WD.t, &BD.t, WP.t, &BP.t, r, composed.t,
                                    workspace.data);
      const Floats got = fused.download(), want = composed.download();
      // A pointwise half with only a bias may be rounded to fp16 once, after the bias
      // is added, rather than once before it and once after (Backend::separable_conv2d):
      // apart by at most half a step at the product's magnitude and one at the sum's.
      if (be->float_storage() == DType::F16 && c.act.kind == ActKind::None && !c.residual) {
        ASSERT_EQ(got.size(), want.size());
        const Floats bias = rounded_to_half(random_floats(count(bps), 5));
        const size_t plane = static_cast<size_t>(dw.h_out * dw.w_out);
        for (size_t i = 0; i < got.size(); ++i) {
          const float product = std::fabs(want[i] - bias[(i / plane) % bias.size()]);
          const float sum = std::max(std::fabs(got[i]), std::fabs(want[i]));
          ASSERT_LE(std::fabs(got[i] - want[i]), half_spacing(product) / 2 + half_spacing(sum))
              << "at " << i << ": " << got[i] << " vs " << want[i];
        }
      } else {
        EXPECT_EQ(got, want);
      }
    }
  }
}


// conv2d_stores_f32: on a backend in fp16 storage, a conv into an F32 output is the
// fp32 conv of its stored (fp16) operands, not rounded again. It matches the CPU's
// fp32 conv of the same fp16 values to fp32 tolerance, far below what a rounding to
// fp16 adds (checked too, so the test can tell them apart). The cases take every
// CUDA path: 1x1 read directly, im2col + GEMM, depthwise, the residual epilogue,
// and the separable conv, whose depthwise half is rounded to fp16 as conv2d stores
// it (so the reference rounds it too).
TEST(BackendOpsContract, ConvIntoF32SkipsTheRoundingToStorage) {
  const Activation swish = act(ActKind::Swish), relu = act(ActKind::Relu);
  struct Case {
    const char* name;
    Conv2dParams p;  // the conv, or a separable conv's depthwise half
    bool residual;
    int64_t separable_c_out;  // 0: a plain conv
  };
  const std::vector<Case> cases = {
      {"1x1", conv(1, 37, 9, 11, 45, 1, 1, 1, swish), false, 0},
      {"3x3 stride 2", with_pads(conv(2, 5, 13, 10, 19, 3, 2, 1, relu), 0, 0, 1, 1), false, 0},
      {"depthwise 5x5", with_pads(conv(1, 13, 15, 17, 13, 5, 1, 13, swish), 2, 2, 2, 2), false,
       0},
      {"1x1 residual", conv(1, 24, 7, 9, 24, 1, 1, 1, Activation()), true, 0},
      {"separable", with_pads(conv(1, 20, 12, 13, 20, 3, 1, 20, Activation()), 1, 1, 1, 1),
       false, 90},
      {"separable residual", with_pads(conv(1, 16, 9, 9, 16, 3, 1, 16, relu), 1, 1, 1, 1), true,
       16}};
  std::unique_ptr<Backend> cpu = make_backend("cpu", 1);
  int checked = 0;
  for (const auto& be : contract_backends()) {
    if (be->float_storage() != DType::F16) continue;
    for (Case c : cases) {
      Conv2dParams& p = c.p;
      p.h_out = conv_out(p.h, p.kh, p.stride_h, p.dil_h, p.pad_top, p.pad_bottom);
      p.w_out = conv_out(p.w, p.kw, p.stride_w, p.dil_w, p.pad_left, p.pad_right);
      Conv2dParams pw = conv(p.n, p.c_out, p.h_out, p.w_out, c.separable_c_out, 1, 1, 1, swish);
      pw.h_out = p.h_out;
      pw.w_out = p.w_out;
      if (c.residual) pw.act = Activation();
      const Conv2dParams& last = c.separable_c_out ? pw : p;  // the conv that stores y
      SCOPED_TRACE(be->name() + " fp16, " + c.name);
      if (!be->conv2d_stores_f32(last)) continue;  // cuDNN's dense convs
      const Shape xs{p.n, p.c_in, p.h, p.w}, ws{p.c_out, p.c_in / p.groups, p.kh, p.kw};
      const Shape bs{p.c_out}, mids{p.n, p.c_out, p.h_out, p.w_out};
      const Shape pws{pw.c_out, pw.c_in, 1, 1}, pbs{pw.c_out};
      const Shape ys{last.n, last.c_out, last.h_out, last.w_out};
      const Floats x = rounded_to_half(random_floats(count(xs), 1));
      const Floats w = rounded_to_half(random_floats(count(ws), 2));
      const Floats b = rounded_to_half(random_floats(count(bs), 3));
      const Floats r = rounded_to_half(random_floats(count(ys), 4));
      const Floats w_pw = rounded_to_half(random_floats(count(pws), 5));
      const Floats b_pw = rounded_to_half(random_floats(count(pbs), 6));
      // The reference: the CPU in fp32 on the same values, one conv at a time.
      auto cpu_conv = [&](const Conv2dParams& q, const Floats& in, const Shape& in_shape,
                          const Floats& wq, const Shape& w_shape, const Floats& bq,
                          const Shape& b_shape, bool with_residual) {
        DeviceTensor X(*cpu, in_shape, in), W(*cpu, w_shape, wq), B(*cpu, b_shape, bq);
        DeviceTensor Y(*cpu, Shape{q.n, q.c_out, q.h_out, q.w_out});
        DeviceBytes workspace(*cpu, std::max<size_t>(cpu->conv2d_workspace(q), 1));
        cpu->conv2d(q, X.t, W.t, &B.t, Y.t, workspace.data);
        Floats out = Y.download();
        if (with_residual)
          for (size_t i = 0; i < out.size(); ++i) out[i] += r[i];
        return out;
      };
      Floats want;
      if (c.separable_c_out) {
        const Floats mid = rounded_to_half(cpu_conv(p, x, xs, w, ws, b, bs, false));
        want = cpu_conv(pw, mid, mids, w_pw, pws, b_pw, pbs, c.residual);
      } else {
        want = cpu_conv(p, x, xs, w, ws, b, bs, c.residual);
      }
      DeviceTensor X(*be, xs, x), W(*be, ws, w), B(*be, bs, b), R(*be, ys, r);
      DeviceTensor WP(*be, pws, w_pw), BP(*be, pbs, b_pw), Y(*be, ys, DType::F32);
      const Tensor* residual = c.residual ? &R.t : nullptr;
      if (c.separable_c_out) {
        DeviceBytes workspace(*be, std::max<size_t>(be->separable_conv2d_workspace(p, pw), 1));
        be->separable_conv2d(p, pw, X.t, W.t, &B.t, WP.t, &BP.t, residual, Y.t, workspace.data);
      } else {
        DeviceBytes workspace(*be, std::max<size_t>(be->conv2d_workspace(p), 1));
        if (residual)
          be->conv2d_residual(p, X.t, W.t, &B.t, *residual, Y.t, workspace.data);
        else
          be->conv2d(p, X.t, W.t, &B.t, Y.t, workspace.data);
      }
      EXPECT_LE(normalized_error(want, Y.download()), kFp32Tolerance);
      EXPECT_GT(normalized_error(want, rounded_to_half(want)), 10 * kFp32Tolerance);
      ++checked;
    }
  }
  EXPECT_GE(checked, static_cast<int>(cases.size()));  // the fp16 simulation, at least
}

TEST(BackendOpsContract, ResampledWeightedSumHasTheBitsOfResampleThenSum) {
  const std::vector<std::vector<ResampledInput>> cases = {
      {maxpool_input(14, 12, 3, 3, 2, 2, 1, {0, 0, 1, 1}), upsample_input(1, 2)},
      {maxpool_input(9, 16, 2, 3, 1, 2, 2, {0, 0, 0, 0}), upsample_input(7, 3),
       upsample_input(1, 1)}};
  const Shape ys{2, 5, 7, 6};
  for (const auto& be : contract_backends()) {
    for (const auto& resampled : cases) {
      SCOPED_TRACE(be->name() + " " + dtype_name(be->float_storage()) + ", " +
                   std::to_string(resampled.size()) + " resampled inputs");
      WeightedSumParams p;
      p.count = 1 + static_cast<int>(resampled.size());
      p.act = act(ActKind::Swish);
      p.numel = ys.numel();
      std::array<FusionResample, kMaxFusionInputs> r = {};
      std::vector<std::unique_ptr<DeviceTensor>> owned;
      std::vector<const Tensor*> xs;
      for (int i = 0; i < p.count; ++i) {
        p.weights[i] = 0.25f + 0.5f * i;
        const Shape s = i == 0 ? ys : resampled[i - 1].shape;
        if (i > 0) r[i] = resampled[i - 1].r;
        owned.emplace_back(new DeviceTensor(*be, s, random_floats(count(s), 30 + i)));
        xs.push_back(&owned.back()->t);
      }
      DeviceTensor fused(*be, ys), composed(*be, ys);
      DeviceBytes workspace(*be, be->Backend::weighted_sum_resampled_workspace(p, r.data()));
      be->weighted_sum_resampled(p, r.data(), xs.data(), fused.t, workspace.data);
      be->Backend::weighted_sum_resampled(p, r.data(), xs.data(), composed.t, workspace.data);
      EXPECT_EQ(fused.download(), composed.download());
    }
  }
}

// Each case (a fused entry point's, run(be, composition) giving its output) on every
// contract backend: the backend's own fused op against Backend's composition, bit
// for bit.
template <class Case>
void expect_composition_bits(const std::vector<Case>& cases) {
  for (const auto& be : contract_backends()) {
    for (size_t i = 0; i < cases.size(); ++i) {
      SCOPED_TRACE(be->name() + " " + dtype_name(be->float_storage()) + ", case " +
                   std::to_string(i));
      EXPECT_EQ(cases[i].run(*be, false), cases[i].run(*be, true));
    }
  }
}

// A backend computing the fusion inside its separable conv gives the bits of the
// fusion stored, then the separable conv (Backend's composition), in fp16 too.
TEST(BackendOpsContract, WeightedSumSeparableConvHasTheBitsOfSumThenConv) {
  const Activation none, swish = act(ActKind::Swish);
  const std::vector<SumSeparable> cases = {
      sum_separable({maxpool_input(14, 12, 3, 3, 2, 2, 1, {0, 0, 1, 1}), upsample_input(1, 2)},
                    swish, with_pads(conv(2, 5, 7, 6, 5, 3, 1, 5, none), 1, 1, 1, 1), 9, none,
                    false),
      sum_separable({upsample_input(7, 3)}, none,
                    with_pads(conv(2, 5, 7, 6, 5, 3, 2, 5, swish), 0, 0, 1, 1), 5, swish, false),
      sum_separable({maxpool_input(9, 16, 2, 3, 1, 2, 2, {0, 0, 0, 0})}, swish,
                    with_pads(conv(2, 5, 7, 6, 5, 3, 1, 5, none), 1, 1, 1, 1), 5, none, true),
      // Rows wide enough for CUDA to take each plane in 4 bands of rows, the last partial
      // (separable_depthwise_band_kernel computing the fusion from a band's first row).
      sum_separable({ResampledInput{Shape{1, 3, 11, 130}, FusionResample()}}, swish,
                    with_pads(conv(1, 3, 11, 130, 3, 3, 1, 3, none), 1, 1, 1, 1), 4, none,
                    false)};
  expect_composition_bits(cases);
}

// A backend applying the 1x1 conv's bias and activation as the depthwise conv reads
// its product gives the composition's bits, output and means, in fp32 and fp16.
TEST(BackendOpsContract, PointwiseDepthwiseConvHasTheBitsOfItsTwoConvs) {
  const Activation swish = act(ActKind::Swish), relu = act(ActKind::Relu);
  const std::vector<PointwiseDepthwise> cases = {
      pointwise_depthwise(7, swish, with_pads(conv(1, 13, 9, 11, 13, 3, 1, 13, swish), 1, 1, 1, 1),
                          true),
      pointwise_depthwise(5, relu, with_pads(conv(2, 12, 15, 13, 12, 5, 2, 12, swish), 1, 1, 2, 2),
                          true),
      pointwise_depthwise(6, swish,
                          with_pads(conv(1, 300, 36, 36, 300, 3, 1, 300, swish), 1, 1, 1, 1), true),
      pointwise_depthwise(6, Activation(),
                          with_pads(conv(1, 16, 32, 32, 16, 3, 1, 16, Activation()), 1, 1, 1, 1),
                          true),
      // few planes: of 1320 outputs (one block each), of 4550 (split)
      pointwise_depthwise(6, relu, with_pads(conv(1, 7, 40, 33, 7, 3, 1, 7, swish), 1, 1, 1, 1),
                          true),
      pointwise_depthwise(4, swish, with_pads(conv(1, 5, 70, 65, 5, 3, 1, 5, swish), 1, 1, 1, 1),
                          true)};
  expect_composition_bits(cases);
}

// A backend applying each link's 1x1 bias and activation as the next link reads its
// product gives the composition's bits: the head's chain (last 1x1 starting from its
// bias, y F32 where the backend stores it so), a strided one without biases ending
// in an activation, one ending with a residual, and one with rows wide enough for
// CUDA to take its planes in bands; in fp32 and fp16.
TEST(BackendOpsContract, SeparableConvChainHasTheBitsOfItsLinks) {
  const Activation none, swish = act(ActKind::Swish), relu = act(ActKind::Relu);
  const std::vector<SeparableChain> cases = {
      separable_chain(1, 13, 9, 7,
                      {{3, 1, 13, swish, true}, {3, 1, 13, swish, true}, {3, 1, 27, none, true}},
                      false, true),
      separable_chain(2, 6, 11, 10, {{5, 2, 9, relu, false}, {3, 1, 7, swish, false}}, false),
      separable_chain(1, 8, 6, 5, {{3, 1, 11, swish, true}, {3, 1, 8, none, true}}, true),
      separable_chain(1, 3, 25, 150,
                      {{3, 1, 3, swish, true}, {3, 2, 3, relu, true}, {5, 1, 4, none, true}},
                      false)};
  expect_composition_bits(cases);
}

// A backend starting the conv's output from bias plus residual (CUDA at batch 1)
// rounds once where the composition rounds the product, then the sum: within one
// step of the storage at the magnitudes involved, in fp32 and fp16; into an F32 y
// in fp16 storage (conv2d_stores_f32), within fp32's step. Elsewhere (the CPU,
// CUDA's other shapes) the composition's bits.
TEST(BackendOpsContract, SqueezeExcitationConvMatchesItsTwoOps) {
  const Activation none;
  const std::vector<SeConv> cases = {se_conv(1, 40, 10, 9, 11, 24, true, true, true, none),
                                     se_conv(1, 13, 5, 7, 5, 37, true, true, false, none),
                                     se_conv(1, 1152, 48, 7, 7, 192, false, true, true, none),
                                     se_conv(1, 13, 5, 3, 5, 7, true, false, true, none)};
  for (const auto& be : contract_backends()) {
    const bool half = be->float_storage() == DType::F16;
    for (size_t k = 0; k < cases.size(); ++k) {
      for (bool f32_y : {false, true}) {
        const SeConv& c = cases[k];
        if (f32_y && !(half && be->conv2d_stores_f32(c.conv))) continue;
        SCOPED_TRACE(be->name() + " " + dtype_name(be->float_storage()) + ", case " +
                     std::to_string(k) + (f32_y ? ", F32 y" : ""));
        // The distance between stored values next to magnitude v.
        auto spacing = [&](float v) {
          if (half && !f32_y) return half_spacing(v);
          int e = 0;
          std::frexp(std::max(v, 1e-30f), &e);
          return std::ldexp(1.f, e - 24);
        };
        const Floats got = c.run(*be, false, f32_y), want = c.run(*be, true, f32_y);
        ASSERT_EQ(got.size(), want.size());
        const Floats bias = half ? rounded_to_half(c.bias) : c.bias;
        const Floats residual = half ? rounded_to_half(c.residual) : c.residual;
        const size_t plane = static_cast<size_t>(c.conv.h * c.conv.w);
        for (size_t i = 0; i < got.size(); ++i) {
          const float b = bias.empty() ? 0.f : std::fabs(bias[(i / plane) % bias.size()]);
          const float r = residual.empty() ? 0.f : std::fabs(residual[i]);
          // Two roundings apart (the product's or bias + residual's, and the result's),
          // each at most half a step at a magnitude within |want| + |b| + |r|.
          const float bound = 2 * spacing(1.01f * (std::fabs(want[i]) + b + r));
          ASSERT_LE(std::fabs(got[i] - want[i]), bound)
              << "at " << i << ": " << got[i] << " vs " << want[i];
        }
      }
    }
  }
}

// --precision tf32 puts cuBLAS's GEMMs on TF32 tensor cores: a dense conv big enough
// for them (im2col + GEMM, also under REPSHARE_CUDA_POINTWISE=fused; TF "SAME" pads,
// which cuDNN builds leave to cuBLAS too) moves from the CPU's fp32 by TF32's
// rounding (far more than fp32's, within fp16's bound), while the depthwise conv, a
// kernel of repshare's, keeps fp32's bits.
// CUDA's conv epilogue moves 16-byte packs only where y and the residual are aligned
// to them (arena tensors are; a bound or offset one need not be): an output and a
// residual one element off their allocation give the same bits as aligned ones (on a
// GPU a misaligned pack would fault; the CPU emulation checks the values).
TEST(BackendOpsContract, ConvEpilogueOffItsAlignmentHasTheSameBits) {
  // 1x1 convs (a GEMM, then the epilogue) on planes of 48: packs where aligned.
  const std::vector<std::pair<Conv2dParams, bool>> cases = {
      {conv(2, 13, 8, 6, 11, 1, 1, 1, act(ActKind::Swish)), false},
      {conv(2, 13, 8, 6, 11, 1, 1, 1, Activation()), true}};
  for (const auto& be : contract_backends()) {
    for (auto c : cases) {
      Conv2dParams& p = c.first;
      p.h_out = p.h;
      p.w_out = p.w;
      const bool with_residual = c.second;
      SCOPED_TRACE(be->name() + " " + dtype_name(be->float_storage()) +
                   (with_residual ? ", residual" : ", swish"));
      const Shape xs{p.n, p.c_in, p.h, p.w}, ws{p.c_out, p.c_in, 1, 1}, bs{p.c_out};
      const Shape ys{p.n, p.c_out, p.h_out, p.w_out}, one_more{ys.numel() + 1};
      const Floats r = random_floats(count(ys), 4);
      Floats r_after_one(1, 0.f);
      r_after_one.insert(r_after_one.end(), r.begin(), r.end());
      DeviceTensor X(*be, xs, random_floats(count(xs), 1));
      DeviceTensor W(*be, ws, random_floats(count(ws), 2)), B(*be, bs, random_floats(count(bs), 3));
      DeviceTensor R(*be, ys, r);
      DeviceTensor Y(*be, ys), R_off(*be, one_more, r_after_one), Y_off(*be, one_more);
      // Views one element into the larger allocations.
      auto offset_view = [&ys](const Tensor& whole) {
        Tensor v = whole;
        v.shape = ys;
        v.data = static_cast<char*>(whole.data) + dtype_size(whole.dtype);
        return v;
      };
      const Tensor r_view = offset_view(R_off.t);
      Tensor y_view = offset_view(Y_off.t);
      DeviceBytes workspace(*be, std::max<size_t>(be->conv2d_workspace(p), 1));
      if (with_residual) {
        be->conv2d_residual(p, X.t, W.t, &B.t, R.t, Y.t, workspace.data);
        be->conv2d_residual(p, X.t, W.t, &B.t, r_view, y_view, workspace.data);
      } else {
        be->conv2d(p, X.t, W.t, &B.t, Y.t, workspace.data);
        be->conv2d(p, X.t, W.t, &B.t, y_view, workspace.data);
      }
      const Floats want = Y.download(), off = Y_off.download();
      EXPECT_EQ(Floats(off.begin() + 1, off.end()), want);
    }
  }
}

// CUDA's direct conv (dense convs of at most 32 taps, workspace-free) has a grid of
// at most 65,535 images: a larger batch takes im2col + GEMM, with its workspace,
// rather than failing at launch.
TEST(BackendOpsContract, DirectConvBeyondItsGridTakesIm2col) {
  std::string why;
  if (!cuda_available(&why)) GTEST_SKIP() << why;
  std::unique_ptr<Backend> cuda = make_backend("cuda");
  Conv2dParams p = with_pads(conv(65535, 3, 2, 2, 8, 3, 1, 1, Activation()), 1, 1, 1, 1);
  p.h_out = conv_out(p.h, p.kh, p.stride_h, p.dil_h, p.pad_top, p.pad_bottom);
  p.w_out = conv_out(p.w, p.kw, p.stride_w, p.dil_w, p.pad_left, p.pad_right);
  EXPECT_EQ(cuda->conv2d_workspace(p), 0u);
  p.n = 65536;
  EXPECT_GT(cuda->conv2d_workspace(p), 0u);
}

TEST(BackendOpsContract, Tf32ProductsRoundTheGemmOperands) {
  std::string why;
  if (!tf32_available(&why)) GTEST_SKIP() << why;
  std::unique_ptr<Backend> cpu = make_backend("cpu", 1), fp32 = make_backend("cuda");
  std::unique_ptr<Backend> tf32 = make_backend("cuda", 0, DType::F32, true);
  EXPECT_FALSE(fp32->tf32_products());
  EXPECT_TRUE(tf32->tf32_products());
  Conv2dParams dense = with_pads(conv(1, 64, 63, 63, 128, 3, 2, 1, Activation()), 0, 0, 1, 1);
  Conv2dParams dw = with_pads(conv(1, 13, 9, 7, 13, 3, 1, 13, act(ActKind::Swish)), 1, 1, 1, 1);
  for (Conv2dParams* p : {&dense, &dw}) {
    p->h_out = conv_out(p->h, p->kh, p->stride_h, p->dil_h, p->pad_top, p->pad_bottom);
    p->w_out = conv_out(p->w, p->kw, p->stride_w, p->dil_w, p->pad_left, p->pad_right);
  }
  auto run = [](Backend& be, const Conv2dParams& p) {
    const Shape xs{p.n, p.c_in, p.h, p.w}, ws{p.c_out, p.c_in / p.groups, p.kh, p.kw};
    DeviceTensor X(be, xs, random_floats(count(xs), 60)), W(be, ws, random_floats(count(ws), 61));
    DeviceTensor B(be, Shape{p.c_out}, random_floats(static_cast<size_t>(p.c_out), 62));
    DeviceTensor Y(be, Shape{p.n, p.c_out, p.h_out, p.w_out});
    DeviceBytes workspace(be, std::max<size_t>(be.conv2d_workspace(p), 1));
    be.conv2d(p, X.t, W.t, &B.t, Y.t, workspace.data);
    return Y.download();
  };
  const Floats want = run(*cpu, dense);
  EXPECT_LE(normalized_error(want, run(*fp32, dense)), kFp32Tolerance);
  const double tf32_error = normalized_error(want, run(*tf32, dense));
  EXPECT_GT(tf32_error, 10 * kFp32Tolerance) << "TF32 asked for, fp32 products made";
  EXPECT_LE(tf32_error, kFp16Tolerance);
  EXPECT_EQ(run(*tf32, dw), run(*fp32, dw));
}

TEST(BackendRegistry, MakesCpuAndRejectsUnknownNames) {
  std::unique_ptr<Backend> cpu = make_backend("cpu", 1);
  EXPECT_EQ(cpu->name(), "cpu");
  try {
    make_backend("tpu", 1);
    FAIL() << "expected an error for an unknown backend";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Argument);
    EXPECT_NE(std::string(e.what()).find("tpu"), std::string::npos) << e.what();
  }
}

// TF32 products are a CUDA mode over fp32 storage: asked of the cpu, or with fp16,
// it is an argument error (before any GPU is looked for), not quietly ignored.
TEST(BackendRegistry, Tf32IsRefusedOnTheCpuAndWithFp16) {
  for (const auto& c : {std::make_pair(std::string("cpu"), DType::F32),
                        std::make_pair(std::string("cuda"), DType::F16)}) {
    try {
      make_backend(c.first, 1, c.second, true);
      FAIL() << "expected an error for tf32 on " << c.first << " " << dtype_name(c.second);
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::Argument);
      EXPECT_NE(std::string(e.what()).find("tf32"), std::string::npos) << e.what();
    }
  }
}

TEST(BackendRegistry, CudaWithoutDeviceIsABackendError) {
  std::string why;
  if (cuda_available(&why)) GTEST_SKIP() << "a CUDA device is present";
  try {
    make_backend("cuda", 0);
    FAIL() << "expected an error: " << why;
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Backend);
    EXPECT_NE(std::string(e.what()).find("no CUDA device"), std::string::npos) << e.what();
  }
}

// The settings the CUDA backend reads from the environment: a bad value is an
// Argument error naming the variable, before the backend takes any resource.
TEST(BackendRegistry, CudaSettingsOutOfRangeAreArgumentErrors) {
  std::string why;
  if (!cuda_available(&why)) GTEST_SKIP() << why;
  const std::pair<const char*, const char*> bad[] = {
      {"REPSHARE_CUDA_STREAMS", "0"},
      {"REPSHARE_CUDA_STREAMS", "8 streams"},
      {"REPSHARE_CUDA_CONCURRENCY_MEMORY", "-0.5"},
      {"REPSHARE_CUDA_CUBLAS_WORKSPACE_MIB", "0"},
      {"REPSHARE_CUDA_CUBLAS_WORKSPACE_MIB", "32MiB"},
      {"REPSHARE_CUDA_POINTWISE", "fast"}};
  for (const auto& b : bad) {
    const ScopedEnv env(b.first, b.second);
    try {
      make_backend("cuda", 0);
      FAIL() << "expected an error for " << b.first << "=" << b.second;
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::Argument) << e.what();
      EXPECT_NE(std::string(e.what()).find(b.first), std::string::npos) << e.what();
    }
  }
  for (const char* ok : {"default", "fused", "small"}) {
    const ScopedEnv env("REPSHARE_CUDA_POINTWISE", ok);
    EXPECT_NO_THROW(make_backend("cuda", 0)) << ok;
  }
}

// REPSHARE_CUDA_CUBLAS_WORKSPACE_MIB sizes each stream's cuBLAS workspace, and the
// memory report counts it with the handle.
TEST(BackendRegistry, CublasWorkspaceSizeIsASetting) {
  std::string why;
  if (!cuda_available(&why)) GTEST_SKIP() << why;
#ifdef REPSHARE_WITH_CUDA
  auto cublas_bytes = [](const char* mib) {
    const ScopedEnv env("REPSHARE_CUDA_CUBLAS_WORKSPACE_MIB", mib);
    std::unique_ptr<Backend> gpu = make_backend("cuda", 0);
    return dynamic_cast<const CudaBackend&>(*gpu).cublas_bytes();
  };
  const size_t small = cublas_bytes("4"), large = cublas_bytes("12");
  const size_t mib = size_t(1) << 20;
  EXPECT_GE(large, small + 7 * mib);  // 8 MiB more, give or take the allocator's rounding
  EXPECT_LE(large, small + 10 * mib);
#endif
}

TEST(BackendRegistry, CudaBackendReportsItsContextMemory) {
  std::string why;
  if (!cuda_available(&why)) GTEST_SKIP() << why;
#ifdef REPSHARE_WITH_CUDA
  std::unique_ptr<Backend> gpu = make_backend("cuda", 0);
  const CudaBackend* cuda = dynamic_cast<const CudaBackend*>(gpu.get());
  ASSERT_NE(cuda, nullptr);
  EXPECT_EQ(cuda->name(), "cuda");
  EXPECT_GT(cuda->context_bytes(), cuda->cublas_bytes());
  EXPECT_GT(cuda->cublas_bytes(), size_t(0));
  // Sizes beyond the kernels' 32-bit indexing are refused with an Error before any
  // launch, never wrapped around.
  Tensor huge;
  huge.shape = Shape{int64_t(1) << 31};
  try {
    gpu->activation(Activation(), huge, huge);
    FAIL() << "expected an error for 2^31 elements";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Unsupported) << e.what();
  }
#endif
}

}  // namespace
}  // namespace repshare
