// Helpers shared by the subcommands: file output that leaves nothing partial
// behind, raw float files, and a progress bar.
#pragma once

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

namespace repshare {

// Writes `bytes` to path.tmp then renames it over path, so a failure never leaves
// a partial file. Throws Io naming the path.
void write_file_atomic(const std::string& path, const std::string& bytes);
// Reads a raw float32 file, checking it holds exactly `count` values.
std::vector<float> read_floats(const std::string& path, size_t count);

// A progress bar on stderr with rate and ETA; silent when stderr is not a terminal
// unless forced.
class Progress {
 public:
  Progress(std::string label, size_t total);
  void step(size_t done);
  void finish();

 private:
  std::string label_;
  size_t total_;
  bool tty_;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_;
};

}  // namespace repshare
