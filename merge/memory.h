// Memory accounting of a set of pipelines: what each one's weights, activations
// and host buffers take, where shared weights are counted once (for their owner),
// plus helpers for byte sizes and the process's resident set.
//
// Every number is what the pipelines allocate (WeightsArena totals, activation
// arena peaks, host staging buffers), so the total can be checked against the
// process's real growth (tests/test_memory.cpp: RSS delta within 5%; on a GPU the
// device's used-memory delta against the arenas, same test and scripts/gpu-check.sh).
#pragma once

#include <cstddef>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/backend.h"

namespace repshare {

// Weights of one stage of a pipeline's model (params x the backend's float size), and
// whether this pipeline loads them or takes that stage's output from a donor.
struct StageWeights {
  std::string name;
  size_t bytes = 0;
  bool loaded = true;
};

// One executor's activation arena: the planned size (what is allocated), the
// liveness lower bound no plan can beat, and the largest kernel workspace in it.
struct ArenaMemory {
  std::string name;  // e.g. "det", "cls suffix", "adapter det/stage4->cls/stage4"
  size_t bytes = 0;
  size_t lower_bound = 0;
  size_t largest_workspace = 0;
};

struct PipelineMemory {
  std::string name;
  std::string model;
  std::string shares_from;      // "" or "det/stage4 -> stage4"
  size_t weights_owned = 0;     // weights arena bytes this pipeline's model owns
  size_t weights_borrowed = 0;  // bytes of weights it reads that another model owns
  std::vector<StageWeights> stages;
  std::vector<ArenaMemory> arenas;
  size_t host_buffers = 0;      // input staging and downloaded outputs (host; pinned on CUDA)
  size_t activations() const;
  size_t activation_lower_bound() const;
  size_t total() const { return weights_owned + activations() + host_buffers; }
};

struct MemoryReport {
  std::string label;  // "separate" or "merged"
  std::string backend;  // where the weights and activation arenas live
  std::vector<PipelineMemory> pipelines;
  size_t weights = 0;  // all weights arenas
  // The backend's own memory (GPU context, library handles and workspaces): one
  // backend serves every pipeline, so it is counted once, outside them.
  std::vector<BackendMemoryItem> overhead;
  size_t activations() const;
  size_t activation_lower_bound() const;
  size_t host_buffers() const;
  size_t overhead_bytes() const;
  // What the arenas take: device memory on a GPU backend, host memory on the CPU.
  size_t arena_bytes() const { return weights + activations(); }
  size_t total() const { return arena_bytes() + host_buffers() + overhead_bytes(); }
};

nlohmann::json to_json(const MemoryReport& r);
// A table of the report, one line per pipeline and a total.
std::string format_report(const MemoryReport& r);

// What a backend's overhead() holds beyond the report's, made before running: the
// fp16 simulation's fp32 scratch grows while it runs. A process's RSS growth is
// compared with r.total() plus this; the report itself stays what the plan takes.
size_t overhead_grown_since(const MemoryReport& r, const Backend& backend);
// "TOTAL", or "TOTAL + GROWN the backend took while running" when GROWN > 0.
std::string describe_reported(size_t total, size_t grown);

// "4GiB", "512MiB", "1.5GB", "300k", "123" (bytes) -> bytes. Binary (Ki/Mi/Gi)
// and decimal (k/M/G) units; Argument naming `what` otherwise.
size_t parse_byte_size(const std::string& s, const std::string& what);
// 1536 -> "1.50 KiB".
std::string format_bytes(double bytes);

// Resident set size of this process in bytes (/proc/self/statm); 0 where unknown.
size_t resident_bytes();
// Hands freed heap pages back to the OS (malloc_trim), so that an RSS delta taken
// from here counts new allocations instead of hiding them in reused free memory.
void release_free_heap();

}  // namespace repshare
