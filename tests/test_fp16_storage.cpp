// fp16 mode above the kernels, on the CPU: Fp16StorageCpuBackend stores float
// tensors as fp16 like `--backend cuda --precision fp16`, so the executor's part
// (weights converted once, conversion steps at the edges, F32 for callers, arenas
// half the size) and what fp16 storage does to whole models is tested here
// without a GPU. tests/test_backend_models.cpp compares CUDA's fp16 mode with it.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <random>
#include <string>

#include "engine/backend_registry.h"
#include "engine/error.h"
#include "engine/half.h"
#include "engine/session.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/fp16_storage_backend.h"
#include "merge/sharing.h"
#include "tests/exported_models.h"
#include "tests/toy_model.h"

namespace repshare {
namespace {

Model toy() {
  return toy_model("toy", 1.f, Shape{1, 3, 9, 11},
                   {{"stem", 5, 3, 2}, {"s1", 7, 3, 1}, {"s2", 6, 1, 1}}, 10);
}

void fill(float* x, int64_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> normal;
  for (int64_t i = 0; i < n; ++i) x[i] = normal(gen);
}

TEST(Fp16Storage, CallersSeeFloat32WhileTheNetworkIsStoredAsFloat16) {
  Model m = toy();
  Fp16StorageCpuBackend half(1);
  Session s(m, half, {"s1", "logits"});
  const Executor& ex = s.executor();
  EXPECT_EQ(s.executor().input("input").dtype, DType::F32);
  EXPECT_EQ(ex.output("s1").dtype, DType::F32);
  EXPECT_EQ(ex.output("logits").dtype, DType::F32);
  // The input is converted first; a wanted output that a later step reads (s1, a
  // stage output) right after its producer. The logits conv, read by no step,
  // stores F32 itself: no convert step, and no fp16 copy of it.
  const std::vector<std::string> names = ex.step_names();
  ASSERT_GE(names.size(), 3u);
  EXPECT_EQ(names.front(), "convert input");
  const auto s1 = std::find(names.begin(), names.end(), "s1");
  ASSERT_NE(s1, names.end());
  ASSERT_NE(s1 + 1, names.end());
  EXPECT_EQ(*(s1 + 1), "convert s1");
  EXPECT_EQ(names.back(), "logits");
  EXPECT_EQ(std::count(names.begin(), names.end(), "convert logits"), 0);
  // Every weight is stored as fp16: half the bytes of the fp32 arena.
  CpuBackend cpu(1);
  Session full(m, cpu, {"s1", "logits"});
  ASSERT_EQ(s.weights().records().size(), full.weights().records().size());
  for (size_t i = 0; i < s.weights().records().size(); ++i)
    EXPECT_EQ(s.weights().records()[i].bytes * 2, full.weights().records()[i].bytes)
        << full.weights().records()[i].tensor;
}

// Outputs a caller hands to backend kernels (a detector's, for post-processing)
// can stay in the storage: fp16, no convert step, half the bytes, the same values
// as the F32 outputs rounded to fp16.
TEST(Fp16Storage, OutputsWantedInStorageStayFloat16) {
  Model m = toy();
  Fp16StorageCpuBackend half(1);
  WeightsArena wa(half), wb(half);
  Executor f32(m.graph, half, wa, {"input"}, {"s1", "logits"});
  Executor kept(m.graph, half, wb, {"input"}, {"s1", "logits"}, Executor::Inputs::Kept,
                {"s1", "logits"});
  EXPECT_EQ(kept.output("s1").dtype, DType::F16);
  EXPECT_EQ(kept.output("logits").dtype, DType::F16);
  const std::vector<std::string> names = kept.step_names();
  EXPECT_EQ(std::count(names.begin(), names.end(), "convert s1"), 0);
  EXPECT_EQ(names.size() + 1, f32.step_names().size());  // "convert s1" only
  wa.commit();
  wb.commit();
  f32.allocate();
  kept.allocate();
  const int64_t n = f32.input("input").numel();
  fill(f32.input("input").f32(), n, 3);
  std::copy(f32.input("input").f32(), f32.input("input").f32() + n, kept.input("input").f32());
  f32.run();
  kept.run();
  for (const char* name : {"s1", "logits"}) {
    const Tensor& a = f32.output(name);
    const Tensor& b = kept.output(name);
    ASSERT_EQ(a.numel(), b.numel());
    const uint16_t* h = static_cast<const uint16_t*>(b.data);
    // s1 is converted from the same fp16 tensor; the logits conv stores F32 in
    // one and rounds to fp16 in the other.
    for (int64_t i = 0; i < a.numel(); ++i)
      EXPECT_EQ(h[i], float_to_half(a.f32()[i])) << name << " element " << i;
  }
  WeightsArena wc(half);
  EXPECT_THROW(Executor(m.graph, half, wc, {"input"}, {"logits"}, Executor::Inputs::Kept, {"s1"}),
               Error);
}

TEST(Fp16Storage, OutputsAreTheFloat32OnesWithinHalfPrecision) {
  Model m = toy();
  CpuBackend cpu(1);
  Fp16StorageCpuBackend half(1);
  Session a(m, cpu, {"s1", "logits"}), b(m, half, {"s1", "logits"});
  fill(a.host_input(), a.input_shape().numel(), 1);
  std::copy(a.host_input(), a.host_input() + a.input_shape().numel(), b.host_input());
  a.run();
  b.run();
  for (const char* name : {"s1", "logits"}) {
    const int64_t n = a.output_shape(name).numel();
    const double err = normalized_error(a.host_output(name), b.host_output(name), n);
    // fp16 keeps 11 significant bits (relative rounding <= 2^-11 = 4.9e-4 per
    // value): three layers of it, and never exact.
    EXPECT_LT(err, 3e-3) << name;
    EXPECT_GT(err, 1e-6) << name << ": fp16 storage changed nothing, so it was not used";
  }
  // The same input again gives the same output: nothing in the run loop depends on
  // a previous run.
  std::vector<float> first(b.host_output("logits"), b.host_output("logits") + 10);
  b.run();
  for (int i = 0; i < 10; ++i) EXPECT_EQ(first[i], b.host_output("logits")[i]);
}

TEST(Fp16Storage, ActivationArenaIsAboutHalf) {
  // 1x1 convs on wide maps: the activations dominate the arena.
  Model m = toy_model("wide", 1.f, Shape{1, 3, 64, 64},
                      {{"stem", 64, 1, 1}, {"s1", 96, 1, 1}, {"s2", 64, 1, 1}}, 10);
  CpuBackend cpu(1);
  Fp16StorageCpuBackend half(1);
  WeightsArena wa(cpu), wb(half);
  Executor a(m.graph, cpu, wa, {"input"}, {"logits"}), b(m.graph, half, wb, {"input"}, {"logits"});
  // The peak is s1's step: its input and output, the GEMM's scratch (planned by the
  // kernel in fp32 either way) and the F32 input kept for reruns. In fp16 the two
  // activations take half.
  const size_t input_f32 = 3 * 64 * 64 * 4, scratch = a.largest_workspace();
  EXPECT_EQ(b.largest_workspace(), scratch);
  const size_t activations_f32 = a.activation_bytes() - scratch - input_f32;
  EXPECT_LE(b.activation_bytes(), activations_f32 / 2 + scratch + input_f32 + 256);
  EXPECT_LT(b.activation_bytes(), a.activation_bytes() * 6 / 10);
}

// Three stages on an 8x8 input, for the sharing tests.
Model three_stages(const std::string& name, float scale, int64_t classes) {
  return toy_model(name, scale, Shape{1, 3, 8, 8},
                   {{"stem", 4, 3, 1}, {"s1", 6, 3, 1}, {"s2", 5, 3, 1}}, classes);
}

TEST(Fp16Storage, ReceiverSuffixRunsOnADonorStageInFloat16) {
  Model donor = three_stages("donor", 1.f, 0), receiver = three_stages("receiver", 1.f, 0);
  Fp16StorageCpuBackend half(1);
  WeightsArena weights(half);
  Executor d(donor.graph, half, weights, {"input"}, {"stem", "s1", "s2", "logits"});
  ReceiverSuffix r(donor, receiver, 1, 1, AdapterOptions(), half, weights);
  weights.commit();
  d.allocate();
  r.allocate({&d.output("stem"), &d.output("s1"), &d.output("s2")});
  float* in = d.input("input").f32();
  fill(in, 192, 2);
  d.run();
  r.run();
  // Identical weights, cut at the same stage: the suffix recomputes the donor's own
  // tail from its fp16-rounded s1, so the logits agree to the last bit.
  const Tensor& a = d.output("logits");
  const Tensor& b = r.output("logits");
  ASSERT_EQ(b.dtype, DType::F32);
  for (int64_t i = 0; i < a.numel(); ++i) EXPECT_EQ(a.f32()[i], b.f32()[i]) << i;
  EXPECT_EQ(weights.records().size(), 3u);  // shared fp16 weights are stored once
}

// A pipeline keeps a donor's shared stages in fp16 and its suffix reads them so: no
// F32 copy of the stage, no conversion steps around the adapter or at the cut, and
// the same bits (the F32 round trip widened fp16 values and rounded them back).
// A stage in the other dtype than the suffix reads is refused at allocate().
TEST(Fp16Storage, SuffixReadsTheDonorStageInStorageWithTheSameBits) {
  Model donor = three_stages("donor", 1.f, 0), receiver = three_stages("receiver", 0.5f, 10);
  Fp16StorageCpuBackend half(1);
  WeightsArena weights(half);
  // s2 reads s1 after the conv that makes it: an F32 s1 needs a convert step.
  Executor f32_stages(donor.graph, half, weights, {"input"}, {"s1", "s2"});
  Executor stored_stages(donor.graph, half, weights, {"input"}, {"s1", "s2"},
                         Executor::Inputs::Kept, {"s1"});
  ReceiverSuffix f32_suffix(donor, receiver, 1, 1, AdapterOptions(), half, weights);
  SuffixStorage storage;
  storage.donor_stages = true;
  ReceiverSuffix stored_suffix(donor, receiver, 1, 1, AdapterOptions(), half, weights, {},
                               storage);
  weights.commit();
  f32_stages.allocate();
  stored_stages.allocate();
  EXPECT_EQ(stored_stages.output("s1").dtype, DType::F16);
  EXPECT_THROW(stored_suffix.allocate({nullptr, &f32_stages.output("s1")}), Error);
  f32_suffix.allocate({nullptr, &f32_stages.output("s1")});
  stored_suffix.allocate({nullptr, &stored_stages.output("s1")});
  for (Executor* d : {&f32_stages, &stored_stages}) fill(d->input("input").f32(), 192, 4);
  for (Executor* d : {&f32_stages, &stored_stages}) d->run();
  f32_suffix.run();
  stored_suffix.run();
  const Tensor& a = f32_suffix.output("logits");
  const Tensor& b = stored_suffix.output("logits");
  ASSERT_EQ(a.numel(), 10);
  for (int64_t i = 0; i < a.numel(); ++i) EXPECT_EQ(a.f32()[i], b.f32()[i]) << i;
  // The donor converts its stage, the adapter its input; the receiver its cut in both.
  auto converts = [](const Executor& e) {
    const auto names = e.step_names();
    return std::count_if(names.begin(), names.end(),
                         [](const std::string& n) { return n.rfind("convert ", 0) == 0; });
  };
  EXPECT_EQ(converts(f32_stages), converts(stored_stages) + 1);
  EXPECT_EQ(converts(stored_suffix.receiver()), converts(f32_suffix.receiver()));
  EXPECT_LT(stored_suffix.activation_bytes(), f32_suffix.activation_bytes());
}

// `--backend cpu --precision fp16` is the simulation; its fp32 scratch grows in
// the first run and is reused after (nothing allocated in later runs).
TEST(Fp16Storage, CpuFp16IsTheSimulationAndStopsGrowingAfterOneRun) {
  std::unique_ptr<Backend> be = make_backend("cpu", 1, DType::F16);
  EXPECT_EQ(be->float_storage(), DType::F16);
  EXPECT_EQ(be->name(), "cpu");
  Model m = toy();
  Session s(m, *be, {"logits"});
  auto scratch = [&] { return be->overhead().at(0).bytes; };
  EXPECT_EQ(scratch(), 0u);
  fill(s.host_input(), s.input_shape().numel(), 3);
  s.run();
  const size_t after_one = scratch();
  EXPECT_GT(after_one, 0u);
  s.run();
  s.run();
  EXPECT_EQ(scratch(), after_one);
}

// Whole exported models (scripts/make_parity_models.sh, scripts/fetch_models.sh),
// where present: what fp16 storage does to every stage and output on an N(0,1)
// input, recorded as test properties. Measured when fp16 mode came in, the error
// grows smoothly with depth from 3.6e-4 after the stem (about one rounding of
// 2^-11 relative) to: B0 9.6e-3 (head; logits 4.2e-3); D0 1.0e-2 at stage7,
// 2.0e-2 after the BiFPN, box outputs 2.4e-2..3.9e-2 (class outputs 3.7e-3..8.3e-3);
// the pretrained Lite0 6.3e-3 (head; logits 3.6e-3). Random weights carry
// perturbations further than trained ones. The bars are ~1.3-1.5x those.
void compare_model_in_fp16(const std::string& name, double bar) {
  const std::string path = exported_model(name);
  if (path.empty()) GTEST_SKIP() << name << ".onnx not found (scripts/make_parity_models.sh)";
  Model m = load_model(path);
  const std::vector<std::string> wanted = stage_and_task_outputs(m);
  CpuBackend cpu(0);
  Fp16StorageCpuBackend half(0);
  Session a(m, cpu, wanted), b(m, half, wanted);
  fill(a.host_input(), a.input_shape().numel(), 7);
  std::copy(a.host_input(), a.host_input() + a.input_shape().numel(), b.host_input());
  a.run();
  b.run();
  for (const std::string& w : a.wanted()) {
    const double err =
        normalized_error(a.host_output(w), b.host_output(w), a.output_shape(w).numel());
    ::testing::Test::RecordProperty(w, std::to_string(err));
    EXPECT_LT(err, bar) << name << " output " << w;
  }
}

TEST(Fp16Storage, EfficientNetB0OutputsWithinBar) {
  compare_model_in_fp16("timm_b0_rand0", 1.5e-2);
}
TEST(Fp16Storage, EfficientDetD0OutputsWithinBar) {
  compare_model_in_fp16("tf_efficientdet_d0_rand0", 5e-2);
}

TEST(Fp16Storage, Lite0OutputsWithinBar) { compare_model_in_fp16("lite0", 1e-2); }

}  // namespace
}  // namespace repshare
