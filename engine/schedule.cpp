#include "engine/schedule.h"

#include <algorithm>
#include <tuple>

namespace repshare {

namespace {

bool overlap(const std::vector<ByteRange>& a, const std::vector<ByteRange>& b) {
  for (const ByteRange& x : a)
    for (const ByteRange& y : b)
      if (x.begin < y.end && y.begin < x.end) return true;
  return false;
}

bool conflict(const StepAccess& a, const StepAccess& b) {
  return overlap(a.writes, b.writes) || overlap(a.writes, b.reads) || overlap(a.reads, b.writes);
}

// A set of step indices, one bit each.
class StepSet {
 public:
  explicit StepSet(size_t n = 0) : words_((n + 63) / 64, 0) {}
  bool has(int i) const { return (words_[i / 64] >> (i % 64)) & 1; }
  void add(int i) { words_[i / 64] |= uint64_t(1) << (i % 64); }
  void add_all(const StepSet& o) {
    for (size_t w = 0; w < words_.size(); ++w) words_[w] |= o.words_[w];
  }
  const std::vector<uint64_t>& words() const { return words_; }

 private:
  std::vector<uint64_t> words_;
};

// before[s]: every step that finishes before step s starts.
std::vector<StepSet> steps_before(const std::vector<ScheduledStep>& schedule) {
  const size_t n = schedule.size();
  std::vector<StepSet> before(n, StepSet(n));
  std::vector<int> last_on_queue;
  for (size_t s = 0; s < n; ++s) {
    const int q = schedule[s].queue;
    if (q >= static_cast<int>(last_on_queue.size())) last_on_queue.resize(q + 1, -1);
    std::vector<int> preds = schedule[s].waits;
    if (last_on_queue[q] >= 0) preds.push_back(last_on_queue[q]);
    for (int p : preds) {
      if (p < 0 || p >= static_cast<int>(s)) continue;  // not earlier: orders nothing
      before[s].add(p);
      before[s].add_all(before[p]);
    }
    last_on_queue[q] = static_cast<int>(s);
  }
  return before;
}

}  // namespace

std::vector<ScheduledStep> schedule_steps(const std::vector<StepAccess>& steps, int queues) {
  const int n = static_cast<int>(steps.size());
  queues = std::max(queues, 1);
  std::vector<ScheduledStep> schedule(n);
  if (queues == 1) return schedule;
  std::vector<StepSet> before(n, StepSet(n));  // as steps_before() computes it
  std::vector<int> tail(queues, -1);           // last step put on each queue
  for (int s = 0; s < n; ++s) {
    std::vector<int> deps;  // conflicting earlier steps, latest first
    StepSet required(n);    // deps and what they follow: may precede s at no cost
    for (int t = s - 1; t >= 0; --t) {
      if (!conflict(steps[t], steps[s])) continue;
      deps.push_back(t);
      required.add(t);
      required.add_all(before[t]);
    }
    // The queue whose last step orders s after the fewest unrelated steps, then the
    // one covering the most dependencies, then a started one (a chain goes on).
    int best = 0;
    std::tuple<bool, int, bool, int> best_key;
    for (int q = 0; q < queues; ++q) {
      const int t = tail[q];
      int missing = 0;
      for (int d : deps) missing += !(t >= 0 && (t == d || before[t].has(d)));
      // A queue's first step forks it from another queue, so it waits for something.
      const bool unrelated = t >= 0 ? !required.has(t) : deps.empty() && q > 0;
      const std::tuple<bool, int, bool, int> key(unrelated, missing, t < 0, q);
      if (q == 0 || key < best_key) best = q, best_key = key;
    }
    ScheduledStep& st = schedule[s];
    st.queue = best;
    StepSet& covered = before[s];
    if (tail[best] >= 0) {
      covered.add(tail[best]);
      covered.add_all(before[tail[best]]);
    }
    for (int d : deps) {
      if (covered.has(d) || d == tail[best]) continue;
      st.waits.push_back(d);
      covered.add(d);
      covered.add_all(before[d]);
    }
    if (tail[best] < 0 && best > 0 && st.waits.empty()) {
      // Independent of everything before it, yet a new queue must fork from a
      // started one: wait for the latest step.
      st.waits.push_back(s - 1);
      covered.add(s - 1);
      covered.add_all(before[s - 1]);
    }
    tail[best] = s;
  }
  return schedule;
}

bool ordered_conflicts(const std::vector<StepAccess>& steps,
                       const std::vector<ScheduledStep>& schedule,
                       std::pair<int, int>* first_unordered) {
  const std::vector<StepSet> before = steps_before(schedule);
  for (size_t s = 0; s < steps.size(); ++s)
    for (size_t t = 0; t < s; ++t)
      if (conflict(steps[t], steps[s]) && !before[s].has(static_cast<int>(t))) {
        if (first_unordered) *first_unordered = {static_cast<int>(t), static_cast<int>(s)};
        return false;
      }
  return true;
}

StepOrder::StepOrder(const std::vector<ScheduledStep>& schedule) {
  for (const StepSet& set : steps_before(schedule)) sets_.push_back(set.words());
}

size_t critical_path(const std::vector<ScheduledStep>& schedule) {
  std::vector<size_t> depth(schedule.size(), 1);
  std::vector<int> last_on_queue;
  size_t longest = 0;
  for (size_t s = 0; s < schedule.size(); ++s) {
    const int q = schedule[s].queue;
    if (q >= static_cast<int>(last_on_queue.size())) last_on_queue.resize(q + 1, -1);
    std::vector<int> preds = schedule[s].waits;
    if (last_on_queue[q] >= 0) preds.push_back(last_on_queue[q]);
    for (int p : preds)
      if (p >= 0 && p < static_cast<int>(s)) depth[s] = std::max(depth[s], depth[p] + 1);
    last_on_queue[q] = static_cast<int>(s);
    longest = std::max(longest, depth[s]);
  }
  return longest;
}

}  // namespace repshare
