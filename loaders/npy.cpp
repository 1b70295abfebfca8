#include "loaders/npy.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <limits>

#include "engine/error.h"

namespace repshare {
namespace {

const char kMagic[] = "\x93NUMPY";
const size_t kMagicSize = 6;
// NumPy pads headers so the data starts on a 64-byte boundary.
const size_t kHeaderAlign = 64;

size_t item_size(NpyDType t) { return t == NpyDType::F32 ? 4 : 8; }

size_t checked_mul(size_t a, size_t b, const std::string& path) {
  size_t r = 0;
  check(!__builtin_mul_overflow(a, b, &r), ErrorKind::Shape, path,
        ": array size overflows (", a, " x ", b, ")");
  return r;
}

// Reads exactly `bytes` at `offset`; short reads are retried, EOF is truncation.
void pread_all(int fd, void* dst, size_t bytes, size_t offset, const std::string& path) {
  char* p = static_cast<char*>(dst);
  while (bytes > 0) {
    ssize_t got = ::pread(fd, p, bytes, static_cast<off_t>(offset));
    if (got < 0 && errno == EINTR) continue;
    check(got >= 0, ErrorKind::Io, path, ": read failed at byte ", offset, ": ",
          std::strerror(errno));
    check(got > 0, ErrorKind::Malformed, path, ": truncated (end of file at byte ", offset, ")");
    p += got;
    bytes -= static_cast<size_t>(got);
    offset += static_cast<size_t>(got);
  }
}

// The header is a Python dict literal, e.g.
//   {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }
// This parses exactly that grammar: string keys; string, bool or int-tuple values.
class HeaderParser {
 public:
  HeaderParser(const std::string& text, const std::string& path) : s_(text), path_(path) {}

  NpyHeader parse() {
    std::string descr;
    bool fortran = false;
    std::vector<int64_t> shape;
    bool has_descr = false, has_fortran = false, has_shape = false;
    expect('{');
    while (!peek('}')) {
      std::string key = string_literal();
      expect(':');
      if (key == "descr") {
        descr = string_literal();
        has_descr = true;
      } else if (key == "fortran_order") {
        fortran = bool_literal();
        has_fortran = true;
      } else if (key == "shape") {
        shape = int_tuple();
        has_shape = true;
      } else {
        bad("unexpected key '" + key + "'");
      }
      if (!peek('}')) expect(',');
    }
    expect('}');
    check(has_descr && has_fortran && has_shape, ErrorKind::Malformed, path_,
          ": .npy header lacks 'descr', 'fortran_order' or 'shape': ", s_);

    NpyHeader h;
    if (descr == "<f4") {
      h.dtype = NpyDType::F32;
    } else if (descr == "<f8") {
      h.dtype = NpyDType::F64;
    } else if (descr == ">f4" || descr == ">f8") {
      fail(ErrorKind::Unsupported, path_, ": dtype '", descr,
           "' is big-endian; need little-endian float32 '<f4' or float64 '<f8'");
    } else {
      fail(ErrorKind::Unsupported, path_, ": dtype '", descr,
           "' is not supported; need float32 '<f4' or float64 '<f8'");
    }
    check(!fortran, ErrorKind::Unsupported, path_,
          ": array is in Fortran order; need C order (np.ascontiguousarray)");
    check(!shape.empty(), ErrorKind::Shape, path_,
          ": array is 0-d; need shape (N, ...) with one row per example");
    h.shape = shape;
    return h;
  }

 private:
  void skip_space() {
    while (i_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[i_]))) ++i_;
  }
  bool peek(char c) {
    skip_space();
    return i_ < s_.size() && s_[i_] == c;
  }
  void expect(char c) {
    if (!peek(c)) bad(std::string("expected '") + c + "'");
    ++i_;
  }
  [[noreturn]] void bad(const std::string& what) {
    fail(ErrorKind::Malformed, path_, ": bad .npy header (", what, " at character ", i_,
         "): ", s_);
  }
  std::string string_literal() {
    skip_space();
    if (i_ >= s_.size() || (s_[i_] != '\'' && s_[i_] != '"')) bad("expected a string");
    char quote = s_[i_++];
    size_t end = s_.find(quote, i_);
    if (end == std::string::npos) bad("unterminated string");
    std::string r = s_.substr(i_, end - i_);
    i_ = end + 1;
    return r;
  }
  bool bool_literal() {
    skip_space();
    if (s_.compare(i_, 4, "True") == 0) {
      i_ += 4;
      return true;
    }
    if (s_.compare(i_, 5, "False") == 0) {
      i_ += 5;
      return false;
    }
    bad("expected True or False");
  }
  std::vector<int64_t> int_tuple() {
    std::vector<int64_t> r;
    expect('(');
    while (!peek(')')) {
      if (i_ >= s_.size() || !std::isdigit(static_cast<unsigned char>(s_[i_])))
        bad("expected a non-negative integer");
      int64_t v = 0;
      while (i_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[i_]))) {
        if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, s_[i_] - '0', &v))
          bad("dimension overflows int64");
        ++i_;
      }
      if (i_ < s_.size() && s_[i_] == 'L') ++i_;  // Python 2 long suffix
      r.push_back(v);
      if (!peek(')')) expect(',');
    }
    expect(')');
    return r;
  }

  const std::string& s_;
  const std::string& path_;
  size_t i_ = 0;
};

NpyHeader read_header(int fd, size_t file_size, const std::string& path) {
  // Magic, version (major, minor), then the header length: uint16 in version 1,
  // uint32 in versions 2 and 3 (3 only changes the text encoding to UTF-8).
  unsigned char pre[12];
  check(file_size >= 10, ErrorKind::Malformed, path, ": not a .npy file (", file_size,
        " bytes, shorter than the magic and header length)");
  pread_all(fd, pre, 10, 0, path);
  check(std::memcmp(pre, kMagic, kMagicSize) == 0, ErrorKind::Malformed, path,
        ": not a .npy file (no \\x93NUMPY magic)");
  int major = pre[6];
  size_t header_len = 0, prefix = 0;
  if (major == 1) {
    header_len = pre[8] | (size_t(pre[9]) << 8);
    prefix = 10;
  } else if (major == 2 || major == 3) {
    check(file_size >= 12, ErrorKind::Malformed, path, ": truncated .npy header");
    pread_all(fd, pre + 10, 2, 10, path);
    header_len = pre[8] | (size_t(pre[9]) << 8) | (size_t(pre[10]) << 16) |
                 (size_t(pre[11]) << 24);
    prefix = 12;
  } else {
    fail(ErrorKind::Unsupported, path, ": .npy format version ", major, ".", int(pre[7]),
         " is not supported (need 1.0, 2.0 or 3.0)");
  }
  check(prefix + header_len <= file_size, ErrorKind::Malformed, path,
        ": truncated .npy header (needs ", prefix + header_len, " bytes, file has ", file_size,
        ")");
  std::string text(header_len, '\0');
  pread_all(fd, &text[0], header_len, prefix, path);
  NpyHeader h = HeaderParser(text, path).parse();
  h.data_offset = prefix + header_len;
  return h;
}

}  // namespace

NpyReader::NpyReader(const std::string& path) : path_(path) {
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  check(fd_ >= 0, ErrorKind::Io, path, ": cannot open: ", std::strerror(errno));
  try {
    struct stat st;
    check(::fstat(fd_, &st) == 0, ErrorKind::Io, path, ": cannot stat: ", std::strerror(errno));
    check(S_ISREG(st.st_mode), ErrorKind::Io, path, ": not a regular file");
    size_t file_size = static_cast<size_t>(st.st_size);
    header_ = read_header(fd_, file_size, path);
    rows_ = static_cast<size_t>(header_.shape[0]);
    cols_ = 1;
    for (size_t i = 1; i < header_.shape.size(); ++i)
      cols_ = checked_mul(cols_, static_cast<size_t>(header_.shape[i]), path);
    size_t data_bytes =
        checked_mul(checked_mul(rows_, cols_, path), item_size(header_.dtype), path);
    size_t have = file_size - header_.data_offset;
    check(have >= data_bytes, ErrorKind::Malformed, path, ": truncated: header says ", rows_,
          " x ", cols_, (header_.dtype == NpyDType::F32 ? " float32" : " float64"), " (",
          data_bytes, " bytes of data) but the file has ", have);
    // Extra bytes mean the header lies about the shape (e.g. an NpyWriter that
    // was never closed); reading them as rows would be silently wrong.
    check(have == data_bytes, ErrorKind::Malformed, path, ": ", have - data_bytes,
          " bytes after the data the header describes (", rows_, " x ", cols_,
          "); was the writer closed?");
  } catch (...) {
    ::close(fd_);
    throw;
  }
}

NpyReader::~NpyReader() {
  if (fd_ >= 0) ::close(fd_);
}

void NpyReader::read_block(size_t r0, size_t r1, size_t c0, size_t c1, double* out) const {
  check(r0 <= r1 && r1 <= rows_ && c0 <= c1 && c1 <= cols_, ErrorKind::Argument, path_,
        ": block rows [", r0, ", ", r1, ") x cols [", c0, ", ", c1, ") outside ", rows_, " x ",
        cols_);
  const size_t item = item_size(header_.dtype);
  const size_t width = c1 - c0;
  // Whole rows are contiguous in the file: one read for the block.
  const bool contiguous = width == cols_;
  const size_t run = contiguous ? (r1 - r0) * cols_ : width;  // values per read
  const size_t reads = contiguous ? (r1 > r0 ? 1 : 0) : r1 - r0;
  std::vector<float> f32(header_.dtype == NpyDType::F32 ? run : 0);
  for (size_t k = 0; k < reads; ++k) {
    size_t row = r0 + k;
    size_t offset = header_.data_offset + (row * cols_ + c0) * item;
    double* dst = out + k * width;
    if (header_.dtype == NpyDType::F64) {
      pread_all(fd_, dst, run * item, offset, path_);
    } else {
      pread_all(fd_, f32.data(), run * item, offset, path_);
      for (size_t j = 0; j < run; ++j) dst[j] = f32[j];
    }
  }
}

NpyWriter::NpyWriter(const std::string& path, std::vector<int64_t> row_shape)
    : path_(path), row_shape_(std::move(row_shape)) {
  for (int64_t d : row_shape_) {
    check(d >= 0, ErrorKind::Shape, path, ": negative dimension ", d, " in row shape");
    row_size_ = checked_mul(row_size_, static_cast<size_t>(d), path);
  }
  f_ = std::fopen(path.c_str(), "wb");
  check(f_ != nullptr, ErrorKind::Io, path, ": cannot create: ", std::strerror(errno));
  // Placeholder header (0 rows) of the final size; close() fills in the count.
  std::string header = header_text(0);
  if (std::fwrite(header.data(), 1, header.size(), f_) != header.size()) {
    std::fclose(f_);
    f_ = nullptr;
    fail(ErrorKind::Io, path, ": write failed: ", std::strerror(errno));
  }
}

NpyWriter::~NpyWriter() {
  try {
    close();
  } catch (const Error&) {
    // A destructor cannot report it; callers who care call close() themselves.
  }
}

std::string NpyWriter::header_text(size_t rows) const {
  std::string shape = "(" + std::to_string(rows) + ",";
  for (size_t i = 0; i < row_shape_.size(); ++i)
    shape += (i ? ", " : " ") + std::to_string(row_shape_[i]);
  shape += ")";
  std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': " + shape + ", }";
  // Size the header for the longest possible row count so it never has to grow.
  size_t widest = dict.size() - std::to_string(rows).size() +
                  std::to_string(std::numeric_limits<size_t>::max()).size();
  size_t total = (10 + widest + 1 + kHeaderAlign - 1) / kHeaderAlign * kHeaderAlign;
  size_t header_len = total - 10;
  check(header_len <= 0xffff, ErrorKind::Shape, path_, ": row shape too long for a .npy header");
  std::string out(kMagic, kMagicSize);
  out += '\x01';
  out += '\x00';
  out += static_cast<char>(header_len & 0xff);
  out += static_cast<char>(header_len >> 8);
  out += dict;
  out.append(total - 1 - out.size(), ' ');
  out += '\n';
  return out;
}

void NpyWriter::append(const float* data, size_t count) {
  check(f_ != nullptr, ErrorKind::Argument, path_, ": append after close");
  size_t n = checked_mul(count, row_size_, path_);
  check(std::fwrite(data, sizeof(float), n, f_) == n, ErrorKind::Io, path_,
        ": write failed: ", std::strerror(errno));
  rows_ += count;
}

void NpyWriter::close() {
  if (!f_) return;
  std::FILE* f = f_;
  f_ = nullptr;
  std::string header = header_text(rows_);
  bool ok = std::fseek(f, 0, SEEK_SET) == 0 &&
            std::fwrite(header.data(), 1, header.size(), f) == header.size();
  ok = (std::fclose(f) == 0) && ok;
  check(ok, ErrorKind::Io, path_, ": write failed: ", std::strerror(errno));
}

void write_npy(const std::string& path, const std::vector<int64_t>& shape, const float* data) {
  check(!shape.empty(), ErrorKind::Shape, path, ": cannot write a 0-d array");
  check(shape[0] >= 0, ErrorKind::Shape, path, ": negative dimension ", shape[0]);
  NpyWriter w(path, std::vector<int64_t>(shape.begin() + 1, shape.end()));
  w.append(data, static_cast<size_t>(shape[0]));
  w.close();
}

}  // namespace repshare
