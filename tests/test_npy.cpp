// .npy reader and writer: every header version NumPy writes, sub-block reads,
// writer round trips (read back by NumPy too when it is installed), and the
// inputs that must be rejected with a message naming the file.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "engine/error.h"
#include "loaders/npy.h"

namespace repshare {
namespace {

const std::string kFixtures = std::string(REPSHARE_SOURCE_DIR) + "/tests/fixtures/cka/";

std::string temp_path(const std::string& name) {
  const char* tmp = std::getenv("TMPDIR");
  return std::string(tmp && *tmp ? tmp : "/tmp") + "/repshare_test_npy_" + name;
}

std::vector<double> read_all(const NpyReader& r) {
  std::vector<double> v(r.rows() * r.cols());
  r.read_block(0, r.rows(), 0, r.cols(), v.data());
  return v;
}

TEST(Npy, ReadsEveryHeaderVersionNumpyWrites) {
  // v1 holds float64, v2 and v3 float32; all are 0.5 * index, shape (3, 4).
  for (const char* name : {"v1.npy", "v2.npy", "v3.npy"}) {
    SCOPED_TRACE(name);
    NpyReader r(kFixtures + name);
    EXPECT_EQ(r.header().shape, (std::vector<int64_t>{3, 4}));
    EXPECT_EQ(r.header().dtype, name[1] == '1' ? NpyDType::F64 : NpyDType::F32);
    ASSERT_EQ(r.rows(), 3u);
    ASSERT_EQ(r.cols(), 4u);
    std::vector<double> all = read_all(r);
    for (size_t i = 0; i < all.size(); ++i) EXPECT_EQ(all[i], 0.5 * i);
    // Rows 1..2 x cols 1..3: one read per row.
    double block[4];
    r.read_block(1, 3, 1, 3, block);
    EXPECT_EQ(block[0], 0.5 * 5);
    EXPECT_EQ(block[1], 0.5 * 6);
    EXPECT_EQ(block[2], 0.5 * 9);
    EXPECT_EQ(block[3], 0.5 * 10);
  }
}

TEST(Npy, ReadBlockOutsideTheArrayIsAnError) {
  NpyReader r(kFixtures + "v2.npy");
  double out[8];
  EXPECT_THROW(r.read_block(0, 4, 0, 2, out), Error);
  EXPECT_THROW(r.read_block(0, 1, 2, 5, out), Error);
}

TEST(Npy, WriterRoundTripRowByRow) {
  const std::string path = temp_path("roundtrip.npy");
  const size_t rows = 5, row_size = 6;
  std::vector<float> data(rows * row_size);
  for (size_t i = 0; i < data.size(); ++i) data[i] = 0.25f * i - 3.0f;
  {
    NpyWriter w(path, {2, 3});
    EXPECT_EQ(w.row_size(), row_size);
    for (size_t r = 0; r < rows; ++r) w.append(&data[r * row_size]);
    w.close();
  }
  NpyReader r(path);
  EXPECT_EQ(r.header().shape, (std::vector<int64_t>{5, 2, 3}));
  EXPECT_EQ(r.header().dtype, NpyDType::F32);
  EXPECT_EQ(r.header().data_offset % 64, 0u);
  std::vector<double> back = read_all(r);
  ASSERT_EQ(back.size(), data.size());
  for (size_t i = 0; i < data.size(); ++i) EXPECT_EQ(back[i], data[i]);
  std::remove(path.c_str());
}

TEST(Npy, WriterOfZeroRowsAndOfOneDimensionalArrays) {
  const std::string empty = temp_path("empty.npy");
  { NpyWriter w(empty, {7}); }  // the destructor closes
  NpyReader e(empty);
  EXPECT_EQ(e.header().shape, (std::vector<int64_t>{0, 7}));
  std::remove(empty.c_str());

  const std::string vec = temp_path("vector.npy");
  const float values[3] = {1.5f, -2.0f, 4.0f};
  write_npy(vec, {3}, values);
  NpyReader v(vec);
  EXPECT_EQ(v.header().shape, (std::vector<int64_t>{3}));
  EXPECT_EQ(v.cols(), 1u);
  EXPECT_EQ(read_all(v), (std::vector<double>{1.5, -2.0, 4.0}));
  std::remove(vec.c_str());
}

// An independent reader: NumPy itself, when the repo's venv or a system python has it.
TEST(Npy, NumpyReadsWhatTheWriterWrites) {
  std::string venv = std::string(REPSHARE_SOURCE_DIR) + "/.venv/bin/python";
  std::string python = std::ifstream(venv).good() ? venv : "python3";
  if (std::system((python + " -c 'import numpy' >/dev/null 2>&1").c_str()) != 0)
    GTEST_SKIP() << "no python with numpy";
  const std::string path = temp_path("for_numpy.npy");
  std::vector<float> data(4 * 3 * 2);
  for (size_t i = 0; i < data.size(); ++i) data[i] = 0.5f * i;
  write_npy(path, {4, 3, 2}, data.data());
  std::string cmd = python + " -c \"import numpy as n; a = n.load('" + path +
                    "'); print(a.dtype, a.shape, a.flags.c_contiguous, repr(float(a[3, 2, 1])))\"";
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  char line[256] = {0};
  ASSERT_NE(std::fgets(line, sizeof line, p), nullptr);
  EXPECT_EQ(pclose(p), 0);
  EXPECT_EQ(std::string(line), "float32 (4, 3, 2) True 11.5\n");
  std::remove(path.c_str());
}

void expect_rejected(const std::string& path, ErrorKind kind, const std::string& phrase) {
  SCOPED_TRACE(path);
  try {
    NpyReader r(path);
    ADD_FAILURE() << "accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), kind) << e.what();
    std::string msg = e.what();
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    EXPECT_NE(msg.find(phrase), std::string::npos) << msg;
  }
}

TEST(Npy, RejectsWhatItCannotReadNamingTheFile) {
  expect_rejected(kFixtures + "bad_int64.npy", ErrorKind::Unsupported, "'<i8' is not supported");
  expect_rejected(kFixtures + "bad_bigendian.npy", ErrorKind::Unsupported, "big-endian");
  expect_rejected(kFixtures + "bad_fortran.npy", ErrorKind::Unsupported, "Fortran order");
  expect_rejected(kFixtures + "bad_truncated.npy", ErrorKind::Malformed, "truncated");
  expect_rejected(kFixtures + "bad_magic.npy", ErrorKind::Malformed, "not a .npy file");
  expect_rejected(kFixtures + "no_such_file.npy", ErrorKind::Io, "cannot open");
}

TEST(Npy, RejectsDataBeyondTheHeaderShape) {
  const std::string path = temp_path("overlong.npy");
  const float values[2] = {1.0f, 2.0f};
  write_npy(path, {1, 2}, values);
  std::ofstream(path, std::ios::app | std::ios::binary).write("junkjunk", 8);
  expect_rejected(path, ErrorKind::Malformed, "was the writer closed");
  std::remove(path.c_str());
}

TEST(Npy, RejectsMalformedHeaders) {
  const std::string path = temp_path("bad_header.npy");
  auto write_header = [&](const std::string& dict) {
    std::string h = std::string("\x93NUMPY\x01\x00", 8);
    h += static_cast<char>(dict.size());
    h += '\0';
    std::ofstream(path, std::ios::binary) << h << dict;
  };
  write_header("{'descr': '<f4', 'fortran_order': False, 'shape': (2, x), }");
  expect_rejected(path, ErrorKind::Malformed, "bad .npy header");
  write_header("{'descr': '<f4', 'shape': (0,), }");
  expect_rejected(path, ErrorKind::Malformed, "lacks");
  write_header("{'descr': '<f4', 'fortran_order': False, 'shape': (), }");
  expect_rejected(path, ErrorKind::Shape, "0-d");
  write_header("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999, 99999999999, "
               "99999999999), }");
  expect_rejected(path, ErrorKind::Shape, "overflows");
  std::remove(path.c_str());
}

}  // namespace
}  // namespace repshare
