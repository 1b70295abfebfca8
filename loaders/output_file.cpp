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

namespace fs = std::filesystem;

// Whether dir is a process's table of open files (/proc/self/fd, /proc/<pid>/fd),
// whose entries are links to what the process has open: its stdout, a pipe.
bool is_fd_table(const fs::path& dir) {
  std::error_code error;
  const std::string d = fs::canonical(dir, error).string();
  return !error && d.rfind("/proc/", 0) == 0 && fs::path(d).filename() == "fd";
}

// Where and how an output path is written, following symbolic links: a regular file
// (or a new one) is staged and renamed over, at the file a link names, so the link
// stays a link; a device or pipe is written in place; a link into a process's open
// files (/dev/stdout, /dev/fd/1) is appended to in place, since renaming over it
// would replace the link and opening it anew with truncation would erase what this
// process printed to it before.
OutputTarget target_of(const std::string& path) {
  std::string at = path;
  for (int links = 0; links < 40; ++links) {
    struct stat st;
    if (::lstat(at.c_str(), &st) != 0) return {at, OutputTarget::Mode::Staged};  // a new file
    if (S_ISLNK(st.st_mode)) {
      if (is_fd_table(fs::path(at).parent_path())) return {path, OutputTarget::Mode::Append};
      std::error_code error;
      const fs::path to = fs::read_symlink(at, error);
      check(!error, ErrorKind::Io, "cannot read the link '", at, "': ", error.message());
      at = to.is_absolute() ? to.string() : (fs::path(at).parent_path() / to).string();
      continue;
    }
    check(!S_ISDIR(st.st_mode), ErrorKind::Io, "'", path, "' is a folder, not a file");
    if (S_ISREG(st.st_mode)) return {at, OutputTarget::Mode::Staged};
    return {path, OutputTarget::Mode::InPlace};
  }
  fail(ErrorKind::Io, "'", path, "' is a loop of links");
}

// Writes bytes to path, checking that every byte reached it (a stream's state
// before it is flushed says nothing: /dev/full takes small writes into the buffer).
void write_bytes(const std::string& path, const std::string& bytes, const std::string& named,
                 std::ios::openmode mode) {
  std::ofstream f(path, std::ios::binary | mode);
  check(f.good(), ErrorKind::Io, "cannot write '", named, "': ", std::strerror(errno));
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  f.close();
  check(!f.fail(), ErrorKind::Io, "cannot write '", named, "' (disk full?)");
}

}  // namespace

OutputFiles::~OutputFiles() {
  for (const Staged& s : staged_)
    if (s.target.mode == OutputTarget::Mode::Staged) std::remove((s.target.path + ".tmp").c_str());
}

void OutputFiles::add(const std::string& path, const std::string& bytes) {
  Staged s;
  s.path = path;
  s.target = target_of(path);
  for (const Staged& t : staged_)
    check(t.target.path != s.target.path, ErrorKind::Argument, "two outputs are both '", path, "'");
  if (s.target.mode != OutputTarget::Mode::Staged) {
    s.bytes = bytes;
    staged_.push_back(std::move(s));
    return;
  }
  staged_.push_back(s);  // before writing: a failure removes the partial .tmp
  write_bytes(s.target.path + ".tmp", bytes, path, std::ios::trunc);
}

void OutputFiles::commit() {
  for (Staged& s : staged_) {
    const std::string& to = s.target.path;
    if (s.target.mode != OutputTarget::Mode::Staged) {
      write_bytes(to, s.bytes, s.path,
                  s.target.mode == OutputTarget::Mode::Append ? std::ios::app : std::ios::trunc);
      continue;
    }
    const std::string tmp = to + ".tmp";
    check(std::rename(tmp.c_str(), to.c_str()) == 0, ErrorKind::Io, "cannot rename '", tmp,
          "' to '", to, "': ", std::strerror(errno));
  }
  staged_.clear();
}

void write_file_atomic(const std::string& path, const std::string& bytes) {
  OutputFiles out;
  out.add(path, bytes);
  out.commit();
}

void check_can_write(const std::string& path, const std::vector<std::string>& inputs) {
  if (path.empty()) return;
  for (const std::string& input : inputs) {
    std::error_code error;
    if (fs::is_directory(input, error)) {
      // Everything below an input folder is read, or may be.
      const std::string dir = fs::weakly_canonical(input, error).string() + "/";
      check(fs::weakly_canonical(path, error).string().rfind(dir, 0) != 0, ErrorKind::Argument,
            "output '", path, "' is inside the input folder '", input, "'");
      continue;
    }
    const bool same = fs::exists(path, error)
                          ? fs::equivalent(path, input, error)
                          : fs::path(path).lexically_normal() == fs::path(input).lexically_normal();
    check(!same, ErrorKind::Argument, "output '", path, "' is the input '", input,
          "': it would be overwritten");
  }
  const OutputTarget target = target_of(path);
  if (target.mode != OutputTarget::Mode::Staged) return;  // written in place
  // The file the writers create first; made and removed again here, or, left over
  // from an earlier run, only checked.
  const std::string tmp = target.path + ".tmp";
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
  for (fs::path p = fs::path(path_).lexically_normal(); !p.empty(); p = p.parent_path()) {
    if (::rmdir(p.c_str()) != 0 || p == fs::path(made_top_)) break;
  }
}

}  // namespace repshare
