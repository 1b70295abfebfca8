// Which steps of an inference may run at the same time, on a backend with several
// queues (CUDA: streams captured into one graph, whose replay runs independent
// branches at once; D0's ten head branches are the case that matters).
//
// Two steps must stay ordered when their memory overlaps and one of them writes it
// (a step writes its outputs and its workspace and reads its inputs). The arena
// reuses memory, so this also orders a step after the last reader of the bytes it
// overwrites. schedule_steps() keeps the steps in their sequential order on each
// queue, puts every step on a queue and names the earlier steps it must wait for
// when they ran on other queues; ordered_conflicts() checks a schedule against the
// accesses (what the tests use).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

namespace repshare {

struct ByteRange {
  uintptr_t begin = 0, end = 0;  // [begin, end)
};

struct StepAccess {
  std::vector<ByteRange> reads, writes;
};

struct ScheduledStep {
  int queue = 0;
  // Earlier steps, on other queues, that must finish before this one starts.
  std::vector<int> waits;
};

// Whether a whole schedule is acceptable (the executor: its arena fits).
using ScheduleFits = std::function<bool(const std::vector<ScheduledStep>&)>;

// One entry per step. With queues == 1 every step goes on queue 0 and waits for
// nothing. A queue's steps run in the order of their indices. With `fits`, a step
// that would overlap an earlier one is placed so only if fits() accepts the
// schedule so far followed by every later step one after another; otherwise it
// waits for all earlier steps (so the result is accepted as a whole).
std::vector<ScheduledStep> schedule_steps(const std::vector<StepAccess>& steps, int queues,
                                          const ScheduleFits& fits = nullptr);

// Whether every pair of conflicting steps is ordered by the schedule (through queue
// order and waits, transitively); if not, *first_unordered gets the pair's indices.
bool ordered_conflicts(const std::vector<StepAccess>& steps,
                       const std::vector<ScheduledStep>& schedule,
                       std::pair<int, int>* first_unordered = nullptr);

// Which steps finish before which start under a schedule: the previous step on a
// step's queue and the steps it waits for, transitively.
class StepOrder {
 public:
  explicit StepOrder(const std::vector<ScheduledStep>& schedule);
  // Step t finishes before step s starts (false when t == s).
  bool before(int t, int s) const { return (sets_[s][t / 64] >> (t % 64)) & 1; }

 private:
  std::vector<std::vector<uint64_t>> sets_;  // per step, a bit per earlier step
};

// The longest chain of steps that must run one after another under the schedule
// (in steps): the sequential order gives steps.size().
size_t critical_path(const std::vector<ScheduledStep>& schedule);

}  // namespace repshare
