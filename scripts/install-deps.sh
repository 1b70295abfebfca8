#!/usr/bin/env bash
# Debian packages repshare builds and tests with (run as root). CUDA is optional
# and not installed here: where /usr/local/cuda/bin/nvcc exists, the CUDA backend
# is compiled too.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends \
  build-essential cmake ninja-build pkg-config \
  libprotobuf-dev protobuf-compiler libonnx-dev libonnx-testdata \
  libstb-dev libopenblas-dev nlohmann-json3-dev \
  libgtest-dev libbenchmark-dev
