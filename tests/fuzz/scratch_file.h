// A file in /dev/shm named for this process, which a fuzz target writes each input
// to for the readers that take a path; removed when the process exits normally
// (libFuzzer ends a run with exit(), which destroys function-local statics). A
// crashing input is saved by libFuzzer itself, so a file left by a crash is not
// needed.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>

namespace repshare {

class ScratchFile {
 public:
  // /dev/shm/repshare_fuzz_<pid><suffix>
  explicit ScratchFile(const std::string& suffix)
      : path_("/dev/shm/repshare_fuzz_" + std::to_string(getpid()) + suffix) {}
  ~ScratchFile() { std::remove(path_.c_str()); }
  ScratchFile(const ScratchFile&) = delete;
  ScratchFile& operator=(const ScratchFile&) = delete;

  const std::string& path() const { return path_; }
  // Replaces the file's contents with data; false when it cannot.
  bool write(const uint8_t* data, size_t size) const {
    std::FILE* f = std::fopen(path_.c_str(), "wb");
    if (!f) return false;
    const bool whole = std::fwrite(data, 1, size, f) == size;
    return std::fclose(f) == 0 && whole;
  }

 private:
  std::string path_;
};

}  // namespace repshare
