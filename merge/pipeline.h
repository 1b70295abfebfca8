// Pipelines over frames: every model of a plan runs on each frame and serves its
// task (detections, top-k classes). With sharing, a donor runs once per frame and
// its stage outputs, adapted, feed each receiver's suffix, so the receiver's front
// is neither computed nor loaded. Without sharing every model runs in full from
// the image with its own weights (the comparison).
//
//   auto models = load_plan_models(plan);
//   Pipelines p(plan, models, backend, /*share=*/true);  // plans, allocates nothing
//   MemoryReport m = p.memory();                          // what allocate() will take
//   p.allocate();
//   for (frame...) for (const PipelineResult& r : p.run(load_image(frame))) ...
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "engine/arena.h"
#include "engine/backend.h"
#include "engine/executor.h"
#include "engine/model.h"
#include "loaders/image.h"
#include "merge/memory.h"
#include "merge/plan.h"
#include "merge/sharing.h"
#include "tasks/detection.h"

namespace repshare {

struct PipelineResult {
  std::string name;
  std::string task;                            // "detection" or "classification"
  std::vector<Detection> detections;           // detection: best first, in image pixels
  std::vector<std::pair<int, float>> classes;  // classification: top-k (index, probability)
  double seconds = 0;  // this pipeline's share of the frame: preprocessing, network
                       // (for a receiver: adapters and suffix), post-processing
};

class Pipelines {
 public:
  // models: load_plan_models(plan) (checked). share = false runs every model in
  // full even where the plan shares. top_k: classes kept per classifier.
  Pipelines(const Plan& plan, std::vector<std::shared_ptr<const Model>> models,
            Backend& backend, bool share, int top_k = 5);
  ~Pipelines();
  Pipelines(const Pipelines&) = delete;
  Pipelines& operator=(const Pipelines&) = delete;

  // Throws Argument naming the pipeline unless every classifier has `names` classes
  // (a labels file's; 0: none given, nothing to check).
  void check_class_names(size_t names) const;
  // Commits the weights arenas and allocates every activation arena and host buffer.
  void allocate();
  // Results for every pipeline, in plan order.
  std::vector<PipelineResult> run(const Image& img);

  // What allocate() allocates (or has allocated), per pipeline.
  MemoryReport memory() const;
  bool shares() const { return share_; }

 private:
  struct Pipe;
  void run_front(Pipe& p, const Image& img, PipelineResult& r);
  void run_suffix(Pipe& p, PipelineResult& r);
  void finish(Pipe& p, PipelineResult& r);

  Backend& backend_;
  bool share_;
  int top_k_;
  std::vector<std::shared_ptr<const Model>> models_;
  std::vector<std::unique_ptr<WeightsArena>> arenas_;  // one shared; or one per pipeline
  std::vector<std::unique_ptr<Pipe>> pipes_;
  bool allocated_ = false;
};

// What building and running pipelines makes the process (CPU backend) really take,
// next to what memory() reports: RSS deltas around construction (graph copies,
// layers; not in the report) and around allocate() plus one run on `frame` (which
// touches every arena page; this is what the report's total accounts for).
struct MeasuredMemory {
  MemoryReport reported;
  size_t construction_rss = 0;
  size_t allocate_and_run_rss = 0;
  // Device memory in use after allocate() and one run minus before the pipelines
  // were built (every process on the GPU: keep it otherwise idle); 0 on
  // host-memory backends.
  size_t allocate_and_run_device = 0;
  // What the backend's overhead() grew by from before the pipelines were built to
  // after the run: the CUDA backend's cuBLAS workspaces for further streams, made
  // as the first schedule to use them is planned (in allocate_and_run_device), or
  // the fp16 simulation's scratch (in the RSS deltas).
  size_t overhead_grown = 0;
};
MeasuredMemory measure_memory(const Plan& plan, std::vector<std::shared_ptr<const Model>> models,
                              Backend& backend, bool share, const Image& frame);

}  // namespace repshare
