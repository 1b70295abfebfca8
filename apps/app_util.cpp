#include "apps/app_util.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "engine/backend_registry.h"
#include "engine/error.h"
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

std::unique_ptr<Backend> backend_from_args(Args& args) {
  const std::string name = args.get("backend", "cpu");
  const int threads = args.get_int("threads", 0);
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

std::vector<std::string> load_class_names(const std::string& path) {
  if (path.empty()) return {};
  const std::string ext = ".json";
  if (path.size() > ext.size() && path.compare(path.size() - ext.size(), ext.size(), ext) == 0)
    return read_class_index_json(path).names;
  return read_label_lines(path);
}

void write_file_atomic(const std::string& path, const std::string& bytes) {
  // A device or pipe (/dev/null, /dev/stdout, a FIFO) is written in place: renaming
  // a file over it would replace the device node.
  struct stat st;
  if (::stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
    check(!S_ISDIR(st.st_mode), ErrorKind::Io, "'", path, "' is a folder, not a file");
    std::ofstream f(path, std::ios::binary);
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    check(f.good(), ErrorKind::Io, "cannot write '", path, "'");
    return;
  }
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary);
    check(f.good(), ErrorKind::Io, "cannot write '", path, "'");
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    f.close();
    if (!f.good()) {
      std::remove(tmp.c_str());
      fail(ErrorKind::Io, "cannot write '", path, "' (disk full?)");
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    fail(ErrorKind::Io, "cannot rename '", tmp, "' to '", path, "'");
  }
}

void check_can_write(const std::string& path) {
  if (path.empty()) return;
  struct stat st;
  if (::stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
    check(!S_ISDIR(st.st_mode), ErrorKind::Io, "'", path, "' is a folder, not a file");
    return;  // a device or pipe, written in place
  }
  // The file the writers create first; made and removed again here, or, left over
  // from an earlier run, only checked.
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0644);
  if (fd >= 0) {
    ::close(fd);
    ::unlink(tmp.c_str());
    return;
  }
  const int err = errno;
  check(err == EEXIST && ::access(tmp.c_str(), W_OK) == 0, ErrorKind::Io, "cannot write '", path,
        "': ", std::strerror(err));
}

std::vector<float> read_floats(const std::string& path, size_t count) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  check(f.good(), ErrorKind::Io, "cannot open tensor file '", path, "'");
  const auto size = static_cast<size_t>(f.tellg());
  check(size == count * sizeof(float), ErrorKind::Shape, "tensor file '", path, "' has ", size,
        " bytes; the model input needs ", count, " float32 values (", count * sizeof(float),
        " bytes)");
  std::vector<float> v(count);
  f.seekg(0);
  f.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(size));
  check(f.good(), ErrorKind::Io, "cannot read '", path, "'");
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
