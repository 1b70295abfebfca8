// libFuzzer target: arbitrary bytes as the other files users hand repshare: an
// image (libjpeg or stb_image behind decode_image, then both preprocessings), a .npy
// feature file (header parse, then every block read `repshare cka` would do), a plan
// (`repshare run --plan`, `mem`) and a model's sidecar MODEL.json (read beside the
// tiny detector fixture, then the classification and detection settings and anchors
// taken from it). Every failure must be a repshare::Error. Built and run by
// scripts/fuzz.sh, from the repository root.
#include <algorithm>
#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

#include "engine/error.h"
#include "engine/model.h"
#include "loaders/image.h"
#include "loaders/npy.h"
#include "merge/plan.h"
#include "tasks/classification.h"
#include "tasks/detection.h"
#include "tests/fuzz/scratch_file.h"

namespace {

using repshare::ScratchFile;

// A copy of the tiny detector fixture, whose sidecar the input becomes (null when
// the fixture is not found).
const ScratchFile* sidecar_model() {
  static const ScratchFile copy("_model.onnx");
  static const bool copied = [] {
    std::ifstream in("tests/fixtures/tiny_detector/model.onnx", std::ios::binary);
    if (!in.good()) return false;
    std::ofstream(copy.path(), std::ios::binary) << in.rdbuf();
    return true;
  }();
  return copied ? &copy : nullptr;
}

void read_as_sidecar(const uint8_t* data, size_t size) {
  using namespace repshare;
  const ScratchFile* onnx = sidecar_model();
  if (!onnx) return;
  static const ScratchFile sidecar("_model.json");  // sidecar_path(onnx->path())
  if (!sidecar.write(data, size)) return;
  try {
    const Model m = load_model(onnx->path());
    classify_preprocess_for(m.info);
    detect_preprocess_for(m.info);
    const DetectionConfig config = detection_config_for(m.info);
    // Anchors only for moderate configurations: correct but slow otherwise.
    if (config.num_levels() <= 8 && config.image_height <= 2048 && config.image_width <= 2048)
      generate_anchors(config);
  } catch (const Error&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace repshare;
  try {
    parse_plan(std::string(reinterpret_cast<const char*>(data), size), "/nonexistent",
               "fuzz input");
  } catch (const Error&) {
  }
  read_as_sidecar(data, size);
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
  static const ScratchFile npy(".npy");
  if (!npy.write(data, size)) return 0;
  try {
    NpyReader r(npy.path());
    if (r.rows() * r.cols() <= (1 << 20) && r.cols() > 0) {
      std::vector<double> block(r.rows() * r.cols());
      r.read_block(0, r.rows(), 0, r.cols(), block.data());
      if (r.cols() > 1) r.read_block(0, r.rows(), 1, r.cols(), block.data());
    }
  } catch (const Error&) {
  }
  return 0;
}
