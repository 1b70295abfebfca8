// libFuzzer target: arbitrary bytes as an ONNX model file through everything
// `repshare inspect` and a first run do with it: protobuf parse, graph checks,
// shape inference, constant folding, fusions, executor planning and one run on
// a zero input. Every failure must be a repshare::Error; anything else (a crash,
// a sanitizer report, another exception, a huge allocation) is a finding.
// Built and run by scripts/fuzz.sh.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>

#include "engine/error.h"
#include "engine/session.h"
#include "kernels/cpu/cpu_backend.h"

namespace {

std::string model_path() {
  static const std::string path = "/dev/shm/repshare_fuzz_" + std::to_string(getpid()) + ".onnx";
  return path;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace repshare;
  {
    std::FILE* f = std::fopen(model_path().c_str(), "wb");
    if (!f) return 0;
    std::fwrite(data, 1, size, f);
    std::fclose(f);
  }
  try {
    Model m = load_model(model_path());
    // Running is only tried on small graphs: the fuzzer should find crashes, not
    // spend its time in large convolutions.
    int64_t elements = 0;
    for (const Value& v : m.graph.values)
      if (v.shape_known) elements += v.shape.numel();
    if (elements > (int64_t{1} << 20)) return 0;
    CpuBackend cpu(1);
    Session s(m, cpu);
    s.run();
  } catch (const Error&) {
    // A named error is the expected outcome for most inputs.
  }
  return 0;
}
