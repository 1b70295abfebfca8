// Writing a command's output files so that a failure leaves none of them half
// written: OutputFiles stages each file as PATH.tmp and renames them all over their
// paths at commit(); destroyed without commit (an error on the way), it removes
// what it staged. A symbolic link is followed: the file it names is replaced, the
// link stays. Devices and pipes (/dev/null, a FIFO) and this process's streams
// (/dev/stdout, /dev/fd/N: appended to) are written in place at commit(): renaming
// a file over one would replace the device node or the link.
#pragma once

#include <string>
#include <vector>

namespace repshare {

// Where an output path's bytes go (output_file.cpp's target_of).
struct OutputTarget {
  enum class Mode { Staged, InPlace, Append };
  std::string path;  // the file to replace (links followed), or the path itself
  Mode mode = Mode::Staged;
};

class OutputFiles {
 public:
  OutputFiles() = default;
  OutputFiles(const OutputFiles&) = delete;
  OutputFiles& operator=(const OutputFiles&) = delete;
  ~OutputFiles();

  // Stages `bytes` for path. Throws Io naming the path (a missing folder, a folder
  // given for a file, a full disk). A path given twice is an Argument error: one
  // output would silently replace the other.
  void add(const std::string& path, const std::string& bytes);
  // Renames every staged file over its path, writes the devices; throws Io naming
  // the path that failed.
  void commit();

 private:
  struct Staged {
    std::string path, bytes;  // bytes only where written in place, at commit()
    OutputTarget target;
  };
  std::vector<Staged> staged_;
};

// One output file: OutputFiles with one add() and commit().
void write_file_atomic(const std::string& path, const std::string& bytes);

// Throws Io naming the path unless OutputFiles could create it now, and Argument
// when it is one of `inputs`, the files the command reads (the same file by
// identity where both exist: another path, a link; else the same path), which it
// would overwrite, or lies below one that is a folder. Commands call it on their output paths
// before any work, so a missing folder is reported at once, not after an hour of video. Empty path:
// nothing to check.
void check_can_write(const std::string& path, const std::vector<std::string>& inputs = {});

// A folder a command writes into (--draw-dir, the study's --out), made if missing
// and removed again, if this made it and it is still empty, unless keep() was
// called: a failed command leaves no empty folder behind. Throws Io naming the
// folder when it cannot be made.
class OutputFolder {
 public:
  explicit OutputFolder(const std::string& path);
  OutputFolder(const OutputFolder&) = delete;
  OutputFolder& operator=(const OutputFolder&) = delete;
  ~OutputFolder();
  void keep() { made_top_.clear(); }

 private:
  std::string path_;
  std::string made_top_;  // the outermost folder this made, or empty
};

}  // namespace repshare
