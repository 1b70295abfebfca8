#include "apps/app_util.h"

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include "engine/error.h"

namespace repshare {

void write_file_atomic(const std::string& path, const std::string& bytes) {
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

void Progress::step(size_t done) {
  auto now = std::chrono::steady_clock::now();
  const double since = std::chrono::duration<double>(now - last_).count();
  // Terminals get a live bar; logs get a line every 10 s.
  if (done < total_ && since < (tty_ ? 0.2 : 10.0)) return;
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

void Progress::finish() {
  step(total_);
  if (tty_) std::fprintf(stderr, "\n");
}

}  // namespace repshare
