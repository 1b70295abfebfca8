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

// Per step, the earlier steps it starts after directly: the previous step on its
// queue and the steps it waits for (a wait on a later step orders nothing).
std::vector<std::vector<int>> predecessors(const std::vector<ScheduledStep>& schedule) {
  std::vector<std::vector<int>> preds(schedule.size());
  std::vector<int> last_on_queue;
  for (size_t s = 0; s < schedule.size(); ++s) {
    const int q = schedule[s].queue;
    if (q >= static_cast<int>(last_on_queue.size())) last_on_queue.resize(q + 1, -1);
    if (last_on_queue[q] >= 0) preds[s].push_back(last_on_queue[q]);
    for (int w : schedule[s].waits)
      if (w >= 0 && w < static_cast<int>(s)) preds[s].push_back(w);
    last_on_queue[q] = static_cast<int>(s);
  }
  return preds;
}

// before[s]: every step that finishes before step s starts.
std::vector<StepSet> steps_before(const std::vector<ScheduledStep>& schedule) {
  const size_t n = schedule.size();
  const std::vector<std::vector<int>> preds = predecessors(schedule);
  std::vector<StepSet> before(n, StepSet(n));
  for (size_t s = 0; s < n; ++s)
    for (int p : preds[s]) {
      before[s].add(p);
      before[s].add_all(before[p]);
    }
  return before;
}

}  // namespace

std::vector<ScheduledStep> schedule_steps(const std::vector<StepAccess>& steps, int queues,
                                          const ScheduleFits& fits) {
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
    // s on queue q, after step t (its queue's last, or one it waits for).
    auto follow = [&](int t) {
      before[s].add(t);
      before[s].add_all(before[t]);
    };
    auto place = [&](int q, const std::vector<int>& after) {
      st.queue = q;
      st.waits.clear();
      before[s] = StepSet(n);
      if (tail[q] >= 0) follow(tail[q]);
      for (int d : after) {
        if (before[s].has(d) || d == tail[q]) continue;
        st.waits.push_back(d);
        follow(d);
      }
      // A queue's first step must wait for something, to fork from a started queue.
      if (tail[q] < 0 && q > 0 && st.waits.empty()) {
        st.waits.push_back(s - 1);
        follow(s - 1);
      }
    };
    place(best, deps);
    bool after_all = true;  // s starts after every earlier step: no new overlap
    for (int t = 0; t < s && after_all; ++t) after_all = before[s].has(t);
    if (fits && !after_all) {
      // The schedule so far, then every later step after all of it, one by one.
      std::vector<ScheduledStep> trial(schedule.begin(), schedule.begin() + s + 1);
      trial.resize(n, ScheduledStep{best, {}});
      for (int q = 0; q < queues; ++q)
        if (q != best && tail[q] >= 0 && s + 1 < n) trial[s + 1].waits.push_back(tail[q]);
      if (!fits(trial)) {
        // Too much memory at once: s waits for every queue instead.
        std::vector<int> all;
        for (int q = 0; q < queues; ++q)
          if (tail[q] >= 0) all.push_back(tail[q]);
        place(schedule[s - 1].queue, all);
      }
    }
    tail[st.queue] = s;
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
  const std::vector<std::vector<int>> preds = predecessors(schedule);
  std::vector<size_t> depth(schedule.size(), 1);
  size_t longest = 0;
  for (size_t s = 0; s < schedule.size(); ++s) {
    for (int p : preds[s]) depth[s] = std::max(depth[s], depth[p] + 1);
    longest = std::max(longest, depth[s]);
  }
  return longest;
}

}  // namespace repshare
