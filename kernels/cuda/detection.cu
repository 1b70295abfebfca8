// EfficientDet post-processing on the GPU: a radix select of the k best class
// logits (8 bits a pass, ties broken by the lowest flat index as on the CPU), a
// rank sort of the k selected, box decoding, and bitmask hard NMS. Only the k
// candidates and the keep list leave the device, not the 4.4 million logits.
// The per-candidate arithmetic is kernels/cpu/detection_math.h, shared with the
// CPU reference (kernels/cpu/detection.cpp).
#include <algorithm>
#include <climits>

#include "kernels/cpu/detection_math.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_storage.cuh"
#include "kernels/cuda/cuda_util.h"

namespace repshare {
namespace {

// Every level's class and box maps, passed by value, in the network's float
// storage T (float, or __half in fp16 mode). Memory index g of the class maps laid
// end to end lies in level l when first_logit[l] <= g < first_logit[l+1]; anchor a
// in level l when first_anchor[l] <= a < first_anchor[l+1].
template <typename T>
struct Levels {
  const T* cls[kMaxDetectionLevels];
  const T* box[kMaxDetectionLevels];
  int first_logit[kMaxDetectionLevels + 1];
  int first_anchor[kMaxDetectionLevels + 1];
  int positions[kMaxDetectionLevels];
  int count;
  int anchors_per_location, classes;
};

template <typename T>
__device__ __forceinline__ int level_of_logit(const Levels<T>& lv, int g) {
  int l = 0;
  while (g >= lv.first_logit[l + 1]) ++l;
  return l;
}

template <typename T>
__device__ __forceinline__ uint32_t key_at(const Levels<T>& lv, int g, int l) {
  const float v = cuda::as_float(lv.cls[l][g - lv.first_logit[l]]);
  return logit_key(v, __float_as_uint(v));
}

template <typename T>
__device__ __forceinline__ uint32_t flat_index_at(const Levels<T>& lv, int g, int l) {
  return static_cast<uint32_t>(flat_logit_index(g - lv.first_logit[l], lv.positions[l],
                                                lv.anchors_per_location, lv.classes,
                                                lv.first_anchor[l]));
}

// The float a key was made from (logit_key inverted; -0 comes back as +0).
__device__ __forceinline__ float logit_of_key(uint32_t key) {
  return __uint_as_float((key & 0x80000000u) ? (key & 0x7FFFFFFFu) : ~key);
}

// The select's progress, in the workspace. The k-th best key is found 8 bits a
// pass from the top (key_prefix under key_mask); `want` is how many candidates
// are still to be taken among keys sharing the prefix. If fewer keys equal the
// k-th than are left to take, more passes find the largest flat index among them
// to take (index_prefix), from the highest byte a flat index can have.
struct SelectState {
  uint32_t hist[256];
  uint32_t key_prefix, key_mask;
  uint32_t index_prefix, index_mask;
  uint32_t want;
  uint32_t count;     // candidates there will be: k, or the number of non-NaN logits
  uint32_t bin_size;  // keys in the bin the last key pass chose
  uint32_t all_ties;  // every key equal to the k-th is taken: no index passes
  uint32_t filled;    // slots the select kernel has written
  uint32_t blocks_done;  // of the pass running now (last_block_of_pass)
};

// Adds a block's histogram to the pass's, then tells whether this block was the
// pass's last to finish. That one gets the whole histogram back in block_hist (and
// clears the pass's for the next pass), and one of its threads chooses the bin from
// there: a pass is one launch, not a histogram launch and a one-thread scan launch.
__device__ bool last_block_of_pass(uint32_t* block_hist, SelectState* s) {
  __shared__ bool last;
  __syncthreads();  // block_hist complete
  for (int b = threadIdx.x; b < 256; b += blockDim.x)
    if (block_hist[b]) atomicAdd(&s->hist[b], block_hist[b]);
  __threadfence();  // this block's adds are visible to whichever block ends the pass
  __syncthreads();
  if (threadIdx.x == 0) last = atomicAdd(&s->blocks_done, 1u) == gridDim.x - 1;
  __syncthreads();
  if (!last) return false;  // uniform: `last` is the block's
  __threadfence();  // the other blocks' adds are read after their counts
  // Through volatile: the adds are in L2, not in this SM's L1. One read per bin,
  // all threads at once, rather than the choosing thread's dependent reads.
  const volatile uint32_t* pass_hist = s->hist;
  for (int b = threadIdx.x; b < 256; b += blockDim.x) {
    block_hist[b] = pass_hist[b];
    s->hist[b] = 0;
  }
  __syncthreads();
  return true;
}

// The pass's last block, one thread: picks the bin of the whole histogram `hist`
// holding the `want`-th best key, from the top.
__device__ void choose_key_bin(const uint32_t* hist, SelectState* s, int shift, int k) {
  if (shift == 24) {  // first pass: every non-NaN logit is in the histogram
    uint32_t numbers = 0;
    for (int b = 0; b < 256; ++b) numbers += hist[b];
    s->count = min(static_cast<uint32_t>(k), numbers);
    s->want = s->count;
  }
  if (s->count > 0) {
    uint32_t above = 0;
    int b = 255;
    for (; b > 0 && above + hist[b] < s->want; --b) above += hist[b];
    s->want -= above;
    s->bin_size = hist[b];
    s->key_prefix |= static_cast<uint32_t>(b) << shift;
    s->key_mask |= 255u << shift;
    if (shift == 0) s->all_ties = s->want == s->bin_size;
  }
  s->blocks_done = 0;
}

// The pass's last block, one thread: the bin holding the `want`-th smallest flat
// index among the ties.
__device__ void choose_index_bin(const uint32_t* hist, SelectState* s, int shift) {
  uint32_t below = 0;
  int b = 0;
  for (; b < 255 && below + hist[b] < s->want; ++b) below += hist[b];
  s->want -= below;
  s->index_prefix |= static_cast<uint32_t>(b) << shift;
  s->index_mask |= 255u << shift;
  s->blocks_done = 0;
}

template <typename T>
__global__ void key_pass_kernel(Levels<T> lv, int total, int shift, int k, SelectState* s) {
  __shared__ uint32_t hist[256];
  for (int b = threadIdx.x; b < 256; b += blockDim.x) hist[b] = 0;
  __syncthreads();
  const uint32_t prefix = s->key_prefix, mask = s->key_mask;
  // A thread counts a run of keys in one bin before adding it: a detector's logits
  // crowd into a few bins (class priors near -4.6 share the top byte), where one
  // atomicAdd per key would queue every thread of a block on one counter.
  uint32_t run_bin = 0, run = 0;
  for (int g = blockIdx.x * blockDim.x + threadIdx.x; g < total; g += gridDim.x * blockDim.x) {
    const uint32_t key = key_at(lv, g, level_of_logit(lv, g));
    if (key == 0u || (key & mask) != prefix) continue;
    const uint32_t bin = (key >> shift) & 255u;
    if (bin != run_bin && run > 0) {
      atomicAdd(&hist[run_bin], run);
      run = 0;
    }
    run_bin = bin;
    ++run;
  }
  if (run > 0) atomicAdd(&hist[run_bin], run);
  if (last_block_of_pass(hist, s) && threadIdx.x == 0) choose_key_bin(hist, s, shift, k);
}

template <typename T>
__global__ void index_pass_kernel(Levels<T> lv, int total, int shift, SelectState* s) {
  if (s->count == 0 || s->all_ties) return;  // uniform across the grid
  __shared__ uint32_t hist[256];
  for (int b = threadIdx.x; b < 256; b += blockDim.x) hist[b] = 0;
  __syncthreads();
  const uint32_t threshold = s->key_prefix, prefix = s->index_prefix, mask = s->index_mask;
  for (int g = blockIdx.x * blockDim.x + threadIdx.x; g < total; g += gridDim.x * blockDim.x) {
    const int l = level_of_logit(lv, g);
    if (key_at(lv, g, l) != threshold) continue;
    const uint32_t index = flat_index_at(lv, g, l);
    if ((index & mask) == prefix) atomicAdd(&hist[(index >> shift) & 255u], 1u);
  }
  if (last_block_of_pass(hist, s) && threadIdx.x == 0) choose_index_bin(hist, s, shift);
}

// Writes the selected (key, flat index) pairs in arbitrary slot order, and a zero
// place for each (rank_kernel adds to it).
template <typename T>
__global__ void select_kernel(Levels<T> lv, int total, SelectState* s, uint32_t* keys,
                              uint32_t* indices, uint32_t* places) {
  const uint32_t count = s->count, threshold = s->key_prefix, last_index = s->index_prefix;
  const bool all_ties = s->all_ties != 0;
  if (count == 0) return;
  for (int g = blockIdx.x * blockDim.x + threadIdx.x; g < total; g += gridDim.x * blockDim.x) {
    const int l = level_of_logit(lv, g);
    const uint32_t key = key_at(lv, g, l);
    if (key < threshold || key == 0u) continue;
    const uint32_t index = flat_index_at(lv, g, l);
    if (key == threshold && !all_ties && index > last_index) continue;
    const uint32_t slot = atomicAdd(&s->filled, 1u);
    if (slot < count) {
      keys[slot] = key;
      indices[slot] = index;
      places[slot] = 0;
    }
  }
}

__device__ __forceinline__ bool ranks_before(uint32_t key_a, uint32_t index_a, uint32_t key_b,
                                             uint32_t index_b) {
  return key_a > key_b || (key_a == key_b && index_a < index_b);
}

// The rank's comparisons are split kRankSplits ways: the k selected pairs make only
// k / kBlock blocks (20 for D0's 5,000, on a GPU of 132 SMs).
constexpr int kRankSplits = 8;

// Sorts the selected pairs best first: each one's place is the number of pairs
// ahead of it (k^2 comparisons, from shared-memory tiles; k is a few thousand).
// Block (x, y) counts, for its kBlock pairs, those ahead among the y-th of
// kRankSplits ranges of pairs, and adds the count to their places.
__global__ void rank_kernel(const SelectState* s, const uint32_t* keys, const uint32_t* indices,
                            uint32_t* places) {
  __shared__ uint32_t tile_keys[cuda::kBlock], tile_indices[cuda::kBlock];
  const int n = static_cast<int>(s->count);
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  const bool mine = i < n;
  const uint32_t key = mine ? keys[i] : 0u, index = mine ? indices[i] : 0u;
  const int first = static_cast<int>(static_cast<int64_t>(n) * blockIdx.y / gridDim.y);
  const int end = static_cast<int>(static_cast<int64_t>(n) * (blockIdx.y + 1) / gridDim.y);
  uint32_t ahead = 0;
  for (int start = first; start < end; start += cuda::kBlock) {  // every thread joins each tile
    const int j = start + threadIdx.x;
    if (j < end) {
      tile_keys[threadIdx.x] = keys[j];
      tile_indices[threadIdx.x] = indices[j];
    }
    __syncthreads();
    const int in_tile = min(cuda::kBlock, end - start);
    for (int t = 0; t < in_tile; ++t)
      ahead += ranks_before(tile_keys[t], tile_indices[t], key, index) ? 1u : 0u;
    __syncthreads();
  }
  if (mine && ahead > 0) atomicAdd(&places[i], ahead);
}

// Candidate rows best first: slot i's pair decoded into row places[i]; rows from the
// number selected up to k are empty (class -1).
template <typename T>
__global__ void decode_kernel(Levels<T> lv, const float* anchors, const SelectState* s,
                              const uint32_t* keys, const uint32_t* indices,
                              const uint32_t* places, int k, bool clip, float clip_w,
                              float clip_h, float* boxes, float* scores, int64_t* classes) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= k) return;
  if (i >= static_cast<int>(s->count)) {
    classes[i] = -1;
    return;
  }
  const int r = static_cast<int>(places[i]);
  const uint32_t flat = indices[i];
  const int anchor = static_cast<int>(flat / static_cast<uint32_t>(lv.classes));
  int l = 0;
  while (anchor >= lv.first_anchor[l + 1]) ++l;
  const int in_level = anchor - lv.first_anchor[l], positions = lv.positions[l];
  const int pos = in_level / lv.anchors_per_location, a = in_level % lv.anchors_per_location;
  const T* deltas = lv.box[l] + static_cast<size_t>(a) * 4 * positions + pos;
  decode_box(anchors + static_cast<size_t>(anchor) * 4, cuda::as_float(deltas[0]),
             cuda::as_float(deltas[positions]), cuda::as_float(deltas[2 * positions]),
             cuda::as_float(deltas[3 * positions]), clip, clip_w, clip_h, boxes + r * 4);
  scores[r] = detection_score(logit_of_key(keys[i]));
  classes[r] = static_cast<int64_t>(flat % static_cast<uint32_t>(lv.classes));
}

// Where detection_select's pieces sit in its workspace.
struct SelectWorkspace {
  SelectState* state;
  uint32_t *keys, *indices, *places;
};

SelectWorkspace select_workspace(void* base, int64_t k) {
  SelectWorkspace w;
  char* p = static_cast<char*>(base);
  w.state = reinterpret_cast<SelectState*>(p);
  uint32_t* arrays = reinterpret_cast<uint32_t*>(p + (sizeof(SelectState) + 255) / 256 * 256);
  w.keys = arrays;
  w.indices = arrays + k;
  w.places = arrays + 2 * k;
  return w;
}

constexpr int kNmsBlock = 64;  // candidates per mask word

// mask[i * words + w] bit b: candidate i (kept) would suppress candidate
// 64 w + b > i, of its class. One block per (row block, column block).
__global__ void nms_mask_kernel(const float* boxes, const int64_t* classes, int n, int words,
                                double iou_threshold, unsigned long long* mask) {
  __shared__ float column_boxes[kNmsBlock * 4];
  __shared__ int64_t column_classes[kNmsBlock];
  const int column_start = blockIdx.x * kNmsBlock, row_start = blockIdx.y * kNmsBlock;
  const int t = threadIdx.x;
  if (column_start + t < n) {
    for (int c = 0; c < 4; ++c) column_boxes[t * 4 + c] = boxes[(column_start + t) * 4 + c];
    column_classes[t] = classes[column_start + t];
  }
  __syncthreads();
  const int i = row_start + t;
  if (i >= n) return;
  const int64_t cls = classes[i];
  const float* box = boxes + i * 4;
  unsigned long long bits = 0;
  const int columns = min(kNmsBlock, n - column_start);
  for (int b = 0; b < columns; ++b) {
    const int j = column_start + b;
    if (j > i && cls >= 0 && column_classes[b] == cls &&
        suppresses(box, column_boxes + b * 4, iou_threshold))
      bits |= 1ull << b;
  }
  mask[static_cast<size_t>(i) * words + blockIdx.x] = bits;
}

// One block walks the candidates best first, keeping those no kept one removed,
// a mask word at a time: the word's live bits are taken lowest first, and each
// kept one's row ORs into `removed`. A removed candidate costs nothing, where a
// walk one candidate at a time paid a dependent read for each (D0 keeps 100 of
// 5,000, most of the rest removed on the way). Every thread takes the same bits;
// thread t ORs the words w + 1 + t, w + 1 + t + blockDim.x, ...
__global__ void nms_walk_kernel(const int64_t* classes, const unsigned long long* mask, int n,
                                int words, int max_keep, int64_t* keep) {
  extern __shared__ unsigned long long removed[];
  // Rows that are no candidates (class -1) and bits past n start removed.
  for (int w = threadIdx.x; w < words; w += blockDim.x) {
    unsigned long long none = 0;
    for (int b = 0; b < 64; ++b) {
      const int i = w * 64 + b;
      if (i >= n || classes[i] < 0) none |= 1ull << b;
    }
    removed[w] = none;
  }
  __syncthreads();
  int kept = 0;
  for (int w = 0; w < words && kept < max_keep; ++w) {
    unsigned long long live = ~removed[w];
    while (live != 0 && kept < max_keep) {
      const int b = __ffsll(static_cast<long long>(live)) - 1;
      const int i = w * 64 + b;
      if (threadIdx.x == 0) keep[kept] = i;
      ++kept;
      const unsigned long long* row = mask + static_cast<size_t>(i) * words;
      live &= ~(row[w] | (1ull << b));  // row bits are candidates after i only
      for (int v = w + 1 + static_cast<int>(threadIdx.x); v < words; v += blockDim.x)
        removed[v] |= row[v];
    }
    __syncthreads();  // every kept row ORed in before word w + 1 is read
  }
  for (int j = kept + static_cast<int>(threadIdx.x); j < max_keep; j += blockDim.x) keep[j] = -1;
}

int nms_words(int64_t count) { return static_cast<int>((count + kNmsBlock - 1) / kNmsBlock); }

}  // namespace

size_t CudaBackend::detection_select_workspace(const DetectionSelectParams& p) const {
  return (sizeof(SelectState) + 255) / 256 * 256 + 3 * sizeof(uint32_t) * static_cast<size_t>(p.k);
}

void CudaBackend::detection_select(const DetectionSelectParams& p,
                                   const Tensor* const* class_outputs,
                                   const Tensor* const* box_outputs, const Tensor& anchors,
                                   Tensor& boxes, Tensor& scores, Tensor& classes,
                                   void* workspace) {
  check(p.levels >= 1 && p.levels <= kMaxDetectionLevels, ErrorKind::Unsupported,
        "cuda detection_select: ", p.levels, " levels");
  const DType storage = class_outputs[0]->dtype;
  for (int l = 0; l < p.levels; ++l)
    check(class_outputs[l]->dtype == storage && box_outputs[l]->dtype == storage,
          ErrorKind::Unsupported, "cuda detection_select: class and box outputs of one dtype ",
          "needed; level ", l, " has ", dtype_name(class_outputs[l]->dtype), " and ",
          dtype_name(box_outputs[l]->dtype), " after ", dtype_name(storage));
  cuda::with_storage(storage, "detection_select", [&](auto tag) {
    using T = decltype(tag);
    Levels<T> lv = {};
    lv.count = p.levels;
    lv.anchors_per_location = cuda::to_int(p.anchors_per_location, "detection_select", "anchors");
    lv.classes = cuda::to_int(p.classes, "detection_select", "classes");
    int64_t logits = 0, anchor_count = 0;
    for (int l = 0; l < p.levels; ++l) {
      lv.cls[l] = cuda::data<const T>(*class_outputs[l]);
      lv.box[l] = cuda::data<const T>(*box_outputs[l]);
      lv.positions[l] = cuda::to_int(p.positions[l], "detection_select", "positions");
      lv.first_logit[l] = cuda::to_int(logits, "detection_select", "logits");
      lv.first_anchor[l] = cuda::to_int(anchor_count, "detection_select", "anchors");
      logits += p.positions[l] * p.anchors_per_location * p.classes;
      anchor_count += p.positions[l] * p.anchors_per_location;
    }
    // Flat indices travel as 32-bit keys' companions: every logit must have one, and
    // the grid-stride loops step up to 1024 x kBlock past the last in int.
    check(logits <= INT_MAX - 1024 * cuda::kBlock, ErrorKind::Unsupported,
          "cuda detection_select: ", logits, " logits (at most ", INT_MAX - 1024 * cuda::kBlock,
          ")");
    const int total = static_cast<int>(logits);
    lv.first_logit[p.levels] = total;
    lv.first_anchor[p.levels] = cuda::to_int(anchor_count, "detection_select", "anchors");
    const int k = cuda::to_int(p.k, "detection_select", "k");
    if (k == 0) return;

    const SelectWorkspace w = select_workspace(workspace, p.k);
    REPSHARE_CUDA(cudaMemsetAsync(w.state, 0, sizeof(SelectState), stream_));
    // Enough blocks to fill the GPU; each thread strides over the rest.
    const unsigned grid = std::max(1u, std::min(cuda::blocks_for(total), 1024u));
    for (int shift = 24; shift >= 0; shift -= 8) {
      key_pass_kernel<T><<<grid, cuda::kBlock, 0, stream_>>>(lv, total, shift, k, w.state);
      after_launch("key_pass_kernel");
    }
    // Flat indices are below `total`: bytes above its highest are 0 in every one.
    int top_index_shift = 0;
    while (top_index_shift < 24 && ((total - 1) >> (top_index_shift + 8)) != 0)
      top_index_shift += 8;
    for (int shift = top_index_shift; shift >= 0; shift -= 8) {
      index_pass_kernel<T><<<grid, cuda::kBlock, 0, stream_>>>(lv, total, shift, w.state);
      after_launch("index_pass_kernel");
    }
    select_kernel<T><<<grid, cuda::kBlock, 0, stream_>>>(lv, total, w.state, w.keys, w.indices,
                                                           w.places);
    after_launch("select_kernel");
    const dim3 rank_grid(cuda::blocks_for(k), kRankSplits);
    rank_kernel<<<rank_grid, cuda::kBlock, 0, stream_>>>(w.state, w.keys, w.indices, w.places);
    after_launch("rank_kernel");
    decode_kernel<T><<<cuda::blocks_for(k), cuda::kBlock, 0, stream_>>>(
        lv, anchors.f32(), w.state, w.keys, w.indices, w.places, k, p.clip, p.clip_w, p.clip_h,
        boxes.f32(), scores.f32(), classes.i64());
    after_launch("decode_kernel");
  });
}

size_t CudaBackend::nms_workspace(const NmsParams& p) const {
  return static_cast<size_t>(p.count) * nms_words(p.count) * sizeof(unsigned long long);
}

void CudaBackend::nms(const NmsParams& p, const Tensor& boxes, const Tensor& classes, Tensor& keep,
                      void* workspace) {
  const int n = cuda::to_int(p.count, "nms", "count");
  const int max_keep = cuda::to_int(p.max_keep, "nms", "max_keep");
  const int words = nms_words(p.count);
  // The walk holds one bit per candidate in shared memory.
  check(static_cast<size_t>(words) * sizeof(unsigned long long) <= 32 * 1024,
        ErrorKind::Unsupported, "cuda nms: ", n, " candidates (at most ", 32 * 1024 * 8, ")");
  if (max_keep == 0) return;
  auto* mask = static_cast<unsigned long long*>(workspace);
  if (n > 0) {
    const dim3 blocks(static_cast<unsigned>(words), static_cast<unsigned>(words));
    nms_mask_kernel<<<blocks, kNmsBlock, 0, stream_>>>(boxes.f32(), classes.i64(), n, words,
                                                       p.iou_threshold, mask);
    after_launch("nms_mask_kernel");
  }
  nms_walk_kernel<<<1, cuda::kBlock, words * sizeof(unsigned long long), stream_>>>(
      classes.i64(), mask, n, words, max_keep, keep.i64());
  after_launch("nms_walk_kernel");
}

}  // namespace repshare
