// Video files decoded frame by frame with FFmpeg's libraries (libavformat,
// libavcodec, libswscale), an optional build dependency: without them
// (REPSHARE_WITH_FFMPEG unset) opening a video fails with an error saying so.
#pragma once

#include <memory>
#include <string>

#include "loaders/image.h"

namespace repshare {

// True when this build reads video files.
bool video_input_available();

class VideoReader {
 public:
  // Opens the file's best video stream and its decoder. Throws Io for a missing
  // file, Malformed for one FFmpeg cannot open or that has no decodable video
  // stream, Unsupported in a build without FFmpeg; the message names the file.
  explicit VideoReader(const std::string& path);
  ~VideoReader();
  VideoReader(const VideoReader&) = delete;
  VideoReader& operator=(const VideoReader&) = delete;

  enum class Status { Frame, Damaged, End };
  // Decodes the next frame into `frame` as 8-bit RGB at the stream's size.
  // Damaged: the decoder reported errors for this frame or packet (`why` says
  // which); the caller skips it and calls again. End: no more frames.
  Status next(Image& frame, std::string* why);

  int width() const;
  int height() const;
  // Frames the container announces (0 when it does not say), for progress bars.
  long long expected_frames() const;
  // Presentation time of the frame `next` returned last, in seconds.
  double frame_seconds() const;
  const std::string& path() const { return path_; }

 private:
  struct State;
  std::string path_;
  std::unique_ptr<State> state_;
};

}  // namespace repshare
