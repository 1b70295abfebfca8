#include "loaders/input_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "engine/error.h"

namespace repshare {

std::string read_input_file(const std::string& path, const char* what) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  check(fd >= 0, ErrorKind::Io, "cannot open ", what, " '", path, "': ", std::strerror(errno));
  std::string bytes;
  int err = 0;
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    err = errno;
  } else if (S_ISDIR(st.st_mode)) {
    ::close(fd);
    fail(ErrorKind::Io, what, " '", path, "' is a folder, not a file");
  } else {
    if (S_ISREG(st.st_mode)) bytes.reserve(static_cast<size_t>(st.st_size));
    char buf[1 << 16];
    for (;;) {
      const ssize_t n = ::read(fd, buf, sizeof buf);
      if (n > 0) bytes.append(buf, static_cast<size_t>(n));
      if (n == 0) break;
      if (n < 0 && errno != EINTR) {
        err = errno;
        break;
      }
    }
  }
  ::close(fd);
  check(err == 0, ErrorKind::Io, "cannot read ", what, " '", path, "': ", std::strerror(err));
  return bytes;
}

}  // namespace repshare
