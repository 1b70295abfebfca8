// Representation sharing: adapters' channel map and resizing, and a receiver
// suffix run on a donor's stage output.
#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "tests/toy_model.h"
#include "engine/error.h"
#include "engine/passes.h"
#include "kernels/cpu/cpu_backend.h"
#include "merge/sharing.h"
#include "merge/study.h"

namespace repshare {
namespace {

TEST(ChannelMap, SamplesUniformlyAndRepeatsWhenWidening) {
  EXPECT_EQ(channel_index_map(8, 4), (std::vector<int64_t>{0, 2, 4, 6}));
  EXPECT_EQ(channel_index_map(3, 3), (std::vector<int64_t>{0, 1, 2}));
  auto wide = channel_index_map(3, 8);  // with repetition, every donor channel used
  EXPECT_EQ(wide, (std::vector<int64_t>{0, 0, 0, 1, 1, 1, 2, 2}));
  for (int64_t cs : {1, 7, 40, 112, 320})
    for (int64_t ct : {1, 16, 24, 40, 80, 320}) {
      auto m = channel_index_map(cs, ct);
      ASSERT_EQ(static_cast<int64_t>(m.size()), ct);
      for (size_t t = 0; t < m.size(); ++t) {
        EXPECT_GE(m[t], 0);
        EXPECT_LT(m[t], cs);
        if (t) {
          EXPECT_GE(m[t], m[t - 1]);  // order-preserving
        }
      }
      if (ct >= cs) {
        EXPECT_EQ(std::set<int64_t>(m.begin(), m.end()).size(), size_t(cs));
      }
    }
  EXPECT_THROW(channel_index_map(0, 4), Error);
}

std::vector<float> run_adapter(const Shape& from, const Shape& to, const std::vector<float>& x,
                               const AdapterOptions& opt = AdapterOptions()) {
  Graph g = build_adapter_graph(from, to, opt);
  CpuBackend cpu(1);
  WeightsArena w(cpu);
  Executor ex(g, cpu, w, {"donor"}, {"adapted"});
  w.commit();
  ex.allocate();
  std::copy(x.begin(), x.end(), ex.input("donor").f32());
  ex.run();
  const Tensor& y = ex.output("adapted");
  EXPECT_EQ(y.shape, to);
  return std::vector<float>(y.f32(), y.f32() + y.numel());
}

TEST(Adapter, SamplesChannelsThenResizes) {
  // Donor [1, 4, 4, 4] with channel c constant c + 1; receiver [1, 2, 2, 2].
  std::vector<float> x(64);
  for (int c = 0; c < 4; ++c)
    for (int i = 0; i < 16; ++i) x[c * 16 + i] = c + 1.f;
  auto y = run_adapter({1, 4, 4, 4}, {1, 2, 2, 2}, x);
  for (int i = 0; i < 4; ++i) EXPECT_FLOAT_EQ(y[i], 1.f);      // channel 0 <- donor 0
  for (int i = 4; i < 8; ++i) EXPECT_FLOAT_EQ(y[i], 3.f);      // channel 1 <- donor 2
}

TEST(Adapter, AreaDownsamplingAveragesBlocks) {
  std::vector<float> x = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
  auto y = run_adapter({1, 1, 4, 4}, {1, 1, 2, 2}, x);
  EXPECT_FLOAT_EQ(y[0], (1 + 2 + 5 + 6) / 4.f);
  EXPECT_FLOAT_EQ(y[3], (11 + 12 + 15 + 16) / 4.f);
  AdapterOptions nearest;
  nearest.downsample = ResizeMethod::Nearest;
  auto yn = run_adapter({1, 1, 4, 4}, {1, 1, 2, 2}, x, nearest);
  // half_pixel: output 0 maps to input 0.5, which round_prefer_floor takes to 0.
  EXPECT_FLOAT_EQ(yn[0], 1.f);
}

TEST(Adapter, BilinearUpsamplingKeepsConstantsAndInterpolates) {
  std::vector<float> x = {0, 1, 2, 3};
  auto y = run_adapter({1, 1, 2, 2}, {1, 1, 4, 4}, x);
  EXPECT_FLOAT_EQ(y[0], 0.f);   // corners clamp under half_pixel
  EXPECT_FLOAT_EQ(y[15], 3.f);
  EXPECT_FLOAT_EQ(y[1], 0.25f);  // x = 0.25 between 0 and 1
}

// A toy network with stages stem, s1, s2 (3x3 convs, stride 1) and pooled logits.
Model toy_model(const std::string& name, float scale) {
  return toy_model(name, scale, Shape{1, 3, 8, 8}, {{"stem", 4, 3, 1}, {"s1", 6, 3, 1}, {"s2", 5, 3, 1}},
                   0);
}

TEST(ReceiverSuffix, SameModelSameStageReproducesTheFullRun) {
  Model donor = toy_model("donor", 1.f);
  Model receiver = toy_model("receiver", 1.f);  // identical weights
  CpuBackend cpu(1);
  WeightsArena weights(cpu);
  Executor d(donor.graph, cpu, weights, {"input"}, {"stem", "s1", "s2", "logits"});
  ReceiverSuffix r(donor, receiver, 1, 1, AdapterOptions(), cpu, weights);
  weights.commit();
  d.allocate();
  r.allocate({&d.output("stem"), &d.output("s1"), &d.output("s2")});
  float* in = d.input("input").f32();
  for (int i = 0; i < 192; ++i) in[i] = 0.01f * (i % 29) - 0.1f;
  d.run();
  r.run();
  const Tensor& a = d.output("logits");
  const Tensor& b = r.output("logits");
  for (int64_t i = 0; i < a.numel(); ++i) EXPECT_FLOAT_EQ(a.f32()[i], b.f32()[i]);
  // The suffix ran only s2 (+pool) and stored nothing new: identical weights dedupe.
  EXPECT_EQ(r.receiver().num_steps(), 2u);
  EXPECT_EQ(weights.records().size(), 3u);
}

TEST(ReceiverSuffix, ReceiverWeightsBeforeTheCutAreNeverLoaded) {
  Model donor = toy_model("donor", 1.f);
  Model receiver = toy_model("receiver", 0.5f);  // different weights: nothing dedupes
  CpuBackend cpu(1);
  WeightsArena weights(cpu);
  Executor d(donor.graph, cpu, weights, {"input"}, {"stem", "s1", "s2", "logits"});
  ReceiverSuffix r(donor, receiver, 0, 1, AdapterOptions(), cpu, weights);
  auto by_model = weights.bytes_by_model();
  EXPECT_EQ(by_model["receiver"], 5u * 6 * 9 * 4);  // s2's weight only
  EXPECT_EQ(r.links().size(), 1u);
  weights.commit();
  d.allocate();
  r.allocate({&d.output("stem"), &d.output("s1"), &d.output("s2")});
  d.run();
  r.run();  // stem [1,4,8,8] adapted to s1's [1,6,8,8] by channel sampling
  EXPECT_EQ(r.output("logits").shape, (Shape{1, 5, 1, 1}));
}

TEST(ReceiverSuffix, CutsThatReadSeveralStagesTakeEachFromTheDonor) {
  // Receiver whose output adds stem back in (a skip over s1, s2): cutting after s2
  // needs stem and s2, fed from donor stages at the same offset.
  Model receiver = toy_model("receiver", 1.f);
  Graph& g = receiver.graph;
  Node add;
  add.op_type = "Add";
  add.name = "skip";
  add.inputs = {g.find("logits"), g.add_value("stem_pool")};
  Node pool;
  pool.op_type = "ReduceMean";
  pool.name = "stem_pool";
  pool.inputs = {g.find("stem")};
  pool.outputs = {g.find("stem_pool")};
  pool.attrs["axes"].kind = Attribute::Kind::Ints;
  pool.attrs["axes"].ints = {1, 2, 3};
  add.outputs = {g.add_value("out")};
  g.nodes.push_back(pool);
  g.nodes.push_back(add);
  g.outputs.push_back(g.find("out"));
  receiver.info.outputs = {"out"};
  infer_shapes(g);
  Model donor = toy_model("donor", 1.f);
  auto links = links_for_cut(donor, receiver, 2, 2);
  ASSERT_EQ(links.size(), 2u);
  EXPECT_EQ(links[0].receiver_stage, 0);  // stem <- donor stage 0
  EXPECT_EQ(links[0].donor_stage, 0);
  EXPECT_EQ(links[1].receiver_stage, 2);
  EXPECT_EQ(links[1].donor_stage, 2);
  try {  // donor stage 1 would have to feed receiver stem from donor stage -1
    links_for_cut(donor, receiver, 1, 2);
    FAIL() << "expected an incompatible cut";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("incompatible cut"), std::string::npos) << e.what();
  }
}

TEST(ReceiverSuffix, StageThatDoesNotExistIsNamed) {
  Model m = toy_model("m", 1.f);
  try {
    m.info.stage("stage9");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no stage 'stage9'"), std::string::npos) << e.what();
  }
}

TEST(StudyStatistics, PearsonSpearmanAndConstantSeries) {
  EXPECT_NEAR(pearson({1, 2, 3, 4}, {2, 4, 6, 8}), 1.0, 1e-12);
  EXPECT_NEAR(pearson({1, 2, 3, 4}, {8, 6, 4, 2}), -1.0, 1e-12);
  EXPECT_NEAR(pearson({1, 2, 3}, {1, 3, 2}), 0.5, 1e-12);
  // Monotone but not linear: Spearman 1, Pearson below 1.
  EXPECT_NEAR(spearman({1, 2, 3, 4}, {1, 10, 100, 1000}), 1.0, 1e-12);
  EXPECT_LT(pearson({1, 2, 3, 4}, {1, 10, 100, 1000}), 0.95);
  // Ties share their mean rank.
  EXPECT_NEAR(spearman({1, 1, 2}, {1, 1, 2}), 1.0, 1e-12);
  EXPECT_TRUE(std::isnan(pearson({0.8, 0.8, 0.8}, {0.1, 0.5, 0.9})));
  EXPECT_TRUE(std::isnan(pearson({0.8 + 1e-17, 0.8, 0.8}, {0.1, 0.5, 0.9})));
}

}  // namespace
}  // namespace repshare
