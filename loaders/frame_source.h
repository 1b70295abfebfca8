// The frames `repshare run` processes, in order: image files as given, folders of
// images (sorted by name), and video files frame by frame (loaders/video.h).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "loaders/image.h"
#include "loaders/video.h"

namespace repshare {

struct Frame {
  std::string name;     // the image's path, or "VIDEO#N" for frame N (from 0) of a video
  double seconds = -1;  // presentation time within its video; -1 for images
  Image image;
};

class FrameSource {
 public:
  // Expands folders and opens every video once, so a missing input, an empty
  // folder or a video that cannot be opened is an error (naming it) before the
  // first frame runs. limit > 0: stop after that many frames (skipped ones count).
  FrameSource(const std::vector<std::string>& inputs, size_t limit);
  ~FrameSource();

  enum class Status { Frame, Skipped, End };
  // Skipped: an image file that does not decode or a damaged video frame;
  // frame.name says which and *why says why. The caller warns and goes on.
  Status next(Frame& frame, std::string* why);
  // Frames expected in all (images, plus what video containers announce), for
  // progress bars; an estimate where a container does not say.
  size_t expected() const { return expected_; }
  // The image and video files it reads, folders expanded.
  std::vector<std::string> files() const;

 private:
  struct Input {
    std::string path;
    bool video = false;
  };
  std::vector<Input> inputs_;
  size_t limit_ = 0;
  size_t expected_ = 0;
  size_t delivered_ = 0;  // frames returned, skipped ones included
  size_t input_ = 0;      // the input being read
  std::unique_ptr<VideoReader> video_;
  long long video_frame_ = 0;  // index of the video's next frame
};

}  // namespace repshare
