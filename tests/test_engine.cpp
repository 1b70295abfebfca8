// Engine core: the activation planner, the weights arena, and partial execution.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <random>

#include "engine/analysis.h"
#include "engine/arena.h"
#include "engine/error.h"
#include "engine/executor.h"
#include "engine/model.h"
#include "engine/passes.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/fp16_storage_backend.h"
#include "layers/layers.h"
#include "tests/exported_models.h"

namespace repshare {
namespace {

TEST(ActivationPlanner, NeverOverlapsLiveTensorsOnRandomGraphs) {
  std::mt19937 rng(1234);
  for (int trial = 0; trial < 300; ++trial) {
    const int steps = 1 + rng() % 40;
    std::vector<Lifetime> ts(1 + rng() % 60);
    for (auto& t : ts) {
      t.first = static_cast<int>(rng() % steps) - 1;  // -1: supplied before the first step
      t.last = t.first + static_cast<int>(rng() % 8);
      t.bytes = 1 + rng() % 5000;
    }
    ActivationPlan p = plan_activations(ts);
    ASSERT_EQ(p.offsets.size(), ts.size());
    EXPECT_GE(p.peak, p.lower_bound);
    for (size_t a = 0; a < ts.size(); ++a) {
      EXPECT_EQ(p.offsets[a] % kArenaAlignment, 0u);
      EXPECT_LE(p.offsets[a] + ts[a].bytes, p.peak);
      for (size_t b = a + 1; b < ts.size(); ++b) {
        bool live_together = ts[a].first <= ts[b].last && ts[b].first <= ts[a].last;
        bool overlap = p.offsets[a] < p.offsets[b] + ts[b].bytes &&
                       p.offsets[b] < p.offsets[a] + ts[a].bytes;
        ASSERT_FALSE(live_together && overlap) << "trial " << trial << " tensors " << a << "," << b;
      }
    }
  }
}

// Where steps run at once the planner takes which tensors may share memory as a
// relation (any symmetric one here): tensors not apart never overlap.
TEST(ActivationPlanner, NeverOverlapsTensorsThatAreNotApart) {
  std::mt19937 rng(99);
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<Lifetime> ts(1 + rng() % 40);
    for (auto& t : ts) t.bytes = 1 + rng() % 5000;
    std::vector<std::vector<bool>> apart(ts.size(), std::vector<bool>(ts.size(), false));
    for (size_t a = 0; a < ts.size(); ++a)
      for (size_t b = 0; b < a; ++b) apart[a][b] = apart[b][a] = rng() % 2;
    ActivationPlan p = plan_activations(ts, [&](size_t a, size_t b) { return apart[a][b]; });
    for (size_t a = 0; a < ts.size(); ++a)
      for (size_t b = a + 1; b < ts.size(); ++b) {
        const bool overlap = p.offsets[a] < p.offsets[b] + ts[b].bytes &&
                             p.offsets[b] < p.offsets[a] + ts[a].bytes;
        ASSERT_FALSE(!apart[a][b] && overlap) << "trial " << trial << " tensors " << a << "," << b;
      }
  }
}

TEST(ActivationPlanner, ReusesMemoryOfDeadTensors) {
  // A chain a -> b -> c -> d: only two tensors are ever alive together.
  std::vector<Lifetime> chain = {{1000, 0, 1}, {1000, 1, 2}, {1000, 2, 3}, {1000, 3, 4}};
  ActivationPlan p = plan_activations(chain);
  EXPECT_EQ(p.lower_bound, 2 * align_up(1000, kArenaAlignment));
  EXPECT_EQ(p.peak, p.lower_bound);
}

// Placing the largest tensors first leaves a hole here: four equal tensors, of which
// the one living at steps 1-3 lands above both neighbours it overlaps (3 KiB for a
// bound of 2 KiB). Placing first the tensors that conflict with the most bytes (those
// of the crowded steps) meets the bound, and the planner keeps the better plan.
TEST(ActivationPlanner, MeetsTheBoundWhereLargestFirstLeavesAHole) {
  const std::vector<Lifetime> ts = {{1024, 4, 4}, {1024, 0, 1}, {1024, 2, 4}, {1024, 1, 3}};
  const ActivationPlan p = plan_activations(ts);
  EXPECT_EQ(p.lower_bound, 2048u);
  EXPECT_EQ(p.peak, 2048u);
  for (size_t a = 0; a < ts.size(); ++a)
    for (size_t b = a + 1; b < ts.size(); ++b)
      if (ts[a].first <= ts[b].last && ts[b].first <= ts[a].last) {
        EXPECT_NE(p.offsets[a], p.offsets[b]) << a << ", " << b;
      }
}

// A tensor of no bytes (a bound input, an empty tensor) takes none of the arena.
TEST(ActivationPlanner, ZeroByteTensorsTakeNoMemory) {
  const std::vector<Lifetime> ts = {{0, -1, 3}, {1000, 0, 3}, {0, 1, 2}};
  const ActivationPlan p = plan_activations(ts);
  EXPECT_EQ(p.lower_bound, align_up(1000, kArenaAlignment));
  EXPECT_EQ(p.peak, p.lower_bound);
}

TEST(WeightsArena, StoresASharedWeightOnce) {
  CpuBackend cpu(1);
  WeightsArena arena(cpu);
  std::vector<float> w(1000, 0.5f), other(1000, 0.25f);
  int a = arena.add("donor", "stem/conv", "stem.weight", w.data(), w.size() * 4);
  int b = arena.add("receiver", "stem/conv", "stem.weight", w.data(), w.size() * 4);
  int c = arena.add("receiver", "head/conv", "head.weight", other.data(), other.size() * 4);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  ASSERT_EQ(arena.records().size(), 2u);
  EXPECT_EQ(arena.records()[a].model, "donor");
  EXPECT_EQ(arena.records()[a].users.size(), 2u);
  EXPECT_EQ(arena.bytes_by_model()["donor"], 4000u);
  EXPECT_EQ(arena.bytes_by_model()["receiver"], 4000u);
  arena.commit();
  EXPECT_EQ(static_cast<float*>(arena.data(a))[999], 0.5f);
  EXPECT_EQ(static_cast<float*>(arena.data(c))[0], 0.25f);
  EXPECT_THROW(arena.add("late", "x", "y", w.data(), 4), Error);
}

// x -> conv1 -> relu -> a -> conv2 -> b -> add(a) -> y  (a skip connection)
Graph two_conv_graph() {
  Graph g;
  g.name = "twoconv";
  g.opset = 13;
  int x = g.add_value("x");
  g.values[x].shape = Shape{1, 4, 6, 6};
  g.values[x].shape_known = true;
  g.inputs.push_back(x);
  std::vector<float> w1(4 * 4 * 9), w2(4 * 4 * 9);
  for (size_t i = 0; i < w1.size(); ++i) {
    w1[i] = 0.05f * ((i * 7) % 11) - 0.2f;
    w2[i] = 0.03f * ((i * 5) % 13) - 0.15f;
  }
  g.add_constant_f32("w1", Shape{4, 4, 3, 3}, w1);
  g.add_constant_f32("w2", Shape{4, 4, 3, 3}, w2);
  auto node = [&](const char* op, const char* name, std::vector<std::string> in, const char* out) {
    Node n;
    n.op_type = op;
    n.name = name;
    for (auto& i : in) n.inputs.push_back(g.add_value(i));
    n.outputs.push_back(g.add_value(out));
    if (std::string(op) == "Conv") {
      n.attrs["pads"].kind = Attribute::Kind::Ints;
      n.attrs["pads"].ints = {1, 1, 1, 1};
    }
    g.nodes.push_back(n);
  };
  node("Conv", "conv1", {"x", "w1"}, "c1");
  node("Relu", "relu", {"c1"}, "a");
  node("Conv", "conv2", {"a", "w2"}, "b");
  node("Add", "add", {"b", "a"}, "y");
  g.outputs.push_back(g.find("y"));
  return g;
}

std::vector<float> run(const Graph& g, const std::vector<std::string>& supplied,
                       const std::vector<std::vector<float>>& values, size_t* steps,
                       size_t* weights_stored) {
  CpuBackend cpu(1);
  WeightsArena weights(cpu);
  Executor ex(g, cpu, weights, supplied, {"y"});
  weights.commit();
  ex.allocate();
  for (size_t i = 0; i < supplied.size(); ++i)
    std::copy(values[i].begin(), values[i].end(), ex.input(supplied[i]).f32());
  ex.run();
  ex.run();  // runs are repeatable on the same arena
  *steps = ex.num_steps();
  *weights_stored = weights.records().size();
  const Tensor& y = ex.output("y");
  return std::vector<float>(y.f32(), y.f32() + y.numel());
}

TEST(Executor, RunsOnlyWhatTheSuppliedCutNeeds) {
  Graph g = two_conv_graph();
  PassOptions opt;
  opt.keep = {"a"};  // the cut point must survive fusion
  prepare_graph(g, opt);
  std::vector<float> x(4 * 36);
  for (size_t i = 0; i < x.size(); ++i) x[i] = 0.1f * ((i * 3) % 17) - 0.8f;
  size_t full_steps, full_weights, cut_steps, cut_weights;
  std::vector<float> full = run(g, {"x"}, {x}, &full_steps, &full_weights);

  // Compute a = relu(conv1(x)) with a first executor, then feed it to the rest.
  CpuBackend cpu(1);
  WeightsArena w(cpu);
  Executor front(g, cpu, w, {"x"}, {"a"});
  w.commit();
  front.allocate();
  std::copy(x.begin(), x.end(), front.input("x").f32());
  front.run();
  const Tensor& a = front.output("a");
  std::vector<float> av(a.f32(), a.f32() + a.numel());
  std::vector<float> cut = run(g, {"a"}, {av}, &cut_steps, &cut_weights);

  EXPECT_EQ(full_steps, 2u);  // conv1(+relu), conv2(+add)
  EXPECT_EQ(cut_steps, 1u);   // conv2(+add): conv1 never runs
  EXPECT_EQ(full_weights, 2u);
  EXPECT_EQ(cut_weights, 1u);  // w1 is never loaded
  ASSERT_EQ(full.size(), cut.size());
  for (size_t i = 0; i < full.size(); ++i) EXPECT_FLOAT_EQ(full[i], cut[i]);
}

// A CPU backend that records like CUDA graphs do: during record() each call is
// kept with the pointers and parameters it had (not run); replay() makes the
// same calls again. It records only the ops two_conv_graph uses.
class RecordingCpuBackend : public CpuBackend {
 public:
  RecordingCpuBackend() : CpuBackend(1) {}
  struct Recording : RecordedWork {
    std::vector<std::function<void()>> calls;
    void replay() override {
      for (auto& c : calls) c();
    }
  };
  std::unique_ptr<RecordedWork> record(const std::function<void()>& work) override {
    ++recordings;
    if (fail_next) {
      fail_next = false;
      fail(ErrorKind::Backend, "recording refused for the test");
    }
    std::unique_ptr<Recording> r(new Recording);
    recording_ = r.get();
    work();
    recording_ = nullptr;
    return std::unique_ptr<RecordedWork>(r.release());
  }
  void conv2d(const Conv2dParams& p, const Tensor& x, const Tensor& w, const Tensor* bias,
              Tensor& y, void* workspace) override {
    const Tensor xc = x, wc = w, bc = bias ? *bias : Tensor();
    Tensor* yp = &y;
    const bool has_bias = bias != nullptr;
    run_or_keep([=] {
      Tensor yc = *yp;
      CpuBackend::conv2d(p, xc, wc, has_bias ? &bc : nullptr, yc, workspace);
    });
  }
  void conv2d_residual(const Conv2dParams& p, const Tensor& x, const Tensor& w, const Tensor* bias,
                       const Tensor& residual, Tensor& y, void* workspace) override {
    const Tensor xc = x, wc = w, bc = bias ? *bias : Tensor(), rc = residual;
    Tensor* yp = &y;
    const bool has_bias = bias != nullptr;
    run_or_keep([=] {
      Tensor yc = *yp;
      CpuBackend::conv2d_residual(p, xc, wc, has_bias ? &bc : nullptr, rc, yc, workspace);
    });
  }
  void binary(const BroadcastParams& p, const Tensor& a, const Tensor& b, Tensor& y) override {
    const Tensor ac = a, bc = b, yc = y;
    run_or_keep([=] {
      Tensor out = yc;
      CpuBackend::binary(p, ac, bc, out);
    });
  }
  int recordings = 0;
  bool fail_next = false;

 private:
  void run_or_keep(std::function<void()> call) {
    if (recording_)
      recording_->calls.push_back(std::move(call));
    else
      call();
  }
  Recording* recording_ = nullptr;
};

// Three runs of two_conv_graph's ex on new x: step by step first (libraries set up
// outside any capture), then recorded; each computes what a fresh executor does.
void expect_runs_on_new_inputs(const Graph& g, Executor& ex) {
  for (int round = 0; round < 3; ++round) {
    std::vector<float> x(4 * 36);
    for (size_t i = 0; i < x.size(); ++i) x[i] = 0.1f * ((i * (3 + round)) % 17) - 0.8f;
    std::copy(x.begin(), x.end(), ex.input("x").f32());
    ex.run();
    EXPECT_EQ(ex.recorded(), round > 0);
    size_t steps, stored;
    const std::vector<float> want = run(g, {"x"}, {x}, &steps, &stored);
    const Tensor& y = ex.output("y");
    for (int64_t i = 0; i < y.numel(); ++i) ASSERT_EQ(y.f32()[i], want[i]) << "round " << round;
  }
}

TEST(Executor, RecordsOnceAndReplaysWithNewInputs) {
  Graph g = two_conv_graph();
  prepare_graph(g);
  RecordingCpuBackend rec;
  WeightsArena w(rec);
  Executor ex(g, rec, w, {"x"}, {"y"});
  w.commit();
  ex.allocate();
  expect_runs_on_new_inputs(g, ex);
  EXPECT_TRUE(ex.recorded());
  EXPECT_EQ(rec.recordings, 1);
}

// An input filled before every run gives its memory to the steps after its last
// reader: two_conv_graph's x (read by conv1 only) shares bytes with y, one tensor
// fewer than a kept x (the rest is conv2's im2col workspace). Runs on new inputs,
// step by step and recorded, compute what a kept input does.
TEST(Executor, InputsFilledEachRunGiveTheirMemoryToLaterSteps) {
  Graph g = two_conv_graph();
  prepare_graph(g);
  const size_t tensor = align_up(4 * 36 * sizeof(float), kArenaAlignment);
  RecordingCpuBackend rec;
  WeightsArena w(rec);
  Executor each_run(g, rec, w, {"x"}, {"y"}, Executor::Inputs::EachRun);
  Executor kept(g, rec, w, {"x"}, {"y"});
  EXPECT_EQ(each_run.activation_bytes(), kept.activation_bytes() - tensor);
  w.commit();
  each_run.allocate();
  expect_runs_on_new_inputs(g, each_run);
}

// A bound input is read in place and has no memory in the arena; a run before
// bind() names it.
TEST(Executor, BindReadsASuppliedTensorInPlace) {
  Graph g = two_conv_graph();
  PassOptions opt;
  opt.keep = {"a"};
  prepare_graph(g, opt);
  CpuBackend cpu(1);
  WeightsArena w(cpu);
  Executor bound(g, cpu, w, {"a"}, {"y"}, Executor::Inputs::Bound);
  Executor kept(g, cpu, w, {"a"}, {"y"});
  EXPECT_EQ(bound.activation_bytes(),
            kept.activation_bytes() - align_up(4 * 36 * sizeof(float), kArenaAlignment));
  w.commit();
  bound.allocate();
  EXPECT_EQ(bound.input("a").data, nullptr);
  try {
    bound.run();
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("supplied tensor 'a' was never bound"), std::string::npos)
        << e.what();
  }
  std::vector<float> a(4 * 36, 0.f);
  bound.bind("a", a.data());
  bound.run();
  const Tensor& y = bound.output("y");
  for (int64_t i = 0; i < y.numel(); ++i) EXPECT_EQ(y.f32()[i], 0.f);  // no bias: zeros out
}

TEST(Executor, BindingANewPointerRecordsAgain) {
  Graph g = two_conv_graph();
  PassOptions opt;
  opt.keep = {"a"};
  prepare_graph(g, opt);
  RecordingCpuBackend rec;
  WeightsArena w(rec);
  Executor ex(g, rec, w, {"a"}, {"y"});
  w.commit();
  ex.allocate();
  std::vector<float> zeros(4 * 36, 0.f), ones(4 * 36, 1.f);
  ex.bind("a", zeros.data());
  ex.run();
  EXPECT_EQ(ex.output("y").f32()[0], 0.f);
  ex.bind("a", zeros.data());  // the same pointer keeps the recording
  ex.run();
  EXPECT_EQ(rec.recordings, 1);
  ex.bind("a", ones.data());
  ex.run();
  EXPECT_EQ(rec.recordings, 2);
  EXPECT_NE(ex.output("y").f32()[0], 0.f);  // reads the new buffer, not the recorded one
}

TEST(Executor, RunsStepByStepWhenRecordingFails) {
  Graph g = two_conv_graph();
  prepare_graph(g);
  RecordingCpuBackend rec;
  rec.fail_next = true;
  WeightsArena w(rec);
  Executor ex(g, rec, w, {"x"}, {"y"});
  w.commit();
  ex.allocate();
  std::vector<float> x(4 * 36);
  for (size_t i = 0; i < x.size(); ++i) x[i] = 0.1f * ((i * 3) % 17) - 0.8f;
  std::copy(x.begin(), x.end(), ex.input("x").f32());
  ex.run();
  ex.run();
  EXPECT_FALSE(ex.recorded());
  EXPECT_EQ(rec.recordings, 1);  // not retried every run
  EXPECT_NE(ex.recording_error().find("recording refused for the test"), std::string::npos);
  size_t steps, stored;
  const std::vector<float> want = run(g, {"x"}, {x}, &steps, &stored);
  for (int64_t i = 0; i < ex.output("y").numel(); ++i) EXPECT_EQ(ex.output("y").f32()[i], want[i]);
}

// An inference on the CPU flushes subnormal floats to zero on every thread (on x86
// each operation with one is a microcode assist), and leaves the caller's mode as
// it was. Inputs of 1.2e-38-1.7e-38 (normal) times weights of at most 0.3 make
// subnormal products.
TEST(Executor, CpuInferenceFlushesSubnormalsAndRestoresTheMode) {
  Graph g = two_conv_graph();
  prepare_graph(g);
  CpuBackend cpu(2);
  WeightsArena w(cpu);
  Executor ex(g, cpu, w, {"x"}, {"y"});
  w.commit();
  ex.allocate();
  std::vector<float> x(4 * 36);
  for (size_t i = 0; i < x.size(); ++i) x[i] = 1.2e-38f * (1.f + 0.1f * static_cast<float>(i % 5));
  std::copy(x.begin(), x.end(), ex.input("x").f32());
  ex.run();
  const Tensor& y = ex.output("y");
  for (int64_t i = 0; i < y.numel(); ++i) ASSERT_EQ(y.f32()[i], 0.f) << i;
  volatile float tiny = 1e-20f;
  EXPECT_GT(tiny * tiny, 0.f);  // subnormal again after the inference

  // The same conv called outside an inference keeps its subnormal results.
  Conv2dParams p;
  p.c_in = p.c_out = 4, p.h = p.w = p.h_out = p.w_out = 6, p.kh = p.kw = 3;
  p.pad_top = p.pad_left = p.pad_bottom = p.pad_right = 1;
  std::vector<float> wt(4 * 4 * 9, 0.1f), out(4 * 36);
  Tensor tx{Shape{1, 4, 6, 6}, DType::F32, x.data()}, tw{Shape{4, 4, 3, 3}, DType::F32, wt.data()};
  Tensor ty{Shape{1, 4, 6, 6}, DType::F32, out.data()};
  std::vector<char> ws(cpu.conv2d_workspace(p) + 64);
  cpu.conv2d(p, tx, tw, nullptr, ty, ws.data());
  EXPECT_GT(*std::max_element(out.begin(), out.end()), 0.f);
}

TEST(Executor, NamesWhatIsMissing) {
  Graph g = two_conv_graph();
  prepare_graph(g);
  CpuBackend cpu(1);
  WeightsArena w(cpu);
  try {
    Executor ex(g, cpu, w, {}, {"y"});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("tensor 'x' is needed"), std::string::npos) << e.what();
  }
  EXPECT_THROW(Executor(g, cpu, w, {"x"}, {"nope"}), Error);
}

TEST(Executor, ActivationArenaIsNearTheLowerBound) {
  Graph g = two_conv_graph();
  prepare_graph(g);
  CpuBackend cpu(1);
  WeightsArena w(cpu);
  Executor ex(g, cpu, w, {"x"}, {"y"});
  EXPECT_GE(ex.activation_bytes(), ex.activation_lower_bound());
  EXPECT_LE(ex.activation_bytes(), ex.activation_lower_bound() * 3 / 2);
}

// Two values, each read by a "class" and a "box" node, listed class, class, box,
// box: each box node moves up to right after its value's class node, so each value
// dies a step sooner (D0's head branches by level); a chain keeps its order.
TEST(Graph, ReadersOfAValueRunTogether) {
  Graph g;
  g.name = "readers";
  const int x = g.add_value("x");
  g.inputs.push_back(x);
  auto node = [&](const char* name, std::vector<std::string> in, const char* out) {
    Node n;
    n.op_type = "Relu";
    n.name = name;
    for (auto& i : in) n.inputs.push_back(g.add_value(i));
    n.outputs.push_back(g.add_value(out));
    g.nodes.push_back(n);
  };
  node("p3", {"x"}, "v3");
  node("p4", {"v3"}, "v4");
  node("class3", {"v3"}, "c3");
  node("class4", {"v4"}, "c4");
  node("box3", {"v3"}, "b3");
  node("box4", {"v4"}, "b4");
  for (const char* o : {"c3", "c4", "b3", "b4"}) g.outputs.push_back(g.find(o));
  g.order_readers_together();
  std::vector<std::string> order;
  for (const Node& n : g.nodes) order.push_back(n.name);
  EXPECT_EQ(order, (std::vector<std::string>{"p3", "p4", "class3", "box3", "class4", "box4"}));
}

// A graph input of a known shape.
int add_input(Graph& g, const std::string& name, Shape s) {
  const int v = g.add_value(name);
  g.values[v].shape = s;
  g.values[v].shape_known = true;
  g.inputs.push_back(v);
  return v;
}

// Output "y" of g on the CPU, each supplied input filled with sin(0.37 i + its
// name's first letter) - 0.2.
std::vector<float> run_on_cpu(const Graph& g, const std::vector<std::string>& supplied) {
  CpuBackend cpu(1);
  WeightsArena w(cpu);
  Executor ex(g, cpu, w, supplied, {"y"});
  w.commit();
  ex.allocate();
  for (const std::string& name : supplied) {
    Tensor& t = ex.input(name);
    for (int64_t i = 0; i < t.numel(); ++i)
      t.f32()[i] = std::sin(0.37f * static_cast<float>(i) + name[0]) - 0.2f;
  }
  ex.run();
  const Tensor& y = ex.output("y");
  return std::vector<float>(y.f32(), y.f32() + y.numel());
}

// What a fusion pass must keep: prepares make()'s graph with the fusion off, then on
// (switch_fusion(options, on)), calls check(graph, stats, on) after each, and
// expects the same output bits on the CPU (the `supplied` inputs filled by
// run_on_cpu) and the same FLOPs either way. Returns the FLOPs counted.
int64_t expect_fusion_keeps_bits_and_flops(
    const std::function<Graph()>& make,
    const std::function<void(PassOptions&, bool)>& switch_fusion,
    const std::function<void(const Graph&, const PassStats&, bool)>& check,
    const std::vector<std::string>& supplied) {
  std::vector<float> out[2];
  int64_t flops[2] = {0, 0};
  for (bool on : {false, true}) {
    Graph g = make();
    PassOptions opt;
    switch_fusion(opt, on);
    const PassStats stats = prepare_graph(g, opt);
    check(g, stats, on);
    for (const Node& n : g.nodes) flops[on] += node_flops(g, n);
    out[on] = run_on_cpu(g, supplied);
  }
  EXPECT_EQ(out[0], out[1]);
  EXPECT_EQ(flops[0], flops[1]);
  return flops[0];
}

// x [1, 3, 9, 10] -> Pad(value, H/W pads top, left, bottom, right) -> MaxPool 3x3 s2 -> y
Graph pad_pool_graph(float value, std::vector<int64_t> hw_pads, int64_t ceil_mode) {
  Graph g;
  g.name = "padpool";
  g.opset = 13;
  const int x = add_input(g, "x", Shape{1, 3, 9, 10});
  const std::vector<int64_t> pads = {0, 0, hw_pads[0], hw_pads[1], 0, 0, hw_pads[2], hw_pads[3]};
  g.add_constant_i64("pads", Shape{8}, pads);
  g.add_constant_f32("value", Shape{}, {value});
  Node pad = g.make_node("Pad", "pad", {x, g.find("pads"), g.find("value")}, "p");
  Node pool = g.make_node("MaxPool", "pool", {pad.outputs[0]}, "y");
  pool.attrs["kernel_shape"].kind = pool.attrs["strides"].kind = Attribute::Kind::Ints;
  pool.attrs["kernel_shape"].ints = {3, 3};
  pool.attrs["strides"].ints = {2, 2};
  pool.attrs["ceil_mode"].kind = Attribute::Kind::Int;
  pool.attrs["ceil_mode"].i = ceil_mode;
  g.nodes = {pad, pool};
  g.outputs.push_back(g.find("y"));
  return g;
}

// Pad(-inf) + MaxPool becomes MaxPool's own pads (BiFPN's "SAME" downsampling),
// with the same output; a Pad of another value, ceil rounding, or a pad as wide
// as the window stays a Pad.
TEST(Passes, PadOfMinusInfinityFusesIntoMaxPool) {
  const float inf = std::numeric_limits<float>::infinity();
  struct Case { float value; std::vector<int64_t> pads; int64_t ceil_mode; bool fused; };
  const std::vector<Case> cases = {{-inf, {0, 0, 1, 1}, 0, true},  {-inf, {1, 2, 0, 1}, 0, true},
                                   {0.f, {0, 0, 1, 1}, 0, false},  {-inf, {0, 0, 1, 1}, 1, false},
                                   {-inf, {3, 0, 0, 0}, 0, false}};
  for (const Case& c : cases) {
    SCOPED_TRACE("value " + std::to_string(c.value) + " pads " + std::to_string(c.pads[0]) +
                 std::to_string(c.pads[1]) + std::to_string(c.pads[2]) +
                 std::to_string(c.pads[3]) + " ceil_mode " + std::to_string(c.ceil_mode));
    // run_on_cpu's input, sin(.) - 0.2, is negative in places: a zero pad would show.
    expect_fusion_keeps_bits_and_flops(
        [&] { return pad_pool_graph(c.value, c.pads, c.ceil_mode); },
        [](PassOptions& opt, bool on) { opt.fuse_pad_conv = on; },
        [&](const Graph&, const PassStats& stats, bool on) {
          EXPECT_EQ(stats.pad_conv, on && c.fused ? 1 : 0);
        },
        {"x"});
  }
}
// BiFPN's fusion node: y = swish(0.3 a + 0.5 maxpool(b) + 0.2 resize(c)), a [1, 3,
// 8, 10], b [1, 3, b_h, b_w] max-pooled 3x3 stride 2 (ceil_mode; pads
// top 0, left 1, bottom 1, right 0), c [1, 3,
// 4, 5] resized to 8x10 (`mode`, `coord`, `nearest`). `pinned` names a value that
// must survive (a graph output too).
Graph fusion_graph(int64_t b_h, int64_t b_w, int64_t ceil_mode, const std::string& mode,
                   const std::string& coord, const std::string& nearest,
                   const std::string& pinned = "") {
  Graph g;
  g.name = "fusion";
  g.opset = 13;
  const int a = add_input(g, "a", Shape{1, 3, 8, 10});
  const int b = add_input(g, "b", Shape{1, 3, b_h, b_w});
  const int c = add_input(g, "c", Shape{1, 3, 4, 5});
  Node pool = g.make_node("MaxPool", "pool", {b}, "pooled");
  pool.attrs["kernel_shape"].kind = pool.attrs["strides"].kind = Attribute::Kind::Ints;
  pool.attrs["pads"].kind = Attribute::Kind::Ints;
  pool.attrs["kernel_shape"].ints = {3, 3};
  pool.attrs["strides"].ints = {2, 2};
  pool.attrs["pads"].ints = {0, 1, 1, 0};  // top, left, bottom, right
  pool.attrs["ceil_mode"].kind = Attribute::Kind::Int;
  pool.attrs["ceil_mode"].i = ceil_mode;
  g.add_constant_f32("roi", Shape{0}, {});
  g.add_constant_f32("scales", Shape{4}, {1.f, 1.f, 2.f, 2.f});
  Node resize = g.make_node("Resize", "resize", {c, g.find("roi"), g.find("scales")}, "upsampled");
  for (const char* attr : {"mode", "coordinate_transformation_mode", "nearest_mode"})
    resize.attrs[attr].kind = Attribute::Kind::String;
  resize.attrs["mode"].s = mode;
  resize.attrs["coordinate_transformation_mode"].s = coord;
  resize.attrs["nearest_mode"].s = nearest;
  Node sum = g.make_node("WeightedSum", "sum", {a, pool.outputs[0], resize.outputs[0]}, "y");
  sum.attrs["weights"].kind = Attribute::Kind::Floats;
  sum.attrs["weights"].floats = {0.3f, 0.5f, 0.2f};
  attach_activation(sum, Activation{ActKind::Swish});
  g.nodes = {pool, resize, sum};
  g.outputs.push_back(g.find("y"));
  if (!pinned.empty()) g.outputs.push_back(g.find(pinned));
  return g;
}

// A max pool and a pixel-replicating nearest resize feeding a WeightedSum fold
// into it with the same output bits; a ceil-mode window, a resize that does not
// replicate pixels (linear, or nearest rounding up) and a value some other use
// needs stay nodes of their own.
TEST(Passes, ResamplingFoldsIntoTheWeightedSumReadingIt) {
  struct Case {
    int64_t b_h, b_w, ceil_mode;
    std::string mode, coord, nearest, pinned;
    int folded;
  };
  const std::vector<Case> cases = {
      {16, 20, 0, "nearest", "asymmetric", "floor", "", 2},
      // half_pixel + round_prefer_floor also copies input o / 2 to output o.
      {16, 20, 0, "nearest", "half_pixel", "round_prefer_floor", "", 2},
      {15, 19, 1, "nearest", "asymmetric", "floor", "", 1},  // 8x10 by ceil_mode, 7x9 by floor
      {16, 20, 0, "linear", "asymmetric", "floor", "", 1},
      {16, 20, 0, "nearest", "asymmetric", "ceil", "", 1},
      {16, 20, 0, "nearest", "asymmetric", "floor", "pooled", 1}};
  for (const Case& c : cases) {
    SCOPED_TRACE(c.mode + " " + c.coord + " " + c.nearest + " ceil_mode " +
                 std::to_string(c.ceil_mode) + " pinned '" + c.pinned + "'");
    expect_fusion_keeps_bits_and_flops(
        [&] {
          return fusion_graph(c.b_h, c.b_w, c.ceil_mode, c.mode, c.coord, c.nearest, c.pinned);
        },
        [](PassOptions& opt, bool on) { opt.fold_resample = on; },
        [&](const Graph& g, const PassStats& stats, bool on) {
          EXPECT_EQ(stats.resample, on ? c.folded : 0);
          EXPECT_EQ(g.values[g.find("y")].shape, (Shape{1, 3, 8, 10}));
        },
        {"a", "b", "c"});
  }
}

// A folded resampling the layer cannot honour is a named error, not a guess.
TEST(Passes, WeightedSumNamesABadResampling) {
  Graph g = fusion_graph(16, 20, 0, "nearest", "asymmetric", "floor");
  prepare_graph(g);
  Node& sum = g.nodes.back();
  ASSERT_EQ(sum.op_type, "WeightedSum");
  sum.attrs["maxpool1"].ints.pop_back();
  try {
    infer_shapes(g);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Malformed);
    EXPECT_NE(std::string(e.what()).find("maxpool1 has 9 values"), std::string::npos) << e.what();
  }
  sum.attrs["maxpool1"].ints.push_back(1);
  sum.attrs["upsample2"].ints = {2, 3};  // 4x5 -> 8x15, not 8x10
  EXPECT_THROW(infer_shapes(g), Error);
}

// A constant of shape s: scale * cos(step * i) at flat index i.
int cos_constant(Graph& g, const std::string& name, Shape s, float scale, float step) {
  std::vector<float> v(static_cast<size_t>(s.numel()));
  for (size_t i = 0; i < v.size(); ++i) v[i] = scale * std::cos(step * static_cast<float>(i));
  return g.add_constant_f32(name, s, v);
}

// x [1, 6, 9, 11] -> depthwise 3x3 (pads 1, relu) -> mid -> 1x1 conv to c_out (swish
// unless a residual r [1, c_out, 9, 11] is added; `pw_stride`) -> y; `mid_also_out`
// makes mid a graph output too.
Graph separable_graph(int64_t c_out, bool residual, int64_t pw_stride, bool mid_also_out) {
  Graph g;
  g.name = "separable";
  g.opset = 13;
  auto constant = [&](const std::string& name, Shape s, float scale) {
    return cos_constant(g, name, s, scale, 0.7f);
  };
  const int x = add_input(g, "x", Shape{1, 6, 9, 11});
  Node dw = g.make_node(
      "Conv", "dw",
      {x, constant("w_dw", Shape{6, 1, 3, 3}, 0.5f), constant("b_dw", Shape{6}, 0.1f)}, "mid");
  dw.attrs["group"].kind = Attribute::Kind::Int;
  dw.attrs["group"].i = 6;
  dw.attrs["pads"].kind = Attribute::Kind::Ints;
  dw.attrs["pads"].ints = {1, 1, 1, 1};
  attach_activation(dw, Activation{ActKind::Relu});
  Node pw = g.make_node("Conv", "pw",
                        {dw.outputs[0], constant("w_pw", Shape{c_out, 6, 1, 1}, 0.3f),
                         constant("b_pw", Shape{c_out}, -0.2f)},
                        "y");
  pw.attrs["strides"].kind = Attribute::Kind::Ints;
  pw.attrs["strides"].ints = {pw_stride, pw_stride};
  if (residual)
    pw.inputs.push_back(add_input(g, "r", Shape{1, c_out, 9, 11}));
  else
    attach_activation(pw, Activation{ActKind::Swish});
  g.nodes = {dw, pw};
  g.outputs.push_back(g.find("y"));
  if (mid_also_out) g.outputs.push_back(g.find("mid"));
  return g;
}

// A depthwise conv read only by a pointwise conv becomes one SeparableConv with the
// same output bits on the CPU (which runs the two convs); a strided 1x1 conv, or a
// depthwise output needed elsewhere, stays two Conv nodes.
TEST(Passes, DepthwiseThenPointwiseBecomesOneSeparableConv) {
  struct Case {
    int64_t c_out;
    bool residual;
    int64_t pw_stride;
    bool mid_also_out;
    int fused;
  };
  const std::vector<Case> cases = {
      {5, false, 1, false, 1}, {6, true, 1, false, 1}, {5, false, 2, false, 0}, {5, false, 1, true, 0}};
  for (const Case& c : cases) {
    SCOPED_TRACE("c_out " + std::to_string(c.c_out) + (c.residual ? " residual" : "") +
                 " stride " + std::to_string(c.pw_stride) + (c.mid_also_out ? " mid kept" : ""));
    const int64_t flops = expect_fusion_keeps_bits_and_flops(
        [&] { return separable_graph(c.c_out, c.residual, c.pw_stride, c.mid_also_out); },
        [](PassOptions& opt, bool on) { opt.fuse_separable_conv = on; },
        [&](const Graph&, const PassStats& stats, bool on) {
          EXPECT_EQ(stats.separable_conv, on ? c.fused : 0);
        },
        c.residual ? std::vector<std::string>{"x", "r"} : std::vector<std::string>{"x"});
    EXPECT_GT(flops, 0);
  }
}

// A BiFPN node: y = pw(dw(swish(0.6 x + 0.4 maxpool(b)))) + the sum itself as the
// residual when sum_as_residual; sum_also_out makes the sum a graph output too.
Graph bifpn_node_graph(bool sum_as_residual, bool sum_also_out) {
  Graph g = separable_graph(6, false, 1, false);
  g.name = "bifpn_node";
  const int x = g.inputs[0];
  const int b = add_input(g, "b", Shape{1, 6, 18, 22});
  Node sum = g.make_node("WeightedSum", "fusion", {x, b}, "sum");
  sum.attrs["weights"].kind = Attribute::Kind::Floats;
  sum.attrs["weights"].floats = {0.6f, 0.4f};
  Pool2dParams window;
  window.kh = window.kw = 3;
  window.stride_h = window.stride_w = 2;
  window.dil_h = window.dil_w = 1;
  window.pad_bottom = window.pad_right = 1;
  WeightedSumLayer::attach_maxpool(sum, 1, window);
  attach_activation(sum, Activation{ActKind::Swish});
  g.nodes[0].inputs[0] = sum.outputs[0];  // the depthwise conv reads the sum
  if (sum_as_residual) {
    g.nodes[1].attrs.erase("activation");
    g.nodes[1].inputs.push_back(sum.outputs[0]);
  }
  g.nodes.insert(g.nodes.begin(), sum);
  if (sum_also_out) g.outputs.push_back(sum.outputs[0]);
  return g;
}

// A WeightedSum read only by a SeparableConv becomes one WeightedSumSeparableConv
// with the same output bits on the CPU; a sum that is also the residual or a graph
// output stays stored.
TEST(Passes, WeightedSumThenSeparableConvBecomesOneNode) {
  struct Case {
    bool sum_as_residual, sum_also_out;
    int fused;
  };
  for (const Case& c : std::vector<Case>{{false, false, 1}, {true, false, 0}, {false, true, 0}}) {
    SCOPED_TRACE(std::string(c.sum_as_residual ? "residual " : "") +
                 (c.sum_also_out ? "sum kept" : ""));
    // The sum counts no FLOPs either way.
    const int64_t flops = expect_fusion_keeps_bits_and_flops(
        [&] { return bifpn_node_graph(c.sum_as_residual, c.sum_also_out); },
        [](PassOptions& opt, bool on) { opt.fuse_weighted_sum_separable = on; },
        [&](const Graph& g, const PassStats& stats, bool on) {
          EXPECT_EQ(stats.separable_conv, 1);
          EXPECT_EQ(stats.weighted_sum_separable, on ? c.fused : 0);
          const bool one_node = on && c.fused;
          ASSERT_EQ(g.nodes.size(), one_node ? 1u : 2u);
          if (one_node) {
            EXPECT_EQ(g.nodes[0].op_type, "WeightedSumSeparableConv");
          }
        },
        {"x", "b"});
    EXPECT_GT(flops, 0);
  }
}

// Three separable convs one after another, as in EfficientDet's class net: x [1, 6,
// 9, 11] -> depthwise 3x3 (pads 1, relu) -> 1x1 to 6 (swish) -> "link0" -> depthwise
// 3x3 stride 2 -> 1x1 to 7 (swish) -> "link1" -> depthwise 3x3 -> 1x1 to 9 with a
// bias -> y. `link0_also_out` makes link0 a graph output too; `link0_residual`
// gives link0's 1x1 conv a residual r [1, 6, 9, 11] instead of its activation.
Graph separable_chain_graph(bool link0_also_out, bool link0_residual) {
  Graph g;
  g.name = "separable_chain";
  g.opset = 13;
  auto constant = [&](const std::string& name, Shape s, float scale) {
    return cos_constant(g, name, s, scale, 0.8f);
  };
  int a = add_input(g, "x", Shape{1, 6, 9, 11});
  const int64_t widths[] = {6, 7, 9}, strides[] = {1, 2, 1};
  int64_t c = 6;
  for (int k = 0; k < 3; ++k) {
    const std::string id = std::to_string(k);
    Node dw = g.make_node(
        "Conv", "dw" + id,
        {a, constant("w_dw" + id, Shape{c, 1, 3, 3}, 0.4f), constant("b_dw" + id, Shape{c}, 0.1f)},
        "mid" + id);
    dw.attrs["group"].kind = Attribute::Kind::Int;
    dw.attrs["group"].i = c;
    dw.attrs["pads"].kind = dw.attrs["strides"].kind = Attribute::Kind::Ints;
    dw.attrs["pads"].ints = {1, 1, 1, 1};
    dw.attrs["strides"].ints = {strides[k], strides[k]};
    attach_activation(dw, Activation{ActKind::Relu});
    Node pw = g.make_node("Conv", "pw" + id,
                          {dw.outputs[0], constant("w_pw" + id, Shape{widths[k], c, 1, 1}, 0.3f),
                           constant("b_pw" + id, Shape{widths[k]}, -0.2f)},
                          k == 2 ? "y" : "link" + id);
    if (k == 0 && link0_residual)
      pw.inputs.push_back(add_input(g, "r", Shape{1, 6, 9, 11}));
    else if (k < 2)
      attach_activation(pw, Activation{ActKind::Swish});
    g.nodes.push_back(dw);
    g.nodes.push_back(pw);
    a = pw.outputs[0];
    c = widths[k];
  }
  g.outputs.push_back(g.find("y"));
  if (link0_also_out) g.outputs.push_back(g.find("link0"));
  return g;
}

// SeparableConvs each read only by the next become one SeparableConvChain with the
// same output bits and FLOPs on the CPU (which runs the links); a link whose output
// must survive, or that adds a residual, ends the chain before it.
TEST(Passes, SeparableConvsInARowBecomeOneChain) {
  struct Case {
    bool link0_also_out, link0_residual;
    int joined;
    size_t nodes;
  };
  for (const Case& c : std::vector<Case>{{false, false, 2, 1}, {true, false, 1, 2},
                                         {false, true, 1, 2}}) {
    SCOPED_TRACE(std::string(c.link0_also_out ? "link0 kept " : "") +
                 (c.link0_residual ? "link0 residual" : ""));
    const int64_t flops = expect_fusion_keeps_bits_and_flops(
        [&] { return separable_chain_graph(c.link0_also_out, c.link0_residual); },
        [](PassOptions& opt, bool on) { opt.fuse_separable_chain = on; },
        [&](const Graph& g, const PassStats& stats, bool on) {
          EXPECT_EQ(stats.separable_conv, 3);
          EXPECT_EQ(stats.separable_chain, on ? c.joined : 0);
          ASSERT_EQ(g.nodes.size(), on ? c.nodes : 3u);
          if (!on) return;
          const Node& chain = g.nodes.back();
          EXPECT_EQ(chain.op_type, "SeparableConvChain");
          EXPECT_EQ(chain.inputs.size(), 2 + 4 * (c.joined + 1u));
          EXPECT_EQ(chain.attr_ints("link0_depthwise_strides", {}),
                    (std::vector<int64_t>{c.joined == 2 ? 1 : 2, c.joined == 2 ? 1 : 2}));
        },
        c.link0_residual ? std::vector<std::string>{"x", "r"} : std::vector<std::string>{"x"});
    EXPECT_GT(flops, 0);
  }
}

// A classifier's tail: x [1, 6, 5, 7] -> 1x1 conv to 8 (swish) -> GlobalAveragePool
// -> Flatten -> Gemm (transB, to 4 classes, with a bias) -> y; `flat_also_out` makes
// the flattened features a graph output too.
Graph classifier_graph(bool flat_also_out) {
  Graph g;
  g.name = "classifier";
  g.opset = 13;
  const int x = add_input(g, "x", Shape{1, 6, 5, 7});
  Node head = g.make_node("Conv", "head",
                          {x, cos_constant(g, "w_head", Shape{8, 6, 1, 1}, 0.4f, 0.7f),
                           cos_constant(g, "b_head", Shape{8}, 0.1f, 0.9f)},
                          "features");
  attach_activation(head, Activation{ActKind::Swish});
  Node pool = g.make_node("GlobalAveragePool", "pool", {head.outputs[0]}, "pooled");
  Node flat = g.make_node("Flatten", "flatten", {pool.outputs[0]}, "flat");
  Node fc = g.make_node("Gemm", "fc",
                        {flat.outputs[0], cos_constant(g, "w_fc", Shape{4, 8}, 0.5f, 0.3f),
                         cos_constant(g, "b_fc", Shape{4}, 0.2f, 1.1f)},
                        "y");
  fc.attrs["transB"].kind = Attribute::Kind::Int;
  fc.attrs["transB"].i = 1;
  g.nodes = {head, pool, flat, fc};
  g.outputs.push_back(g.find("y"));
  if (flat_also_out) g.outputs.push_back(g.find("flat"));
  return g;
}

// The pool becomes the 1x1 conv's second output and the Gemm reads the pooled
// [1, 8, 1, 1] as its [1, 8] A: two nodes, the same output bits on the CPU. Features
// that must survive flattened keep the Flatten.
TEST(Passes, ClassifierPoolAndFlattenFoldIntoTheirNeighbours) {
  for (bool flat_also_out : {false, true}) {
    SCOPED_TRACE(flat_also_out ? "flat kept" : "");
    const int64_t flops = expect_fusion_keeps_bits_and_flops(
        [&] { return classifier_graph(flat_also_out); },
        [](PassOptions& opt, bool on) { opt.set_fusions(on); },
        [&](const Graph& g, const PassStats& stats, bool on) {
          EXPECT_EQ(stats.channel_mean, on ? 1 : 0);
          EXPECT_EQ(stats.reshape_gemm, on && !flat_also_out ? 1 : 0);
          ASSERT_EQ(g.nodes.size(), !on ? 4u : flat_also_out ? 3u : 2u);
          if (on && !flat_also_out) {
            EXPECT_EQ(g.nodes[0].outputs.size(), 2u);
            EXPECT_EQ(g.nodes[1].attr_ints("a_shape", {}), (std::vector<int64_t>{1, 8}));
          }
        },
        {"x"});
    EXPECT_GT(flops, 0);
  }
  // An a_shape that does not hold A's values is named.
  Graph g = classifier_graph(false);
  prepare_graph(g);
  g.nodes.back().attrs["a_shape"].ints = {1, 9};
  try {
    infer_shapes(g);
    ADD_FAILURE() << "a_shape [1,9] over 8 values was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("a_shape"), std::string::npos) << e.what();
  }
}

// An MBConv block: with `expansion`, x [1, c_in, h, w] -> 1x1 conv to c (swish) ->
// "expanded" -> depthwise 3x3 (pads 1, swish) -> a, else a = x [1, c, h, w]; then
// a's mean -> 1x1 conv to 3 (swish) -> 1x1 conv to c (sigmoid) -> the gate, Mul(a,
// gate) -> 1x1 projection to 5 with a bias, plus the residual r [1, 5, h, w] when
// `residual` -> y.
Graph mbconv_graph(bool residual, bool expansion, int64_t c_in = 4, int64_t c = 6, int64_t h = 9,
                   int64_t w = 11) {
  Graph g;
  g.name = "mbconv";
  g.opset = 13;
  auto constant = [&](const std::string& name, Shape s, float scale) {
    return cos_constant(g, name, s, scale, 0.9f);
  };
  auto node = [&](const std::string& op, const std::string& name, std::vector<int> inputs) {
    return g.make_node(op, name, std::move(inputs), name + "_out");
  };
  int a = add_input(g, "x", Shape{1, expansion ? c_in : c, h, w});
  if (expansion) {
    Node expand =
        node("Conv", "expand",
             {a, constant("w_x", Shape{c, c_in, 1, 1}, 0.5f), constant("b_x", Shape{c}, 0.2f)});
    expand.outputs = {g.add_value("expanded")};
    attach_activation(expand, Activation{ActKind::Swish});
    Node dw = node("Conv", "dw",
                   {expand.outputs[0], constant("w_dw", Shape{c, 1, 3, 3}, 0.3f),
                    constant("b_dw", Shape{c}, -0.1f)});
    dw.attrs["group"].kind = Attribute::Kind::Int;
    dw.attrs["group"].i = c;
    dw.attrs["pads"].kind = Attribute::Kind::Ints;
    dw.attrs["pads"].ints = {1, 1, 1, 1};
    attach_activation(dw, Activation{ActKind::Swish});
    g.nodes = {expand, dw};
    a = dw.outputs[0];
  }
  Node pool = node("GlobalAveragePool", "pool", {a});
  Node reduce = node(
      "Conv", "reduce",
      {pool.outputs[0], constant("w_r", Shape{3, c, 1, 1}, 0.6f), constant("b_r", Shape{3}, 0.1f)});
  attach_activation(reduce, Activation{ActKind::Swish});
  Node expand = node("Conv", "se_expand",
                     {reduce.outputs[0], constant("w_e", Shape{c, 3, 1, 1}, 0.8f),
                      constant("b_e", Shape{c}, -0.1f)});
  attach_activation(expand, Activation{ActKind::Sigmoid});
  Node gate = node("Mul", "gate", {a, expand.outputs[0]});
  Node project = node(
      "Conv", "project",
      {gate.outputs[0], constant("w_p", Shape{5, c, 1, 1}, 0.4f), constant("b_p", Shape{5}, 0.3f)});
  if (residual) project.inputs.push_back(add_input(g, "r", Shape{1, 5, h, w}));
  project.outputs = {g.add_value("y")};
  for (const Node& n : {pool, reduce, expand, gate, project}) g.nodes.push_back(n);
  g.outputs.push_back(g.find("y"));
  return g;
}

// A SqueezeExcitation read only by a 1x1 conv, as its weights (the gate folded into
// them) or as its input (the gate left on the activation), becomes one
// SqueezeExcitationConv with the same output bits and FLOPs on the CPU (which runs
// the two); a gated tensor that must survive keeps the two nodes.
TEST(Passes, SqueezeExcitationThenConvBecomesOneNode) {
  struct Case {
    bool fold_gate, residual, keep_gated;
    int fused;
  };
  for (const Case& c : std::vector<Case>{{true, true, false, 1},
                                         {false, true, false, 1},
                                         {true, false, false, 1},
                                         {false, false, true, 0}}) {
    SCOPED_TRACE(std::string(c.fold_gate ? "gated weights" : "gated input") +
                 (c.residual ? ", residual" : "") + (c.keep_gated ? ", gated kept" : ""));
    const int64_t flops = expect_fusion_keeps_bits_and_flops(
        [&] { return mbconv_graph(c.residual, false); },
        [&](PassOptions& opt, bool on) {
          opt.fold_channel_gate = c.fold_gate;
          opt.fuse_squeeze_excitation_conv = on;
          if (c.keep_gated) opt.keep.insert("gate_out");
        },
        [&](const Graph& g, const PassStats& stats, bool on) {
          EXPECT_EQ(stats.squeeze_excitation, 1);
          EXPECT_EQ(stats.channel_gate, c.fold_gate ? 1 : 0);
          EXPECT_EQ(stats.squeeze_excitation_conv, on ? c.fused : 0);
          int fused_nodes = 0;
          for (const Node& n : g.nodes) {
            if (n.op_type != "SqueezeExcitationConv") continue;
            ++fused_nodes;
            EXPECT_EQ(n.attr_int("gates_weights", -1), c.fold_gate ? 1 : 0);
            EXPECT_EQ(n.attr_string("se_expand_activation", ""), "sigmoid");
          }
          EXPECT_EQ(fused_nodes, on ? c.fused : 0);
        },
        c.residual ? std::vector<std::string>{"x", "r"} : std::vector<std::string>{"x"});
    EXPECT_GT(flops, 0);
  }
}

// MBConv's expansion, a 1x1 conv read only by the depthwise conv (which makes the
// squeeze-excitation's pool too), becomes one PointwiseDepthwiseConv with both
// outputs, with the same output bits and FLOPs on the CPU; an expanded tensor that
// must survive, or a plane over the pass's limit (9 x 11 here), keeps the two convs.
TEST(Passes, PointwiseThenDepthwiseConvBecomesOneNode) {
  struct Case {
    bool keep_expanded;
    int64_t max_plane;
    int fused;
  };
  for (const Case& c : std::vector<Case>{{false, 99, 1}, {true, 99, 0}, {false, 98, 0}}) {
    SCOPED_TRACE(std::string(c.keep_expanded ? "expanded kept, " : "") + "planes up to " +
                 std::to_string(c.max_plane));
    const int64_t flops = expect_fusion_keeps_bits_and_flops(
        [] { return mbconv_graph(true, true); },
        [&](PassOptions& opt, bool on) {
          opt.fuse_pointwise_depthwise = on;
          opt.pointwise_depthwise_max_plane = c.max_plane;
          if (c.keep_expanded) opt.keep.insert("expanded");
        },
        [&](const Graph& g, const PassStats& stats, bool on) {
          EXPECT_EQ(stats.channel_mean, 1);
          const int fused = on ? c.fused : 0;
          EXPECT_EQ(stats.pointwise_depthwise, fused);
          int nodes = 0;
          for (const Node& n : g.nodes) {
            if (n.op_type != "PointwiseDepthwiseConv") continue;
            ++nodes;
            EXPECT_EQ(n.outputs.size(), 2u) << "the channel means stay a second output";
            EXPECT_EQ(n.attr_string("pointwise_activation", ""), "swish");
          }
          EXPECT_EQ(nodes, fused);
        },
        {"x", "r"});
    EXPECT_GT(flops, 0);
  }
}

// Each backend says up to which plane the expansion and its depthwise conv become one
// node (pass_options_for): the CPU, which runs it a few channels at a time, takes any
// plane, and there the fused node's arena is smaller than the two nodes'; a backend
// running the composition (the fp16 simulation, as CUDA) holds the input, the whole
// product and the output at once, so fusing would raise its arena, and it keeps
// Backend's limit. An expansion the AVX2 GEMM takes (24 -> 48 on 100 x 120), with
// its squeeze-excitation and projection.
TEST(Passes, PointwiseDepthwisePlaneLimitIsTheBackends) {
  auto arena = [](Backend& be, int64_t max_plane) {
    Graph g = mbconv_graph(false, true, 24, 48, 100, 120);
    PassOptions opt;
    opt.pointwise_depthwise_max_plane = max_plane;
    const PassStats stats = prepare_graph(g, opt);
    EXPECT_EQ(stats.pointwise_depthwise, max_plane >= 100 * 120 ? 1 : 0);
    WeightsArena w(be);
    Executor ex(g, be, w, {"x"}, {"y"});
    return ex.activation_bytes();
  };
  CpuBackend cpu(2);
  Fp16StorageCpuBackend fp16(2);
  EXPECT_EQ(pass_options_for(fp16).pointwise_depthwise_max_plane,
            PassOptions().pointwise_depthwise_max_plane);
  EXPECT_LT(arena(fp16, 100 * 120 - 1), arena(fp16, 100 * 120));
#ifdef __AVX2__
  EXPECT_GE(pass_options_for(cpu).pointwise_depthwise_max_plane, 100 * 120);
  EXPECT_LT(arena(cpu, 100 * 120), arena(cpu, 100 * 120 - 1));
#endif
}

// A MobileNet-style block without squeeze-excitation (EfficientNet-Lite's): the
// depthwise conv fuses with the projection by default (SeparableConv) and with the
// expansion where the backend prefers that (the CPU, whose channel blocks never hold
// the expansion whole): a smaller arena there, the same bits.
TEST(Passes, DepthwiseAfterAnExpansionFusesWithItWhereTheBackendPrefers) {
  auto lite_block = [] {
    Graph g;
    g.name = "lite_block";
    g.opset = 13;
    const int x = add_input(g, "x", Shape{1, 24, 100, 120});
    auto conv = [&](const std::string& name, int in, Shape w, int64_t group, ActKind act) {
      Node n = g.make_node("Conv", name,
                           {in, cos_constant(g, "w_" + name, w, 0.4f, 0.9f),
                            cos_constant(g, "b_" + name, Shape{w[0]}, 0.1f, 0.9f)},
                           name == "project" ? "y" : name + "_out");
      if (group > 1) {
        n.attrs["group"].kind = Attribute::Kind::Int;
        n.attrs["group"].i = group;
        n.attrs["pads"].kind = Attribute::Kind::Ints;
        n.attrs["pads"].ints = {1, 1, 1, 1};
      }
      if (act != ActKind::None) attach_activation(n, Activation{act});
      g.nodes.push_back(n);
      return n.outputs[0];
    };
    const int e = conv("expand", x, Shape{48, 24, 1, 1}, 1, ActKind::Relu);
    const int d = conv("dw", e, Shape{48, 1, 3, 3}, 48, ActKind::Relu);
    g.outputs.push_back(conv("project", d, Shape{16, 48, 1, 1}, 1, ActKind::None));
    return g;
  };
  CpuBackend cpu(2);
  Fp16StorageCpuBackend fp16(2);
  EXPECT_FALSE(pass_options_for(fp16).prefer_pointwise_depthwise);
  std::vector<float> outputs[2];
  size_t arenas[2];
  for (const bool prefer : {false, true}) {
    Graph g = lite_block();
    PassOptions opt = pass_options_for(cpu);
    opt.prefer_pointwise_depthwise = prefer;
    const PassStats stats = prepare_graph(g, opt);
    EXPECT_EQ(stats.separable_conv, prefer ? 0 : 1);
    EXPECT_EQ(stats.pointwise_depthwise, prefer ? 1 : 0);
    WeightsArena w(cpu);
    Executor ex(g, cpu, w, {"x"}, {"y"});
    w.commit();
    ex.allocate();
    Tensor& in = ex.input("x");
    for (int64_t i = 0; i < in.numel(); ++i) in.f32()[i] = std::cos(0.37f * static_cast<float>(i));
    ex.run();
    const Tensor& y = ex.output("y");
    outputs[prefer] = std::vector<float>(y.f32(), y.f32() + y.numel());
    arenas[prefer] = ex.activation_bytes();
  }
  EXPECT_EQ(outputs[0], outputs[1]);
#ifdef __AVX2__
  EXPECT_TRUE(pass_options_for(cpu).prefer_pointwise_depthwise);
  EXPECT_LT(arenas[1], arenas[0]);
#endif
}

// A CPU backend that says it has several queues, so that executors plan and
// schedule for them (the CPU itself runs every call at once, in order).
template <class Base>
class Queued : public Base {
 public:
  explicit Queued(int queues, double memory_allowance = 0.0)
      : Base(1), queues_(queues), allowance_(memory_allowance) {}
  int queues() const override { return queues_; }
  double concurrency_memory_allowance() const override { return allowance_; }

 private:
  int queues_;
  double allowance_;
};
using QueuedCpuBackend = Queued<CpuBackend>;

// Random steps over a few units of memory: whatever the queue count, every two
// steps that touch the same unit, one of them writing, stay ordered; one queue
// keeps the sequential order, more never lengthen it.
TEST(Schedule, KeepsEveryConflictingPairOrderedOnRandomSteps) {
  std::mt19937 rng(5);
  for (int trial = 0; trial < 200; ++trial) {
    const int n = 1 + static_cast<int>(rng() % 40), units = 1 + static_cast<int>(rng() % 12);
    std::vector<StepAccess> steps(n);
    for (StepAccess& st : steps)
      for (int k = 0, m = static_cast<int>(rng() % 4); k < m; ++k) {
        const uintptr_t u = rng() % units;
        (rng() % 3 ? st.reads : st.writes).push_back(ByteRange{u * 8, u * 8 + 1 + rng() % 12});
      }
    for (int queues : {1, 2, 3, 8}) {
      const std::vector<ScheduledStep> schedule = schedule_steps(steps, queues);
      ASSERT_EQ(schedule.size(), steps.size());
      std::pair<int, int> pair;
      ASSERT_TRUE(ordered_conflicts(steps, schedule, &pair))
          << "trial " << trial << " queues " << queues << ": " << pair.first << ", " << pair.second;
      for (int s = 0; s < n; ++s) {
        ASSERT_LT(schedule[s].queue, queues);
        for (int w : schedule[s].waits) ASSERT_LT(w, s);
      }
      if (queues == 1) {
        ASSERT_EQ(critical_path(schedule), static_cast<size_t>(n));
      }
      ASSERT_LE(critical_path(schedule), static_cast<size_t>(n));
      // fits() refusing every overlap gives the sequential order; accepting every one
      // changes nothing.
      const std::vector<ScheduledStep> refused =
          schedule_steps(steps, queues, [](const std::vector<ScheduledStep>&) { return false; });
      ASSERT_TRUE(ordered_conflicts(steps, refused));
      ASSERT_EQ(critical_path(refused), static_cast<size_t>(n));
      const std::vector<ScheduledStep> accepted =
          schedule_steps(steps, queues, [](const std::vector<ScheduledStep>&) { return true; });
      ASSERT_EQ(critical_path(accepted), critical_path(schedule));
      for (int s = 0; s < n; ++s) {
        ASSERT_EQ(accepted[s].queue, schedule[s].queue);
        ASSERT_EQ(accepted[s].waits, schedule[s].waits);
      }
    }
  }
}

// D0 on a CPU backend (Base) that says it has `queues` queues and allows the arena
// to grow by `allowance`: the executor's schedule checked against its memory, and
// the sizes that the tests below compare.
struct D0Schedule {
  size_t steps, chain, arena, sequential_arena;
};
template <class Base>
D0Schedule d0_schedule(const Model& m, int queues, double allowance) {
  // The kernels' workspaces, and so what fits in the arena, depend on the ISA: the
  // AVX2 ones on every machine, so that the sizes compared are the same everywhere.
  cpu::allow_avx512(false);
  struct Restore {
    ~Restore() { cpu::allow_avx512(true); }
  } restore;
  Queued<Base> one(1), be(queues, allowance);
  WeightsArena w1(one), w(be);
  Executor sequential(m.graph, one, w1, {m.info.input}, m.info.outputs);
  Executor ex(m.graph, be, w, {m.info.input}, m.info.outputs);
  w.commit();
  ex.allocate();
  const std::vector<StepAccess> accesses = ex.step_accesses();
  std::vector<ScheduledStep> schedule = ex.schedule();
  std::pair<int, int> pair;
  EXPECT_TRUE(ordered_conflicts(accesses, schedule, &pair)) << pair.first << ", " << pair.second;
  if (critical_path(schedule) < ex.num_steps()) {
    for (ScheduledStep& st : schedule) st.waits.clear();
    EXPECT_FALSE(ordered_conflicts(accesses, schedule));  // the check can fail
  }
  return {ex.num_steps(), critical_path(ex.schedule()), ex.activation_bytes(),
          sequential.activation_bytes()};
}

// On D0 in fp32 the ten head branches (class and box, P3-P7: each one step, a chain
// of four separable convs) run at once within the sequential plan's arena: at least
// 9 fewer steps one after another.
TEST(Schedule, EfficientDetHeadsRunAtOnceWithinTheSequentialArena) {
  const std::string path = exported_model("tf_efficientdet_d0_rand0");
  if (path.empty()) GTEST_SKIP() << "tf_efficientdet_d0_rand0.onnx not found";
  Model m = load_model(path);
  const D0Schedule one = d0_schedule<CpuBackend>(m, 1, 0.0);
  EXPECT_EQ(one.chain, one.steps);
  EXPECT_EQ(one.arena, one.sequential_arena);
  const D0Schedule ten = d0_schedule<CpuBackend>(m, 10, 0.0);
  EXPECT_LE(ten.chain + 9, ten.steps);
  EXPECT_LE(ten.arena, ten.sequential_arena);
}

// In fp16 storage the last head convs store their outputs in fp32 themselves
// (conv2d_stores_f32), so the only convert step is the input's. Overlapping
// branches keep more fp16 intermediates alive than the sequential plan: without an
// allowance the executor keeps the sequential plan's size and runs at once what
// fits in it, with one it runs more at once in a larger arena, within the allowance.
TEST(Schedule, ConcurrencyStaysWithinTheMemoryAllowance) {
  const std::string path = exported_model("tf_efficientdet_d0_rand0");
  if (path.empty()) GTEST_SKIP() << "tf_efficientdet_d0_rand0.onnx not found";
  Model m = load_model(path);
  const D0Schedule fp32 = d0_schedule<CpuBackend>(m, 1, 0.0);
  const D0Schedule strict = d0_schedule<Fp16StorageCpuBackend>(m, 10, 0.0);
  EXPECT_EQ(strict.steps, fp32.steps + 1);
  EXPECT_LE(strict.arena, strict.sequential_arena);
  EXPECT_LE(strict.chain + 8, strict.steps);  // head branches overlap at no cost
  const D0Schedule loose = d0_schedule<Fp16StorageCpuBackend>(m, 10, 0.5);
  EXPECT_LE(loose.arena, strict.sequential_arena * 3 / 2);
  EXPECT_LE(loose.chain + 12, loose.steps);
  ::testing::Test::RecordProperty("steps", std::to_string(strict.steps));
  ::testing::Test::RecordProperty("chain_and_arena_strict",
                                  std::to_string(strict.chain) + " " + std::to_string(strict.arena));
  ::testing::Test::RecordProperty("chain_and_arena_0.5",
                                  std::to_string(loose.chain) + " " + std::to_string(loose.arena));
}

// An executor on a backend with several queues records its steps with their queues
// and marks: every waited-for step sets its mark before a later step waits for it.
TEST(Schedule, ExecutorRecordsQueuesAndMarksInOrder) {
  const std::string path = exported_model("tf_efficientdet_d0_rand0");
  if (path.empty()) GTEST_SKIP() << "tf_efficientdet_d0_rand0.onnx not found";
  Model m = load_model(path);
  struct Logging : QueuedCpuBackend {
    Logging() : QueuedCpuBackend(4) {}
    std::unique_ptr<RecordedWork> record(const std::function<void()>& work) override {
      recording = true;
      work();
      recording = false;
      return nullptr;  // the CPU ran the calls; nothing to replay
    }
    void prepare_marks(int count) override { set.assign(count, false); }
    void use_queue(int queue, const std::vector<int>& after) override {
      if (!recording) return;
      queues_used.push_back(queue);
      for (int mark : after) {
        ASSERT_LT(mark, static_cast<int>(set.size()));
        EXPECT_TRUE(set[mark]) << "mark " << mark << " waited for before it was set";
      }
    }
    void set_mark(int mark) override {
      if (recording) set.at(mark) = true;
    }
    bool recording = false;
    std::vector<bool> set;
    std::vector<int> queues_used;
  } be;
  WeightsArena w(be);
  Executor ex(m.graph, be, w, {m.info.input}, m.info.outputs);
  w.commit();
  ex.allocate();
  ex.run();
  EXPECT_TRUE(be.queues_used.empty());  // the first run goes step by step, outside record()
  ex.run();
  ASSERT_EQ(be.queues_used.size(), ex.num_steps() + 1);  // each step, then back to queue 0
  EXPECT_EQ(be.queues_used.back(), 0);
  EXPECT_GT(*std::max_element(be.queues_used.begin(), be.queues_used.end()), 0);
  EXPECT_TRUE(std::find(be.set.begin(), be.set.end(), false) == be.set.end());
}

}  // namespace
}  // namespace repshare
