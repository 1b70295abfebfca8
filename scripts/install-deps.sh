#!/usr/bin/env bash
# Debian packages repshare builds and tests with (run as root), including the
# PyTorch that scripts/ export models and reference outputs with. CUDA is optional
# and not installed here: where /usr/local/cuda/bin/nvcc exists, the CUDA backend
# is compiled too. FFmpeg's libraries give `repshare run` video input (optional:
# without them the build reads images only).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends \
  build-essential cmake ninja-build pkg-config \
  libprotobuf-dev protobuf-compiler libonnx-dev libonnx-testdata \
  libstb-dev libjpeg-dev libopenblas-dev nlohmann-json3-dev \
  libavformat-dev libavcodec-dev libswscale-dev libavutil-dev \
  libgtest-dev libbenchmark-dev \
  python3-torch python3-torchvision python3-venv
# The Python packages on top (timm, effdet, onnxruntime, ...: the exports and
# PyTorch references of the parity tests) go into .venv: scripts/setup.sh.
