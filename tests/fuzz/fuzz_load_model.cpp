// libFuzzer target: arbitrary bytes as an ONNX model file through everything
// `repshare inspect` and a first run do with it: protobuf parse, graph checks,
// shape inference, constant folding, fusions, executor planning and one run on
// a zero input. Every failure must be a repshare::Error; anything else (a crash,
// a sanitizer report, another exception, a huge allocation) is a finding.
// Built and run by scripts/fuzz.sh.
#include <cstdint>

#include "engine/error.h"
#include "engine/session.h"
#include "kernels/cpu/cpu_backend.h"
#include "tests/fuzz/scratch_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace repshare;
  static const ScratchFile model(".onnx");
  if (!model.write(data, size)) return 0;
  try {
    Model m = load_model(model.path());
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
