// Video input (loaders/video.h, loaders/frame_source.h) and `repshare run` on
// video files. Fixtures: tests/fixtures/video, made by scripts/make_video_fixtures.sh
// with the ffmpeg command-line tool; the reference frames are PNGs decoded here by
// stb_image, not by FFmpeg.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/error.h"
#include "loaders/frame_source.h"
#include "loaders/video.h"
#include "tests/cli_runner.h"

namespace repshare {
namespace {

namespace fs = std::filesystem;
const std::string kVideo = std::string(REPSHARE_SOURCE_DIR) + "/tests/fixtures/video/";

std::vector<Image> decode_all(const std::string& path, int* damaged = nullptr) {
  VideoReader video(path);
  std::vector<Image> frames;
  Image img;
  std::string why;
  for (;;) {
    const VideoReader::Status s = video.next(img, &why);
    if (s == VideoReader::Status::End) break;
    if (s == VideoReader::Status::Frame) frames.push_back(img);
    if (s == VideoReader::Status::Damaged && damaged) ++*damaged;
  }
  return frames;
}

int max_abs_difference(const Image& a, const Image& b) {
  int worst = 0;
  for (size_t i = 0; i < a.pixels.size(); ++i) worst = std::max(worst, std::abs(a.pixels[i] - b.pixels[i]));
  return worst;
}

class Video : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!video_input_available()) GTEST_SKIP() << "built without FFmpeg (REPSHARE_VIDEO)";
    dir_ = fs::temp_directory_path() / ("repshare_test_video_" + std::to_string(getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  // The first `fraction` of a fixture's bytes, as a file of its own.
  std::string truncated(const std::string& fixture, double fraction) {
    std::ifstream in(kVideo + fixture, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const fs::path p = dir_ / ("cut_" + fixture);
    std::ofstream(p, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size() * fraction));
    return p.string();
  }
  fs::path dir_;
};

TEST_F(Video, LosslessVideoDecodesToItsSourceFramesExactly) {
  VideoReader video(kVideo + "frames_ffv1.mkv");
  EXPECT_EQ(video.width(), 91);
  EXPECT_EQ(video.height(), 67);
  EXPECT_EQ(video.expected_frames(), 6);
  Image img;
  std::string why;
  for (int i = 0; i < 6; ++i) {
    ASSERT_EQ(video.next(img, &why), VideoReader::Status::Frame) << "frame " << i << ": " << why;
    EXPECT_NEAR(video.frame_seconds(), 0.2 * i, 1e-9);  // 5 frames per second
    const Image source = load_image(kVideo + "source_" + std::to_string(i) + ".png");
    ASSERT_EQ(img.width, source.width);
    ASSERT_EQ(img.height, source.height);
    EXPECT_EQ(img.pixels, source.pixels) << "frame " << i;
  }
  EXPECT_EQ(video.next(img, &why), VideoReader::Status::End);
  EXPECT_EQ(video.next(img, &why), VideoReader::Status::End);  // and stays ended
}

TEST_F(Video, H264FramesMatchTheFfmpegToolsConversion) {
  // B-frames: decode order differs from display order; frames must come out in
  // display order, with the stream's BT.601 limited-range matrix applied.
  const std::vector<Image> frames = decode_all(kVideo + "frames_h264.mp4");
  ASSERT_EQ(frames.size(), 6u);
  for (size_t i = 0; i < frames.size(); ++i) {
    const Image ref = load_image(kVideo + "h264_decoded_" + std::to_string(i) + ".png");
    ASSERT_EQ(frames[i].width, 96);
    ASSERT_EQ(frames[i].height, 72);
    EXPECT_LE(max_abs_difference(frames[i], ref), 1) << "frame " << i;
  }
  // Display order, independently of FFmpeg: each decoded frame is nearest to the
  // source frame of the same index (the scene pans from frame to frame).
  for (size_t i = 0; i < frames.size(); ++i) {
    double best = 1e30;
    size_t best_j = 0;
    for (size_t j = 0; j < frames.size(); ++j) {
      const Image ref = load_image(kVideo + "h264_decoded_" + std::to_string(j) + ".png");
      double d = 0;
      for (size_t k = 0; k < ref.pixels.size(); ++k) d += std::abs(frames[i].pixels[k] - ref.pixels[k]);
      if (d < best) best = d, best_j = j;
    }
    EXPECT_EQ(best_j, i);
  }
}

TEST_F(Video, BadFilesAreNamedWithTheReason) {
  auto error_of = [](const std::string& path) -> std::pair<ErrorKind, std::string> {
    try {
      VideoReader v(path);
    } catch (const Error& e) {
      return {e.kind(), e.what()};
    }
    return {ErrorKind::Argument, "no error"};
  };
  auto missing = error_of((dir_ / "missing.mp4").string());
  EXPECT_EQ(missing.first, ErrorKind::Io);
  EXPECT_NE(missing.second.find("missing.mp4' does not exist"), std::string::npos) << missing.second;

  const fs::path text = dir_ / "notes.mp4";
  std::ofstream(text) << "this is not a video\n";
  auto not_video = error_of(text.string());
  EXPECT_EQ(not_video.first, ErrorKind::Malformed);
  EXPECT_NE(not_video.second.find("notes.mp4' cannot be opened"), std::string::npos) << not_video.second;

  // An MP4 whose index (moov, written at the end) was cut off cannot be opened.
  auto cut = error_of(truncated("frames_h264.mp4", 0.5));
  EXPECT_EQ(cut.first, ErrorKind::Malformed) << cut.second;
  EXPECT_NE(cut.second.find("cut_frames_h264.mp4'"), std::string::npos) << cut.second;
}

TEST_F(Video, TruncatedStreamGivesTheFramesBeforeTheCut) {
  // Matroska streams as it goes: a file cut in the middle opens, and what was
  // written before the cut still decodes, exactly.
  int damaged = 0;
  const std::vector<Image> frames = decode_all(truncated("frames_ffv1.mkv", 0.6), &damaged);
  EXPECT_GE(frames.size(), 2u);
  EXPECT_LT(frames.size(), 6u);
  for (size_t i = 0; i < frames.size(); ++i)
    EXPECT_EQ(frames[i].pixels, load_image(kVideo + "source_" + std::to_string(i) + ".png").pixels);
}

TEST_F(Video, FrameSourceMixesImagesAndVideosAndHonoursTheLimit) {
  FrameSource source({kVideo + "source_0.png", kVideo + "frames_ffv1.mkv"}, 4);
  EXPECT_EQ(source.expected(), 4u);
  Frame f;
  std::string why;
  std::vector<std::string> names;
  while (source.next(f, &why) == FrameSource::Status::Frame) names.push_back(f.name);
  EXPECT_EQ(names, (std::vector<std::string>{kVideo + "source_0.png", kVideo + "frames_ffv1.mkv#0",
                                             kVideo + "frames_ffv1.mkv#1", kVideo + "frames_ffv1.mkv#2"}));
  // A video that cannot be opened is refused before any frame is read.
  EXPECT_THROW(FrameSource({kVideo + "source_0.png", (dir_ / "gone.mkv").string()}, 0), Error);
}

// ---- through the binary ----

std::vector<nlohmann::json> json_lines(const std::string& path) {
  std::vector<nlohmann::json> lines;
  std::ifstream f(path);
  for (std::string line; std::getline(f, line);) lines.push_back(nlohmann::json::parse(line));
  return lines;
}

TEST_F(Video, RunOnAVideoEqualsRunOnItsFrames) {
  const std::string model = std::string(REPSHARE_SOURCE_DIR) + "/tests/fixtures/tiny_detector/model.onnx";
  const std::string from_video = (dir_ / "video.jsonl").string();
  const std::string from_images = (dir_ / "images.jsonl").string();
  CommandResult r = run_repshare("run --models " + model + " --score-threshold 0 --out " +
                                 from_video + " " + kVideo + "frames_ffv1.mkv");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("6 frames (0 skipped"), std::string::npos) << r.output;
  std::string images;
  for (int i = 0; i < 6; ++i) images += " " + kVideo + "source_" + std::to_string(i) + ".png";
  r = run_repshare("run --models " + model + " --score-threshold 0 --out " + from_images + images);
  ASSERT_EQ(r.status, 0) << r.output;

  const auto video_lines = json_lines(from_video), image_lines = json_lines(from_images);
  ASSERT_EQ(video_lines.size(), 6u);
  ASSERT_EQ(image_lines.size(), 6u);
  for (size_t i = 0; i < 6; ++i) {
    EXPECT_EQ(video_lines[i]["frame"], kVideo + "frames_ffv1.mkv#" + std::to_string(i));
    EXPECT_NEAR(video_lines[i]["seconds"].get<double>(), 0.2 * i, 1e-9);
    EXPECT_FALSE(image_lines[i].contains("seconds"));
    EXPECT_FALSE(video_lines[i]["pipelines"].begin()->at("detections").empty());
    EXPECT_EQ(video_lines[i]["pipelines"], image_lines[i]["pipelines"]) << "frame " << i;
  }
}

TEST_F(Video, RunNamesAVideoThatFailsToOpenAndWritesNothing) {
  const std::string model = std::string(REPSHARE_SOURCE_DIR) + "/tests/fixtures/tiny_detector/model.onnx";
  const std::string out = (dir_ / "out.jsonl").string();
  const fs::path text = dir_ / "clip.mp4";
  std::ofstream(text) << "not a video";
  CommandResult r = run_repshare("run --models " + model + " --out " + out + " " +
                                 kVideo + "source_0.png " + text.string());
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("clip.mp4' cannot be opened"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(out));
  EXPECT_FALSE(fs::exists(out + ".tmp"));
}

}  // namespace

// Without FFmpeg a video input is refused by name, with what to do instead.
TEST(VideoUnavailable, RunSaysThisBuildReadsNoVideo) {
  if (video_input_available()) GTEST_SKIP() << "this build reads video";
  const std::string model = std::string(REPSHARE_SOURCE_DIR) + "/tests/fixtures/tiny_detector/model.onnx";
  CommandResult r = run_repshare("run --models " + model + " clip.mp4");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("'clip.mp4' is a video, and this build reads no video"), std::string::npos)
      << r.output;
}

}  // namespace repshare
