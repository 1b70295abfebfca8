#!/usr/bin/env bash
# Writes tests/fixtures/video/: small videos made from data/samples with the
# ffmpeg command-line tool (Debian's ffmpeg), and the frames they must decode to,
# for the video input tests (tests/test_video.cpp).
#
#   source_N.png        the frames, 91x67 (odd: rows are not 4-byte aligned)
#   frames_ffv1.mkv     those frames, lossless (FFV1): decodes to source_N.png exactly
#   frames_h264.mp4     the frames at 96x72 (4:2:0 needs even sizes), H.264 yuv420p
#   h264_decoded_N.png  frames_h264.mp4 decoded to RGB by the ffmpeg CLI with the
#                       conversion flags loaders/video.cpp uses
#
#   bash scripts/make_video_fixtures.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out=tests/fixtures/video
mkdir -p "$out"
rm -f "$out"/*.png "$out"/*.mkv "$out"/*.mp4
ff=(ffmpeg -hide_banner -loglevel error -y)
flags=bicubic+accurate_rnd+full_chroma_int
"${ff[@]}" -framerate 5 -start_number 0 -i data/samples/frame_%03d.jpg \
  -vf scale=91:67:flags=$flags -pix_fmt rgb24 -start_number 0 "$out/source_%d.png"
"${ff[@]}" -framerate 5 -start_number 0 -i "$out/source_%d.png" -c:v ffv1 "$out/frames_ffv1.mkv"
# -bitexact and one thread keep the encoded bytes reproducible.
"${ff[@]}" -framerate 5 -start_number 0 -i data/samples/frame_%03d.jpg \
  -vf scale=96:72:flags=$flags -c:v libx264 -pix_fmt yuv420p -crf 20 -threads 1 \
  -bitexact -x264-params bframes=2 "$out/frames_h264.mp4"
"${ff[@]}" -i "$out/frames_h264.mp4" -sws_flags $flags -pix_fmt rgb24 -start_number 0 \
  "$out/h264_decoded_%d.png"
ls -l "$out"
