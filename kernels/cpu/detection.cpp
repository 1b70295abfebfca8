// EfficientDet post-processing on the CPU: the reference for kernels/cuda/detection.cu
// (per-candidate arithmetic shared through detection_math.h).
#ifdef __AVX2__
#include <immintrin.h>
#endif

#include <omp.h>

#include <algorithm>
#include <limits>
#include <utility>
#include <vector>

#include "engine/error.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/detection_math.h"

namespace repshare {
namespace {

using Entry = std::pair<float, int64_t>;  // logit, flat index

// Best first: logit descending, flat index ascending (torch.topk's order on ties
// is unspecified; this one is reproducible and what the CUDA kernels produce).
bool better(const Entry& a, const Entry& b) {
  return a.first > b.first || (a.first == b.first && a.second < b.second);
}

// Room for the selection buffer below: 4k gathered candidates and one more.
int64_t entries_for(const DetectionSelectParams& p) { return 4 * p.k + 1; }

}  // namespace

size_t CpuBackend::detection_select_workspace(const DetectionSelectParams& p) const {
  return static_cast<size_t>(threads_ * entries_for(p)) * sizeof(Entry);
}

void CpuBackend::detection_select(const DetectionSelectParams& p,
                                  const Tensor* const* class_outputs,
                                  const Tensor* const* box_outputs, const Tensor& anchors,
                                  Tensor& boxes, Tensor& scores, Tensor& classes,
                                  void* workspace) {
  for (int l = 0; l < p.levels; ++l)
    check(class_outputs[l]->dtype == DType::F32 && box_outputs[l]->dtype == DType::F32,
          ErrorKind::Unsupported, "cpu detection_select: ",
          dtype_name(class_outputs[l]->dtype), " class and ", dtype_name(box_outputs[l]->dtype),
          " box outputs (float32 only)");
  const int64_t k = p.k;
  float* out_boxes = boxes.f32();
  float* out_scores = scores.f32();
  int64_t* out_classes = classes.i64();
  for (int64_t i = 0; i < k; ++i) out_classes[i] = -1;
  if (k == 0) return;

  // Candidates at or above `worst` are gathered in memory order; when 4k have piled
  // up, the best k are kept and `worst` rises to the k-th. Once the buffer has
  // filled, most of D0's 4.4 million logits cost one comparison, and each
  // selection O(k), instead of a heap update per improvement. Each thread scans
  // its share of every level into its own buffer (D0: 17.7 MB of logits, 4.2 ms
  // on one thread); a thread's k-th best never exceeds the overall k-th, so the
  // best k of the threads' best k are the best k of all, and in the same order.
  struct Selection {
    Entry* top;
    int64_t k;
    int64_t count = 0;
    float worst = -std::numeric_limits<float>::infinity();
    void add(const Entry& e) {
      top[count++] = e;
      if (count >= 4 * k) keep_best();
    }
    void keep_best() {
      if (count <= k) return;
      std::nth_element(top, top + (k - 1), top + count, better);
      count = k;
      worst = top[k - 1].first;  // the k-th best (ties at it still compare by index)
    }
  };
  Entry* buffers = static_cast<Entry*>(workspace);
  int64_t total_logits = 0;
  for (int l = 0; l < p.levels; ++l) total_logits += p.anchors_per_location * p.classes * p.positions[l];
  const int threads = total_logits >= cpu::kMinParallelWork ? threads_ : 1;
  std::vector<int64_t> counts(static_cast<size_t>(threads), 0);
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    Selection sel{buffers + t * entries_for(p), k};
    int64_t level_first = 0;  // flat index of the level's first anchor
    for (int l = 0; l < p.levels; ++l) {
      const int64_t positions = p.positions[l];
      const int64_t logits = p.anchors_per_location * p.classes * positions;
      const float* x = class_outputs[l]->f32();
      // This thread's share: [begin, end), in multiples of 8 logits.
      const int64_t groups = (logits + 7) / 8;
      const int64_t begin = std::min(logits, groups * t / nt * 8);
      const int64_t end = std::min(logits, groups * (t + 1) / nt * 8);
      auto consider = [&](int64_t i) {
        if (!(x[i] >= sel.worst)) return;  // NaN logits are never candidates
        sel.add({x[i], flat_logit_index(i, positions, p.anchors_per_location, p.classes,
                                         level_first)});
      };
      int64_t i = begin;
#ifdef __AVX2__
      // Eight logits per comparison: once `worst` has risen, nearly every group of
      // eight is below it (an ordered >= is false for NaN too).
      for (; i + 8 <= end; i += 8) {
        const int candidates = _mm256_movemask_ps(
            _mm256_cmp_ps(_mm256_loadu_ps(x + i), _mm256_set1_ps(sel.worst), _CMP_GE_OQ));
        if (candidates == 0) continue;
        for (int j = 0; j < 8; ++j) consider(i + j);
      }
#endif
      for (; i < end; ++i) consider(i);
      level_first += positions * p.anchors_per_location;
    }
    sel.keep_best();
    counts[static_cast<size_t>(t)] = sel.count;
  }
  // The threads' best k, merged in the first buffer.
  Selection all{buffers, k};
  all.count = counts[0];
  for (int t = 1; t < threads; ++t)
    for (int64_t i = 0; i < counts[static_cast<size_t>(t)]; ++i)
      all.add(buffers[t * entries_for(p) + i]);
  all.keep_best();
  Entry* top = all.top;
  const int64_t count = all.count;
  std::sort(top, top + count, better);

  for (int64_t c = 0; c < count; ++c) {
    const int64_t anchor_index = top[c].second / p.classes;
    // The level holding the anchor, and its position and shape there.
    int l = 0;
    int64_t in_level = anchor_index;
    while (in_level >= p.positions[l] * p.anchors_per_location) {
      in_level -= p.positions[l] * p.anchors_per_location;
      ++l;
    }
    const int64_t positions = p.positions[l];
    const int64_t pos = in_level / p.anchors_per_location, a = in_level % p.anchors_per_location;
    const float* deltas = box_outputs[l]->f32() + a * 4 * positions + pos;
    decode_box(anchors.f32() + anchor_index * 4, deltas[0], deltas[positions],
               deltas[2 * positions], deltas[3 * positions], p.clip, p.clip_w, p.clip_h,
               out_boxes + c * 4);
    out_scores[c] = detection_score(top[c].first);
    out_classes[c] = top[c].second % p.classes;
  }
}

size_t CpuBackend::nms_workspace(const NmsParams&) const { return 0; }

void CpuBackend::nms(const NmsParams& p, const Tensor& boxes, const Tensor& classes,
                     Tensor& keep, void*) {
  // Per-class greedy NMS visits each class's boxes by descending score and keeps a
  // box unless a kept box of its class overlaps it. Visiting all boxes in one
  // global descending order makes the same decisions (suppression never crosses
  // classes, and each class still sees its own boxes in order), and the boxes kept
  // come out best first, so the walk can stop when keep is full: later boxes score
  // lower than every box kept.
  const float* b = boxes.f32();
  const int64_t* cls = classes.i64();
  int64_t* kept = keep.i64();
  int64_t n_kept = 0;
  for (int64_t i = 0; i < p.count && n_kept < p.max_keep; ++i) {
    if (cls[i] < 0) continue;
    bool suppressed = false;
    for (int64_t j = 0; j < n_kept && !suppressed; ++j)
      suppressed = cls[kept[j]] == cls[i] && suppresses(b + kept[j] * 4, b + i * 4, p.iou_threshold);
    if (!suppressed) kept[n_kept++] = i;
  }
  for (int64_t j = n_kept; j < p.max_keep; ++j) kept[j] = -1;
}

}  // namespace repshare
