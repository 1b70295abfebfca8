#include "engine/arena.h"

#include <algorithm>
#include <cstring>
#include <numeric>

#include "engine/error.h"

namespace repshare {

namespace {
// FNV-1a over the bytes: cheap, and equality is confirmed with memcmp anyway.
uint64_t hash_bytes(const void* p, size_t n) {
  const auto* b = static_cast<const uint8_t*>(p);
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 1099511628211ull;
  return h ^ n;
}
}  // namespace

WeightsArena::~WeightsArena() {
  if (base_) backend_.free(base_);
}

int WeightsArena::add(const std::string& model, const std::string& layer,
                      const std::string& tensor, const void* host, size_t bytes) {
  check(!done_, ErrorKind::Argument, "weights arena is committed; cannot add '", tensor, "'");
  uint64_t h = hash_bytes(host, bytes);
  auto range = by_hash_.equal_range(h);
  for (auto it = range.first; it != range.second; ++it) {
    WeightRecord& r = records_[it->second];
    if (r.bytes == bytes && std::memcmp(pending_[it->second], host, bytes) == 0) {
      r.users.push_back(model + "/" + tensor);
      return it->second;
    }
  }
  WeightRecord r;
  r.model = model;
  r.layer = layer;
  r.tensor = tensor;
  r.offset = total_;
  r.bytes = bytes;
  r.users.push_back(model + "/" + tensor);
  total_ = align_up(total_ + bytes, kArenaAlignment);
  records_.push_back(std::move(r));
  pending_.push_back(host);
  int id = static_cast<int>(records_.size()) - 1;
  by_hash_.emplace(h, id);
  return id;
}

void WeightsArena::commit() {
  check(!done_, ErrorKind::Argument, "weights arena committed twice");
  done_ = true;
  if (total_ == 0) return;
  base_ = backend_.alloc(total_);
  for (size_t i = 0; i < records_.size(); ++i)
    backend_.upload(static_cast<char*>(base_) + records_[i].offset, pending_[i],
                    records_[i].bytes);
  pending_.clear();
  pending_.shrink_to_fit();
}

void* WeightsArena::data(int id) const {
  check(done_, ErrorKind::Argument, "weights arena used before commit()");
  return static_cast<char*>(base_) + records_.at(id).offset;
}

std::map<std::string, size_t> WeightsArena::bytes_by_model() const {
  std::map<std::string, size_t> m;
  for (const auto& r : records_) m[r.model] += r.bytes;
  return m;
}

ActivationPlan plan_activations(const std::vector<Lifetime>& tensors, size_t alignment) {
  return plan_activations(
      tensors,
      [&](size_t a, size_t b) {
        return tensors[a].last < tensors[b].first || tensors[b].last < tensors[a].first;
      },
      alignment);
}

ActivationPlan plan_activations(const std::vector<Lifetime>& tensors,
                                const std::function<bool(size_t, size_t)>& apart,
                                size_t alignment) {
  ActivationPlan plan;
  plan.offsets.assign(tensors.size(), 0);
  if (tensors.empty()) return plan;

  // Lower bound: the most bytes alive at once.
  int last_step = 0;
  for (const auto& t : tensors) last_step = std::max(last_step, t.last);
  int first_step = 0;
  for (const auto& t : tensors) first_step = std::min(first_step, t.first);
  std::vector<size_t> live(last_step - first_step + 2, 0);
  for (const auto& t : tensors) {
    live[t.first - first_step] += align_up(t.bytes, alignment);
    live[t.last - first_step + 1] -= align_up(t.bytes, alignment);
  }
  size_t cur = 0;
  for (size_t s : live) {
    cur += s;
    plan.lower_bound = std::max(plan.lower_bound, cur);
  }

  // Which tensors may not share memory, asked once per pair (apart() may be costly:
  // the executor's walks the schedule).
  const size_t n = tensors.size();
  std::vector<char> conflict(n * n, 0);
  for (size_t a = 0; a < n; ++a)
    for (size_t b = 0; b < a; ++b) conflict[a * n + b] = conflict[b * n + a] = !apart(a, b);

  // Greedy: tensors one by one in `order`, each in the smallest gap that does not
  // overlap a placed tensor it is not apart from; returns the peak.
  auto place = [&](const std::vector<size_t>& order, std::vector<size_t>& offsets) {
    struct Placed {
      size_t offset, end, index;
    };
    std::vector<Placed> placed, conflicts;
    size_t peak = 0;
    for (size_t idx : order) {
      if (tensors[idx].bytes == 0) {  // nothing to hold: no bytes of anyone's taken
        offsets[idx] = 0;
        continue;
      }
      const size_t size = align_up(tensors[idx].bytes, alignment);
      conflicts.clear();
      for (const auto& p : placed)
        if (conflict[p.index * n + idx]) conflicts.push_back(p);
      std::sort(conflicts.begin(), conflicts.end(),
                [](const Placed& a, const Placed& b) { return a.offset < b.offset; });
      size_t best = SIZE_MAX, best_gap = SIZE_MAX, cursor = 0;
      for (const auto& c : conflicts) {
        if (c.offset >= cursor + size && c.offset - cursor < best_gap) {
          best = cursor;
          best_gap = c.offset - cursor;
        }
        cursor = std::max(cursor, c.end);
      }
      if (best == SIZE_MAX) best = cursor;
      offsets[idx] = best;
      placed.push_back({best, best + size, idx});
      peak = std::max(peak, best + size);
    }
    return peak;
  };
  // Two orders, and the plan with the smaller peak. By size, largest first (TFLite's
  // and ggml's): it met the bound while one step's tensors set the peak, but where
  // two steps nearly tie (D0's stem and its first depthwise conv, once the MBConv
  // expansions stopped being whole on the CPU) it left holes: 23.00 MiB for a bound
  // of 20.62. By conflicts: a tensor's bytes plus those of every tensor it may not
  // share memory with, largest first, so the tensors of the crowded steps are placed
  // before the ones that would fragment them: 20.71 MiB there, B0 3.76 (its bound)
  // where by size gave 4.40.
  std::vector<size_t> by_size(tensors.size());
  std::iota(by_size.begin(), by_size.end(), 0);
  std::stable_sort(by_size.begin(), by_size.end(),
                   [&](size_t a, size_t b) { return tensors[a].bytes > tensors[b].bytes; });
  std::vector<size_t> weight(n);
  for (size_t a = 0; a < n; ++a) {
    weight[a] = tensors[a].bytes;
    for (size_t b = 0; b < n; ++b)
      if (conflict[a * n + b]) weight[a] += tensors[b].bytes;
  }
  std::vector<size_t> by_conflicts = by_size;
  std::stable_sort(by_conflicts.begin(), by_conflicts.end(),
                   [&](size_t a, size_t b) { return weight[a] > weight[b]; });
  plan.peak = place(by_size, plan.offsets);
  std::vector<size_t> offsets(n, 0);
  const size_t peak = place(by_conflicts, offsets);
  if (peak < plan.peak) {
    plan.peak = peak;
    plan.offsets = std::move(offsets);
  }
  return plan;
}

}  // namespace repshare
