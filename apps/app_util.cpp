#include "apps/app_util.h"

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "engine/backend_registry.h"
#include "engine/error.h"
#include "loaders/input_file.h"
#include "loaders/labels.h"

namespace repshare {

const char* kBackendUsage =
    "  --backend cpu|cuda     where to run (default cpu)\n"
    "  --threads N            CPU threads (default: all cores)\n"
    "  --precision fp32|fp16|tf32  how float tensors are stored between kernels (default\n"
    "                         fp32; fp16 keeps fp32 arithmetic in every kernel; on the\n"
    "                         cpu a slower simulation of the GPU's fp16 mode, for\n"
    "                         accuracy and memory checks before deploying); tf32 (cuda,\n"
    "                         compute capability 8.0+): fp32 storage, cuBLAS's GEMMs\n"
    "                         (1x1 and im2col convs, Gemm) on TF32 tensor cores, as\n"
    "                         PyTorch runs fp32 convolutions by default\n"
    "  --cuda-graphs on|off   CUDA: record each network once as a CUDA graph and replay\n"
    "                         it (default on)\n";

// More threads than any edge board has cores (libgomp crashed starting 99,999).
constexpr int kMaxThreads = 256;

std::unique_ptr<Backend> backend_from_args(Args& args) {
  const std::string name = args.get("backend", "cpu");
  const bool threads_given = !args.get("threads").empty();
  const int threads = args.get_int("threads", 0);  // 0: all cores
  check(!threads_given || (threads >= 1 && threads <= kMaxThreads), ErrorKind::Argument,
        "--threads must be 1 to ", kMaxThreads, ", got ", threads);
  const std::string precision = args.get("precision", "fp32");
  check(precision == "fp32" || precision == "fp16" || precision == "tf32", ErrorKind::Argument,
        "--precision must be fp32, fp16 or tf32, got '", precision, "'");
  const std::string graphs = args.get("cuda-graphs", "on");
  check(graphs == "on" || graphs == "off", ErrorKind::Argument,
        "--cuda-graphs must be on or off, got '", graphs, "'");
  std::unique_ptr<Backend> backend = make_backend(
      name, threads, precision == "fp16" ? DType::F16 : DType::F32, precision == "tf32");
  backend->set_recording(graphs == "on");
  return backend;
}

const char* precision_name(const Backend& backend) {
  if (backend.tf32_products()) return "tf32";
  return backend.float_storage() == DType::F16 ? "fp16" : "fp32";
}

double score_threshold_from_args(Args& args) {
  const double t = args.get_double("score-threshold", 0.3);
  check(t >= 0 && t <= 1, ErrorKind::Argument,  // false for NaN too
        "--score-threshold must be a score from 0 to 1, got ", t);
  return t;
}

void check_stdout_written() {
  check(std::fflush(stdout) == 0 && !std::ferror(stdout), ErrorKind::Io,
        "cannot write the results to standard output");
}

std::vector<std::string> load_class_names(const std::string& path) {
  if (path.empty()) return {};
  const std::string ext = ".json";
  if (path.size() > ext.size() && path.compare(path.size() - ext.size(), ext.size(), ext) == 0)
    return read_class_index_json(path).names;
  return read_label_lines(path);
}

int run_program(const std::vector<std::string>& argv, std::string* out) {
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  int pipe_fds[2] = {-1, -1};
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (out) {
    check(::pipe(pipe_fds) == 0, ErrorKind::Io, "cannot start '", argv[0],
          "': ", std::strerror(errno));
    posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], STDOUT_FILENO);
    posix_spawn_file_actions_addclose(&actions, pipe_fds[0]);
    posix_spawn_file_actions_addclose(&actions, pipe_fds[1]);
  }
  pid_t pid = 0;
  const int spawned = posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (out) {
    ::close(pipe_fds[1]);
    if (spawned == 0) {
      char buf[4096];
      ssize_t n;
      while ((n = ::read(pipe_fds[0], buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR))
        if (n > 0) out->append(buf, static_cast<size_t>(n));
    }
    ::close(pipe_fds[0]);
  }
  if (spawned != 0) return -1;
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::vector<float> read_floats(const std::string& path, size_t count) {
  const std::string bytes = read_input_file(path, "tensor file");
  check(bytes.size() == count * sizeof(float), ErrorKind::Shape, "tensor file '", path, "' has ",
        bytes.size(), " bytes; the model input needs ", count, " float32 values (",
        count * sizeof(float), " bytes)");
  std::vector<float> v(count);
  std::memcpy(v.data(), bytes.data(), bytes.size());
  return v;
}

Progress::Progress(std::string label, size_t total)
    : label_(std::move(label)), total_(total), tty_(isatty(fileno(stderr)) != 0) {
  start_ = last_ = std::chrono::steady_clock::now();
}

void Progress::step(size_t done) { report(done, false); }

void Progress::finish() {
  // The total may have been an estimate (a video's announced frame count) that
  // the stream fell short of: the last line shows what was done.
  total_ = done_;
  report(done_, true);
  if (tty_) std::fprintf(stderr, "\n");
}

void Progress::report(size_t done, bool final) {
  done_ = done;
  if (done > total_) total_ = done;  // an estimated total the stream went past
  if (done == printed_) return;
  auto now = std::chrono::steady_clock::now();
  const double since = std::chrono::duration<double>(now - last_).count();
  // Terminals get a live bar; logs get a line every 10 s.
  if (!final && since < (tty_ ? 0.2 : 10.0)) return;
  printed_ = done;
  last_ = now;
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  const double rate = elapsed > 0 ? done / elapsed : 0;
  const double eta = rate > 0 ? (total_ - done) / rate : 0;
  const int width = 30;
  const int filled = total_ ? static_cast<int>(width * done / total_) : width;
  std::fprintf(stderr, "%s%s [%.*s%*s] %zu/%zu %.1f/s ETA %.0fs%s", tty_ ? "\r" : "",
               label_.c_str(), filled, "==============================", width - filled, "",
               done, total_, rate, eta, tty_ ? "" : "\n");
  std::fflush(stderr);
}

}  // namespace repshare
