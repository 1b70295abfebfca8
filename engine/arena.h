// Arenas: one backend allocation for all weights, one for all activations.
//
// WeightsArena keeps exactly one record per distinct weight tensor. Adding a tensor
// whose bytes equal an existing one (a weight shared between two models) returns
// the existing record and notes the extra user, so it is stored and counted once.
//
// The activation arena is planned by plan_activations() from tensor lifetimes
// before the first run (greedy, by size as TFLite's and ggml's allocators do and by
// conflicting bytes, keeping the better plan) and reused by every run.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "engine/backend.h"

namespace repshare {

struct WeightRecord {
  std::string model;   // owner: the model that first registered it
  std::string layer;   // owner: node name
  std::string tensor;  // value name in the owner model
  size_t offset = 0;
  size_t bytes = 0;
  std::vector<std::string> users;  // "model/tensor" of every registration, owner first
};

class WeightsArena {
 public:
  explicit WeightsArena(Backend& backend) : backend_(backend) {}
  ~WeightsArena();
  WeightsArena(const WeightsArena&) = delete;
  WeightsArena& operator=(const WeightsArena&) = delete;

  // Registers host bytes (kept alive by the caller until commit()). Returns a record id.
  int add(const std::string& model, const std::string& layer, const std::string& tensor,
          const void* host, size_t bytes);
  // Makes the one allocation and uploads every tensor. Later add() calls throw.
  void commit();
  bool committed() const { return done_; }
  void* data(int id) const;

  const std::vector<WeightRecord>& records() const { return records_; }
  size_t total_bytes() const { return total_; }
  // Bytes owned by each model (shared tensors count for their owner only).
  std::map<std::string, size_t> bytes_by_model() const;

 private:
  Backend& backend_;
  std::vector<WeightRecord> records_;
  std::vector<const void*> pending_;  // host source of each record until commit
  std::multimap<uint64_t, int> by_hash_;
  size_t total_ = 0;
  void* base_ = nullptr;
  bool done_ = false;
};

// One tensor to place: its size and the first and last step that touch it.
struct Lifetime {
  size_t bytes = 0;
  int first = 0;
  int last = 0;
};

struct ActivationPlan {
  std::vector<size_t> offsets;  // per Lifetime, aligned
  size_t peak = 0;              // arena size
  size_t lower_bound = 0;       // max over steps of the live bytes: no plan can beat it
};

constexpr size_t kArenaAlignment = 64;  // cache line, and enough for float4/half8 loads

ActivationPlan plan_activations(const std::vector<Lifetime>& tensors,
                                size_t alignment = kArenaAlignment);
// The same where steps may run at once: tensors a and b may share memory only where
// apart(a, b) (every step using one is ordered before every step using the other),
// which replaces the disjoint lifetimes of the sequential order. The lower bound
// stays the sequential one, which concurrency can only raise.
ActivationPlan plan_activations(const std::vector<Lifetime>& tensors,
                                const std::function<bool(size_t, size_t)>& apart,
                                size_t alignment = kArenaAlignment);

inline size_t align_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

}  // namespace repshare
