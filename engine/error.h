// Errors the engine reports. Every user-facing failure is one of these, with a
// message that names what is wrong (the file, node, tensor or argument).
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace repshare {

enum class ErrorKind {
  Io,           // missing or unreadable file
  Malformed,    // file that does not parse (truncated protobuf, bad image, bad .npy)
  Unsupported,  // valid input the engine does not implement (op, attribute, dtype)
  Shape,        // shapes that do not fit together, absurd or overflowing sizes
  Argument,     // bad command-line or API argument
  Backend,      // a backend could not do what was asked (no GPU, out of memory)
};

const char* error_kind_name(ErrorKind k);

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& what) : std::runtime_error(what), kind_(kind) {}
  ErrorKind kind() const { return kind_; }

 private:
  ErrorKind kind_;
};

// Builds a message from any streamable parts: fail(ErrorKind::Shape, "node ", n, ": ...").
template <typename... Parts>
[[noreturn]] void fail(ErrorKind kind, const Parts&... parts) {
  std::ostringstream os;
  // C++14-clean pack expansion (CUDA sources include this header with -std=c++14).
  int expand[] = {0, ((os << parts), 0)...};
  (void)expand;
  throw Error(kind, os.str());
}

template <typename... Parts>
void check(bool cond, ErrorKind kind, const Parts&... parts) {
  if (!cond) fail(kind, parts...);
}

}  // namespace repshare
