// CudaBackend: device, stream, cuBLAS handle and memory. The kernels are in the
// per-op .cu files beside this one.
#include "kernels/cuda/cuda_backend.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "kernels/cuda/cuda_util.h"
#include "kernels/cuda/cudnn_conv.h"

namespace repshare {

namespace {

size_t bytes_in_use_now() {
  size_t free_bytes = 0, total_bytes = 0;
  REPSHARE_CUDA(cudaMemGetInfo(&free_bytes, &total_bytes));
  return total_bytes - free_bytes;
}
}  // namespace

size_t CudaBackend::device_bytes_in_use() const { return bytes_in_use_now(); }

std::vector<BackendMemoryItem> CudaBackend::overhead() const {
  // The runtime API cannot read free memory before the context exists, so the
  // context's share also holds what other processes had on this GPU then.
  std::vector<BackendMemoryItem> items = {
      {"CUDA context, streams and events (and other processes)", context_bytes_ - cublas_bytes_},
      {"cuBLAS handle and workspace", cublas_bytes_}};
  if (queue_workspace_bytes_ > 0)
    items.push_back({"cuBLAS workspaces of the other streams", queue_workspace_bytes_});
  items.push_back({"split channel means' scratch, per stream", split_mean_scratch_bytes_});
#ifdef REPSHARE_WITH_CUDNN
  items.push_back({"cuDNN handle", cudnn_bytes_});
#endif
  return items;
}

#ifdef REPSHARE_WITH_CUDNN
const CudnnConv& CudaBackend::cudnn_conv(const Conv2dParams& p) const {
  std::shared_ptr<CudnnConv>& c = cudnn_convs_[cudnn_key(p)];
  if (!c) {
    const bool tensor_ops = storage_ == DType::F16 || tf32_;
    c = std::make_shared<CudnnConv>(cudnn_, p, storage_, tensor_ops);
  }
  return *c;
}
#endif

CudaBackend::CudaBackend(int device, DType float_storage, bool tf32_products)
    : device_(device), storage_(float_storage), tf32_(tf32_products) {
  check(float_storage == DType::F32 || float_storage == DType::F16, ErrorKind::Argument,
        "cuda backend: float storage must be float32 or float16, got ",
        dtype_name(float_storage));
  check(!tf32_ || float_storage == DType::F32, ErrorKind::Argument,
        "cuda backend: tf32 products take fp32 storage, not fp16");
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess)
    fail(ErrorKind::Backend, "cuda backend: no CUDA device: ", cudaGetErrorString(e));
  if (count == 0) fail(ErrorKind::Backend, "cuda backend: no CUDA device: none found");
  check(device >= 0 && device < count, ErrorKind::Argument, "cuda backend: device ", device,
        " does not exist (", count, " CUDA device(s))");

  REPSHARE_CUDA(cudaSetDevice(device));
  cudaDeviceProp prop;
  REPSHARE_CUDA(cudaGetDeviceProperties(&prop, device));
  device_name_ = prop.name;
  tensor_cores_ = prop.major >= 7;
  // cuBLAS would quietly compute in fp32 where there are no TF32 tensor cores.
  check(!tf32_ || prop.major >= 8, ErrorKind::Unsupported, "cuda backend: tf32 needs compute ",
        "capability 8.0 or later (Ampere, Orin); ", prop.name, " is ", prop.major, ".",
        prop.minor);
  multiprocessors_ = prop.multiProcessorCount;
  // cudaFree(0) creates the context, so the readings below separate it from cuBLAS.
  REPSHARE_CUDA(cudaFree(nullptr));
  int queues = 10;
  if (const char* env = std::getenv("REPSHARE_CUDA_STREAMS")) {
    char* end = nullptr;
    const long n = std::strtol(env, &end, 10);
    check(end != env && *end == '\0' && n >= 1 && n <= 64, ErrorKind::Argument,
          "cuda backend: REPSHARE_CUDA_STREAMS must be a number of streams from 1 to 64, got '",
          env, "'");
    queues = static_cast<int>(n);
  }
  if (const char* env = std::getenv("REPSHARE_CUDA_CONCURRENCY_MEMORY")) {
    char* end = nullptr;
    const double f = std::strtod(env, &end);
    check(end != env && *end == '\0' && f >= 0 && f <= 100, ErrorKind::Argument,
          "cuda backend: REPSHARE_CUDA_CONCURRENCY_MEMORY must be the fraction by which the "
          "activation arena may grow (0 to 100), got '", env, "'");
    concurrency_memory_ = f;
  }
  // cuBLAS would otherwise allocate its workspace lazily inside the first GEMM of a
  // run; giving it one up front keeps cudaMalloc out of the run loop and its bytes in
  // cublas_bytes(). 4 MiB a stream by default, NVIDIA's recommendation for pre-Hopper
  // GPUs (Jetson boards); for Hopper it recommends 32 MiB, with which cuBLAS may
  // choose other kernels (split-K), so this is a setting for gpu-check to time.
  if (const char* env = std::getenv("REPSHARE_CUDA_CUBLAS_WORKSPACE_MIB")) {
    char* end = nullptr;
    const long mib = std::strtol(env, &end, 10);
    check(end != env && *end == '\0' && mib >= 1 && mib <= 256, ErrorKind::Argument,
          "cuda backend: REPSHARE_CUDA_CUBLAS_WORKSPACE_MIB must be a number of MiB from 1 to "
          "256, got '", env, "'");
    cublas_workspace_bytes_ = static_cast<size_t>(mib) << 20;
  }
  const char* pointwise = std::getenv("REPSHARE_CUDA_POINTWISE");
  const std::string kind = pointwise ? pointwise : "";
  check(kind.empty() || kind == "default" || kind == "fused" || kind == "small",
        ErrorKind::Argument,
        "cuda backend: REPSHARE_CUDA_POINTWISE must be default, fused or small, got '", kind,
        "'");
  pointwise_ = kind == "fused"   ? Pointwise::Fused
               : kind == "small" ? Pointwise::FusedSmall
                                 : Pointwise::Cublas;
  streams_.assign(queues, nullptr);
  queue_events_.assign(queues, nullptr);
  for (int q = 0; q < queues; ++q) {
    REPSHARE_CUDA(cudaStreamCreateWithFlags(&streams_[q], cudaStreamNonBlocking));
    REPSHARE_CUDA(cudaEventCreateWithFlags(&queue_events_[q], cudaEventDisableTiming));
  }
  stream_ = library_stream_ = streams_[0];
  REPSHARE_CUDA(cudaEventCreateWithFlags(&library_done_, cudaEventDisableTiming));

  const size_t before_cublas = bytes_in_use_now();
  REPSHARE_CUBLAS(cublasCreate(&cublas_));
  REPSHARE_CUBLAS(cublasSetStream(cublas_, stream_));
  // Plain fp32 (the default mode never uses TF32 for sgemm; said explicitly because
  // the CPU-reference tolerances of the tests assume full fp32 products), unless TF32
  // is asked for: then GemmEx with fp32 compute rounds fp32 operands to TF32.
#if CUBLAS_VER_MAJOR >= 11
  REPSHARE_CUBLAS(
      cublasSetMathMode(cublas_, tf32_ ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
#else
  check(!tf32_, ErrorKind::Unsupported, "cuda backend: tf32 needs cuBLAS 11 or later");
  REPSHARE_CUBLAS(cublasSetMathMode(cublas_, CUBLAS_DEFAULT_MATH));
#endif
  const char* overlap = std::getenv("REPSHARE_CUDA_LIBRARY_OVERLAP");
  const bool overlap_off = overlap && std::strcmp(overlap, "0") == 0;
#if CUBLAS_VER_MAJOR >= 11
  library_overlap_ = !overlap_off;
  cublas_workspaces_.assign(1, nullptr);
  REPSHARE_CUDA(cudaMalloc(&cublas_workspaces_[0], cublas_workspace_bytes_));
  REPSHARE_CUBLAS(
      cublasSetWorkspace(cublas_, cublas_workspaces_[0], cublas_workspace_bytes_));
#else  // CUDA 10.2's cuBLAS (JetPack 4) has no cublasSetWorkspace and manages its own
  check(!overlap || overlap_off, ErrorKind::Unsupported, "cuda backend: ",
        "REPSHARE_CUDA_LIBRARY_OVERLAP needs cuBLAS 11 or later (a workspace per stream)");
#endif
  context_bytes_ = bytes_in_use_now();
  cublas_bytes_ = context_bytes_ > before_cublas ? context_bytes_ - before_cublas : 0;
#ifdef REPSHARE_WITH_CUDNN
  // Jetson-class devices have been reported to lose hundreds of MB to the cuDNN
  // handle alone: measured apart, and reported by overhead().
  REPSHARE_CUDNN(cudnnCreate(&cudnn_));
  REPSHARE_CUDNN(cudnnSetStream(cudnn_, stream_));
  const size_t with_cudnn = bytes_in_use_now();
  cudnn_bytes_ = with_cudnn > context_bytes_ ? with_cudnn - context_bytes_ : 0;
#endif

  const size_t before_scratch = bytes_in_use_now();
  const size_t scratch = kSplitMeanScratchBytes * streams_.size();
  REPSHARE_CUDA(cudaMalloc(&split_mean_scratch_, scratch));
  REPSHARE_CUDA(cudaMemsetAsync(split_mean_scratch_, 0, scratch, streams_[0]));
  REPSHARE_CUDA(cudaStreamSynchronize(streams_[0]));  // zero before any stream reads it
  const size_t with_scratch = bytes_in_use_now();
  split_mean_scratch_bytes_ = with_scratch > before_scratch ? with_scratch - before_scratch : 0;

  const char* sync = std::getenv("REPSHARE_CUDA_SYNC");
  sync_each_launch_ = sync && std::strcmp(sync, "0") != 0;
}

// Destructors must not throw: failures here are reported, not raised.
CudaBackend::~CudaBackend() {
  if (stream_) cudaStreamSynchronize(stream_);
#ifdef REPSHARE_WITH_CUDNN
  cudnn_convs_.clear();
  if (cudnn_) cudnnDestroy(cudnn_);
#endif
  if (cublas_) cublasDestroy(cublas_);
  for (void* w : cublas_workspaces_)
    if (w) cudaFree(w);
  if (split_mean_scratch_) cudaFree(split_mean_scratch_);
  for (CUevent_st* e : marks_) cudaEventDestroy(e);
  if (library_done_) cudaEventDestroy(library_done_);
  for (CUevent_st* e : queue_events_)
    if (e) cudaEventDestroy(e);
  for (CUstream_st* s : streams_)
    if (s) cudaStreamDestroy(s);
}

void* CudaBackend::alloc(size_t bytes) {
  if (bytes == 0) return nullptr;
  void* p = nullptr;
  const cudaError_t e = cudaMalloc(&p, bytes);
  if (e != cudaSuccess)
    fail(ErrorKind::Backend, "cuda backend: cudaMalloc of ", bytes, " bytes failed: ",
         cudaGetErrorString(e));
  return p;
}

// Called from arena destructors, so it reports instead of throwing.
void CudaBackend::free(void* p) {
  if (!p) return;
  const cudaError_t e = cudaFree(p);
  if (e != cudaSuccess)
    std::fprintf(stderr, "repshare: cuda backend: cudaFree failed: %s\n", cudaGetErrorString(e));
}

void* CudaBackend::alloc_host(size_t bytes) {
  void* p = nullptr;
  const cudaError_t e = cudaMallocHost(&p, bytes == 0 ? 1 : bytes);
  if (e != cudaSuccess)
    fail(ErrorKind::Backend, "cuda backend: cudaMallocHost of ", bytes, " bytes failed: ",
         cudaGetErrorString(e));
  std::memset(p, 0, bytes);
  return p;
}

void CudaBackend::free_host(void* p) {
  if (!p) return;
  const cudaError_t e = cudaFreeHost(p);
  if (e != cudaSuccess)
    std::fprintf(stderr, "repshare: cuda backend: cudaFreeHost failed: %s\n",
                 cudaGetErrorString(e));
}

// From pageable memory cudaMemcpyAsync returns once src is staged, so the caller
// may reuse src at once; from pinned memory (alloc_host) the GPU reads src when
// the stream reaches the copy. Kernels queued later on the stream see the data.
void CudaBackend::upload(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  REPSHARE_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_));
}

// Into pinned memory the copy runs when the stream reaches it; into pageable memory
// cudaMemcpyAsync returns once it is done. Either way the next synchronize() sees it.
void CudaBackend::download_queued(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  REPSHARE_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream_));
}

void CudaBackend::download(void* dst, const void* src, size_t bytes) {
  download_queued(dst, src, bytes);
  synchronize();
}

void CudaBackend::copy(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  REPSHARE_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_));
}

void CudaBackend::synchronize() { REPSHARE_CUDA(cudaStreamSynchronize(stream_)); }

namespace {

class CudaGraph : public RecordedWork {
 public:
  CudaGraph(cudaGraphExec_t exec, cudaStream_t stream, Shape shape)
      : exec_(exec), stream_(stream), shape_(shape) {}
  ~CudaGraph() override { cudaGraphExecDestroy(exec_); }
  void replay() override { REPSHARE_CUDA(cudaGraphLaunch(exec_, stream_)); }
  Shape shape() const override { return shape_; }

 private:
  cudaGraphExec_t exec_;
  cudaStream_t stream_;
  Shape shape_;
};

// A captured graph's nodes and its longest chain of nodes each depending on the one
// before (zeros if CUDA will not say).
RecordedWork::Shape graph_shape(cudaGraph_t graph) {
  RecordedWork::Shape shape;
  size_t count = 0;
  if (cudaGraphGetNodes(graph, nullptr, &count) != cudaSuccess) return RecordedWork::Shape();
  std::vector<cudaGraphNode_t> nodes(count);
  if (count > 0 && cudaGraphGetNodes(graph, nodes.data(), &count) != cudaSuccess)
    return RecordedWork::Shape();
  std::map<cudaGraphNode_t, size_t> index;
  for (size_t i = 0; i < count; ++i) index[nodes[i]] = i;
  std::vector<std::vector<size_t>> deps(count);
  for (size_t i = 0; i < count; ++i) {
    size_t n = 0;
#if CUDART_VERSION >= 13000  // CUDA 13 added the edges' data
    auto get = [&](cudaGraphNode_t* out) {
      return cudaGraphNodeGetDependencies(nodes[i], out, nullptr, &n);
    };
#else
    auto get = [&](cudaGraphNode_t* out) {
      return cudaGraphNodeGetDependencies(nodes[i], out, &n);
    };
#endif
    if (get(nullptr) != cudaSuccess) return RecordedWork::Shape();
    std::vector<cudaGraphNode_t> before(n);
    if (n > 0 && get(before.data()) != cudaSuccess) return RecordedWork::Shape();
    for (cudaGraphNode_t b : before) deps[i].push_back(index.at(b));
  }
  // Longest chain ending at each node, its dependencies first (a graph has no cycles).
  std::vector<size_t> chain(count, 0);
  std::vector<std::pair<size_t, size_t>> stack;  // node, next dependency to visit
  for (size_t root = 0; root < count; ++root) {
    if (chain[root] > 0) continue;
    stack.assign(1, {root, 0});
    while (!stack.empty()) {
      auto& top = stack.back();
      if (top.second < deps[top.first].size()) {
        const size_t d = deps[top.first][top.second++];
        if (chain[d] == 0) stack.push_back({d, 0});
        continue;
      }
      size_t longest = 0;
      for (size_t d : deps[top.first]) longest = std::max(longest, chain[d]);
      chain[top.first] = longest + 1;
      stack.pop_back();
    }
  }
  shape.calls = count;
  for (size_t c : chain) shape.longest_chain = std::max(shape.longest_chain, c);
  return shape;
}

}  // namespace

namespace {

// Two timing events per step on the stream, read after the run: each step's time
// as the GPU ran it, from its first kernel starting to its last ending, with no
// synchronisation in between. Stepping kernel by kernel, a GPU that outruns the
// host's launches waits for them inside a step, so a step of tiny kernels shows
// what launching them costs.
class CudaEventStepTimer : public StepTimer {
 public:
  CudaEventStepTimer(cudaStream_t stream, size_t steps) : stream_(stream), events_(2 * steps) {
    try {
      for (cudaEvent_t& e : events_) REPSHARE_CUDA(cudaEventCreate(&e));
    } catch (...) {  // no destructor runs for a constructor that throws
      destroy_events();
      throw;
    }
  }
  ~CudaEventStepTimer() override { destroy_events(); }
  void start(size_t step) override {
    REPSHARE_CUDA(cudaEventRecord(events_.at(2 * step), stream_));
  }
  void stop(size_t step) override {
    REPSHARE_CUDA(cudaEventRecord(events_.at(2 * step + 1), stream_));
  }
  std::vector<double> seconds() override {
    std::vector<double> s(events_.size() / 2, 0.0);
    if (s.empty()) return s;
    REPSHARE_CUDA(cudaEventSynchronize(events_.back()));
    for (size_t i = 0; i < s.size(); ++i) {
      float ms = 0.f;
      REPSHARE_CUDA(cudaEventElapsedTime(&ms, events_[2 * i], events_[2 * i + 1]));
      s[i] = ms * 1e-3;
    }
    return s;
  }

 private:
  void destroy_events() {
    for (cudaEvent_t e : events_)
      if (e) cudaEventDestroy(e);
  }
  cudaStream_t stream_;
  std::vector<cudaEvent_t> events_;
};

}  // namespace

std::unique_ptr<StepTimer> CudaBackend::step_timer(size_t steps) {
  return std::unique_ptr<StepTimer>(new CudaEventStepTimer(stream_, steps));
}

void CudaBackend::prepare_marks(int count) {
  while (static_cast<int>(marks_.size()) < count) {
    cudaEvent_t e = nullptr;
    REPSHARE_CUDA(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    marks_.push_back(e);
  }
}

void CudaBackend::wait_for_queue(int queue) {
  REPSHARE_CUDA(cudaEventRecord(queue_events_[queue], streams_[queue]));
  REPSHARE_CUDA(cudaStreamWaitEvent(stream_, queue_events_[queue], 0));
}

void CudaBackend::use_queue(int queue, const std::vector<int>& after_marks) {
  if (!capturing_) return;
  check(queue >= 0 && queue < queues(), ErrorKind::Argument, "cuda backend: no queue ", queue,
        " (", queues(), " streams)");
  queue_ = queue;
  stream_ = streams_[queue];
  for (int m : after_marks) {
    check(m >= 0 && m < static_cast<int>(marks_.size()), ErrorKind::Argument,
          "cuda backend: mark ", m, " was not prepared");
    REPSHARE_CUDA(cudaStreamWaitEvent(stream_, marks_[m], 0));  // joins the capture too
    queue_joined_[queue] = true;
  }
  // A stream takes part in a capture once it waits for an event recorded in it.
  if (!queue_joined_[queue]) wait_for_queue(0);
  queue_joined_[queue] = true;
}

void CudaBackend::set_mark(int mark) {
  if (!capturing_) return;
  check(mark >= 0 && mark < static_cast<int>(marks_.size()), ErrorKind::Argument,
        "cuda backend: mark ", mark, " was not prepared");
  REPSHARE_CUDA(cudaEventRecord(marks_[mark], stream_));
}

void CudaBackend::prepare_queues(int count) {
  if (!library_overlap_) return;
  const size_t before = bytes_in_use_now();
  while (static_cast<int>(cublas_workspaces_.size()) < std::min(count, queues())) {
    void* w = nullptr;
    REPSHARE_CUDA(cudaMalloc(&w, cublas_workspace_bytes_));
    cublas_workspaces_.push_back(w);
  }
  const size_t after = bytes_in_use_now();
  queue_workspace_bytes_ += after > before ? after - before : 0;
}

bool CudaBackend::waits_for_library(Library library) const {
  return library == Library::Cudnn || !library_overlap_;
}

void CudaBackend::before_library_call(Library library) {
  if (capturing_ && waits_for_library(library) && library_queue_ >= 0 && library_queue_ != queue_)
    REPSHARE_CUDA(cudaStreamWaitEvent(stream_, library_done_, 0));
  if (library_stream_ == stream_) return;
  REPSHARE_CUBLAS(cublasSetStream(cublas_, stream_));
#if CUBLAS_VER_MAJOR >= 11
  const int own = library_overlap_ ? queue_ : 0;
  check(own < static_cast<int>(cublas_workspaces_.size()), ErrorKind::Backend,
        "cuda backend: a library call on stream ", own, " of ", cublas_workspaces_.size(),
        " prepared (prepare_queues)");
  void* workspace = cublas_workspaces_[own];
  REPSHARE_CUBLAS(cublasSetWorkspace(cublas_, workspace, cublas_workspace_bytes_));
#endif
#ifdef REPSHARE_WITH_CUDNN
  REPSHARE_CUDNN(cudnnSetStream(cudnn_, stream_));
#endif
  library_stream_ = stream_;
}

void CudaBackend::after_library_call(Library library) {
  if (!capturing_ || !waits_for_library(library)) return;
  REPSHARE_CUDA(cudaEventRecord(library_done_, stream_));
  library_queue_ = queue_;
}

std::unique_ptr<RecordedWork> CudaBackend::record(const std::function<void()>& work) {
  if (!recording_ || sync_each_launch_) return nullptr;
  // Thread-local mode: only this thread's unsafe calls (a cudaMalloc, a
  // synchronisation) invalidate the capture, and they are reported below.
  REPSHARE_CUDA(cudaStreamBeginCapture(streams_[0], cudaStreamCaptureModeThreadLocal));
  capturing_ = true;
  queue_joined_.assign(streams_.size(), false);
  queue_joined_[0] = true;
  std::string failure;
  try {
    work();
  } catch (const std::exception& e) {  // any: the capture must end before it propagates
    failure = e.what();
  }
  try {
    // The capture ends on queue 0, which waits for every queue that joined it.
    use_queue(0, {});
    for (int q = 1; q < queues(); ++q)
      if (queue_joined_[q]) wait_for_queue(q);
  } catch (const std::exception& e) {
    if (failure.empty()) failure = e.what();
  }
  capturing_ = false;
  queue_ = 0;
  stream_ = streams_[0];
  library_queue_ = -1;
  cudaGraph_t graph = nullptr;
  const cudaError_t ended = cudaStreamEndCapture(streams_[0], &graph);
  if (failure.empty() && ended != cudaSuccess)
    failure = std::string("capture failed: ") + cudaGetErrorString(ended);
  cudaGraphExec_t exec = nullptr;
  RecordedWork::Shape shape;
  if (failure.empty()) {
    shape = graph_shape(graph);
#if CUDART_VERSION >= 12000
    const cudaError_t made = cudaGraphInstantiate(&exec, graph, 0);
#else
    const cudaError_t made = cudaGraphInstantiate(&exec, graph, nullptr, nullptr, 0);
#endif
    if (made != cudaSuccess) failure = std::string("instantiation failed: ") + cudaGetErrorString(made);
  }
  if (graph) cudaGraphDestroy(graph);
  // A failed capture can leave an error pending; clear it so later calls start clean.
  cudaGetLastError();
  if (!failure.empty()) fail(ErrorKind::Backend, "cuda backend: cannot record a CUDA graph: ", failure);
  return std::unique_ptr<RecordedWork>(new CudaGraph(exec, streams_[0], shape));
}

void CudaBackend::after_launch(const char* kernel) const {
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess)
    fail(ErrorKind::Backend, "cuda backend: launch of ", kernel, " failed: ",
         cudaGetErrorString(e));
  if (sync_each_launch_) {
    const cudaError_t s = cudaStreamSynchronize(stream_);
    if (s != cudaSuccess)
      fail(ErrorKind::Backend, "cuda backend: kernel ", kernel, " failed: ",
           cudaGetErrorString(s));
  }
}

}  // namespace repshare
