// Representation sharing: a receiver model runs from stage j+1 on a donor model's
// adapted stage-i output, so the receiver's stages up to j are never run and their
// weights never loaded.
//
// A cut can carry several live tensors: when the receiver's suffix also reads
// earlier stage outputs (a detector's BiFPN reads P3, P4 and P5), each of those
// receiver stages k <= j is fed from the donor stage at the same offset,
// i - (j - k). For EfficientNet receivers every stage boundary is a single-tensor
// cut and the suffix reads stage j alone.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "engine/arena.h"
#include "engine/executor.h"
#include "engine/model.h"
#include "merge/adapter.h"

namespace repshare {

struct StageLink {
  int donor_stage;     // index into the donor's stage list
  int receiver_stage;  // index into the receiver's stage list
};

// The receiver stages a suffix after receiver stage j reads, each paired with the
// donor stage that feeds it. Throws Argument naming the stage when a donor stage
// would fall before the donor's first stage (an incompatible cut).
std::vector<StageLink> links_for_cut(const Model& donor, const Model& receiver, int donor_stage,
                                     int receiver_stage);

// How a suffix exchanges tensors with the code around it, in the backend's float
// storage or in F32 (Executor's in_storage).
struct SuffixStorage {
  // The donor's stage outputs the adapters read: in storage where the donor's
  // executor keeps them so (a pipeline's), F32 where the caller also reads them
  // itself (the study's CKA). The adapters' outputs, which only the receiver reads,
  // are always in storage.
  bool donor_stages = false;
  std::vector<std::string> outputs;  // wanted outputs kept in storage (a detector's)
};

// The receiver's suffix after a cut, with its adapters. Its weights go into the
// caller's arena (shared with the donor's; identical tensors are stored once).
class ReceiverSuffix {
 public:
  ReceiverSuffix(const Model& donor, const Model& receiver, int donor_stage, int receiver_stage,
                 const AdapterOptions& adapters, Backend& backend, WeightsArena& weights,
                 std::vector<std::string> wanted = {}, const SuffixStorage& storage = {});
  // After the arena is committed: allocates, and binds each adapter to the donor's
  // stage outputs (backend memory that stays put, e.g. a donor executor's outputs,
  // in the dtype the SuffixStorage said).
  void allocate(const std::vector<const Tensor*>& donor_stage_outputs);
  void run();
  const Tensor& output(const std::string& name) const { return receiver_->output(name); }
  const Executor& receiver() const { return *receiver_; }
  const std::vector<StageLink>& links() const { return links_; }
  size_t activation_bytes() const;

 private:
  std::vector<StageLink> links_;
  DType donor_dtype_;  // of the donor stage outputs the adapters read
  std::vector<std::unique_ptr<Executor>> adapters_;
  std::unique_ptr<Executor> receiver_;
  std::vector<std::string> receiver_tensors_;
};

}  // namespace repshare
