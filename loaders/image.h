// Images: decoding (libjpeg for JPEG, stb_image for PNG and PNM) and the
// preprocessing the reference pipelines apply.
//
// The models were evaluated in PyTorch with PIL images, so the resampling here is
// PIL's (Pillow's libImaging/Resample.c): a separable convolution whose filter
// support grows with the downscale factor (antialiasing), fixed-point coefficients,
// a horizontal then a vertical pass, and 8-bit rounding and clipping after each
// pass. Matching it pixel for pixel matters more than any "better" resize: the
// classifiers' top-1 must agree with the PyTorch reference.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace repshare {

// 8-bit RGB, rows top to bottom, pixels interleaved (HWC).
struct Image {
  int width = 0;
  int height = 0;
  std::vector<uint8_t> pixels;  // width * height * 3

  void reset(int w, int h) {
    width = w;
    height = h;
    pixels.resize(static_cast<size_t>(w) * h * 3);
  }
  uint8_t* row(int y) { return pixels.data() + static_cast<size_t>(y) * width * 3; }
  const uint8_t* row(int y) const { return pixels.data() + static_cast<size_t>(y) * width * 3; }
};

// Decodes a JPEG or PNG file (or binary PPM/PGM) to RGB, telling them apart by
// their first bytes. JPEG pixels are PIL's exactly (the same libjpeg, set up the
// same way). Grey, grey+alpha and CMYK images are converted and alpha is
// dropped, as PIL's convert("RGB") does. Throws Io for a missing/unreadable file,
// Malformed for an empty, truncated or corrupt one (a PNG chunk or header claiming
// more than the file holds among them) and Shape for an image over PIL's
// decompression-bomb limit, naming the file.
Image load_image(const std::string& path);
// Same from bytes in memory; `name` is used in error messages.
Image decode_image(const uint8_t* data, size_t size, const std::string& name);

// Width and height from the file's header alone, as PIL's Image.open(path).size;
// throws as load_image does where the header cannot be read.
struct ImageSize {
  int width = 0;
  int height = 0;
};
ImageSize read_image_size(const std::string& path);

enum class Interp : uint8_t { Nearest, Bilinear, Bicubic };
const char* interp_name(Interp i);
// "nearest", "bilinear", "bicubic"; throws Argument otherwise.
Interp parse_interp(const std::string& s);

// PIL's Image.resize(size, filter) for RGB images. Keeps its coefficient tables and
// intermediate rows between calls, so resizing many images of one size allocates
// only on the first.
class Resampler {
 public:
  void resize(const Image& src, int out_w, int out_h, Interp interp, Image& dst);

  // One axis' filter taps: output i reads `count[i]` inputs from `first[i]` with
  // fixed-point weights coeffs[i * taps ...] (PIL's precompute_coeffs + normalise).
  struct Axis {
    int in = 0, out = 0;
    Interp interp = Interp::Nearest;
    int taps = 0;
    std::vector<int> first, count;
    std::vector<int32_t> coeffs;
  };

 private:
  Axis horizontal_, vertical_;
  std::vector<int> nearest_x_, nearest_y_;
  std::vector<int32_t> sums_;  // the vertical pass's row of sums
  Image temp_;
};

// torchvision's eval transform for classifiers:
//   Resize(resize, interp) -> CenterCrop(crop) -> ToTensor -> Normalize(mean, std)
// with ToTensor's 1/255 generalised as input_scale (EfficientNet-Lite's TF export
// wants raw 0..255 values with mean 127, std 128: input_scale 1).
struct ClassifyPreprocess {
  int resize = 256;  // shorter side after resizing
  int crop = 224;
  Interp interp = Interp::Bicubic;
  float mean[3] = {0.485f, 0.456f, 0.406f};
  float std[3] = {0.229f, 0.224f, 0.225f};
  float input_scale = 1.f / 255.f;
};

// effdet's transforms_coco_eval (ResizePad) followed by its prefetcher's
// normalisation: scale = min(target/h, target/w), resize to
// (int(h*scale), int(w*scale)) (truncated, as effdet does), paste at the top-left
// of a target x target canvas filled with fill (effdet: the mean colour,
// round(255*mean)).
struct DetectPreprocess {
  int target = 512;
  Interp interp = Interp::Bilinear;
  uint8_t fill[3] = {124, 116, 104};
  float mean[3] = {0.485f, 0.456f, 0.406f};
  float std[3] = {0.229f, 0.224f, 0.225f};
  float input_scale = 1.f / 255.f;
};

// Where the image sits in the letterboxed input.
struct Letterbox {
  double scale = 1.0;  // input pixels per image pixel
  int image_width = 0, image_height = 0;
  int scaled_width = 0, scaled_height = 0;
  // Maps a coordinate in the network input back to the image, clipped to it.
  float to_image_x(float x) const;
  float to_image_y(float y) const;
};

// Runs the preprocessing into a caller's buffer (a host view of the engine's input
// tensor). Holds its scratch images so repeated calls do not allocate.
class Preprocessor {
 public:
  // Writes [3, crop, crop] floats (CHW) at out.
  void classify(const Image& img, const ClassifyPreprocess& p, float* out);
  // out must be F32 with shape [3, crop, crop] or [1, 3, crop, crop], in host memory.
  void classify(const Image& img, const ClassifyPreprocess& p, Tensor& out);
  // Writes [3, target, target] floats.
  Letterbox detect(const Image& img, const DetectPreprocess& p, float* out);
  Letterbox detect(const Image& img, const DetectPreprocess& p, Tensor& out);

 private:
  Resampler resampler_;
  Image resized_;
};

// Size torchvision's Resize(int) gives: the shorter side becomes `shorter`, the
// longer int(shorter * long / short).
void resize_shorter_side(int width, int height, int shorter, int* out_w, int* out_h);

}  // namespace repshare
