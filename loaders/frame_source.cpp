#include "loaders/frame_source.h"

#include <algorithm>
#include <cctype>
#include <filesystem>

#include "engine/error.h"

namespace repshare {
namespace fs = std::filesystem;

namespace {

enum class FileKind { Image, Video, Other };

// What a file is by its extension, in any case: one of the image formats the
// decoder is built for (loaders/image.cpp), or a container FFmpeg reads.
FileKind kind_of(const fs::path& p) {
  std::string e = p.extension().string();
  std::transform(e.begin(), e.end(), e.begin(), [](unsigned char c) { return std::tolower(c); });
  for (const char* x : {".jpg", ".jpeg", ".png", ".ppm", ".pgm"})
    if (e == x) return FileKind::Image;
  for (const char* x : {".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts",
                        ".h264", ".hevc", ".mjpeg"})
    if (e == x) return FileKind::Video;
  return FileKind::Other;
}

}  // namespace

FrameSource::FrameSource(const std::vector<std::string>& inputs, size_t limit) : limit_(limit) {
  for (const std::string& in : inputs) {
    if (kind_of(in) == FileKind::Video) {
      VideoReader probe(in);  // throws, naming the file, when it cannot be read
      inputs_.push_back({in, true});
      expected_ += static_cast<size_t>(std::max(0LL, probe.expected_frames()));
      continue;
    }
    if (!fs::is_directory(in)) {
      // A missing or unreadable image is skipped with a warning when reached,
      // like a frame that fails mid-stream.
      inputs_.push_back({in, false});
      ++expected_;
      continue;
    }
    std::vector<std::string> found;
    for (const auto& e : fs::directory_iterator(in))
      if (e.is_regular_file() && kind_of(e.path()) == FileKind::Image)
        found.push_back(e.path().string());
    check(!found.empty(), ErrorKind::Argument, "folder '", in,
          "' holds no .jpg/.png/.ppm images (give video files by name)");
    std::sort(found.begin(), found.end());
    for (std::string& f : found) inputs_.push_back({std::move(f), false});
    expected_ += found.size();
  }
  if (limit_ > 0) expected_ = std::min(expected_, limit_);
}

FrameSource::~FrameSource() = default;

std::vector<std::string> FrameSource::files() const {
  std::vector<std::string> paths;
  for (const Input& in : inputs_) paths.push_back(in.path);
  return paths;
}

FrameSource::Status FrameSource::next(Frame& frame, std::string* why) {
  while (input_ < inputs_.size() && (limit_ == 0 || delivered_ < limit_)) {
    const Input& in = inputs_[input_];
    if (!in.video) {
      ++input_;
      ++delivered_;
      frame.name = in.path;
      frame.seconds = -1;
      try {
        frame.image = load_image(in.path);
      } catch (const Error& e) {
        if (why) *why = e.what();
        return Status::Skipped;
      }
      return Status::Frame;
    }
    if (!video_) {
      video_.reset(new VideoReader(in.path));
      video_frame_ = 0;
    }
    const VideoReader::Status s = video_->next(frame.image, why);
    if (s == VideoReader::Status::End) {
      video_.reset();
      ++input_;
      continue;
    }
    ++delivered_;
    frame.name = in.path + "#" + std::to_string(video_frame_++);
    frame.seconds = video_->frame_seconds();
    return s == VideoReader::Status::Frame ? Status::Frame : Status::Skipped;
  }
  return Status::End;
}

}  // namespace repshare
