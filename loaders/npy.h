// NumPy .npy files: a streaming reader for float32/float64 arrays and a
// streaming float32 writer.
//
// Feature dumps are large (one example of an early stage at 512x512 is 4M
// floats), so neither side ever holds a whole file: the reader reads any
// sub-block of rows x columns (an array of shape N x ... is seen as N rows of
// D = prod(rest) values), the writer appends one example at a time and fixes
// the row count in the header when it is closed.
//
// Only what NumPy writes for a C-order little-endian float array is accepted
// ('<f4', '<f8', fortran_order False, format versions 1.0, 2.0 and 3.0); any
// other dtype, byte order or layout, a header that does not parse, and a file
// shorter than its header says are repshare::Error naming the file.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace repshare {

enum class NpyDType : uint8_t { F32, F64 };

struct NpyHeader {
  NpyDType dtype = NpyDType::F32;
  std::vector<int64_t> shape;  // as in the file; rank >= 1
  size_t data_offset = 0;      // bytes from the file's start to the first element
};

class NpyReader {
 public:
  explicit NpyReader(const std::string& path);
  ~NpyReader();
  NpyReader(const NpyReader&) = delete;
  NpyReader& operator=(const NpyReader&) = delete;

  const std::string& path() const { return path_; }
  const NpyHeader& header() const { return header_; }
  size_t rows() const { return rows_; }  // shape[0]
  size_t cols() const { return cols_; }  // product of shape[1:], 1 for a 1-D array

  // Reads rows [r0, r1) x columns [c0, c1) into `out` (row-major, (r1-r0) x (c1-c0)),
  // converting to double. Whole rows are one contiguous read; narrower blocks are
  // one read per row.
  void read_block(size_t r0, size_t r1, size_t c0, size_t c1, double* out) const;

 private:
  std::string path_;
  int fd_ = -1;
  NpyHeader header_;
  size_t rows_ = 0;
  size_t cols_ = 0;
};

// Writes a float32 C-order .npy of shape (N, row_shape...) one row at a time; N
// is the number of rows appended. The header reserves room for any N, so close()
// rewrites it in place without moving the data.
class NpyWriter {
 public:
  NpyWriter(const std::string& path, std::vector<int64_t> row_shape);
  ~NpyWriter();  // closes if close() was not called (errors are then lost)
  NpyWriter(const NpyWriter&) = delete;
  NpyWriter& operator=(const NpyWriter&) = delete;

  size_t row_size() const { return row_size_; }  // floats per row
  size_t rows() const { return rows_; }
  // Appends `count` rows of row_size() floats each.
  void append(const float* data, size_t count = 1);
  void close();

 private:
  std::string header_text(size_t rows) const;

  std::string path_;
  std::FILE* f_ = nullptr;
  std::vector<int64_t> row_shape_;
  size_t row_size_ = 1;
  size_t rows_ = 0;
};

// Whole-array convenience for small arrays (fixtures, tests).
void write_npy(const std::string& path, const std::vector<int64_t>& shape, const float* data);

}  // namespace repshare
