// Helpers shared by the subcommands: the backend options, class names, raw float
// files and a progress bar; output files through loaders/output_file.h.
#pragma once

#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "apps/args.h"
#include "engine/backend.h"
#include "loaders/output_file.h"

namespace repshare {

// --backend cpu|cuda, --threads N, --precision fp32|fp16: the backend every
// subcommand runs on. Errors name the option (no GPU, unknown backend, ...).
std::unique_ptr<Backend> backend_from_args(Args& args);
// Usage text for those options.
extern const char* kBackendUsage;
// "fp32" or "fp16": the --precision a backend runs, for summaries and reports.
const char* precision_name(const Backend& backend);

// --score-threshold: a detection score from 0 to 1 (default 0.3).
double score_threshold_from_args(Args& args);

// Throws Io unless everything printed to stdout reached it (a full disk, a closed
// pipe): results that were lost are a failure. main() checks after every command;
// a command that also writes files checks before committing them.
void check_stdout_written();

// Class names from a labels file: ImageNet class-index JSON or one name per line.
// Empty path: no names (callers print indices).
std::vector<std::string> load_class_names(const std::string& path);

// Runs a program (argv[0], searched on PATH when it has no slash) with argv, without
// a shell, so that no argument (a user's path) is read as shell syntax; its standard
// output goes to *out where out is not null (else to this process's), its standard
// error to this process's. Returns its exit status, or -1 when it could not start or
// did not exit normally.
int run_program(const std::vector<std::string>& argv, std::string* out);
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
