// The emulator's runtime: the CUDA runtime and cuBLAS calls the CUDA backend
// makes, implemented on the CPU, and the scheduler that runs emulated kernels.
//
// What it checks that a plain CPU port would not (each reported on stderr; the
// kernel-side ones abort, as a fault would end the process on a GPU):
// - streams are deferred queues run at synchronisation points, so the host
//   reading a download before synchronising sees stale bytes, as on a GPU;
// - CUDA-graph capture records instead of running, and calls that are illegal
//   while capturing (cudaMalloc, cudaFree, synchronisation) invalidate it; other
//   streams join a capture by waiting for an event recorded in it, and must be
//   joined back before it ends; a replay runs the graph's nodes in an order their
//   dependencies allow that is not the captured one (the latest-captured ready
//   node first), so a dependency the capture missed gives wrong results;
// - device memory is garbage (NaN bytes) when allocated; copies, kernel pointer
//   parameters and cuBLAS operands must lie inside device allocations;
// - launch configurations beyond the GPU's limits fail the launch;
// - a block's threads are fibers that switch only at __syncthreads and warp
//   shuffles: threads of a block waiting at different __syncthreads, shuffles
//   naming lanes that exited or do not exist, and deadlocks abort;
// - cuBLAS checks its leading dimensions as cuBLAS does, syrk writes only the
//   triangle asked for, and beta = 0 never reads C.
// Built with AddressSanitizer (scripts/cuda-emu-check.sh --asan), an emulated
// kernel reading past a device allocation is reported like compute-sanitizer's
// memcheck would.
#include <cublas_v2.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>
#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "tests/cuda_emu/emu_api.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define CUDA_EMU_ASAN 1
#endif

// A node of a captured graph, as cudaGraphGetNodes hands it out.
struct CUgraphNode_st {
  CUgraph_st* graph;
  int index;
};
// A captured graph: each node's work and the earlier nodes it depends on.
struct CUgraph_st {
  struct Node {
    std::function<void()> work;
    std::vector<int> deps;
    const void* cublas_workspace = nullptr;  // a cuBLAS call's scratch, else null
    const char* what = "";                   // the kernel or call
  };
  std::vector<Node> nodes;
  CUstream_st* origin = nullptr;  // where the capture began, and must end
  bool invalidated = false;
  // cudaGraphGetNodes's handles, one per node, made when first asked for.
  std::vector<std::unique_ptr<CUgraphNode_st>> handles;
};
struct CUstream_st {
  bool capturing = false;
  CUgraph_st* graph = nullptr;  // the capture it takes part in
  std::vector<int> tail;        // the nodes its next captured work depends on
};
struct CUevent_st {
  CUgraph_st* graph = nullptr;  // recorded in a capture: the nodes it stands for
  std::vector<int> nodes;
  bool stale = false;  // recorded in a capture that has ended, not recorded since
  bool timing = true;  // created without cudaEventDisableTiming
  // Where the stream's work reached the last record outside a capture: set by the
  // queued work itself, so it outlives an event destroyed before that work runs.
  std::shared_ptr<std::chrono::steady_clock::time_point> reached;
};
struct CUgraphExec_st {
  std::vector<CUgraph_st::Node> nodes;
};
struct cublasContext {
  cudaStream_t stream = nullptr;
  bool tf32 = false;  // CUBLAS_TF32_TENSOR_OP_MATH
  // The scratch its calls use: the workspace set since the last cublasSetStream (which
  // resets it, as cuBLAS does), else the handle's own pool, stood for by the handle.
  const void* workspace = nullptr;
  const void* scratch() const { return workspace ? workspace : this; }
};

namespace cuda_emu {
namespace {

[[noreturn]] void fault(const std::string& what) {
  std::fprintf(stderr, "cuda-emu: %s\n", what.c_str());
  std::fflush(stderr);
  std::abort();
}

// ---- device memory --------------------------------------------------------

constexpr size_t kTotalBytes = size_t(80) << 30;     // an H100's memory
constexpr size_t kContextBytes = size_t(500) << 20;  // what a context takes there
constexpr size_t kCublasHandleBytes = size_t(2) << 20;
bool context_made = false;
size_t bytes_in_use = 0;
using Blocks = std::map<uintptr_t, size_t>;  // allocated address -> bytes
Blocks blocks;                               // cudaMalloc's
Blocks pinned_blocks;                        // cudaMallocHost's

void make_context() {
  if (!context_made) bytes_in_use += kContextBytes;
  context_made = true;
}

// The allocation of `in` holding [p, p + bytes), or in.end().
Blocks::const_iterator block_of(const void* p, size_t bytes, const Blocks& in = blocks) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  auto it = in.upper_bound(a);
  if (it == in.begin()) return in.end();
  --it;
  if (a + bytes > it->first + it->second) return in.end();
  return it;
}

bool is_device(const void* p, size_t bytes) { return block_of(p, bytes) != blocks.end(); }
bool is_pinned(const void* p, size_t bytes) {
  return block_of(p, bytes, pinned_blocks) != pinned_blocks.end();
}

// ---- errors and capture ---------------------------------------------------

cudaError_t last_error = cudaSuccess;
int captures = 0;  // streams capturing now

cudaError_t record_error(cudaError_t e) {
  if (e != cudaSuccess) last_error = e;
  return e;
}

// A call CUDA forbids while this thread captures (cudaStreamCaptureModeGlobal or
// ThreadLocal: both apply to a single-threaded host): the capture is invalidated.
std::vector<CUstream_st*> all_streams;
std::vector<CUevent_st*> all_events;

bool forbidden_while_capturing(const char* call) {
  if (captures == 0) return false;
  std::fprintf(stderr, "cuda-emu: %s while a stream is being captured: capture invalidated\n",
               call);
  for (CUstream_st* s : all_streams)
    if (s->capturing) s->graph->invalidated = true;
  record_error(cudaErrorStreamCaptureUnsupported);
  return true;
}

// ---- deferred work --------------------------------------------------------

// Work queued on any stream, run in order at the next synchronisation. One queue
// for all streams is one of the orders a GPU may choose.
std::deque<std::function<void()>> pending;

void run_pending() {
  while (!pending.empty()) {
    std::function<void()> w = std::move(pending.front());
    pending.pop_front();
    w();
  }
}

cudaError_t enqueue(cudaStream_t stream, std::function<void()> work, const char* what,
                    const void* cublas_workspace = nullptr) {
  if (stream && stream->capturing) {
    std::vector<CUgraph_st::Node>& nodes = stream->graph->nodes;
    nodes.push_back({std::move(work), stream->tail, cublas_workspace, what});
    stream->tail.assign(1, static_cast<int>(nodes.size()) - 1);
    return cudaSuccess;
  }
  if (!stream && captures > 0) {
    // The legacy stream synchronises with the capturing one: not capturable.
    forbidden_while_capturing(what);
    return cudaErrorStreamCaptureImplicit;
  }
  pending.push_back(std::move(work));
  return cudaSuccess;
}

// ---- fibers ---------------------------------------------------------------

// Saves the callee-saved registers, MXCSR and the x87 control word on the current
// stack, stores the stack pointer in *save and resumes the stack at `to`.
extern "C" void cuda_emu_switch(void** save, void* to);
asm(R"(
.text
.globl cuda_emu_switch
.type cuda_emu_switch, @function
cuda_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
.size cuda_emu_switch, .-cuda_emu_switch
)");

constexpr int kMaxThreads = 1024;
#ifdef CUDA_EMU_ASAN
constexpr size_t kStackBytes = size_t(1) << 20;  // ASan's frames are larger
#else
constexpr size_t kStackBytes = size_t(256) << 10;
#endif

enum class State { Ready, AtBlockBarrier, AtWarpBarrier, Done };

struct Fiber {
  void* sp = nullptr;
  uint3 idx;
  int linear = 0;
  State state = State::Ready;
  const void* site = nullptr;  // the __syncthreads waited at
  unsigned mask = 0;           // the shuffle's lanes
#ifdef CUDA_EMU_ASAN
  void* fake_stack = nullptr;
#endif
};

struct BlockRun {
  const char* kernel = "";
  dim3 grid, block;
  uint3 block_idx;
  const std::function<void()>* body = nullptr;
  std::vector<Fiber> fibers;
  std::vector<unsigned char> shared;
  std::vector<uint64_t> lanes;  // each thread's shuffle value
  int threads = 0;
};

BlockRun run;
Fiber* current = nullptr;
void* main_sp = nullptr;
char* stacks = nullptr;
#ifdef CUDA_EMU_ASAN
void* main_fake_stack = nullptr;
const void* main_stack_bottom = nullptr;
size_t main_stack_size = 0;
#endif

char* stack_of(int linear) { return stacks + static_cast<size_t>(linear) * kStackBytes; }

std::string where() {
  char b[160];
  std::snprintf(b, sizeof b, "kernel %s, block (%u,%u,%u) of (%u,%u,%u), %d threads", run.kernel,
                run.block_idx.x, run.block_idx.y, run.block_idx.z, run.grid.x, run.grid.y,
                run.grid.z, run.threads);
  return b;
}

// From a fiber back to the scheduler.
void yield_to_scheduler() {
  Fiber* f = current;
#ifdef CUDA_EMU_ASAN
  __sanitizer_start_switch_fiber(f->state == State::Done ? nullptr : &f->fake_stack,
                                 main_stack_bottom, main_stack_size);
#endif
  cuda_emu_switch(&f->sp, main_sp);
#ifdef CUDA_EMU_ASAN
  __sanitizer_finish_switch_fiber(f->fake_stack, nullptr, nullptr);
#endif
}

extern "C" [[noreturn]] void cuda_emu_fiber_main() {
#ifdef CUDA_EMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &main_stack_bottom, &main_stack_size);
#endif
  (*run.body)();
  current->state = State::Done;
  yield_to_scheduler();
  __builtin_unreachable();
}

// A fresh stack whose first switch "returns" into cuda_emu_fiber_main with the
// stack aligned as after a call.
void* fresh_stack(int linear) {
  uintptr_t top = reinterpret_cast<uintptr_t>(stack_of(linear) + kStackBytes) & ~uintptr_t(15);
  uint64_t* sp = reinterpret_cast<uint64_t*>(top);
  *--sp = 0;  // cuda_emu_fiber_main's return address: it never returns
  *--sp = reinterpret_cast<uint64_t>(&cuda_emu_fiber_main);
  for (int r = 0; r < 6; ++r) *--sp = 0;  // rbp rbx r12 r13 r14 r15
  uint32_t mxcsr;
  uint16_t fcw;
  asm volatile("stmxcsr %0" : "=m"(mxcsr));
  asm volatile("fnstcw %0" : "=m"(fcw));
  *--sp = static_cast<uint64_t>(mxcsr) | (static_cast<uint64_t>(fcw) << 32);
  return sp;
}

void resume(Fiber& f) {
  current = &f;
#ifdef CUDA_EMU_ASAN
  __sanitizer_start_switch_fiber(&main_fake_stack, stack_of(f.linear), kStackBytes);
#endif
  cuda_emu_switch(&main_sp, f.sp);
#ifdef CUDA_EMU_ASAN
  __sanitizer_finish_switch_fiber(main_fake_stack, nullptr, nullptr);
#endif
  current = nullptr;
}

// Releases the threads waiting at a barrier that all its threads reached; false
// when none could be released.
bool release_barriers() {
  bool released = false;
  // Warp barriers (shuffles): every live lane of the warp waits at one, the same
  // mask in all, naming exactly those lanes.
  for (int w0 = 0; w0 < run.threads; w0 += 32) {
    const int w1 = std::min(run.threads, w0 + 32);
    bool all_waiting = true, any = false;
    for (int t = w0; t < w1; ++t) {
      const Fiber& f = run.fibers[t];
      if (f.state == State::Done) continue;
      any = true;
      if (f.state != State::AtWarpBarrier) all_waiting = false;
    }
    if (!any || !all_waiting) continue;
    unsigned mask = 0;
    bool first = true;
    for (int t = w0; t < w1; ++t) {
      const Fiber& f = run.fibers[t];
      if (f.state != State::AtWarpBarrier) continue;
      if (!first && f.mask != mask)
        fault(where() + ": lanes of warp " + std::to_string(w0 / 32) +
              " shuffle with different masks");
      mask = f.mask;
      first = false;
    }
    for (int lane = 0; lane < 32; ++lane) {
      const bool named = (mask >> lane) & 1u;
      const int t = w0 + lane;
      const bool waiting = t < w1 && run.fibers[t].state == State::AtWarpBarrier;
      if (named && !waiting)
        fault(where() + ": a shuffle's mask names lane " + std::to_string(lane) + " of warp " +
              std::to_string(w0 / 32) +
              (t < w1 ? ", which has exited" : ", which does not exist (partial warp)"));
      if (!named && waiting)
        fault(where() + ": lane " + std::to_string(lane) + " of warp " + std::to_string(w0 / 32) +
              " shuffles with a mask that leaves it out");
    }
    for (int t = w0; t < w1; ++t)
      if (run.fibers[t].state == State::AtWarpBarrier) run.fibers[t].state = State::Ready;
    released = true;
  }
  if (released) return true;
  // The block barrier: every live thread at it, all at the same __syncthreads.
  const void* site = nullptr;
  for (const Fiber& f : run.fibers) {
    if (f.state == State::Done) continue;
    if (f.state != State::AtBlockBarrier) return false;
    if (site && f.site != site)
      fault(where() + ": threads wait at different __syncthreads (divergent barrier)");
    site = f.site;
  }
  if (!site) return false;
  for (Fiber& f : run.fibers)
    if (f.state == State::AtBlockBarrier) f.state = State::Ready;
  return true;
}

void run_block() {
  const int n = run.threads;
  for (int t = 0; t < n; ++t) {
    Fiber& f = run.fibers[t];
    f = Fiber();
    f.linear = t;
    f.idx.x = t % run.block.x;
    f.idx.y = (t / run.block.x) % run.block.y;
    f.idx.z = t / (run.block.x * run.block.y);
    f.sp = fresh_stack(t);
  }
  for (;;) {
    bool live = false;
    for (int t = 0; t < n; ++t) {
      Fiber& f = run.fibers[t];
      if (f.state == State::Ready) resume(f);
      live = live || f.state != State::Done;
    }
    if (!live) return;
    if (!release_barriers()) {
      int at_block = 0, at_warp = 0, done = 0;
      for (const Fiber& f : run.fibers) {
        at_block += f.state == State::AtBlockBarrier;
        at_warp += f.state == State::AtWarpBarrier;
        done += f.state == State::Done;
      }
      fault(where() + ": deadlock: " + std::to_string(at_block) + " threads at __syncthreads, " +
            std::to_string(at_warp) + " at a warp shuffle, " + std::to_string(done) +
            " exited");
    }
  }
}

void run_kernel(const char* name, dim3 grid, dim3 block, size_t shared_bytes,
                const std::function<void()>& body) {
  if (!stacks) {
    void* m = mmap(nullptr, kStackBytes * kMaxThreads, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) fault("cannot map the fibers' stacks");
    stacks = static_cast<char*>(m);
  }
  run.kernel = name;
  run.grid = grid;
  run.block = block;
  run.body = &body;
  run.threads = static_cast<int>(block.x * block.y * block.z);
  run.fibers.assign(run.threads, Fiber());
  run.lanes.assign(run.threads, 0);
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) {
        run.block_idx.x = x;
        run.block_idx.y = y;
        run.block_idx.z = z;
        // Shared memory starts as garbage on a GPU too.
        run.shared.assign(shared_bytes, 0xff);
        run_block();
      }
}

}  // namespace

// ---- the kernels' side ----------------------------------------------------

const uint3& thread_idx() { return current->idx; }
const uint3& block_idx() { return run.block_idx; }
const dim3& block_dim() { return run.block; }
const dim3& grid_dim() { return run.grid; }

void* dynamic_shared() { return run.shared.empty() ? nullptr : run.shared.data(); }

void sync_block(const void* site) {
  current->state = State::AtBlockBarrier;
  current->site = site;
  yield_to_scheduler();
}

void shuffle_down(unsigned mask, const void* in, void* out, size_t bytes, unsigned delta,
                  int width) {
  if (width <= 0 || width > 32 || (width & (width - 1)) != 0)
    fault(where() + ": shuffle width " + std::to_string(width) + " is not a power of 2 <= 32");
  Fiber& f = *current;
  const int lane = f.linear % 32;
  std::memcpy(&run.lanes[f.linear], in, bytes);
  f.mask = mask;
  f.state = State::AtWarpBarrier;
  yield_to_scheduler();  // every lane has written its value
  if (lane % width + static_cast<int>(delta) < width) {
    // The source lane must take part (the mask, checked on release, names only
    // lanes that exist and wait here).
    if (!((mask >> (lane + delta)) & 1u))
      fault(where() + ": lane " + std::to_string(lane) + " shuffles from lane " +
            std::to_string(lane + delta) + ", outside the mask");
    std::memcpy(out, &run.lanes[f.linear + delta], bytes);
  }
  f.state = State::AtWarpBarrier;
  yield_to_scheduler();  // every lane has read before any writes again
}

namespace {
// The graph instantiated last; and of all, the one with the longest chain of nodes
// each waiting for the one before: its node count, and that chain's nodes per
// kernel or call.
GraphShape last_graph;
size_t graph_nodes = 0;
std::map<std::string, long> graph_chain;

// CUDA_EMU_LAUNCHES=1: launches per kernel (and cuBLAS calls), on stderr at exit;
// how many launches a network takes is what bounds it on a GPU at batch 1, and in a
// graph, how many of them run one after another (each waits out the one before it,
// however little work it has).
std::map<std::string, long>* launch_counts() {
  static std::map<std::string, long>* counts = [] {
    const char* env = std::getenv("CUDA_EMU_LAUNCHES");
    if (!env || std::strcmp(env, "0") == 0) return static_cast<std::map<std::string, long>*>(nullptr);
    std::atexit([] {
      long total = 0;
      for (const auto& c : *launch_counts()) total += c.second;
      std::fprintf(stderr, "cuda-emu: %ld launches queued\n", total);
      for (const auto& c : *launch_counts())
        std::fprintf(stderr, "  %8ld  %s\n", c.second, c.first.c_str());
      long chain = 0;
      for (const auto& c : graph_chain) chain += c.second;
      if (chain == 0) return;
      std::fprintf(stderr, "cuda-emu: graph of %zu nodes, the longest chain %ld of them\n",
                   graph_nodes, chain);
      for (const auto& c : graph_chain)
        std::fprintf(stderr, "  %8ld  %s\n", c.second, c.first.c_str());
    });
    return new std::map<std::string, long>;
  }();
  return counts;
}

void count_launch(const char* name) {
  if (std::map<std::string, long>* counts = launch_counts()) ++(*counts)[name];
}
}  // namespace

void check_wmma_operand(const char* call, const void* p, unsigned ldm, size_t element_bytes) {
  // The CUDA guide: "mptr must be a 256-bit aligned pointer"; ldm a multiple of 16 bytes.
  if (reinterpret_cast<uintptr_t>(p) % 32 != 0 || (ldm * element_bytes) % 16 != 0) {
    char b[200];
    std::snprintf(b, sizeof b, "wmma::%s: pointer %p (must be 32-byte aligned), ldm %u (must be a multiple of %zu elements)",
                  call, p, ldm, 16 / element_bytes);
    fault(b);
  }
}

void check_kernel_pointer(const char* kernel, int param, const void* p) {
  if (p && !is_device(p, 0)) {
    char b[200];
    std::snprintf(b, sizeof b, "kernel %s: parameter %d (%p) is not device memory", kernel, param,
                  p);
    fault(b);
  }
}

void enqueue_kernel(const char* name, dim3 grid, dim3 block, size_t shared_bytes,
                    cudaStream_t stream, std::function<void()> body) {
  make_context();
  count_launch(name);
  const unsigned long long threads =
      static_cast<unsigned long long>(block.x) * block.y * block.z;
  const bool bad = grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.x > 0x7fffffffu ||
                   grid.y > 65535 || grid.z > 65535 || threads == 0 || threads > 1024 ||
                   block.z > 64 || shared_bytes > 48 * 1024;
  if (bad) {
    std::fprintf(stderr,
                 "cuda-emu: launch of %s with grid (%u,%u,%u), block (%u,%u,%u), %zu shared "
                 "bytes: invalid configuration\n",
                 name, grid.x, grid.y, grid.z, block.x, block.y, block.z, shared_bytes);
    record_error(cudaErrorInvalidConfiguration);
    return;
  }
  const cudaError_t e =
      enqueue(stream,
              [name, grid, block, shared_bytes, body]() {
                run_kernel(name, grid, block, shared_bytes, body);
              },
              name);
  record_error(e);
}

size_t waits = 0;  // host_waits
size_t host_waits() { return waits; }
int event_creates_left = -1;  // fail_event_creates_after
size_t live_events() { return all_events.size(); }
void fail_event_creates_after(int successes) { event_creates_left = successes; }
GraphShape last_graph_shape() { return last_graph; }

}  // namespace cuda_emu

using namespace cuda_emu;

// ---- CUDA runtime ---------------------------------------------------------

extern "C" {

cudaError_t cudaGetDeviceCount(int* count) {
  *count = 1;
  return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
  make_context();
  return record_error(device == 0 ? cudaSuccess : cudaErrorInvalidDevice);
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  if (device != 0) return record_error(cudaErrorInvalidDevice);
  std::memset(prop, 0, sizeof *prop);
  std::snprintf(prop->name, sizeof prop->name, "repshare CUDA emulator (CPU)");
  prop->totalGlobalMem = kTotalBytes;
  prop->sharedMemPerBlock = 48 * 1024;
  prop->warpSize = 32;
  prop->maxThreadsPerBlock = 1024;
  prop->maxThreadsDim[0] = prop->maxThreadsDim[1] = 1024;
  prop->maxThreadsDim[2] = 64;
  prop->maxGridSize[0] = 0x7fffffff;
  prop->maxGridSize[1] = prop->maxGridSize[2] = 65535;
  prop->major = 9;
  prop->minor = 0;
  prop->multiProcessorCount = 132;
  return cudaSuccess;
}

const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorStreamCaptureUnsupported: return "cudaErrorStreamCaptureUnsupported";
    case cudaErrorStreamCaptureInvalidated: return "cudaErrorStreamCaptureInvalidated";
    case cudaErrorStreamCaptureImplicit: return "cudaErrorStreamCaptureImplicit";
    case cudaErrorStreamCaptureUnjoined: return "cudaErrorStreamCaptureUnjoined";
    case cudaErrorStreamCaptureIsolation: return "cudaErrorStreamCaptureIsolation";
    case cudaErrorStreamCaptureUnmatched: return "cudaErrorStreamCaptureUnmatched";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorIllegalState: return "cudaErrorIllegalState";
    default: return "cudaError (emulator: unnamed)";
  }
}

const char* cudaGetErrorString(cudaError_t e) { return cudaGetErrorName(e); }

cudaError_t cudaGetLastError() {
  const cudaError_t e = last_error;
  last_error = cudaSuccess;
  return e;
}

cudaError_t cudaMalloc(void** p, size_t bytes) {
  make_context();
  *p = nullptr;
  if (forbidden_while_capturing("cudaMalloc")) return cudaErrorStreamCaptureUnsupported;
  if (bytes == 0) return cudaSuccess;
  if (bytes_in_use + bytes > kTotalBytes) return record_error(cudaErrorMemoryAllocation);
  void* m = nullptr;
  // Exactly `bytes` (no rounding up), so AddressSanitizer sees any read past them.
  if (posix_memalign(&m, 256, bytes) != 0) return record_error(cudaErrorMemoryAllocation);
  std::memset(m, 0xff, bytes);  // NaN as float, -1 as integers: never a plausible value
  blocks[reinterpret_cast<uintptr_t>(m)] = bytes;
  bytes_in_use += bytes;
  *p = m;
  return cudaSuccess;
}

// cudaFree and cudaFreeHost: wait for the device, then free p, an allocation of
// `in`; *bytes its size (0 for null).
static cudaError_t free_block(Blocks& in, void* p, const char* what, size_t* bytes) {
  make_context();
  *bytes = 0;
  if (forbidden_while_capturing(what)) return cudaErrorStreamCaptureUnsupported;
  run_pending();
  if (!p) return cudaSuccess;
  auto it = in.find(reinterpret_cast<uintptr_t>(p));
  if (it == in.end()) return record_error(cudaErrorInvalidValue);
  *bytes = it->second;
  in.erase(it);
  std::free(p);
  return cudaSuccess;
}

cudaError_t cudaFree(void* p) {
  size_t bytes = 0;
  const cudaError_t e = free_block(blocks, p, "cudaFree", &bytes);
  bytes_in_use -= bytes;
  return e;
}

// Pinned host memory: what the GPU copies from without staging, so an upload from
// it reads the bytes when its stream runs (cudaMemcpyAsync), not when queued.
cudaError_t cudaMallocHost(void** p, size_t bytes) {
  make_context();
  *p = nullptr;
  if (forbidden_while_capturing("cudaMallocHost")) return cudaErrorStreamCaptureUnsupported;
  void* m = nullptr;
  if (posix_memalign(&m, 4096, bytes == 0 ? 1 : bytes) != 0)
    return record_error(cudaErrorMemoryAllocation);
  std::memset(m, 0xff, bytes);  // as cudaMalloc's: whoever relies on its contents fails
  pinned_blocks[reinterpret_cast<uintptr_t>(m)] = bytes;
  *p = m;
  return cudaSuccess;
}

cudaError_t cudaFreeHost(void* p) {
  size_t bytes = 0;
  return free_block(pinned_blocks, p, "cudaFreeHost", &bytes);
}

cudaError_t cudaPointerGetAttributes(cudaPointerAttributes* a, const void* p) {
  make_context();
  *a = cudaPointerAttributes();
  a->type = is_device(p, 1)   ? cudaMemoryTypeDevice
            : is_pinned(p, 1) ? cudaMemoryTypeHost
                              : cudaMemoryTypeUnregistered;
  a->device = a->type == cudaMemoryTypeUnregistered ? -1 : 0;
  a->devicePointer = a->type == cudaMemoryTypeUnregistered ? nullptr : const_cast<void*>(p);
  a->hostPointer = a->type == cudaMemoryTypeDevice ? nullptr : const_cast<void*>(p);
  return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  make_context();
  *free_bytes = kTotalBytes - bytes_in_use;
  *total_bytes = kTotalBytes;
  return cudaSuccess;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned) {
  make_context();
  *stream = new CUstream_st;
  all_streams.push_back(*stream);
  return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  if (!stream) return record_error(cudaErrorInvalidValue);
  if (stream->capturing) return record_error(cudaErrorIllegalState);
  run_pending();
  for (size_t i = 0; i < all_streams.size(); ++i)
    if (all_streams[i] == stream) all_streams.erase(all_streams.begin() + i);
  delete stream;
  return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  if ((stream && stream->capturing) || captures > 0) {
    forbidden_while_capturing("cudaStreamSynchronize");
    return cudaErrorStreamCaptureUnsupported;
  }
  ++waits;
  run_pending();
  return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t stream) {
  make_context();
  if (bytes == 0) return cudaSuccess;
  const bool dst_device = is_device(dst, bytes), src_device = is_device(src, bytes);
  const bool ok = (kind == cudaMemcpyHostToDevice && dst_device && !is_device(src, 0)) ||
                  (kind == cudaMemcpyDeviceToHost && src_device && !is_device(dst, 0)) ||
                  (kind == cudaMemcpyDeviceToDevice && dst_device && src_device);
  if (!ok) {
    std::fprintf(stderr,
                 "cuda-emu: cudaMemcpyAsync of %zu bytes, kind %d: %p -> %p are not the memory "
                 "the kind names (or not inside one allocation)\n",
                 bytes, static_cast<int>(kind), src, dst);
    return record_error(cudaErrorInvalidValue);
  }
  // Into pageable memory CUDA returns once the copy is done: the host waits. (Here
  // the copy still runs at the next synchronisation, which is stricter.)
  if (kind == cudaMemcpyDeviceToHost && !is_pinned(dst, bytes)) ++waits;
  if (kind == cudaMemcpyHostToDevice && !(stream && stream->capturing) &&
      !is_pinned(src, bytes)) {
    // From pageable memory the source is staged before the call returns: the
    // caller may reuse it at once.
    std::vector<unsigned char> staged(static_cast<const unsigned char*>(src),
                                      static_cast<const unsigned char*>(src) + bytes);
    return record_error(enqueue(
        stream, [dst, staged]() { std::memcpy(dst, staged.data(), staged.size()); },
        "cudaMemcpyAsync"));
  }
  return record_error(
      enqueue(stream, [dst, src, bytes]() { std::memcpy(dst, src, bytes); }, "cudaMemcpyAsync"));
}

cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t stream) {
  make_context();
  if (bytes == 0) return cudaSuccess;
  if (!is_device(p, bytes)) {
    std::fprintf(stderr, "cuda-emu: cudaMemsetAsync of %zu bytes at %p: not device memory\n",
                 bytes, p);
    return record_error(cudaErrorInvalidValue);
  }
  return record_error(enqueue(
      stream, [p, value, bytes]() { std::memset(p, value, bytes); }, "cudaMemsetAsync"));
}

cudaError_t cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode) {
  if (!stream) return record_error(cudaErrorStreamCaptureUnsupported);
  if (stream->capturing) return record_error(cudaErrorIllegalState);
  stream->capturing = true;
  stream->graph = new CUgraph_st;
  stream->graph->origin = stream;
  stream->tail.clear();
  ++captures;
  return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t* graph) {
  *graph = nullptr;
  if (!stream || !stream->capturing) return record_error(cudaErrorIllegalState);
  CUgraph_st* g = stream->graph;
  if (g->origin != stream) return record_error(cudaErrorStreamCaptureUnmatched);
  // Every stream that joined the capture must have been joined back into the
  // origin: all captured work precedes the origin's last.
  std::vector<bool> reached(g->nodes.size(), false);
  std::vector<int> stack = stream->tail;
  while (!stack.empty()) {
    const int n = stack.back();
    stack.pop_back();
    if (reached[n]) continue;
    reached[n] = true;
    for (int d : g->nodes[n].deps) stack.push_back(d);
  }
  const bool unjoined = std::find(reached.begin(), reached.end(), false) != reached.end();
  if (unjoined)
    std::fprintf(stderr, "cuda-emu: capture ended with work on another stream that the origin "
                         "stream does not wait for\n");
  for (CUstream_st* s : all_streams)
    if (s->graph == g) {
      s->capturing = false;
      s->graph = nullptr;
      s->tail.clear();
      --captures;
    }
  for (CUevent_st* e : all_events)
    if (e->graph == g) {
      e->graph = nullptr;
      e->nodes.clear();
      e->stale = true;
    }
  if (g->invalidated || unjoined) {
    delete g;
    return record_error(unjoined ? cudaErrorStreamCaptureUnjoined
                                 : cudaErrorStreamCaptureInvalidated);
  }
  *graph = g;
  return cudaSuccess;
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned flags) {
  make_context();
  if (event_creates_left == 0) return record_error(cudaErrorMemoryAllocation);
  if (event_creates_left > 0) --event_creates_left;
  *event = new CUevent_st;
  (*event)->timing = (flags & cudaEventDisableTiming) == 0;
  all_events.push_back(*event);
  return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t* event) {
  return cudaEventCreateWithFlags(event, cudaEventDefault);
}

cudaError_t cudaEventSynchronize(cudaEvent_t event) {
  if (!event) return record_error(cudaErrorInvalidResourceHandle);
  if (captures > 0) {
    forbidden_while_capturing("cudaEventSynchronize");
    return cudaErrorStreamCaptureUnsupported;
  }
  ++waits;
  run_pending();
  return cudaSuccess;
}

// As CUDA: both events recorded outside a capture, with timing, and reached.
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  if (!start || !end || !start->reached || !end->reached)  // not recorded with timing
    return record_error(cudaErrorInvalidResourceHandle);
  using Clock = std::chrono::steady_clock;
  if (*start->reached == Clock::time_point() || *end->reached == Clock::time_point())
    return record_error(cudaErrorNotReady);
  *ms = std::chrono::duration<float, std::milli>(*end->reached - *start->reached).count();
  return cudaSuccess;
}

cudaError_t cudaEventDestroy(cudaEvent_t event) {
  all_events.erase(std::remove(all_events.begin(), all_events.end(), event), all_events.end());
  delete event;
  return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  if (!event) return record_error(cudaErrorInvalidResourceHandle);
  if (stream && stream->capturing) {
    event->graph = stream->graph;
    event->nodes = stream->tail;
  } else {
    // Outside a capture every stream's work runs in one queue, in order: an event
    // recorded there has nothing to order.
    if (!stream && captures > 0) return record_error(cudaErrorStreamCaptureImplicit);
    event->graph = nullptr;
    event->nodes.clear();
    if (event->timing) {
      auto reached = std::make_shared<std::chrono::steady_clock::time_point>();
      event->reached = reached;
      enqueue(stream, [reached]() { *reached = std::chrono::steady_clock::now(); },
              "cudaEventRecord");
    }
  }
  event->stale = false;
  return cudaSuccess;
}

cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned) {
  if (!event || !stream) return record_error(cudaErrorInvalidResourceHandle);
  if (event->stale) {
    std::fprintf(stderr, "cuda-emu: a stream waits for an event last recorded in a capture "
                         "that has ended\n");
    return record_error(cudaErrorStreamCaptureIsolation);
  }
  if (!event->graph) {
    if (stream->capturing) {
      // An event from outside the capture: CUDA refuses to order a graph after it.
      std::fprintf(stderr, "cuda-emu: a capturing stream waits for an event recorded outside "
                           "the capture\n");
      stream->graph->invalidated = true;
      return record_error(cudaErrorStreamCaptureIsolation);
    }
    return cudaSuccess;
  }
  if (!stream->capturing) {  // joins the capture the event was recorded in
    stream->capturing = true;
    stream->graph = event->graph;
    stream->tail = event->nodes;
    ++captures;
    return cudaSuccess;
  }
  if (stream->graph != event->graph) {
    stream->graph->invalidated = true;
    return record_error(cudaErrorStreamCaptureIsolation);
  }
  for (int n : event->nodes)
    if (std::find(stream->tail.begin(), stream->tail.end(), n) == stream->tail.end())
      stream->tail.push_back(n);
  return cudaSuccess;
}

// Two cuBLAS calls of a graph on the same scratch, neither after the other, would
// overwrite each other's scratch on a GPU (the emulation's GEMMs use none): the
// first such pair, or {-1, -1}.
std::pair<int, int> unordered_cublas_scratch(const std::vector<CUgraph_st::Node>& nodes) {
  const size_t n = nodes.size();
  // before[i]: the nodes i depends on, directly or not (deps point to earlier nodes).
  std::vector<std::vector<bool>> before(n);
  for (size_t i = 0; i < n; ++i) {
    if (!nodes[i].cublas_workspace) continue;
    std::vector<bool>& seen = before[i];
    seen.assign(n, false);
    std::vector<int> stack = nodes[i].deps;
    while (!stack.empty()) {
      const int d = stack.back();
      stack.pop_back();
      if (seen[d]) continue;
      seen[d] = true;
      for (int e : nodes[d].deps) stack.push_back(e);
    }
    for (size_t j = 0; j < i; ++j)
      if (nodes[j].cublas_workspace == nodes[i].cublas_workspace && !seen[j])
        return {static_cast<int>(j), static_cast<int>(i)};
  }
  return {-1, -1};
}

cudaError_t cudaGraphGetNodes(cudaGraph_t graph, cudaGraphNode_t* nodes, size_t* count) {
  if (!graph || !count) return record_error(cudaErrorInvalidValue);
  while (graph->handles.size() < graph->nodes.size()) {
    const int index = static_cast<int>(graph->handles.size());
    graph->handles.emplace_back(new CUgraphNode_st{graph, index});
  }
  if (nodes)  // as CUDA: at most *count of them, and *count how many were written
    *count = std::min(*count, graph->nodes.size());
  else
    *count = graph->nodes.size();
  for (size_t i = 0; nodes && i < *count; ++i) nodes[i] = graph->handles[i].get();
  return cudaSuccess;
}

// CUDA 13's form (edge data, here never asked for).
cudaError_t cudaGraphNodeGetDependencies(cudaGraphNode_t node, cudaGraphNode_t* deps,
                                         cudaGraphEdgeData* edge_data, size_t* count) {
  if (!node || !count || edge_data) return record_error(cudaErrorInvalidValue);
  const std::vector<int>& of = node->graph->nodes[node->index].deps;
  if (deps)
    *count = std::min(*count, of.size());
  else
    *count = of.size();
  for (size_t i = 0; deps && i < *count; ++i) deps[i] = node->graph->handles[of[i]].get();
  return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long) {
  if (!graph) return record_error(cudaErrorInvalidValue);
  const std::pair<int, int> race = unordered_cublas_scratch(graph->nodes);
  if (race.first >= 0) {
    std::fprintf(stderr, "cuda-emu: graph nodes %d and %d are cuBLAS calls on the same "
                 "workspace with neither after the other\n", race.first, race.second);
    return record_error(cudaErrorInvalidValue);
  }
  // Nodes depend on earlier nodes only: one pass finds each node's longest chain
  // and the node before it there.
  const std::vector<CUgraph_st::Node>& nodes = graph->nodes;
  std::vector<long> chain(nodes.size(), 1);
  std::vector<int> prev(nodes.size(), -1);
  for (size_t i = 0; i < nodes.size(); ++i)
    for (int d : nodes[i].deps)
      if (chain[d] + 1 > chain[i]) chain[i] = chain[d] + 1, prev[i] = d;
  const auto last = std::max_element(chain.begin(), chain.end());
  last_graph.nodes = nodes.size();
  last_graph.longest_chain = last == chain.end() ? 0 : static_cast<size_t>(*last);
  long longest_before = 0;
  for (const auto& c : graph_chain) longest_before += c.second;
  if (last != chain.end() && *last > longest_before) {
    graph_nodes = nodes.size();
    graph_chain.clear();
    for (int i = static_cast<int>(last - chain.begin()); i >= 0; i = prev[i])
      ++graph_chain[nodes[i].what];
  }
  *exec = new CUgraphExec_st{graph->nodes};
  return cudaSuccess;
}

// A replay runs the nodes in an order their dependencies allow, but not the order
// they were captured in: of the nodes ready to run, the one captured last goes
// first. A dependency the capture did not state then shows as wrong results.
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream) {
  if (!exec) return record_error(cudaErrorInvalidValue);
  const std::vector<CUgraph_st::Node>* nodes = &exec->nodes;
  return record_error(enqueue(
      stream,
      [nodes]() {
        const size_t n = nodes->size();
        std::vector<int> waiting(n, 0);
        std::vector<std::vector<int>> dependents(n);
        for (size_t i = 0; i < n; ++i)
          for (int d : (*nodes)[i].deps) {
            ++waiting[i];
            dependents[d].push_back(static_cast<int>(i));
          }
        std::vector<int> ready;  // kept sorted: the last is the latest captured
        for (size_t i = 0; i < n; ++i)
          if (waiting[i] == 0) ready.push_back(static_cast<int>(i));
        while (!ready.empty()) {
          const int i = ready.back();
          ready.pop_back();
          (*nodes)[i].work();
          for (int j : dependents[i])
            if (--waiting[j] == 0) ready.insert(std::upper_bound(ready.begin(), ready.end(), j), j);
        }
      },
      "cudaGraphLaunch"));
}

cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  delete graph;
  return cudaSuccess;
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
  run_pending();  // a launched graph may still be queued
  delete exec;
  return cudaSuccess;
}

}  // extern "C"

// ---- cuBLAS ---------------------------------------------------------------

namespace {

float load(const void* base, cudaDataType type, size_t i) {
  if (type == CUDA_R_16F) return __half2float(static_cast<const __half*>(base)[i]);
  return static_cast<const float*>(base)[i];
}

void store(void* base, cudaDataType type, size_t i, float v) {
  if (type == CUDA_R_16F)
    static_cast<__half*>(base)[i] = __float2half_rn(v);
  else
    static_cast<float*>(base)[i] = v;
}

size_t type_bytes(cudaDataType type) { return type == CUDA_R_16F ? 2 : 4; }

// v with 10 fraction bits, as a TF32 tensor core takes an fp32 operand: rounded to
// nearest even here, which is within one TF32 step of what the hardware does
// (the tests compare TF32 results by tolerance, not by bits).
float to_tf32(float v) {
  if (!std::isfinite(v)) return v;
  uint32_t u;
  std::memcpy(&u, &v, sizeof u);
  u += 0xfffu + ((u >> 13) & 1u);
  u &= ~0x1fffu;
  std::memcpy(&v, &u, sizeof v);
  return v;
}

// The extent in elements of `batch` column-major rows x cols matrices.
size_t extent(int rows, int cols, int ld, long long stride, int batch) {
  if (rows == 0 || cols == 0 || batch == 0) return 0;
  return static_cast<size_t>(stride) * (batch - 1) + static_cast<size_t>(ld) * (cols - 1) + rows;
}

void check_operand(const char* call, const char* name, const void* p, size_t bytes) {
  if (bytes && !is_device(p, bytes)) {
    char b[200];
    std::snprintf(b, sizeof b, "%s: operand %s (%p, %zu bytes) is not inside device memory", call,
                  name, p, bytes);
    fault(b);
  }
}

}  // namespace

extern "C" {

cublasStatus_t cublasCreate_v2(cublasHandle_t* handle) {
  make_context();
  if (forbidden_while_capturing("cublasCreate")) return CUBLAS_STATUS_NOT_INITIALIZED;
  *handle = new cublasContext;
  bytes_in_use += kCublasHandleBytes;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy_v2(cublasHandle_t handle) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  run_pending();
  bytes_in_use -= kCublasHandleBytes;
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream_v2(cublasHandle_t handle, cudaStream_t stream) {
  handle->stream = stream;
  handle->workspace = nullptr;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetWorkspace_v2(cublasHandle_t handle, void* workspace, size_t bytes) {
  if (bytes && !is_device(workspace, bytes)) return CUBLAS_STATUS_INVALID_VALUE;
  handle->workspace = bytes ? workspace : nullptr;
  return CUBLAS_STATUS_SUCCESS;
}

// Full fp32, or TF32 (cublasGemmStridedBatchedEx rounds fp32 operands as below);
// other modes (fp16 reductions) would make results the emulation does not reproduce.
cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (mode != CUBLAS_DEFAULT_MATH && mode != CUBLAS_PEDANTIC_MATH &&
      mode != CUBLAS_TF32_TENSOR_OP_MATH)
    return CUBLAS_STATUS_NOT_SUPPORTED;
  handle->tf32 = mode == CUBLAS_TF32_TENSOR_OP_MATH;
  return CUBLAS_STATUS_SUCCESS;
}

const char* cublasGetStatusName(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    default: return "CUBLAS_STATUS (emulator: unnamed)";
  }
}

const char* cublasGetStatusString(cublasStatus_t s) { return cublasGetStatusName(s); }

cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t handle, cublasOperation_t transa,
                                          cublasOperation_t transb, int m, int n, int k,
                                          const void* alpha, const void* A, cudaDataType a_type,
                                          int lda, long long stride_a, const void* B,
                                          cudaDataType b_type, int ldb, long long stride_b,
                                          const void* beta, void* C, cudaDataType c_type, int ldc,
                                          long long stride_c, int batch,
                                          cublasComputeType_t compute, cublasGemmAlgo_t) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  const bool ta = transa != CUBLAS_OP_N, tb = transb != CUBLAS_OP_N;
  // The float combinations cuBLAS takes with fp32 compute: A and B of one type, C
  // of theirs or fp32 (fp16 A and B into an fp32 C; fp32 ones into fp16 are not).
  auto storage = [](cudaDataType t) { return t == CUDA_R_32F || t == CUDA_R_16F; };
  if (!storage(a_type) || a_type != b_type || !storage(c_type) ||
      (a_type == CUDA_R_32F && c_type != CUDA_R_32F) ||
      (compute != CUBLAS_COMPUTE_32F && compute != CUBLAS_COMPUTE_32F_PEDANTIC))
    return CUBLAS_STATUS_NOT_SUPPORTED;
  // cuBLAS's own argument checks.
  const int a_rows = ta ? k : m, b_rows = tb ? n : k;
  if (m < 0 || n < 0 || k < 0 || batch < 0 || lda < std::max(1, a_rows) ||
      ldb < std::max(1, b_rows) || ldc < std::max(1, m))
    return CUBLAS_STATUS_INVALID_VALUE;
  const char* call = "cublasGemmStridedBatchedEx";
  count_launch(call);
  check_operand(call, "A", A, extent(a_rows, ta ? m : k, lda, stride_a, batch) * type_bytes(a_type));
  check_operand(call, "B", B, extent(b_rows, tb ? k : n, ldb, stride_b, batch) * type_bytes(b_type));
  check_operand(call, "C", C, extent(m, n, ldc, stride_c, batch) * type_bytes(c_type));
  const float al = *static_cast<const float*>(alpha), be = *static_cast<const float*>(beta);
  // TF32 mode (cublasSetMathMode) with fp32 compute rounds fp32 operands for the
  // tensor cores; PEDANTIC compute never does.
  const bool tf32 = handle->tf32 && a_type == CUDA_R_32F && compute == CUBLAS_COMPUTE_32F;
  auto operand = [tf32](const void* base, cudaDataType type, size_t i) {
    const float v = load(base, type, i);
    return tf32 ? to_tf32(v) : v;
  };
  const cublasStatus_t status = CUBLAS_STATUS_SUCCESS;
  record_error(enqueue(
      handle->stream,
      [=]() {
        // op(A) as m rows of k floats and op(B) as n columns of k floats, so that
        // every product runs along contiguous memory; each sum still adds l = 0..k-1
        // in order.
        std::vector<float> a(static_cast<size_t>(m) * k), bt(static_cast<size_t>(n) * k);
        for (int b = 0; b < batch; ++b) {
          for (int i = 0; i < m; ++i)
            for (int l = 0; l < k; ++l)
              a[static_cast<size_t>(i) * k + l] =
                  operand(A, a_type, b * stride_a + (ta ? l + static_cast<size_t>(i) * lda
                                                     : i + static_cast<size_t>(l) * lda));
          for (int j = 0; j < n; ++j)
            for (int l = 0; l < k; ++l)
              bt[static_cast<size_t>(j) * k + l] =
                  operand(B, b_type, b * stride_b + (tb ? j + static_cast<size_t>(l) * ldb
                                                     : l + static_cast<size_t>(j) * ldb));
          for (int j = 0; j < n; ++j)
            for (int i = 0; i < m; ++i) {
              const float* ar = a.data() + static_cast<size_t>(i) * k;
              const float* bc = bt.data() + static_cast<size_t>(j) * k;
              float s = 0.f;
              for (int l = 0; l < k; ++l) s += ar[l] * bc[l];
              const size_t ci = b * stride_c + i + static_cast<size_t>(j) * ldc;
              // beta = 0: C is output only (it may hold NaN).
              store(C, c_type, ci, al * s + (be == 0.f ? 0.f : be * load(C, c_type, ci)));
            }
        }
      },
      call, handle->scratch()));
  return status;
}

cublasStatus_t cublasDsyrk_v2(cublasHandle_t handle, cublasFillMode_t uplo,
                              cublasOperation_t trans, int n, int k, const double* alpha,
                              const double* A, int lda, const double* beta, double* C, int ldc) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  const bool t = trans != CUBLAS_OP_N;
  const int a_rows = t ? k : n;
  if (n < 0 || k < 0 || lda < std::max(1, a_rows) || ldc < std::max(1, n))
    return CUBLAS_STATUS_INVALID_VALUE;
  check_operand("cublasDsyrk", "A", A, extent(a_rows, t ? n : k, lda, 0, 1) * sizeof(double));
  check_operand("cublasDsyrk", "C", C, extent(n, n, ldc, 0, 1) * sizeof(double));
  count_launch("cublasDsyrk");
  const double al = *alpha, be = *beta;
  const bool lower = uplo == CUBLAS_FILL_MODE_LOWER;
  record_error(enqueue(
      handle->stream,
      [=]() {
        for (int j = 0; j < n; ++j)
          for (int i = 0; i < n; ++i) {
            if (lower ? i < j : i > j) continue;  // only the triangle asked for
            double s = 0.0;
            for (int l = 0; l < k; ++l) {
              const double a = t ? A[l + static_cast<size_t>(i) * lda] : A[i + static_cast<size_t>(l) * lda];
              const double b = t ? A[l + static_cast<size_t>(j) * lda] : A[j + static_cast<size_t>(l) * lda];
              s += a * b;
            }
            double& c = C[i + static_cast<size_t>(j) * ldc];
            c = al * s + (be == 0.0 ? 0.0 : be * c);
          }
      },
      "cublasDsyrk", handle->scratch()));
  return CUBLAS_STATUS_SUCCESS;
}

}  // extern "C"
