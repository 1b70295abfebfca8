// libFuzzer target: arbitrary bytes as the other files users hand repshare: an
// image (libjpeg or stb_image behind decode_image, then both preprocessings) and a .npy
// feature file (header parse, then every block read `repshare cka` would do).
// Every failure must be a repshare::Error. Built and run by scripts/fuzz.sh.
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "engine/error.h"
#include "loaders/image.h"
#include "loaders/npy.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace repshare;
  try {
    Image img = decode_image(data, size, "fuzz input");
    // Preprocessing is tried on moderate images: an extreme aspect ratio (97 x 34377
    // was one) resizes to tens of megapixels, which is correct but slow under ASan.
    const int64_t lo = std::min(img.width, img.height), hi = std::max(img.width, img.height);
    if (static_cast<int64_t>(img.width) * img.height <= (1 << 22) && hi <= 16 * lo) {
      Preprocessor pre;
      std::vector<float> out(3 * 224 * 224);
      pre.classify(img, ClassifyPreprocess(), out.data());
      DetectPreprocess det;
      det.target = 64;
      std::vector<float> letterbox(3 * 64 * 64);
      pre.detect(img, det, letterbox.data());
    }
  } catch (const Error&) {
  }
  static const std::string npy = "/dev/shm/repshare_fuzz_" + std::to_string(getpid()) + ".npy";
  if (std::FILE* f = std::fopen(npy.c_str(), "wb")) {
    std::fwrite(data, 1, size, f);
    std::fclose(f);
  }
  try {
    NpyReader r(npy);
    if (r.rows() * r.cols() <= (1 << 20) && r.cols() > 0) {
      std::vector<double> block(r.rows() * r.cols());
      r.read_block(0, r.rows(), 0, r.cols(), block.data());
      if (r.cols() > 1) r.read_block(0, r.rows(), 1, r.cols(), block.data());
    }
  } catch (const Error&) {
  }
  return 0;
}
