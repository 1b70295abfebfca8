// Whole models and a merged plan on the CUDA backend against the CPU reference:
// every output compared by normalised error. Needs a GPU and the exported models
// (REPSHARE_MODELS or models/: timm_b0_rand0, tf_efficientdet_d0_rand0); skips
// otherwise. scripts/gpu-check.sh runs it on the GPU machine.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <random>

#include "engine/backend_registry.h"
#include "engine/error.h"
#include "engine/executor.h"
#include "engine/passes.h"
#include "engine/session.h"
#include "kernels/cpu/cpu_backend.h"
#include "merge/sharing.h"
#include "tasks/detection.h"
#include "tests/exported_models.h"
#include "tests/scoped_env.h"
#ifdef REPSHARE_WITH_CUDA
#include <cuda_runtime_api.h>
#endif
#ifdef REPSHARE_CUDA_EMU
#include "tests/cuda_emu/emu_api.h"
#endif

namespace repshare {
namespace {

// REPSHARE_CUDA_SYNC=1 (gpu-check's fault-finding steps) synchronises after every
// launch, which a CUDA graph cannot: the backend then runs kernel by kernel.
bool graphs_off_by_sync() {
  const char* sync = std::getenv("REPSHARE_CUDA_SYNC");
  return sync && std::string(sync) != "0";
}

// fp32 mode: both sides compute in fp32 and differ by summation order (cuBLAS vs
// OpenBLAS) accumulated over up to ~300 layers. fp16 mode: against the CPU's fp32,
// within the bars tests/test_fp16_storage.cpp holds fp16 storage on the CPU to
// (what rounding every stored tensor to fp16 does to these models), doubled for
// CUDA's extra rounding between a GEMM and its epilogue. TF32 products: the GEMMs'
// operands rounded to 11 significant bits, everything else fp32.
void compare_whole_model(const std::string& name, DType storage = DType::F32,
                         double bar = 1e-4, bool tf32 = false) {
  std::string why;
  if (!cuda_available(&why)) GTEST_SKIP() << "no CUDA: " << why;
  if (tf32 && !tf32_available(&why)) GTEST_SKIP() << why;
  const std::string path = exported_model(name);
  if (path.empty()) GTEST_SKIP() << name << ".onnx not found (scripts/fetch_models.sh)";
  Model m = load_model(path);
  const std::vector<std::string> wanted = stage_and_task_outputs(m);
  CpuBackend cpu;
  auto cuda = make_backend("cuda", 0, storage, tf32);
  Session a(m, cpu, wanted), b(m, *cuda, wanted);
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  // The first run goes kernel by kernel; the second is recorded as a CUDA graph,
  // its steps on several streams, and replayed (by the emulation in another order
  // than captured). A new input, so that a step reading before its input is
  // written sees the first run's values, not the right ones.
  for (int round = 0; round < 2; ++round) {
    for (int64_t i = 0; i < a.input_shape().numel(); ++i)
      a.host_input()[i] = b.host_input()[i] = normal(rng);
    a.run();
    b.run();
    if (round == 1 && !graphs_off_by_sync()) {
      ASSERT_TRUE(b.executor().recorded()) << b.executor().recording_error();
    }
    for (const auto& w : wanted) {
      const double err =
          normalized_error(a.host_output(w), b.host_output(w), a.output_shape(w).numel());
      ::testing::Test::RecordProperty(w + (round ? " replayed" : ""), std::to_string(err));
      EXPECT_LT(err, bar) << name << " output " << w << (round ? " (replayed graph)" : "");
    }
  }
}

TEST(BackendModels, EfficientNetB0CudaMatchesCpu) { compare_whole_model("timm_b0_rand0"); }
TEST(BackendModels, EfficientDetD0CudaMatchesCpu) { compare_whole_model("tf_efficientdet_d0_rand0"); }
TEST(BackendModels, EfficientNetB0CudaFp16MatchesCpu) {
  compare_whole_model("timm_b0_rand0", DType::F16, 3e-2);
}
TEST(BackendModels, EfficientDetD0CudaFp16MatchesCpu) {
  compare_whole_model("tf_efficientdet_d0_rand0", DType::F16, 1e-1);
}
TEST(BackendModels, EfficientNetB0CudaTf32MatchesCpu) {
  compare_whole_model("timm_b0_rand0", DType::F32, 3e-2, true);  // as fp16: 11 bits
}

// An output that is a constant (it folded away, or a stage map names an
// initializer) lives in the backend's memory like every output: the caller
// downloads it from there. It was once served from host memory, which a GPU
// backend cannot copy from as device memory.
TEST(BackendModels, WantedConstantsAreInBackendMemory) {
  std::string why;
  if (!cuda_available(&why)) GTEST_SKIP() << "no CUDA: " << why;
  Graph g;
  g.name = "constant_output";
  g.opset = 13;
  const int x = g.add_value("x");
  g.values[x].shape = Shape{1, 3};
  g.values[x].shape_known = true;
  g.inputs.push_back(x);
  g.add_constant_f32("k", Shape{3}, {1.5f, -2.f, 3.25f});
  Node relu;
  relu.op_type = "Relu";
  relu.name = "relu";
  relu.inputs = {x};
  relu.outputs = {g.add_value("y")};
  g.nodes.push_back(relu);
  g.outputs = {g.find("y"), g.find("k")};
  prepare_graph(g);
  for (DType storage : {DType::F32, DType::F16}) {
    auto be = make_backend("cuda", 0, storage);
    WeightsArena weights(*be);
    Executor ex(g, *be, weights, {"x"}, {"y", "k"});
    weights.commit();
    ex.allocate();
    const std::vector<float> in = {-1.f, 2.f, 0.5f};
    be->upload(ex.input("x").data, in.data(), sizeof(float) * 3);
    ex.run();
    std::vector<float> y(3), k(3);
    be->download(y.data(), ex.output("y").data, sizeof(float) * 3);
    be->download(k.data(), ex.output("k").data, sizeof(float) * 3);
    EXPECT_EQ(y, (std::vector<float>{0.f, 2.f, 0.5f})) << dtype_name(storage);
    EXPECT_EQ(k, (std::vector<float>{1.5f, -2.f, 3.25f})) << dtype_name(storage);
  }
}

// CUDA graphs: the recorded network replays what launching kernel by kernel
// computes, run after run with new inputs (the input is uploaded to the same
// arena slot the recording reads).
TEST(BackendModels, CudaGraphReplayEqualsKernelByKernel) {
  std::string why;
  if (!cuda_available(&why)) GTEST_SKIP() << "no CUDA: " << why;
  if (graphs_off_by_sync())
    GTEST_SKIP() << "REPSHARE_CUDA_SYNC synchronises after every launch, which a graph cannot";
  const std::string path = exported_model("timm_b0_rand0");
  if (path.empty()) GTEST_SKIP() << "timm_b0_rand0.onnx not found (scripts/fetch_models.sh)";
  Model m = load_model(path);
  auto by_kernel = make_backend("cuda"), by_graph = make_backend("cuda");
  by_kernel->set_recording(false);
  Session a(m, *by_kernel), b(m, *by_graph);
  std::mt19937 rng(11);
  std::normal_distribution<float> normal;
  for (int round = 0; round < 3; ++round) {
    for (int64_t i = 0; i < a.input_shape().numel(); ++i)
      a.host_input()[i] = b.host_input()[i] = normal(rng);
    a.run();
    b.run();
    EXPECT_FALSE(a.executor().recorded());
    // The first run goes step by step; the second records.
    ASSERT_EQ(b.executor().recorded(), round > 0) << b.executor().recording_error();
    for (const auto& w : a.wanted())
      EXPECT_LT(normalized_error(a.host_output(w), b.host_output(w), a.output_shape(w).numel()), 1e-6)
          << "round " << round << " output " << w;
  }
}

// D0's backbone to stage4, B0 from stage5 on: the merged plan's logits.
void compare_merged_plan(DType storage, double bar) {
  std::string why;
  if (!cuda_available(&why)) GTEST_SKIP() << "no CUDA: " << why;
  const std::string d0 = exported_model("tf_efficientdet_d0_rand0"), b0 = exported_model("timm_b0_rand0");
  if (d0.empty() || b0.empty()) GTEST_SKIP() << "models not found (scripts/fetch_models.sh)";
  Model donor = load_model(d0), receiver = load_model(b0);
  const int i = donor.info.stage_index("stage4"), j = receiver.info.stage_index("stage4");
  ASSERT_GE(i, 0);
  ASSERT_GE(j, 0);
  std::vector<float> results[2];
  CpuBackend cpu;
  auto cuda = make_backend("cuda", 0, storage);
  Backend* backends[2] = {&cpu, cuda.get()};
  std::mt19937 rng(3);
  std::normal_distribution<float> normal;
  std::vector<float> input(donor.info.input_shape.numel());
  for (auto& v : input) v = normal(rng);
  for (int k = 0; k < 2; ++k) {
    Backend& be = *backends[k];
    WeightsArena weights(be);
    std::vector<std::string> stages;
    for (const auto& s : donor.info.stages) stages.push_back(s.tensor);
    // As a pipeline runs it: the donor's stages stay in its storage, where the
    // suffix's adapters read them (fp16 in fp16 mode).
    Executor dex(donor.graph, be, weights, {donor.info.input}, stages, Executor::Inputs::Kept,
                 stages);
    SuffixStorage storage_edges;
    storage_edges.donor_stages = true;
    ReceiverSuffix suffix(donor, receiver, i, j, AdapterOptions(), be, weights, {},
                          storage_edges);
    weights.commit();
    dex.allocate();
    std::vector<const Tensor*> outs;
    for (const auto& s : stages) outs.push_back(&dex.output(s));
    suffix.allocate(outs);
    be.upload(dex.input(donor.info.input).data, input.data(), input.size() * sizeof(float));
    dex.run();
    suffix.run();
    const Tensor& logits = suffix.output(receiver.info.outputs[0]);
    results[k].resize(logits.numel());
    be.download(results[k].data(), logits.data, results[k].size() * sizeof(float));
    be.synchronize();
  }
  const double err = normalized_error(results[0].data(), results[1].data(), results[0].size());
  ::testing::Test::RecordProperty("logits", std::to_string(err));
  EXPECT_LT(err, bar);
}

TEST(BackendModels, MergedPlanCudaMatchesCpu) { compare_merged_plan(DType::F32, 1e-4); }
TEST(BackendModels, MergedPlanCudaFp16MatchesCpu) { compare_merged_plan(DType::F16, 3e-2); }

// The CPU backend and, where there is a GPU, the CUDA one.
std::vector<std::unique_ptr<Backend>> cpu_and_gpu_backends() {
  std::vector<std::unique_ptr<Backend>> backends;
  backends.push_back(make_backend("cpu", 1));
  std::string why;
  if (cuda_available(&why)) backends.push_back(make_backend("cuda"));
  return backends;
}

Model tiny_detector() {
  return load_model(std::string(REPSHARE_SOURCE_DIR) + "/tests/fixtures/tiny_detector/model.onnx");
}

// The session's first wanted output, as its last run() downloaded it.
std::vector<float> first_output(const Session& s) {
  const std::string& out = s.wanted()[0];
  return std::vector<float>(s.host_output(out), s.host_output(out) + s.output_shape(out).numel());
}

// `bench --profile`: every step of a run gets a time from the backend's step timer
// (on CUDA device events, which need no synchronisation between steps), on the CPU
// and, where there is one, on the GPU. Steps run kernel by kernel, never recorded.
TEST(BackendModels, ProfiledRunTimesEveryStep) {
  const Model m = tiny_detector();
  for (const auto& be : cpu_and_gpu_backends()) {
    SCOPED_TRACE(be->name());
    Session s(m, *be);
    std::fill(s.host_input(), s.host_input() + s.input_shape().numel(), 0.5f);
    s.run();
    const std::string out = s.wanted()[0];
    const std::vector<float> expected = first_output(s);
    std::vector<double> per_step;
    for (int run = 0; run < 2; ++run) s.run_profiled(per_step);
    ASSERT_EQ(per_step.size(), s.executor().num_steps());
    for (size_t i = 0; i < per_step.size(); ++i) {
      EXPECT_GT(per_step[i], 0.0) << "step " << i;
      EXPECT_LT(per_step[i], 10.0) << "step " << i;
    }
    // Each profiled run computed from the input again (the steps may reuse its memory).
    std::vector<float> profiled(expected.size());
    be->download(profiled.data(), s.executor().output(out).data, profiled.size() * sizeof(float));
    be->synchronize();
    EXPECT_EQ(profiled, expected);
  }
}

// The network alone on an input kept in backend memory (what bench times beside the
// whole run, as GPU benchmarks do) computes what run() computes from the host input,
// run after run (the steps may reuse the input's memory: it is copied in every time),
// and recorded on a backend that records (not under REPSHARE_CUDA_SYNC, which turns
// CUDA's recording off: gpu-check runs this suite both ways).
TEST(BackendModels, RunOnADeviceInputEqualsRun) {
  const Model m = tiny_detector();
  for (const auto& be : cpu_and_gpu_backends()) {
    SCOPED_TRACE(be->name());
    Session s(m, *be);
    const int64_t n = s.input_shape().numel();
    for (int64_t i = 0; i < n; ++i) s.host_input()[i] = 0.01f * static_cast<float>(i % 97) - 0.4f;
    s.run();
    const std::vector<float> expected = first_output(s);
    const BackendBuffer device_input(*be, n * sizeof(float));
    be->upload(device_input.data, s.host_input(), n * sizeof(float));
    be->synchronize();  // from pinned memory the GPU reads the input when it gets there
    std::fill(s.host_input(), s.host_input() + n, 0.f);  // what run() would read now
    std::vector<float> got(expected.size());
    for (int run = 0; run < 3; ++run) {
      s.run_on_device_input(device_input.data);
      be->download(got.data(), s.executor().output(s.wanted()[0]).data, got.size() * sizeof(float));
      EXPECT_EQ(got, expected) << "run " << run;
    }
    EXPECT_EQ(s.executor().recorded(), be->name() != "cpu" && !graphs_off_by_sync());
  }
}

// A session whose outputs stay on the backend (a detector's, for post-processing
// there) keeps them in the backend's float storage: in fp16 mode, fp16, half the
// activation memory of a D0's 4.4 million logits. The CPU's fp16 simulation and
// CUDA's fp16 mode keep them alike; post-processing reads them where they are.
TEST(BackendModels, OutputsKeptOnTheBackendStayInFp16Storage) {
  const Model m = tiny_detector();
  std::vector<std::unique_ptr<Backend>> backends;
  backends.push_back(make_backend("cpu", 1, DType::F16));
  if (cuda_available()) backends.push_back(make_backend("cuda", 0, DType::F16));
  for (const auto& be : backends) {
    SCOPED_TRACE(be->name());
    Session kept(m, *be, {}, Session::Outputs::StayOnBackend);
    Session downloaded(m, *be);
    for (const std::string& w : kept.wanted()) {
      EXPECT_EQ(kept.executor().output(w).dtype, DType::F16) << w;
      EXPECT_EQ(downloaded.executor().output(w).dtype, DType::F32) << w;
    }
    EXPECT_LT(kept.executor().activation_bytes(), downloaded.executor().activation_bytes());
  }
}

#ifdef REPSHARE_WITH_CUDA
// What a session uploads and downloads every run lies in pinned host memory, which
// the GPU copies at full bus speed (pageable memory is first copied again by the
// driver), and the session gives it back.
TEST(BackendModels, SessionStagesInPinnedHostMemory) {
  std::string why;
  if (!cuda_available(&why)) GTEST_SKIP() << "no CUDA: " << why;
  auto memory_type = [](const void* p) {
    cudaPointerAttributes a;
    EXPECT_EQ(cudaPointerGetAttributes(&a, p), cudaSuccess);
    return a.type;
  };
  const Model m = tiny_detector();
  std::unique_ptr<Backend> cuda = make_backend("cuda");
  const void* input = nullptr;
  {
    Session s(m, *cuda);
    input = s.host_input();
    EXPECT_EQ(memory_type(input), cudaMemoryTypeHost);
    EXPECT_EQ(memory_type(s.host_output(s.wanted()[0])), cudaMemoryTypeHost);
    std::vector<float> pageable(4);
    EXPECT_EQ(memory_type(pageable.data()), cudaMemoryTypeUnregistered);
  }
  EXPECT_EQ(memory_type(input), cudaMemoryTypeUnregistered);  // freed with the session
}
#endif

#ifdef REPSHARE_CUDA_EMU
// A CUDA failure part way through making the profile's timing events leaves none
// of them behind.
TEST(BackendModels, StepTimerThatFailsLeavesNoEvents) {
  std::unique_ptr<Backend> cuda = make_backend("cuda");
  const size_t before = cuda_emu::live_events();
  cuda_emu::fail_event_creates_after(5);
  EXPECT_THROW(cuda->step_timer(4), Error);
  cuda_emu::fail_event_creates_after(-1);
  EXPECT_EQ(cudaGetLastError(), cudaErrorMemoryAllocation);
  EXPECT_EQ(cuda_emu::live_events(), before);
  EXPECT_EQ(cuda->step_timer(4) ? cuda_emu::live_events() : 0, before + 8);  // then freed
  EXPECT_EQ(cuda_emu::live_events(), before);
}

// The host waits for the GPU once a run: a session queues every output's download
// into pinned memory and waits after the last (the tiny detector has ten outputs),
// and a detector's network run is followed on the GPU by its post-processing, whose
// candidates and keep list come back with that one wait. A copy into pageable
// memory would be a wait of its own.
TEST(BackendModels, ARunWaitsForTheGpuOnce) {
  const Model m = tiny_detector();
  std::unique_ptr<Backend> cuda = make_backend("cuda");
  Session s(m, *cuda);
  ASSERT_GT(s.wanted().size(), 1u);
  std::fill(s.host_input(), s.host_input() + s.input_shape().numel(), 0.25f);
  s.run();
  const std::vector<float> first = first_output(s);
  size_t before = cuda_emu::host_waits();
  s.run();  // recorded
  EXPECT_EQ(cuda_emu::host_waits() - before, 1u);
  EXPECT_EQ(first_output(s), first);  // the queued downloads had landed by the wait

  Image img;
  img.reset(40, 24);
  for (size_t i = 0; i < img.pixels.size(); ++i) img.pixels[i] = static_cast<uint8_t>(i * 37);
  Detector d(m, *cuda, detection_config_for(m.info));
  const std::vector<Detection> once = d.detect(img);
  before = cuda_emu::host_waits();
  const std::vector<Detection> again = d.detect(img);
  EXPECT_EQ(cuda_emu::host_waits() - before, 1u);
  ASSERT_EQ(again.size(), once.size());
  ASSERT_FALSE(once.empty());
  for (size_t i = 0; i < once.size(); ++i) {
    EXPECT_EQ(again[i].score, once[i].score) << i;
    EXPECT_EQ(again[i].x_min, once[i].x_min) << i;
  }
}

// A detector's post-processing on the GPU (top-k, NMS and the copies back: 13
// launches and 4 copies) is recorded on its second run with the same outputs and
// image frame, and replayed after; another frame size goes call by call, then is
// recorded in turn. Every run detects what a fresh detector does.
TEST(BackendModels, DetectionPostprocessingIsRecordedAndReplayed) {
  const Model m = tiny_detector();
  std::unique_ptr<Backend> cuda = make_backend("cuda");
  auto image = [](int w, int h) {
    Image img;
    img.reset(w, h);
    for (size_t i = 0; i < img.pixels.size(); ++i) img.pixels[i] = static_cast<uint8_t>(i * 37);
    return img;
  };
  auto same = [](const std::vector<Detection>& a, const std::vector<Detection>& b) {
    if (a.size() != b.size() || a.empty()) return false;
    for (size_t i = 0; i < a.size(); ++i)
      if (a[i].x_min != b[i].x_min || a[i].y_min != b[i].y_min || a[i].x_max != b[i].x_max ||
          a[i].y_max != b[i].y_max || a[i].score != b[i].score ||
          a[i].category_id != b[i].category_id)
        return false;
    return true;
  };
  const Image wide = image(40, 24), tall = image(24, 40);
  auto fresh = [&](const Image& img) {
    Detector f(m, *cuda, detection_config_for(m.info));
    return f.detect(img);
  };
  const std::vector<Detection> want_wide = fresh(wide), want_tall = fresh(tall);
  Detector d(m, *cuda, detection_config_for(m.info));
  const DetectionPostprocess& post = d.head().postprocess();
  for (int run = 0; run < 3; ++run) {
    EXPECT_TRUE(same(d.detect(wide), want_wide)) << "run " << run;
    EXPECT_EQ(post.recorded(), run > 0) << "run " << run;
  }
  EXPECT_TRUE(same(d.detect(tall), want_tall));
  EXPECT_FALSE(post.recorded());
  EXPECT_TRUE(same(d.detect(tall), want_tall));
  EXPECT_TRUE(post.recorded());
  EXPECT_TRUE(same(d.detect(wide), want_wide));
}

// The recorded graph of a detector whose head branches run on streams of their own:
// with a cuBLAS workspace per stream (the default) the branches' GEMMs are free to
// overlap, so the longest chain of graph nodes, each waiting for the one before, is
// shorter than with one workspace, where every cuBLAS call waits for the last. The
// shape the backend reads back from CUDA is the one the emulator counted.
TEST(BackendModels, HeadBranchGemmsOverlapInTheRecordedGraph) {
  const Model m = tiny_detector();
  auto recorded_graph = [&m](const char* overlap) {
    std::unique_ptr<Backend> cuda;
    {
      const ScopedEnv env("REPSHARE_CUDA_LIBRARY_OVERLAP", overlap);
      cuda = make_backend("cuda");
    }
    Session s(m, *cuda);
    s.run();
    s.run();  // recorded
    EXPECT_TRUE(s.executor().recorded()) << s.executor().recording_error();
    const RecordedWork::Shape shape = s.executor().recorded_shape();
    const cuda_emu::GraphShape counted = cuda_emu::last_graph_shape();
    EXPECT_EQ(shape.calls, counted.nodes);
    EXPECT_EQ(shape.longest_chain, counted.longest_chain);
    return shape;
  };
  const RecordedWork::Shape ordered = recorded_graph("0"), overlapping = recorded_graph("1");
  EXPECT_GT(ordered.calls, size_t(0));
  EXPECT_EQ(overlapping.calls, ordered.calls);
  EXPECT_LT(overlapping.longest_chain, ordered.longest_chain);
  ::testing::Test::RecordProperty("graph nodes", std::to_string(ordered.calls));
  ::testing::Test::RecordProperty("longest chain, one workspace",
                                  std::to_string(ordered.longest_chain));
  ::testing::Test::RecordProperty("longest chain, one per stream",
                                  std::to_string(overlapping.longest_chain));
}
#endif

}  // namespace
}  // namespace repshare
