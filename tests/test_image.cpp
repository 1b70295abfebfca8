// Image decoding, PIL-compatible resampling, classification and detection
// preprocessing, labels and drawing. References in tests/fixtures/images/ come from
// Pillow, torchvision 0.14 and effdet (scripts/make_image_fixtures.py).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/error.h"
#include "loaders/draw.h"
#include "loaders/image.h"
#include "loaders/labels.h"

namespace repshare {
namespace {

const std::string kFixtures = std::string(REPSHARE_SOURCE_DIR) + "/tests/fixtures/images/";
const std::string kSharedData = std::string(REPSHARE_SOURCE_DIR) + "/../shared/data/";

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  EXPECT_TRUE(f.good()) << path;
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

std::vector<float> read_floats(const std::string& path) {
  const std::vector<uint8_t> bytes = read_bytes(path);
  std::vector<float> v(bytes.size() / sizeof(float));
  std::memcpy(v.data(), bytes.data(), v.size() * sizeof(float));
  return v;
}

const nlohmann::json& manifest() {
  static const nlohmann::json m = nlohmann::json::parse(read_bytes(kFixtures + "manifest.json"));
  return m;
}

std::string temp_path(const std::string& name) {
  return testing::TempDir() + "repshare_test_image_" + name;
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f << bytes;
}

// Largest absolute difference between two byte images; the shapes must agree.
int max_pixel_diff(const Image& got, const std::vector<uint8_t>& expected) {
  EXPECT_EQ(got.pixels.size(), expected.size());
  int worst = 0;
  for (size_t i = 0; i < std::min(got.pixels.size(), expected.size()); ++i) {
    worst = std::max(worst, std::abs(int(got.pixels[i]) - int(expected[i])));
  }
  return worst;
}

float max_float_diff(const std::vector<float>& got, const std::vector<float>& expected) {
  EXPECT_EQ(got.size(), expected.size());
  float worst = 0;
  for (size_t i = 0; i < std::min(got.size(), expected.size()); ++i) {
    worst = std::max(worst, std::fabs(got[i] - expected[i]));
  }
  return worst;
}

// Offset of a JPEG's first marker 0xFF `code` after SOI; 0 if there is none.
size_t find_marker(const std::vector<uint8_t>& jpg, uint8_t code) {
  for (size_t i = 2; i + 1 < jpg.size(); ++i) {
    if (jpg[i] == 0xFF && jpg[i + 1] == code) return i;
  }
  return 0;
}

// The byte where a PNG's first chunk of `type` starts (its length), or 0.
size_t find_png_chunk(const std::vector<uint8_t>& png, const char* type) {
  for (size_t at = 8; at + 8 <= png.size();) {
    if (std::memcmp(&png[at + 4], type, 4) == 0) return at;
    at += 12 + (size_t{png[at]} << 24 | size_t{png[at + 1]} << 16 | size_t{png[at + 2]} << 8 |
                png[at + 3]);
  }
  return 0;
}

void put_be32(std::vector<uint8_t>& bytes, size_t at, uint32_t v) {
  for (int i = 0; i < 4; ++i) bytes[at + i] = static_cast<uint8_t>(v >> (24 - 8 * i));
}

template <typename Fn>
std::string error_of(Fn fn, ErrorKind* kind = nullptr) {
  try {
    fn();
  } catch (const Error& e) {
    if (kind) *kind = e.kind();
    return e.what();
  }
  return "";
}

void read_float3(const nlohmann::json& j, float out[3]) {
  for (int c = 0; c < 3; ++c) out[c] = j[c].get<float>();
}

// PNG is lossless; JPEG is decoded by the libjpeg PIL uses, set up as PIL sets it
// up, so any difference at all means a different IDCT, upsampling or colour
// conversion. The cases: baseline 4:2:0 and 4:2:2, progressive, grey (R = G = B as
// PIL's convert("RGB")), CMYK (PIL's inverted CMYK and cmyk2rgb), and files with
// corrupt entropy-coded data that libjpeg and PIL both decode with fill-ins.
TEST(ImageDecode, FilesMatchPilExactly) {
  int jpegs = 0;
  for (const auto& c : manifest()["decode"]) {
    const std::string file = c["image"];
    SCOPED_TRACE(file);
    jpegs += file.find(".jpg") != std::string::npos;
    const Image img = load_image(kFixtures + file);
    EXPECT_EQ(img.width, c["width"].get<int>());
    EXPECT_EQ(img.height, c["height"].get<int>());
    EXPECT_EQ(max_pixel_diff(img, read_bytes(kFixtures + c["expected"].get<std::string>())), 0);
  }
  EXPECT_EQ(jpegs, 7);
}

// The format is told by the first bytes, not by the name.
TEST(ImageDecode, FormatFromContentNotName) {
  const std::vector<uint8_t> jpg = read_bytes(kFixtures + "wide.jpg");
  const std::vector<uint8_t> png = read_bytes(kFixtures + "wide.png");
  const Image from_jpg = decode_image(jpg.data(), jpg.size(), "photo.png");
  const Image from_png = decode_image(png.data(), png.size(), "photo.jpg");
  EXPECT_EQ(max_pixel_diff(from_jpg, read_bytes(kFixtures + "wide_jpg_pil.u8")), 0);
  EXPECT_EQ(max_pixel_diff(from_png, read_bytes(kFixtures + "wide_png.u8")), 0);
}

// A JPEG whose Huffman table declares more than 256 codes made Debian's
// stb_image 2.27 write past its table (found by scripts/fuzz.sh); libjpeg
// refuses it, and the error names the file.
TEST(ImageDecode, OversizedHuffmanTableIsRefused) {
  std::vector<uint8_t> jpg = read_bytes(kFixtures + "wide.jpg");
  const size_t dht = find_marker(jpg, 0xC4);
  ASSERT_GT(dht, 0u) << "wide.jpg has no DHT segment";
  jpg[dht + 4 + 16] = 255;  // the 16-bit codes of its first table: now > 256 in all
  jpg[dht + 4 + 15] = 255;
  ErrorKind kind{};
  const std::string msg = error_of([&] { decode_image(jpg.data(), jpg.size(), "huff.jpg"); }, &kind);
  EXPECT_EQ(kind, ErrorKind::Malformed);
  EXPECT_NE(msg.find("'huff.jpg' cannot be decoded as JPEG: Bogus Huffman table definition"),
            std::string::npos)
      << msg;
}

// The scripts/fuzz.sh input that made stb_image shift a 32-bit value by 33 bits.
// PIL refuses it too (a second scan in a baseline file, seen when reading on to
// the EOI marker). Undefined behaviour shows under scripts/fuzz.sh's sanitizers,
// which seed with this file.
TEST(ImageDecode, StbShiftFindingIsRefused) {
  ErrorKind kind{};
  const std::string path = kFixtures + "fuzz_stb_shift33.jpg";
  const std::string msg = error_of([&] { load_image(path); }, &kind);
  EXPECT_EQ(kind, ErrorKind::Malformed);
  EXPECT_NE(msg.find("'" + path + "' cannot be decoded as JPEG: Didn't expect more than one scan"),
            std::string::npos)
      << msg;
}

// Flipped bytes anywhere in the entropy-coded data: each file either decodes to
// an image of the declared size or fails with Malformed, never anything else.
// (scripts/fuzz.sh explores far more under ASan and UBSan.)
TEST(ImageDecode, CorruptJpegDecodesOrFailsCleanly) {
  for (const char* file : {"wide.jpg", "wide_progressive.jpg"}) {
    const std::vector<uint8_t> clean = read_bytes(kFixtures + file);
    const size_t sos = find_marker(clean, 0xDA);
    ASSERT_GT(sos, 0u) << file;
    int decoded = 0, failed = 0;
    for (size_t at = sos + 20; at + 2 < clean.size(); at += 53) {
      for (uint8_t flip : {0x01, 0x80, 0xFF}) {
        std::vector<uint8_t> jpg = clean;
        jpg[at] ^= flip;
        try {
          const Image img = decode_image(jpg.data(), jpg.size(), "corrupt.jpg");
          EXPECT_EQ(img.width, 97);
          EXPECT_EQ(img.height, 73);
          ++decoded;
        } catch (const Error& e) {
          EXPECT_EQ(e.kind(), ErrorKind::Malformed) << e.what();
          EXPECT_NE(std::string(e.what()).find("'corrupt.jpg'"), std::string::npos) << e.what();
          ++failed;
        }
      }
    }
    // Both outcomes occur: most flips only garble pixels, some make bad markers.
    EXPECT_GT(decoded, 0) << file;
    EXPECT_GT(failed, 0) << file;
  }
}

TEST(ImageDecode, BadFilesNameTheFile) {
  ErrorKind kind{};
  std::string msg = error_of([] { load_image(temp_path("missing.png")); }, &kind);
  EXPECT_EQ(kind, ErrorKind::Io);
  EXPECT_NE(msg.find("missing.png"), std::string::npos) << msg;

  const std::vector<uint8_t> jpg = read_bytes(kFixtures + "wide.jpg");
  const std::vector<uint8_t> progressive = read_bytes(kFixtures + "wide_progressive.jpg");
  const std::vector<uint8_t> png = read_bytes(kFixtures + "wide.png");
  // Truncated JPEGs fail as in PIL without LOAD_TRUNCATED_IMAGES, with libjpeg's
  // reason. Without only its EOI marker wide.jpg fails too: the decoder reads
  // ahead for bits of its last rows (PIL: "image file is truncated").
  const std::string eof = "Premature end of JPEG file";
  struct Case {
    const char* name;
    std::string bytes;
    std::string reason;
  } cases[] = {
      {"empty.jpg", "", "is empty"},
      {"truncated.jpg", std::string(jpg.begin(), jpg.begin() + jpg.size() * 2 / 3), eof},
      {"headeronly.jpg", std::string(jpg.begin(), jpg.begin() + 300), eof},
      {"truncated_progressive.jpg",
       std::string(progressive.begin(), progressive.begin() + progressive.size() * 9 / 10), eof},
      {"soi_only.jpg", std::string(jpg.begin(), jpg.begin() + 3), eof},
      {"no_eoi.jpg", std::string(jpg.begin(), jpg.end() - 2), eof},
      {"truncated.png", std::string(png.begin(), png.begin() + png.size() / 2), ""},
      {"garbage.png", std::string(2000, '\x5a'), ""},
      // Binary PNM cut short: this stb_image would decode it from beyond its data.
      {"no_pixels.ppm", "P6\n10 10\n255\n", "truncated: 0 of 300 bytes"},
      {"cut.pgm", "P5 # comment\n2 2 65535\n" + std::string(7, '\0'), "truncated: 7 of 8"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const std::string path = temp_path(c.name);
    write_file(path, c.bytes);
    msg = error_of([&] { load_image(path); }, &kind);
    EXPECT_EQ(kind, ErrorKind::Malformed) << msg;
    EXPECT_NE(msg.find("'" + path + "'"), std::string::npos) << msg;
    EXPECT_NE(msg.find(c.reason), std::string::npos) << msg;
    std::remove(path.c_str());
  }
  // A complete PNM decodes; a folder is named as one.
  EXPECT_EQ(
      decode_image(reinterpret_cast<const uint8_t*>("P5 2 1 255\n\x10\x20"), 13, "a.pgm").pixels[3],
      0x20);
  msg = error_of([] { load_image("/tmp"); }, &kind);
  EXPECT_EQ(kind, ErrorKind::Io);
  EXPECT_NE(msg.find("image '/tmp' is a folder"), std::string::npos) << msg;
  // tall_cmyk.jpg's rows are all decoded before the missing EOI is noticed: PIL
  // accepts that, and so does this.
  const std::vector<uint8_t> cmyk = read_bytes(kFixtures + "tall_cmyk.jpg");
  const Image no_eoi = decode_image(cmyk.data(), cmyk.size() - 2, "no_eoi.jpg");
  EXPECT_EQ(max_pixel_diff(no_eoi, read_bytes(kFixtures + "tall_cmyk_jpg_pil.u8")), 0);
}

// Sizes from headers, as PIL's Image.open(path).size, for every fixture.
TEST(ImageDecode, SizeFromHeaderAlone) {
  for (const auto& c : manifest()["decode"]) {
    const std::string file = c["image"];
    SCOPED_TRACE(file);
    const ImageSize size = read_image_size(kFixtures + file);
    EXPECT_EQ(size.width, c["width"].get<int>());
    EXPECT_EQ(size.height, c["height"].get<int>());
  }
  const std::vector<uint8_t> jpg = read_bytes(kFixtures + "wide.jpg");
  const std::string path = temp_path("header_cut.jpg");
  write_file(path, std::string(jpg.begin(), jpg.begin() + 300));
  ErrorKind kind{};
  const std::string msg = error_of([&] { read_image_size(path); }, &kind);
  EXPECT_EQ(kind, ErrorKind::Malformed);
  EXPECT_NE(msg.find("'" + path + "' cannot be decoded as JPEG: Premature end"), std::string::npos)
      << msg;
  std::remove(path.c_str());
}

// A JPEG header may declare up to 65500 x 65500 pixels in a few hundred bytes;
// above PIL's decompression-bomb limit it is refused before anything is allocated.
TEST(ImageDecode, HugeJpegIsRefusedBeforeAllocating) {
  std::vector<uint8_t> jpg = read_bytes(kFixtures + "wide.jpg");
  const size_t sof = find_marker(jpg, 0xC0);
  ASSERT_GT(sof, 0u);
  jpg[sof + 5] = jpg[sof + 7] = 0x40;  // height and width 16384: 268M pixels
  jpg[sof + 6] = jpg[sof + 8] = 0;
  ErrorKind kind{};
  const std::string msg = error_of([&] { decode_image(jpg.data(), jpg.size(), "bomb.jpg"); }, &kind);
  EXPECT_EQ(kind, ErrorKind::Shape);
  EXPECT_NE(msg.find("'bomb.jpg' is 16384x16384: more than 178956970 pixels"), std::string::npos) << msg;
}

// PNG chunks and headers that claim more than the file holds are refused before
// stb_image sizes a buffer by them: an IDAT chunk claiming 2 GiB in a few KB (which
// had it allocate 2 GiB: scripts/fuzz.sh), 12000 x 12000 pixels over the file's few KB
// of compressed data, and a header over PIL's limit.
TEST(ImageDecode, PngClaimsBeyondTheFileAreRefusedBeforeAllocating) {
  const std::vector<uint8_t> png = read_bytes(kFixtures + "wide.png");
  const size_t idat = find_png_chunk(png, "IDAT"), ihdr = find_png_chunk(png, "IHDR");
  ASSERT_GT(idat, 0u);
  ASSERT_EQ(ihdr, 8u);
  struct Case {
    const char* name;
    size_t at;
    uint32_t width_or_length, height;
    ErrorKind kind;
    std::string reason;
  } cases[] = {
      {"long_idat.png", idat, 0x7FFFFFF0u, 0, ErrorKind::Malformed,
       "is truncated: its chunk 'IDAT' at byte " + std::to_string(idat) + " claims 2147483632"},
      {"wide_header.png", ihdr, 12000, 12000, ErrorKind::Malformed,
       "is truncated: its 12000x12000 pixels take 432000000 bytes, more than its"},
      {"bomb.png", ihdr, 16384, 16384, ErrorKind::Shape,
       "is 16384x16384: more than 178956970 pixels"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    std::vector<uint8_t> bytes = png;
    if (c.at == ihdr) {
      put_be32(bytes, ihdr + 8, c.width_or_length);
      put_be32(bytes, ihdr + 12, c.height);
    } else {
      put_be32(bytes, c.at, c.width_or_length);
    }
    ErrorKind kind{};
    const std::string msg =
        error_of([&] { decode_image(bytes.data(), bytes.size(), c.name); }, &kind);
    EXPECT_EQ(kind, c.kind) << msg;
    EXPECT_NE(msg.find("image '" + std::string(c.name) + "' " + c.reason), std::string::npos)
        << msg;
  }
  // The file as it is still decodes.
  EXPECT_GT(decode_image(png.data(), png.size(), "wide.png").width, 0);
}

// A JPEG header claiming more pixels than the file's bytes can code is refused
// before anything is sized by it: libjpeg would allocate a progressive image's
// coefficients (6 bytes a pixel) and the decoder the RGB buffer, then fail at the
// end of the data. Baseline and progressive, 4000x4000 in 4 KB.
TEST(ImageDecode, JpegClaimsBeyondTheFileAreRefusedBeforeAllocating) {
  for (const char* file : {"wide.jpg", "wide_progressive.jpg"}) {
    SCOPED_TRACE(file);
    std::vector<uint8_t> jpeg = read_bytes(kFixtures + file);
    size_t sof = 0;
    for (size_t i = 2; i + 9 < jpeg.size() && !sof; ++i)
      if (jpeg[i] == 0xFF && (jpeg[i + 1] == 0xC0 || jpeg[i + 1] == 0xC2)) sof = i;
    ASSERT_GT(sof, 0u);
    EXPECT_GT(decode_image(jpeg.data(), jpeg.size(), file).width, 0);
    for (size_t at : {sof + 5, sof + 7}) {  // height, then width: 4000 each
      jpeg[at] = 4000 >> 8;
      jpeg[at + 1] = 4000 & 255;
    }
    ErrorKind kind{};
    const std::string msg =
        error_of([&] { decode_image(jpeg.data(), jpeg.size(), "claims.jpg"); }, &kind);
    EXPECT_EQ(kind, ErrorKind::Malformed) << msg;
    EXPECT_NE(msg.find("image 'claims.jpg' is truncated: its 4000x4000 pixels take at least "),
              std::string::npos)
        << msg;
  }
}

TEST(ImageResize, MatchesPilExactly) {
  Resampler resampler;  // reused across sizes and filters, as the preprocessor does
  const Image src = load_image(kFixtures + "wide.png");
  for (const auto& c : manifest()["resize"]) {
    const std::string interp = c["interp"];
    SCOPED_TRACE(interp + " " + std::to_string(c["width"].get<int>()) + "x" +
                 std::to_string(c["height"].get<int>()));
    Image out;
    resampler.resize(src, c["width"], c["height"], parse_interp(interp), out);
    ASSERT_EQ(out.width, c["width"].get<int>());
    ASSERT_EQ(out.height, c["height"].get<int>());
    // PIL resamples in integers (fixed-point weights computed in double), and so
    // does this: any difference at all means the algorithm differs.
    EXPECT_EQ(max_pixel_diff(out, read_bytes(kFixtures + c["expected"].get<std::string>())), 0);
  }
}

TEST(ImageResize, ShorterSideFollowsTorchvision) {
  int w = 0, h = 0;
  resize_shorter_side(227, 227, 256, &w, &h);
  EXPECT_EQ(w, 256);
  EXPECT_EQ(h, 256);
  resize_shorter_side(640, 427, 256, &w, &h);  // int(256 * 640 / 427) = int(383.70)
  EXPECT_EQ(w, 383);
  EXPECT_EQ(h, 256);
  resize_shorter_side(333, 500, 224, &w, &h);  // int(224 * 500 / 333) = int(336.34)
  EXPECT_EQ(w, 224);
  EXPECT_EQ(h, 336);
}

TEST(ImagePreprocess, ClassifyMatchesTorchvision) {
  Preprocessor pre;
  for (const auto& c : manifest()["classify"]) {
    SCOPED_TRACE(c.dump());
    ClassifyPreprocess p;
    p.resize = c["resize"];
    p.crop = c["crop"];
    p.interp = parse_interp(c["interp"]);
    read_float3(c["mean"], p.mean);
    read_float3(c["std"], p.std);
    p.input_scale = c["input_scale"];
    std::vector<float> out(3 * p.crop * p.crop, -1e9f);
    Tensor t{Shape{1, 3, p.crop, p.crop}, DType::F32, out.data()};
    pre.classify(load_image(kFixtures + c["image"].get<std::string>()), p, t);
    // Pixels are identical (see MatchesPilExactly); what remains is float rounding
    // of v * (1/255) versus torchvision's v / 255, a few ulp of values below ~3.
    EXPECT_LE(max_float_diff(out, read_floats(kFixtures + c["expected"].get<std::string>())),
              1e-5f);
  }
}

TEST(ImagePreprocess, ClassifyChecksTheOutputTensor) {
  Preprocessor pre;
  ClassifyPreprocess p;
  p.resize = 40;
  p.crop = 32;
  std::vector<float> out(3 * 32 * 32);
  Tensor wrong{Shape{1, 3, 32, 31}, DType::F32, out.data()};
  ErrorKind kind{};
  const std::string msg =
      error_of([&] { pre.classify(load_image(kFixtures + "tall.png"), p, wrong); }, &kind);
  EXPECT_EQ(kind, ErrorKind::Shape);
  EXPECT_NE(msg.find("[1, 3, 32, 32]"), std::string::npos) << msg;
}

TEST(ImagePreprocess, LetterboxMatchesEffdet) {
  Preprocessor pre;
  for (const auto& c : manifest()["detect"]) {
    SCOPED_TRACE(c.dump());
    DetectPreprocess p;
    p.target = c["target"];
    p.interp = parse_interp(c["interp"]);
    for (int i = 0; i < 3; ++i) p.fill[i] = c["fill"][i].get<uint8_t>();
    read_float3(c["mean"], p.mean);
    read_float3(c["std"], p.std);
    const Image img = load_image(kFixtures + c["image"].get<std::string>());
    std::vector<float> out(3 * p.target * p.target, -1e9f);
    Tensor t{Shape{3, p.target, p.target}, DType::F32, out.data()};
    const Letterbox box = pre.detect(img, p, t);
    EXPECT_NEAR(1.0 / box.scale, c["image_scale"].get<double>(), 1e-12);
    // int(size * scale) can land one short of the target, as in effdet.
    EXPECT_GE(std::max(box.scaled_width, box.scaled_height), p.target - 1);
    EXPECT_LE(std::max(box.scaled_width, box.scaled_height), p.target);
    // effdet normalises (v - 255 mean) / (255 std) in float: a few ulp from ours.
    EXPECT_LE(max_float_diff(out, read_floats(kFixtures + c["expected"].get<std::string>())),
              1e-5f);
    // Input corners map back to the image corners; beyond the image clips to it.
    EXPECT_FLOAT_EQ(box.to_image_x(0), 0.f);
    // int() truncation drops under one input pixel of the image.
    EXPECT_NEAR(box.to_image_x(box.scaled_width), img.width, 1.0 / box.scale);
    EXPECT_FLOAT_EQ(box.to_image_x(p.target + 10), img.width);
    EXPECT_FLOAT_EQ(box.to_image_y(-5), 0.f);
    EXPECT_FLOAT_EQ(box.to_image_y(p.target + 10), img.height);
  }
}

// The whole decode + preprocessing chain on real photos, against numbers measured
// with torchvision (tests skip where the evaluation data is absent).
TEST(ImagePreprocess, RealImagenetImagesAre227Square) {
  const std::string list = kSharedData + "imagenet-val/labels.txt";
  if (!std::ifstream(list).good()) GTEST_SKIP() << "no " << list;
  const std::vector<LabelledImage> images = read_labelled_images(list, 1000);
  EXPECT_EQ(images.size(), 1300u);
  for (size_t i = 0; i < images.size(); i += 100) {
    const Image img = load_image(images[i].path);
    EXPECT_EQ(img.width, 227) << images[i].path;
    EXPECT_EQ(img.height, 227) << images[i].path;
  }
}

TEST(Labels, ClassIndexJson) {
  const std::string path = temp_path("index.json");
  write_file(path, R"({"1": ["n2", "goldfish"], "0": ["n1", "tench"]})");
  const ClassIndex index = read_class_index_json(path);
  ASSERT_EQ(index.names.size(), 2u);
  EXPECT_EQ(index.names[0], "tench");
  EXPECT_EQ(index.wnids[1], "n2");

  for (const char* bad : {R"({"0": ["n1", "a"], "2": ["n2", "b"]})", R"({"0": ["n1"]})",
                          R"({"x": ["n1", "a"]})", R"([1, 2])", R"({"0": ["n1", "a"],)"}) {
    SCOPED_TRACE(bad);
    write_file(path, bad);
    ErrorKind kind{};
    const std::string msg = error_of([&] { read_class_index_json(path); }, &kind);
    EXPECT_EQ(kind, ErrorKind::Malformed);
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
  }
  std::remove(path.c_str());
}

TEST(Labels, RealClassIndex) {
  const std::string path = kSharedData + "imagenet_class_index.json";
  if (!std::ifstream(path).good()) GTEST_SKIP() << "no " << path;
  const ClassIndex index = read_class_index_json(path);
  ASSERT_EQ(index.names.size(), 1000u);
  EXPECT_EQ(index.wnids[0], "n01440764");
  EXPECT_EQ(index.names[0], "tench");
  EXPECT_EQ(index.wnids[999], "n15075141");
}

TEST(Labels, LabelLines) {
  const std::string path = temp_path("labels.txt");
  write_file(path, "cat\r\n  dog \nhot dog\n\n\n");
  EXPECT_EQ(read_label_lines(path), (std::vector<std::string>{"cat", "dog", "hot dog"}));
  write_file(path, "cat\n\ndog\n");
  const std::string msg = error_of([&] { read_label_lines(path); });
  EXPECT_NE(msg.find("line 2"), std::string::npos) << msg;
  std::remove(path.c_str());
}

TEST(Labels, LabelledImageList) {
  const std::string path = temp_path("list.txt");
  write_file(path, "images/a.JPEG, 472\nimages/b,c.JPEG,7\n\n/abs/x.png, 0\n");
  const std::vector<LabelledImage> images = read_labelled_images(path, 1000);
  ASSERT_EQ(images.size(), 3u);
  EXPECT_EQ(images[0].path, testing::TempDir() + "images/a.JPEG");
  EXPECT_EQ(images[0].label, 472);
  EXPECT_EQ(images[1].path, testing::TempDir() + "images/b,c.JPEG");
  EXPECT_EQ(images[1].label, 7);
  EXPECT_EQ(images[2].path, "/abs/x.png");

  struct Bad {
    const char* text;
    const char* line;
  } bad[] = {{"images/a.JPEG, 1\nimages/b.JPEG 2\n", "line 2"},
             {"images/a.JPEG, -1\n", "line 1"},
             {"a, 1\n\nb, 1000\n", "line 3"},
             {", 4\n", "line 1"},
             {"images/a.JPEG, 3x\n", "line 1"}};
  for (const Bad& b : bad) {
    SCOPED_TRACE(b.text);
    write_file(path, b.text);
    const std::string msg = error_of([&] { read_labelled_images(path, 1000); });
    EXPECT_NE(msg.find(b.line), std::string::npos) << msg;
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
  }
  std::remove(path.c_str());
}

TEST(Labels, CocoIdsMatchTorchvisionTable) {
  std::ifstream f(kFixtures + "coco_categories.txt");
  ASSERT_TRUE(f.good());
  std::string line;
  int index = 0;
  while (std::getline(f, line)) {
    const size_t space = line.find(' ');
    const int id = std::stoi(line.substr(0, space));
    EXPECT_EQ(coco_category_id(index), id) << line;
    EXPECT_EQ(coco_class_name(index), line.substr(space + 1));
    EXPECT_EQ(coco_contiguous_index(id), index);
    ++index;
  }
  EXPECT_EQ(index, kCocoClasses);
  EXPECT_EQ(coco_contiguous_index(12), -1);  // a gap in COCO's ids
  EXPECT_THROW(coco_category_id(80), Error);
}

TEST(Labels, CocoNamesMatchDataset) {
  const std::string path = kSharedData + "coco-val128/names.yaml";
  std::ifstream f(path);
  if (!f.good()) GTEST_SKIP() << "no " << path;
  std::string line;
  int found = 0;
  while (std::getline(f, line)) {
    // "  12: parking meter" under "names:"
    const size_t colon = line.find(':');
    if (line.rfind("  ", 0) != 0 || colon == std::string::npos) continue;
    const int index = std::stoi(line.substr(0, colon));
    EXPECT_EQ(coco_class_name(index), line.substr(colon + 2)) << line;
    ++found;
  }
  EXPECT_EQ(found, kCocoClasses);
}

TEST(Draw, BoxesAndTextLandWhereAsked) {
  Image img;
  img.reset(80, 50);
  std::fill(img.pixels.begin(), img.pixels.end(), 0);
  const Rgb red{255, 0, 0}, white{255, 255, 255}, blue{0, 0, 255};
  draw_rect(img, 10, 20, 40, 45, red, 2);
  auto px = [&](int x, int y) {
    const uint8_t* p = img.row(y) + x * 3;
    return Rgb{p[0], p[1], p[2]};
  };
  auto same = [](Rgb a, Rgb b) { return a.r == b.r && a.g == b.g && a.b == b.b; };
  EXPECT_TRUE(same(px(10, 20), red));
  EXPECT_TRUE(same(px(11, 30), red));   // left edge, 2 px thick
  EXPECT_TRUE(same(px(39, 44), red));   // bottom-right corner is inside [x0, x1)
  EXPECT_TRUE(same(px(12, 30), Rgb{}));  // interior untouched
  EXPECT_TRUE(same(px(40, 44), Rgb{}));  // outside untouched

  draw_text(img, 45, 2, "Hi", white, blue);
  int ink = 0, background = 0;
  for (int y = 2; y < 2 + text_height() + 2; ++y) {
    for (int x = 45; x < 45 + text_width("Hi") + 2; ++x) {
      ink += same(px(x, y), white);
      background += same(px(x, y), blue);
    }
  }
  EXPECT_GT(ink, 10);  // "H" and "i" are a dozen-odd pixels of strokes
  EXPECT_GT(background, ink);
  EXPECT_TRUE(same(px(44, 2), Rgb{}));

  // Clipping: a box and a label that leave the image must not write outside it.
  draw_labelled_box(img, -20.f, -20.f, 200.f, 200.f, "person 0.93\xff", palette_color(0));
}

TEST(Draw, PngRoundTripsAndFailsCleanly) {
  Image img;
  img.reset(33, 21);
  for (size_t i = 0; i < img.pixels.size(); ++i) img.pixels[i] = uint8_t(i * 7);
  draw_labelled_box(img, 3.f, 12.f, 30.f, 20.f, "dog", palette_color(3));
  const std::string path = temp_path("out.png");
  write_png(img, path);
  const Image back = load_image(path);
  EXPECT_EQ(back.width, 33);
  EXPECT_EQ(max_pixel_diff(back, img.pixels), 0);
  EXPECT_FALSE(std::ifstream(path + ".tmp").good());
  std::remove(path.c_str());

  const std::string bad = temp_path("no_such_dir/out.png");
  ErrorKind kind{};
  const std::string msg = error_of([&] { write_png(img, bad); }, &kind);
  EXPECT_EQ(kind, ErrorKind::Io);
  EXPECT_NE(msg.find("no_such_dir"), std::string::npos) << msg;
  EXPECT_FALSE(std::ifstream(bad).good());
}

}  // namespace
}  // namespace repshare
