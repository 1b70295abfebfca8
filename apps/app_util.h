// Helpers shared by the subcommands: file output that leaves nothing partial
// behind, raw float files, and a progress bar.
#pragma once

#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "apps/args.h"
#include "engine/backend.h"

namespace repshare {

// --backend cpu|cuda, --threads N, --precision fp32|fp16: the backend every
// subcommand runs on. Errors name the option (no GPU, unknown backend, ...).
std::unique_ptr<Backend> backend_from_args(Args& args);
// Usage text for those options.
extern const char* kBackendUsage;
// "fp32" or "fp16": the --precision a backend runs, for summaries and reports.
const char* precision_name(const Backend& backend);

// Class names from a labels file: ImageNet class-index JSON or one name per line.
// Empty path: no names (callers print indices).
std::vector<std::string> load_class_names(const std::string& path);

// Writes `bytes` to path.tmp then renames it over path, so a failure never leaves
// a partial file. Throws Io naming the path.
void write_file_atomic(const std::string& path, const std::string& bytes);
// Throws Io naming the path unless write_file_atomic (or write_png) could create
// it now: commands call it on their output paths before any work, so a missing
// folder is reported at once, not after an hour of video. Empty: nothing to check.
void check_can_write(const std::string& path);
// Reads a raw float32 file, checking it holds exactly `count` values.
std::vector<float> read_floats(const std::string& path, size_t count);

// A progress bar on stderr with rate and ETA: live on a terminal, a line every
// 10 s in logs, and a last line at finish(). `total` may be an estimate.
class Progress {
 public:
  Progress(std::string label, size_t total);
  void step(size_t done);
  void finish();

 private:
  void report(size_t done, bool final);

  std::string label_;
  size_t total_;
  bool tty_;
  size_t done_ = 0;
  size_t printed_ = static_cast<size_t>(-1);  // `done` of the last line printed
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_;
};

}  // namespace repshare
