#include "loaders/image.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <csetjmp>
#include <cstdint>
#include <cstdio>
#include <cstring>

#include "engine/error.h"
#include "loaders/input_file.h"

// jpeglib.h needs size_t and FILE declared first.
#include <jpeglib.h>
#include <jerror.h>

#define STB_IMAGE_IMPLEMENTATION
// PNG and PNM only: JPEG is libjpeg's (below), and the other formats are attack
// surface without use.
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

// JPEG is decoded by libjpeg(-turbo), the library PIL decodes with, set up as PIL
// sets it up (islow IDCT, fancy upsampling, RGB output), so the pixels are PIL's
// exactly; stb_image's own IDCT differed by up to 3 levels and its bit reader
// had undefined behaviour on corrupt data (scripts/fuzz.sh).
//
// libjpeg reports a fatal error by calling error_exit, which must not return.
// Throwing from it would unwind through C frames that may lack unwind tables, so
// it longjmps back to the setjmp of the JpegDecoder step that called libjpeg.
// That step holds no C++ objects with destructors; the decoder's destructor frees
// what libjpeg allocated, whichever step failed.
struct JpegErrorManager {
  jpeg_error_mgr pub;  // first: libjpeg sees a jpeg_error_mgr*
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX] = "";
  bool rows_complete = false;  // running out of data is no longer an error
};

[[noreturn]] void jpeg_error_exit(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<JpegErrorManager*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  std::longjmp(err->jump, 1);
}

// Warnings (msg_level -1) are corrupt entropy-coded data that libjpeg recovers
// from by filling in; PIL decodes such files silently, and so does this. The
// exception is running out of data before the last row: libjpeg would pad a
// truncated file with grey, where PIL (without ImageFile.LOAD_TRUNCATED_IMAGES)
// refuses it as truncated. A half-downloaded photo is an error to report, not an
// image to classify.
void jpeg_emit_message(j_common_ptr cinfo, int msg_level) {
  const auto* err = reinterpret_cast<const JpegErrorManager*>(cinfo->err);
  if (msg_level == -1 && cinfo->err->msg_code == JWRN_JPEG_EOF && !err->rows_complete) {
    jpeg_error_exit(cinfo);
  }
}

// PIL's decompression-bomb limit (2 * Image.MAX_IMAGE_PIXELS): it refuses larger
// images, and the RGB buffer stays under 540 MB.
constexpr uint64_t kMaxPixels = 2 * 89478485ull;

void check_pixel_limit(uint64_t width, uint64_t height, const std::string& name) {
  check(width == 0 || height <= kMaxPixels / width, ErrorKind::Shape, "image '", name, "' is ",
        width, "x", height, ": more than ", kMaxPixels, " pixels (PIL's decompression-bomb limit)");
}

class JpegDecoder {
 public:
  JpegDecoder() {
    // Zeroed, jpeg_destroy_decompress is a no-op should jpeg_create_decompress fail.
    std::memset(&cinfo_, 0, sizeof cinfo_);
    cinfo_.err = jpeg_std_error(&err_.pub);
    err_.pub.error_exit = jpeg_error_exit;
    err_.pub.emit_message = jpeg_emit_message;
  }
  ~JpegDecoder() { jpeg_destroy_decompress(&cinfo_); }
  JpegDecoder(const JpegDecoder&) = delete;
  JpegDecoder& operator=(const JpegDecoder&) = delete;

  // The steps return false where libjpeg failed, with message() saying why.
  bool read_header(const uint8_t* data, size_t size) {
    if (setjmp(err_.jump)) return false;
    jpeg_create_decompress(&cinfo_);
    jpeg_mem_src(&cinfo_, data, static_cast<unsigned long>(size));
    jpeg_read_header(&cinfo_, TRUE);
    // libjpeg converts YCCK to CMYK; cmyk_to_rgb_like_pil does the rest.
    const bool four_channels =
        cinfo_.jpeg_color_space == JCS_CMYK || cinfo_.jpeg_color_space == JCS_YCCK;
    cinfo_.out_color_space = four_channels ? JCS_CMYK : JCS_RGB;
    cinfo_.dct_method = JDCT_ISLOW;
    cinfo_.do_fancy_upsampling = TRUE;
    return true;
  }
  int width() const { return static_cast<int>(cinfo_.image_width); }
  int height() const { return static_cast<int>(cinfo_.image_height); }
  // The fewest 8x8 blocks a component has. Every block of a component takes at least
  // one bit of entropy-coded data (a DC code; a baseline block also an AC code), and
  // a progressive file's first scan codes one component's DCs, so a file shorter than
  // this / 8 bytes runs out before the last row: truncated, which is refused anyway.
  // Checking it first keeps a small file from making libjpeg size its buffers by a
  // header (a progressive image's coefficients: 6 bytes a pixel in 4:4:4).
  uint64_t fewest_component_blocks() const {
    uint64_t fewest = UINT64_MAX;
    for (int c = 0; c < cinfo_.num_components; ++c) {
      const jpeg_component_info& comp = cinfo_.comp_info[c];
      fewest = std::min<uint64_t>(fewest, uint64_t{comp.width_in_blocks} * comp.height_in_blocks);
    }
    return fewest;
  }

  // Decodes every row into img, sized width() x height() by the caller.
  bool read_pixels(Image& img) {
    if (setjmp(err_.jump)) return false;
    jpeg_start_decompress(&cinfo_);
    // Freed with the decompressor, so the longjmp cannot leak it.
    JSAMPARRAY cmyk_row =
        cinfo_.out_color_space == JCS_CMYK
            ? (*cinfo_.mem->alloc_sarray)(reinterpret_cast<j_common_ptr>(&cinfo_), JPOOL_IMAGE,
                                          cinfo_.output_width * 4, 1)
            : nullptr;
    while (cinfo_.output_scanline < cinfo_.output_height) {
      uint8_t* out = img.row(static_cast<int>(cinfo_.output_scanline));
      JSAMPROW row = cmyk_row ? cmyk_row[0] : out;
      jpeg_read_scanlines(&cinfo_, &row, 1);
      if (cmyk_row) cmyk_to_rgb_like_pil(cmyk_row[0], out, img.width);
    }
    // As PIL: read on to the EOI marker, failing on a corrupt marker there, but
    // accept a file that ends without one.
    err_.rows_complete = true;
    jpeg_finish_decompress(&cinfo_);
    return true;
  }

  const char* message() const { return err_.message; }

 private:
  // PIL reads 4-channel JPEGs as inverted ("CMYK;I": Adobe's convention, assumed
  // whatever the file says) and converts with Convert.c's cmyk2rgb:
  // nk - c * nk / 255, rounded by MULDIV255.
  static void cmyk_to_rgb_like_pil(const uint8_t* cmyk, uint8_t* rgb, int width) {
    for (int x = 0; x < width; ++x, cmyk += 4, rgb += 3) {
      const int nk = cmyk[3];  // 255 - (255 - stored k)
      for (int c = 0; c < 3; ++c) {
        const int t = (255 - cmyk[c]) * nk + 128;
        rgb[c] = static_cast<uint8_t>(nk - (((t >> 8) + t) >> 8));
      }
    }
  }

  jpeg_decompress_struct cinfo_;
  JpegErrorManager err_;
};

[[noreturn]] void fail_jpeg(const std::string& name, const JpegDecoder& jpeg) {
  fail(ErrorKind::Malformed, "image '", name, "' cannot be decoded as JPEG: ", jpeg.message());
}

Image decode_jpeg(const uint8_t* data, size_t size, const std::string& name) {
  JpegDecoder jpeg;
  if (!jpeg.read_header(data, size)) fail_jpeg(name, jpeg);
  // libjpeg itself refuses a zero width or height.
  check_pixel_limit(jpeg.width(), jpeg.height(), name);
  const uint64_t least_bytes = jpeg.fewest_component_blocks() / 8;
  check(size >= least_bytes, ErrorKind::Malformed, "image '", name, "' is truncated: its ",
        jpeg.width(), "x", jpeg.height(), " pixels take at least ", least_bytes,
        " bytes of JPEG data, more than its ", size, " bytes");
  Image img;
  img.reset(jpeg.width(), jpeg.height());
  if (!jpeg.read_pixels(img)) fail_jpeg(name, jpeg);
  return img;
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

// Vertical pass: src rows are the input rows starting at `row_offset`. Whole rows
// at a time (tap by tap into a row of sums), so the compiler vectorises along the
// row; each sum still adds its taps in order, as PIL does: the same bytes.
void resample_columns(const Image& src, int row_offset, const Resampler::Axis& ax,
                      std::vector<int32_t>& sums, Image& dst) {
  dst.reset(src.width, ax.out);
  const size_t stride = static_cast<size_t>(src.width) * 3;
  sums.resize(stride);
  int32_t* acc = sums.data();
  for (int o = 0; o < ax.out; ++o) {
    const int32_t* k = &ax.coeffs[static_cast<size_t>(o) * ax.taps];
    const uint8_t* base = src.row(ax.first[o] - row_offset);
    std::fill(acc, acc + stride, 1 << (kPrecisionBits - 1));
    for (int t = 0; t < ax.count[o]; ++t) {
      const uint8_t* in = base + t * stride;
      const int32_t weight = k[t];
      for (size_t i = 0; i < stride; ++i) acc[i] += in[i] * weight;
    }
    uint8_t* out = dst.row(o);
    for (size_t i = 0; i < stride; ++i) out[i] = clip8(acc[i]);
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

// JPEG by its SOI marker and the next marker's 0xFF, whatever the file is called.
bool is_jpeg(const uint8_t* data, size_t size) {
  return size >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF;
}

// What stb_image reads: not empty, and a size its int parameters hold.
void check_stb_input(size_t size, const std::string& name) {
  check(size > 0, ErrorKind::Malformed, "image '", name, "' is empty");
  check(size <= static_cast<size_t>(INT32_MAX), ErrorKind::Malformed, "image '", name,
        "' is too large (", size, " bytes)");
}

// Binary PGM/PPM (P5/P6) holds width * height samples after its header. The
// stb_image this builds with decodes a file cut short without a word, from memory
// past what it read; a cut file is an error, as a cut JPEG is.
void check_pnm_complete(const uint8_t* data, size_t size, const std::string& name) {
  if (size < 2 || data[0] != 'P' || (data[1] != '5' && data[1] != '6')) return;
  size_t at = 2;
  uint64_t fields[3] = {};  // width, height, maxval
  for (uint64_t& field : fields) {
    for (;;) {  // white space and # comments to the end of their line
      while (at < size && std::isspace(data[at])) ++at;
      if (at >= size || data[at] != '#') break;
      while (at < size && data[at] != '\n') ++at;
    }
    if (at >= size || !std::isdigit(data[at])) return;  // stb_image reports a bad header
    while (at < size && std::isdigit(data[at]) && field < (uint64_t{1} << 32))
      field = field * 10 + (data[at++] - '0');
  }
  // stb_image refuses sides over 2^24 itself; below that the sizes cannot overflow.
  if (fields[0] > (1u << 24) || fields[1] > (1u << 24)) return;
  check_pixel_limit(fields[0], fields[1], name);
  ++at;  // the one white-space character before the samples
  const uint64_t samples = fields[0] * fields[1] * (data[1] == '6' ? 3 : 1);
  const uint64_t needed = samples * (fields[2] > 255 ? 2 : 1);
  const uint64_t have = at < size ? size - at : 0;
  check(have >= needed, ErrorKind::Malformed, "image '", name, "' is truncated: ", have, " of ",
        needed, " bytes of pixel data");
}

// PNG is its signature, then chunks of [length, type, data, CRC]. This stb_image
// sizes its buffers by what a file claims before reading it: a 5 KB file whose IDAT
// chunk claimed 2 GiB had it allocate 2 GiB (scripts/fuzz.sh), and a header claiming
// 20000 x 20000 pixels over a few bytes of data would have it allocate the image. So
// a chunk that runs past the end of the file is refused here, as are more pixels than
// PIL's limit or than the file's compressed data can hold (deflate expands at most
// 1032 times).
void check_png_complete(const uint8_t* data, size_t size, const std::string& name) {
  static const uint8_t kSignature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  if (size < 8 || std::memcmp(data, kSignature, 8) != 0) return;
  auto be32 = [data](size_t at) {
    return uint64_t{data[at]} << 24 | uint64_t{data[at + 1]} << 16 | uint64_t{data[at + 2]} << 8 |
           uint64_t{data[at + 3]};
  };
  uint64_t width = 0, height = 0, bits_per_pixel = 0, compressed = 0;
  for (size_t at = 8; size - at >= 8;) {
    const uint64_t length = be32(at);
    const std::string type(reinterpret_cast<const char*>(data + at + 4), 4);
    // The chunk's data and CRC must fit (IEND's CRC, which nothing reads, may be cut).
    const uint64_t after_header = size - at - 8, crc = type == "IEND" ? 0 : 4;
    check(length + crc <= after_header, ErrorKind::Malformed, "image '", name,
          "' is truncated: its chunk '", type, "' at byte ", at, " claims ", length,
          " bytes and a CRC; ", after_header, " bytes remain");
    if (type == "IHDR" && length >= 13) {
      width = be32(at + 8);
      height = be32(at + 12);
      const int depth = data[at + 16], color = data[at + 17];
      const int channels[7] = {1, 0, 3, 1, 2, 0, 4};  // by colour type; 0: not PNG's
      bits_per_pixel = color <= 6 ? uint64_t(depth) * channels[color] : 0;
      check_pixel_limit(width, height, name);
    }
    if (type == "IDAT") compressed += length;
    if (type == "IEND") break;
    at += 12 + length;
  }
  const uint64_t pixel_bytes = (width * height * bits_per_pixel + 7) / 8;
  check(pixel_bytes <= 1032 * compressed || compressed == 0, ErrorKind::Malformed, "image '", name,
        "' is truncated: its ", width, "x", height, " pixels take ", pixel_bytes,
        " bytes, more than its ", compressed, " bytes of compressed data can hold");
}

// The file's bytes as the decoders take them (no copy of the file).
const uint8_t* as_bytes(const std::string& file) {
  return reinterpret_cast<const uint8_t*>(file.data());
}

}  // namespace

Image decode_image(const uint8_t* data, size_t size, const std::string& name) {
  if (is_jpeg(data, size)) return decode_jpeg(data, size, name);
  check_stb_input(size, name);
  check_png_complete(data, size, name);
  check_pnm_complete(data, size, name);
  int w = 0, h = 0, channels = 0;
  stbi_uc* pixels = stbi_load_from_memory(data, static_cast<int>(size), &w, &h, &channels, 3);
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
  const std::string file = read_input_file(path, "image");
  return decode_image(as_bytes(file), file.size(), path);
}

ImageSize read_image_size(const std::string& path) {
  const std::string file = read_input_file(path, "image");
  const uint8_t* bytes = as_bytes(file);
  ImageSize size;
  if (is_jpeg(bytes, file.size())) {
    JpegDecoder jpeg;
    if (!jpeg.read_header(bytes, file.size())) fail_jpeg(path, jpeg);
    size.width = jpeg.width();
    size.height = jpeg.height();
    return size;
  }
  check_stb_input(file.size(), path);
  int channels = 0;
  if (!stbi_info_from_memory(bytes, static_cast<int>(file.size()), &size.width, &size.height,
                             &channels)) {
    fail(ErrorKind::Malformed, "image '", path, "' cannot be decoded: ", stbi_failure_reason());
  }
  return size;
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
    resample_columns(temp_, first_row, vertical_, sums_, dst);
    return;
  }
  resample_columns(src, 0, vertical_, sums_, dst);
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
