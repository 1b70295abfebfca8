// Engine core: the activation planner, the weights arena, and partial execution.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "engine/arena.h"
#include "engine/error.h"
#include "engine/executor.h"
#include "engine/passes.h"
#include "kernels/cpu/cpu_backend.h"

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

TEST(ActivationPlanner, ReusesMemoryOfDeadTensors) {
  // A chain a -> b -> c -> d: only two tensors are ever alive together.
  std::vector<Lifetime> chain = {{1000, 0, 1}, {1000, 1, 2}, {1000, 2, 3}, {1000, 3, 4}};
  ActivationPlan p = plan_activations(chain);
  EXPECT_EQ(p.lower_bound, 2 * align_up(1000, kArenaAlignment));
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

  EXPECT_EQ(full_steps, 3u);  // conv1(+relu), conv2, add
  EXPECT_EQ(cut_steps, 2u);   // conv2, add: conv1 never runs
  EXPECT_EQ(full_weights, 2u);
  EXPECT_EQ(cut_weights, 1u);  // w1 is never loaded
  ASSERT_EQ(full.size(), cut.size());
  for (size_t i = 0; i < full.size(); ++i) EXPECT_FLOAT_EQ(full[i], cut[i]);
}

TEST(Executor, BindReadsASuppliedTensorInPlace) {
  Graph g = two_conv_graph();
  PassOptions opt;
  opt.keep = {"a"};
  prepare_graph(g, opt);
  CpuBackend cpu(1);
  WeightsArena w(cpu);
  Executor ex(g, cpu, w, {"a"}, {"y"});
  w.commit();
  ex.allocate();
  std::vector<float> a(4 * 36, 0.f);
  ex.bind("a", a.data());
  ex.run();
  const Tensor& y = ex.output("y");
  for (int64_t i = 0; i < y.numel(); ++i) EXPECT_EQ(y.f32()[i], 0.f);  // no bias: zeros in, zeros out
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

}  // namespace
}  // namespace repshare
