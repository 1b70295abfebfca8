#include "loaders/output_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "engine/error.h"

namespace repshare {
namespace {

// Whether path exists and is not a regular file (a device or pipe, or a folder,
// which is an error).
bool is_device(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0 || S_ISREG(st.st_mode)) return false;
  check(!S_ISDIR(st.st_mode), ErrorKind::Io, "'", path, "' is a folder, not a file");
  return true;
}

// Writes bytes to path, checking that every byte reached it (a stream's state
// before it is flushed says nothing: /dev/full takes small writes into the buffer).
void write_bytes(const std::string& path, const std::string& bytes, const std::string& named) {
  std::ofstream f(path, std::ios::binary);
  check(f.good(), ErrorKind::Io, "cannot write '", named, "': ", std::strerror(errno));
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  f.close();
  check(!f.fail(), ErrorKind::Io, "cannot write '", named, "' (disk full?)");
}

}  // namespace

OutputFiles::~OutputFiles() {
  for (const Staged& s : staged_)
    if (!s.device) std::remove((s.path + ".tmp").c_str());
}

void OutputFiles::add(const std::string& path, const std::string& bytes) {
  for (const Staged& s : staged_)
    check(s.path != path, ErrorKind::Argument, "two outputs are both '", path, "'");
  Staged s;
  s.path = path;
  s.device = is_device(path);
  if (s.device) {
    s.bytes = bytes;
    staged_.push_back(std::move(s));
    return;
  }
  staged_.push_back(s);  // before writing: a failure removes the partial .tmp
  write_bytes(path + ".tmp", bytes, path);
}

void OutputFiles::commit() {
  for (Staged& s : staged_) {
    if (s.device) {
      write_bytes(s.path, s.bytes, s.path);
      continue;
    }
    const std::string tmp = s.path + ".tmp";
    check(std::rename(tmp.c_str(), s.path.c_str()) == 0, ErrorKind::Io, "cannot rename '", tmp,
          "' to '", s.path, "': ", std::strerror(errno));
  }
  staged_.clear();
}

void write_file_atomic(const std::string& path, const std::string& bytes) {
  OutputFiles out;
  out.add(path, bytes);
  out.commit();
}

void check_can_write(const std::string& path, const std::vector<std::string>& inputs) {
  namespace fs = std::filesystem;
  if (path.empty()) return;
  for (const std::string& input : inputs) {
    std::error_code error;
    const bool same = fs::exists(path, error)
                          ? fs::equivalent(path, input, error)
                          : fs::path(path).lexically_normal() == fs::path(input).lexically_normal();
    check(!same, ErrorKind::Argument, "output '", path, "' is the input '", input,
          "': it would be overwritten");
  }
  if (is_device(path)) return;  // a device or pipe is written in place
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

OutputFolder::OutputFolder(const std::string& path) : path_(path) {
  namespace fs = std::filesystem;
  std::error_code error;
  if (fs::is_directory(path, error)) return;
  // The outermost folder that does not exist yet: made here, with those inside it.
  fs::path top = fs::path(path).lexically_normal();
  while (top.has_parent_path() && top.parent_path() != top && !fs::exists(top.parent_path(), error))
    top = top.parent_path();
  fs::create_directories(path, error);
  check(fs::is_directory(path), ErrorKind::Io, "cannot create folder '", path, "'",
        error ? ": " + error.message() : std::string());
  made_top_ = top.string();
}

OutputFolder::~OutputFolder() {
  if (made_top_.empty()) return;
  // From the folder out to the outermost one made; rmdir removes only an empty
  // folder, so nothing written there is lost.
  namespace fs = std::filesystem;
  for (fs::path p = fs::path(path_).lexically_normal(); !p.empty(); p = p.parent_path()) {
    if (::rmdir(p.c_str()) != 0 || p == fs::path(made_top_)) break;
  }
}

}  // namespace repshare
