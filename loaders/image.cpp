#include "loaders/image.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>

#include "engine/error.h"

#define STB_IMAGE_IMPLEMENTATION
// Only the formats repshare documents; the others are attack surface without use.
#define STBI_ONLY_JPEG
#define STBI_ONLY_PNG
#define STBI_ONLY_PNM
#define STBI_FAILURE_USERMSG
#define STBI_NO_STDIO  // files are read here, so read errors name the file
// Third-party code: its own warnings are not ours to fix.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-but-set-variable"
#include <stb_image.h>
#pragma GCC diagnostic pop

namespace repshare {

namespace {

// JPEG colour reconstruction as libjpeg (and so PIL) does it. stb_image's 2x2
// chroma upsampling rounds every sample with +8 where libjpeg alternates +8 and +7,
// and its YCbCr to RGB conversion uses 20-bit fixed point where libjpeg rounds each
// term in 16-bit tables. Both are replaceable kernels in stb's decoder; with
// libjpeg's arithmetic in them the mean difference from PIL over imagenet-val falls
// from 0.060 to 0.008 levels (4.7% -> 0.8% of values differ, max 3 either way).

// libjpeg's h2v2_fancy_upsample for one output row: in_near is the chroma row
// nearest to it, in_far the other neighbour.
stbi_uc* upsample_h2v2_like_libjpeg(stbi_uc* out, stbi_uc* in_near, stbi_uc* in_far, int w,
                                    int /*hs*/) {
  if (w == 1) {  // libjpeg replicates the edge column: next = this
    const int sum = 3 * in_near[0] + in_far[0];
    out[0] = static_cast<stbi_uc>((sum * 4 + 8) >> 4);
    out[1] = static_cast<stbi_uc>((sum * 4 + 7) >> 4);
    return out;
  }
  int this_sum = 3 * in_near[0] + in_far[0];
  int next_sum = 3 * in_near[1] + in_far[1];
  out[0] = static_cast<stbi_uc>((this_sum * 4 + 8) >> 4);
  out[1] = static_cast<stbi_uc>((this_sum * 3 + next_sum + 7) >> 4);
  int last_sum = this_sum;
  this_sum = next_sum;
  for (int i = 1; i < w - 1; ++i) {
    next_sum = 3 * in_near[i + 1] + in_far[i + 1];
    out[2 * i] = static_cast<stbi_uc>((this_sum * 3 + last_sum + 8) >> 4);
    out[2 * i + 1] = static_cast<stbi_uc>((this_sum * 3 + next_sum + 7) >> 4);
    last_sum = this_sum;
    this_sum = next_sum;
  }
  out[2 * (w - 1)] = static_cast<stbi_uc>((this_sum * 3 + last_sum + 8) >> 4);
  out[2 * (w - 1) + 1] = static_cast<stbi_uc>((this_sum * 4 + 7) >> 4);
  return out;
}

// libjpeg's ycc_rgb_convert (jdcolor.c), tables built once.
struct YccTables {
  int cr_r[256], cb_b[256], cr_g[256], cb_g[256];
  YccTables() {
    constexpr int kBits = 16;
    constexpr int kHalf = 1 << (kBits - 1);
    auto fix = [](double v) { return static_cast<int>(v * (1 << kBits) + 0.5); };
    for (int i = 0; i < 256; ++i) {
      const int x = i - 128;
      cr_r[i] = (fix(1.40200) * x + kHalf) >> kBits;
      cb_b[i] = (fix(1.77200) * x + kHalf) >> kBits;
      cr_g[i] = -fix(0.71414) * x;
      cb_g[i] = -fix(0.34414) * x + kHalf;
    }
  }
};

void ycc_to_rgb_like_libjpeg(stbi_uc* out, const stbi_uc* y, const stbi_uc* cb,
                             const stbi_uc* cr, int count, int step) {
  static const YccTables t;
  auto clamp = [](int v) { return static_cast<stbi_uc>(std::min(std::max(v, 0), 255)); };
  for (int i = 0; i < count; ++i, out += step) {
    out[0] = clamp(y[i] + t.cr_r[cr[i]]);
    out[1] = clamp(y[i] + ((t.cb_g[cb[i]] + t.cr_g[cr[i]]) >> 16));
    out[2] = clamp(y[i] + t.cb_b[cb[i]]);
    if (step == 4) out[3] = 255;
  }
}

// stbi__jpeg_load with the two kernels swapped for libjpeg's.
stbi_uc* decode_jpeg_like_libjpeg(const uint8_t* data, int size, int* w, int* h) {
  stbi__context context;
  stbi__start_mem(&context, data, size);
  std::unique_ptr<stbi__jpeg> jpeg(new stbi__jpeg());
  jpeg->s = &context;
  stbi__setup_jpeg(jpeg.get());
  jpeg->resample_row_hv_2_kernel = upsample_h2v2_like_libjpeg;
  jpeg->YCbCr_to_RGB_kernel = ycc_to_rgb_like_libjpeg;
  int channels = 0;
  return load_jpeg_image(jpeg.get(), w, h, &channels, 3);
}

constexpr int kPrecisionBits = 32 - 8 - 2;  // PIL: 8-bit result, 2 bits of headroom

double bilinear_filter(double x) {
  x = std::fabs(x);
  return x < 1.0 ? 1.0 - x : 0.0;
}

double bicubic_filter(double x) {
  constexpr double a = -0.5;  // PIL's choice (torch's bicubic uses -0.75)
  x = std::fabs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

// PIL's precompute_coeffs and normalize_coeffs_8bpc for an axis of in -> out.
void precompute_axis(int in, int out, Interp interp, Resampler::Axis& axis) {
  if (axis.in == in && axis.out == out && axis.interp == interp) return;
  double (*filter)(double) = interp == Interp::Bicubic ? bicubic_filter : bilinear_filter;
  const double support_base = interp == Interp::Bicubic ? 2.0 : 1.0;
  const double scale = static_cast<double>(in) / out;
  const double filter_scale = std::max(scale, 1.0);
  const double support = support_base * filter_scale;
  const int taps = static_cast<int>(std::ceil(support)) * 2 + 1;

  axis.in = in;
  axis.out = out;
  axis.interp = interp;
  axis.taps = taps;
  axis.first.assign(out, 0);
  axis.count.assign(out, 0);
  axis.coeffs.assign(static_cast<size_t>(out) * taps, 0);
  std::vector<double> weights(taps);
  for (int o = 0; o < out; ++o) {
    const double center = (o + 0.5) * scale;
    const double inv_filter_scale = 1.0 / filter_scale;
    // PIL truncates center -/+ support + 0.5 towards zero.
    const int lo = std::max(static_cast<int>(center - support + 0.5), 0);
    const int hi = std::min(static_cast<int>(center + support + 0.5), in);
    const int count = hi - lo;
    double sum = 0.0;
    for (int t = 0; t < count; ++t) {
      weights[t] = filter((t + lo - center + 0.5) * inv_filter_scale);
      sum += weights[t];
    }
    int32_t* k = &axis.coeffs[static_cast<size_t>(o) * taps];
    for (int t = 0; t < count; ++t) {
      const double w = sum != 0.0 ? weights[t] / sum : weights[t];
      const double fixed = w * (1 << kPrecisionBits);
      k[t] = static_cast<int32_t>(w < 0 ? -0.5 + fixed : 0.5 + fixed);
    }
    axis.first[o] = lo;
    axis.count[o] = count;
  }
}

uint8_t clip8(int32_t acc) {
  const int32_t v = acc >> kPrecisionBits;  // arithmetic shift, as PIL's lookup index
  return static_cast<uint8_t>(std::min(std::max(v, 0), 255));
}

// Horizontal pass over rows [y0, y0 + rows) of src into dst (out_w x rows).
void resample_rows(const Image& src, int y0, int rows, const Resampler::Axis& ax, Image& dst) {
  dst.reset(ax.out, rows);
  for (int y = 0; y < rows; ++y) {
    const uint8_t* in = src.row(y0 + y);
    uint8_t* out = dst.row(y);
    for (int o = 0; o < ax.out; ++o) {
      const int32_t* k = &ax.coeffs[static_cast<size_t>(o) * ax.taps];
      const uint8_t* p = in + static_cast<size_t>(ax.first[o]) * 3;
      int32_t acc[3] = {1 << (kPrecisionBits - 1), 1 << (kPrecisionBits - 1),
                        1 << (kPrecisionBits - 1)};
      for (int t = 0; t < ax.count[o]; ++t) {
        for (int c = 0; c < 3; ++c) acc[c] += p[t * 3 + c] * k[t];
      }
      for (int c = 0; c < 3; ++c) out[o * 3 + c] = clip8(acc[c]);
    }
  }
}

// Vertical pass: src rows are the input rows starting at `row_offset`.
void resample_columns(const Image& src, int row_offset, const Resampler::Axis& ax, Image& dst) {
  dst.reset(src.width, ax.out);
  const size_t stride = static_cast<size_t>(src.width) * 3;
  for (int o = 0; o < ax.out; ++o) {
    const int32_t* k = &ax.coeffs[static_cast<size_t>(o) * ax.taps];
    const uint8_t* base = src.row(ax.first[o] - row_offset);
    uint8_t* out = dst.row(o);
    for (size_t i = 0; i < stride; ++i) {
      int32_t acc = 1 << (kPrecisionBits - 1);
      for (int t = 0; t < ax.count[o]; ++t) acc += base[t * stride + i] * k[t];
      out[i] = clip8(acc);
    }
  }
}

// PIL's NEAREST resize (ImagingScaleAffine): the source position starts at half a
// step and is advanced by repeated addition, which rounds differently from
// (o + 0.5) * step at exact pixel boundaries, so the sums are replicated.
void nearest_indices(int in, int out, std::vector<int>& index) {
  const double step = static_cast<double>(in) / out;
  index.resize(out);
  double pos = step * 0.5;
  for (int o = 0; o < out; ++o, pos += step) index[o] = std::min(static_cast<int>(pos), in - 1);
}

void resize_nearest(const Image& src, int out_w, int out_h, std::vector<int>& xs,
                    std::vector<int>& ys, Image& dst) {
  nearest_indices(src.width, out_w, xs);
  nearest_indices(src.height, out_h, ys);
  dst.reset(out_w, out_h);
  for (int y = 0; y < out_h; ++y) {
    const uint8_t* in = src.row(ys[y]);
    uint8_t* out = dst.row(y);
    for (int x = 0; x < out_w; ++x) std::memcpy(out + x * 3, in + xs[x] * 3, 3);
  }
}

// Crop or zero-pad offset of a centred window of `crop` in `size` (torchvision's
// center_crop: pad (crop - size) // 2 on the leading side when the image is
// smaller, else start at int(round((size - crop) / 2.0)) with Python's
// round-half-to-even).
int center_offset(int size, int crop) {
  if (crop > size) return -((crop - size) / 2);
  return static_cast<int>(std::nearbyint((size - crop) / 2.0));
}

// out[c] = (v * input_scale - mean[c]) / std[c] for every byte value v.
struct NormaliseTable {
  float value[3][256];
  NormaliseTable(const float mean[3], const float std[3], float input_scale) {
    for (int c = 0; c < 3; ++c) {
      for (int v = 0; v < 256; ++v) value[c][v] = (v * input_scale - mean[c]) / std[c];
    }
  }
};

void check_output(const Tensor& out, int size, const char* what) {
  const Shape chw{3, size, size}, nchw{1, 3, size, size};
  check(out.dtype == DType::F32 && (out.shape == chw || out.shape == nchw), ErrorKind::Shape,
        what, " preprocessing: input tensor is ", dtype_name(out.dtype), " ", out.shape.str(),
        ", expected f32 [1, 3, ", size, ", ", size, "]");
  check(out.data != nullptr, ErrorKind::Argument, what, " preprocessing: input tensor has no data");
}

}  // namespace

namespace {

// stb_image 2.27 (Debian 12's) writes past its Huffman table when a JPEG's DHT
// segment declares more than 256 codes (found by scripts/fuzz.sh; upstream 2.28
// checks it). Such files are refused here, before stb sees them, by walking the
// marker segments, those between the scans of a progressive JPEG included.
void check_jpeg_huffman_tables(const uint8_t* d, size_t size, const std::string& name) {
  size_t i = 2;  // after SOI
  while (i + 4 <= size) {
    if (d[i] != 0xFF) {  // entropy-coded data: on to the next marker
      ++i;
      continue;
    }
    const uint8_t marker = d[i + 1];
    if (marker == 0xFF) {  // fill byte
      ++i;
      continue;
    }
    if (marker == 0x00 || marker == 0x01 || (marker >= 0xD0 && marker <= 0xD7)) {
      i += 2;  // stuffed 0xFF in scan data, TEM, RSTn: no length field
      continue;
    }
    if (marker == 0xD9) return;  // EOI
    const size_t end = i + 2 + ((size_t{d[i + 2]} << 8) | d[i + 3]);
    if (marker == 0xC4) {  // DHT: tables of class/id, 16 counts, then the symbols
      // stb reads bytes past the end of a truncated file as zeros, so do the same.
      for (size_t t = i + 4; t < std::min(end, size);) {
        int codes = 0;
        for (size_t c = 1; c <= 16; ++c) codes += t + c < size ? d[t + c] : 0;
        check(codes <= 256, ErrorKind::Malformed, "image '", name,
              "' is a corrupt JPEG: a Huffman table declares ", codes, " codes (at most 256)");
        t += 17 + static_cast<size_t>(codes);
      }
    }
    i = end;
  }
}

}  // namespace

Image decode_image(const uint8_t* data, size_t size, const std::string& name) {
  check(size > 0, ErrorKind::Malformed, "image '", name, "' is empty");
  check(size <= static_cast<size_t>(INT32_MAX), ErrorKind::Malformed, "image '", name,
        "' is too large (", size, " bytes)");
  int w = 0, h = 0, channels = 0;
  const bool jpeg = size >= 2 && data[0] == 0xFF && data[1] == 0xD8;
  if (jpeg) check_jpeg_huffman_tables(data, size, name);
  stbi_uc* pixels =
      jpeg ? decode_jpeg_like_libjpeg(data, static_cast<int>(size), &w, &h)
           : stbi_load_from_memory(data, static_cast<int>(size), &w, &h, &channels, 3);
  if (pixels == nullptr) {
    fail(ErrorKind::Malformed, "image '", name, "' cannot be decoded: ", stbi_failure_reason());
  }
  Image img;
  if (w > 0 && h > 0) {
    img.reset(w, h);
    std::memcpy(img.pixels.data(), pixels, img.pixels.size());
  }
  stbi_image_free(pixels);
  check(w > 0 && h > 0, ErrorKind::Malformed, "image '", name, "' has zero size (", w, "x", h,
        ")");
  return img;
}

Image load_image(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  check(f.good(), ErrorKind::Io, "cannot open image '", path, "': ", std::strerror(errno));
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  check(!f.bad(), ErrorKind::Io, "cannot read image '", path, "'");
  return decode_image(bytes.data(), bytes.size(), path);
}

const char* interp_name(Interp i) {
  switch (i) {
    case Interp::Nearest: return "nearest";
    case Interp::Bilinear: return "bilinear";
    case Interp::Bicubic: return "bicubic";
  }
  return "?";
}

Interp parse_interp(const std::string& s) {
  for (Interp i : {Interp::Nearest, Interp::Bilinear, Interp::Bicubic}) {
    if (s == interp_name(i)) return i;
  }
  fail(ErrorKind::Argument, "unknown interpolation '", s, "' (nearest, bilinear or bicubic)");
}

void Resampler::resize(const Image& src, int out_w, int out_h, Interp interp, Image& dst) {
  check(out_w > 0 && out_h > 0, ErrorKind::Argument, "resize to ", out_w, "x", out_h,
        ": sizes must be positive");
  check(src.width > 0 && src.height > 0, ErrorKind::Argument, "resize of an empty image");
  check(&src != &dst, ErrorKind::Argument, "resize: source and destination are the same image");
  if (out_w == src.width && out_h == src.height) {  // PIL returns a copy
    dst = src;
    return;
  }
  if (interp == Interp::Nearest) {
    resize_nearest(src, out_w, out_h, nearest_x_, nearest_y_, dst);
    return;
  }
  // As ImagingResampleInner: only the rows the vertical pass reads are resampled
  // horizontally, and a pass whose size does not change is skipped.
  precompute_axis(src.height, out_h, interp, vertical_);
  const bool need_horizontal = out_w != src.width;
  const bool need_vertical = out_h != src.height;
  if (need_horizontal) {
    precompute_axis(src.width, out_w, interp, horizontal_);
    const int first_row = vertical_.first[0];
    const int last_row = vertical_.first[out_h - 1] + vertical_.count[out_h - 1];
    if (!need_vertical) {
      resample_rows(src, 0, src.height, horizontal_, dst);
      return;
    }
    resample_rows(src, first_row, last_row - first_row, horizontal_, temp_);
    resample_columns(temp_, first_row, vertical_, dst);
    return;
  }
  resample_columns(src, 0, vertical_, dst);
}

void resize_shorter_side(int width, int height, int shorter, int* out_w, int* out_h) {
  check(shorter > 0, ErrorKind::Argument, "resize: shorter side must be positive, got ", shorter);
  const int short_side = std::min(width, height), long_side = std::max(width, height);
  // torchvision: int(requested_new_short * long / short), a float division truncated.
  const int new_long =
      static_cast<int>(static_cast<double>(shorter) * long_side / short_side);
  *out_w = width <= height ? shorter : new_long;
  *out_h = width <= height ? new_long : shorter;
}

void Preprocessor::classify(const Image& img, const ClassifyPreprocess& p, float* out) {
  check(p.crop > 0 && p.resize > 0, ErrorKind::Argument, "classify preprocessing: resize ",
        p.resize, " and crop ", p.crop, " must be positive");
  int w = 0, h = 0;
  resize_shorter_side(img.width, img.height, p.resize, &w, &h);
  resampler_.resize(img, w, h, p.interp, resized_);
  const int top = center_offset(h, p.crop), left = center_offset(w, p.crop);
  const NormaliseTable table(p.mean, p.std, p.input_scale);
  const size_t plane = static_cast<size_t>(p.crop) * p.crop;
  for (int y = 0; y < p.crop; ++y) {
    const int sy = y + top;
    for (int x = 0; x < p.crop; ++x) {
      const int sx = x + left;
      const bool inside = sy >= 0 && sy < h && sx >= 0 && sx < w;
      // torchvision pads a too-small image with black before ToTensor.
      static const uint8_t kBlack[3] = {0, 0, 0};
      const uint8_t* px = inside ? resized_.row(sy) + sx * 3 : kBlack;
      const size_t i = static_cast<size_t>(y) * p.crop + x;
      for (int c = 0; c < 3; ++c) out[c * plane + i] = table.value[c][px[c]];
    }
  }
}

void Preprocessor::classify(const Image& img, const ClassifyPreprocess& p, Tensor& out) {
  check_output(out, p.crop, "classify");
  classify(img, p, out.f32());
}

Letterbox Preprocessor::detect(const Image& img, const DetectPreprocess& p, float* out) {
  check(p.target > 0, ErrorKind::Argument, "detect preprocessing: target ", p.target,
        " must be positive");
  Letterbox box;
  box.image_width = img.width;
  box.image_height = img.height;
  // effdet computes in Python floats (double) and truncates with int().
  box.scale = std::min(static_cast<double>(p.target) / img.height,
                       static_cast<double>(p.target) / img.width);
  box.scaled_height = std::max(static_cast<int>(img.height * box.scale), 1);
  box.scaled_width = std::max(static_cast<int>(img.width * box.scale), 1);
  resampler_.resize(img, box.scaled_width, box.scaled_height, p.interp, resized_);

  const NormaliseTable table(p.mean, p.std, p.input_scale);
  const size_t plane = static_cast<size_t>(p.target) * p.target;
  for (int y = 0; y < p.target; ++y) {
    for (int x = 0; x < p.target; ++x) {
      const bool inside = y < box.scaled_height && x < box.scaled_width;
      const uint8_t* px = inside ? resized_.row(y) + x * 3 : p.fill;
      const size_t i = static_cast<size_t>(y) * p.target + x;
      for (int c = 0; c < 3; ++c) out[c * plane + i] = table.value[c][px[c]];
    }
  }
  return box;
}

Letterbox Preprocessor::detect(const Image& img, const DetectPreprocess& p, Tensor& out) {
  check_output(out, p.target, "detect");
  return detect(img, p, out.f32());
}

float Letterbox::to_image_x(float x) const {
  return static_cast<float>(std::min(std::max(x / scale, 0.0), static_cast<double>(image_width)));
}

float Letterbox::to_image_y(float y) const {
  return static_cast<float>(
      std::min(std::max(y / scale, 0.0), static_cast<double>(image_height)));
}

}  // namespace repshare
