#include "loaders/video.h"

#include <filesystem>

#include "engine/error.h"

#ifdef REPSHARE_WITH_FFMPEG
extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/error.h>
#include <libavutil/imgutils.h>
#include <libswscale/swscale.h>
}
#endif

namespace repshare {

#ifdef REPSHARE_WITH_FFMPEG

bool video_input_available() { return true; }

namespace {

std::string av_error_text(int code) {
  char buf[AV_ERROR_MAX_STRING_SIZE] = {};
  av_strerror(code, buf, sizeof buf);
  return buf;
}

}  // namespace

struct VideoReader::State {
  AVFormatContext* format = nullptr;
  AVCodecContext* codec = nullptr;
  AVPacket* packet = nullptr;
  AVFrame* decoded = nullptr;
  SwsContext* scaler = nullptr;
  int stream = -1;
  bool flushing = false;  // the end-of-stream packet has been sent to the decoder
  bool ended = false;
  double seconds = 0;  // presentation time of the last frame

  // A stream timestamp in seconds from the stream's start.
  double to_seconds(int64_t pts) const {
    const AVStream* st = format->streams[stream];
    const int64_t start = st->start_time == AV_NOPTS_VALUE ? 0 : st->start_time;
    return (pts - start) * av_q2d(st->time_base);
  }

  ~State() {
    sws_freeContext(scaler);
    av_frame_free(&decoded);
    av_packet_free(&packet);
    avcodec_free_context(&codec);
    avformat_close_input(&format);
  }
};

VideoReader::VideoReader(const std::string& path) : path_(path), state_(new State) {
  check(std::filesystem::exists(path), ErrorKind::Io, "video '", path, "' does not exist");
  // FFmpeg's own log lines would interleave with the JSON lines on stdout's
  // terminal; what goes wrong is reported through the errors and `why` instead.
  av_log_set_level(AV_LOG_FATAL);
  State& s = *state_;
  int r = avformat_open_input(&s.format, path.c_str(), nullptr, nullptr);
  check(r >= 0, ErrorKind::Malformed, "video '", path, "' cannot be opened: ", av_error_text(r));
  r = avformat_find_stream_info(s.format, nullptr);
  check(r >= 0, ErrorKind::Malformed, "video '", path, "': no stream information: ",
        av_error_text(r));
  s.stream = av_find_best_stream(s.format, AVMEDIA_TYPE_VIDEO, -1, -1, nullptr, 0);
  check(s.stream >= 0, ErrorKind::Malformed, "'", path, "' has no video stream");
  const AVCodecParameters* par = s.format->streams[s.stream]->codecpar;
  const AVCodec* decoder = avcodec_find_decoder(par->codec_id);
  check(decoder != nullptr, ErrorKind::Unsupported, "video '", path, "': no decoder for codec '",
        avcodec_get_name(par->codec_id), "' in this FFmpeg");
  s.codec = avcodec_alloc_context3(decoder);
  s.packet = av_packet_alloc();
  s.decoded = av_frame_alloc();
  check(s.codec && s.packet && s.decoded, ErrorKind::Backend, "out of memory opening '", path, "'");
  r = avcodec_parameters_to_context(s.codec, par);
  check(r >= 0, ErrorKind::Malformed, "video '", path, "': bad codec parameters: ",
        av_error_text(r));
  // The frame thread pool would compete with the engine's OpenMP threads.
  s.codec->thread_count = 1;
  r = avcodec_open2(s.codec, decoder, nullptr);
  check(r >= 0, ErrorKind::Malformed, "video '", path, "': cannot open its ",
        avcodec_get_name(par->codec_id), " decoder: ", av_error_text(r));
  check(s.codec->width > 0 && s.codec->height > 0, ErrorKind::Malformed, "video '", path,
        "' has a zero-size picture");
}

VideoReader::~VideoReader() = default;

int VideoReader::width() const { return state_->codec->width; }
int VideoReader::height() const { return state_->codec->height; }
double VideoReader::frame_seconds() const { return state_->seconds; }

long long VideoReader::expected_frames() const {
  const AVStream* st = state_->format->streams[state_->stream];
  if (st->nb_frames > 0) return st->nb_frames;
  if (state_->format->duration > 0 && st->avg_frame_rate.num > 0)
    return static_cast<long long>(state_->format->duration / double(AV_TIME_BASE) *
                                  av_q2d(st->avg_frame_rate) + 0.5);
  return 0;
}

VideoReader::Status VideoReader::next(Image& frame, std::string* why) {
  State& s = *state_;
  while (!s.ended) {
    int r = avcodec_receive_frame(s.codec, s.decoded);
    if (r == 0) {
      const int64_t pts = s.decoded->best_effort_timestamp;
      if (pts != AV_NOPTS_VALUE) s.seconds = s.to_seconds(pts);
      if (s.decoded->decode_error_flags || (s.decoded->flags & AV_FRAME_FLAG_CORRUPT)) {
        if (why) *why = "frame at " + std::to_string(s.seconds) + " s was decoded with errors";
        av_frame_unref(s.decoded);
        return Status::Damaged;
      }
      const int w = s.decoded->width, h = s.decoded->height;
      const AVPixelFormat src_format = static_cast<AVPixelFormat>(s.decoded->format);
      s.scaler = sws_getCachedContext(s.scaler, w, h, src_format, w, h, AV_PIX_FMT_RGB24,
                                      SWS_BICUBIC | SWS_ACCURATE_RND | SWS_FULL_CHR_H_INT,
                                      nullptr, nullptr, nullptr);
      check(s.scaler != nullptr, ErrorKind::Unsupported, "video '", path_,
            "': cannot convert pixel format ", av_get_pix_fmt_name(src_format), " to RGB");
      // The stream's own colour matrix and range (swscale assumes BT.601 limited).
      const int colorspace = s.decoded->colorspace == AVCOL_SPC_UNSPECIFIED
                                 ? SWS_CS_DEFAULT
                                 : static_cast<int>(s.decoded->colorspace);
      const int full_range = s.decoded->color_range == AVCOL_RANGE_JPEG ? 1 : 0;
      sws_setColorspaceDetails(s.scaler, sws_getCoefficients(colorspace), full_range,
                               sws_getCoefficients(SWS_CS_DEFAULT), 1, 0, 1 << 16, 1 << 16);
      frame.reset(w, h);
      uint8_t* dst[4] = {frame.pixels.data(), nullptr, nullptr, nullptr};
      int dst_stride[4] = {3 * w, 0, 0, 0};
      sws_scale(s.scaler, s.decoded->data, s.decoded->linesize, 0, h, dst, dst_stride);
      av_frame_unref(s.decoded);
      return Status::Frame;
    }
    if (r == AVERROR_EOF) {
      s.ended = true;
      break;
    }
    if (r != AVERROR(EAGAIN)) {
      // A decoder that fails outright gives no more frames: end the stream here.
      s.ended = true;
      if (why) *why = "decoder stopped: " + av_error_text(r);
      return Status::Damaged;
    }
    // The decoder wants input.
    if (s.flushing) {
      s.ended = true;
      break;
    }
    r = av_read_frame(s.format, s.packet);
    if (r < 0) {
      // End of file, or a truncated one: drain what the decoder holds.
      s.flushing = true;
      avcodec_send_packet(s.codec, nullptr);
      continue;
    }
    if (s.packet->stream_index != s.stream) {
      av_packet_unref(s.packet);
      continue;
    }
    r = avcodec_send_packet(s.codec, s.packet);
    const double packet_seconds =
        s.packet->pts == AV_NOPTS_VALUE ? s.seconds : s.to_seconds(s.packet->pts);
    av_packet_unref(s.packet);
    if (r < 0 && r != AVERROR(EAGAIN)) {
      if (why) *why = "packet at " + std::to_string(packet_seconds) + " s: " + av_error_text(r);
      return Status::Damaged;
    }
  }
  return Status::End;
}

#else  // no FFmpeg

bool video_input_available() { return false; }

struct VideoReader::State {};

VideoReader::VideoReader(const std::string& path) : path_(path) {
  fail(ErrorKind::Unsupported, "'", path, "' is a video, and this build reads no video: ",
       "rebuild with FFmpeg's libraries (libavformat-dev libavcodec-dev libswscale-dev) ",
       "or extract frames first (ffmpeg -i ", path, " frames/%06d.png)");
}
VideoReader::~VideoReader() = default;
int VideoReader::width() const { return 0; }
int VideoReader::height() const { return 0; }
long long VideoReader::expected_frames() const { return 0; }
double VideoReader::frame_seconds() const { return 0; }
VideoReader::Status VideoReader::next(Image&, std::string*) { return Status::End; }

#endif

}  // namespace repshare
