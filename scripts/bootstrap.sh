#!/usr/bin/env bash
# Sets up a fresh Debian machine (as root): system packages, the Python venv for
# exports and references, the Release build in build/, models/ (real
# EfficientNet-Lite weights + random-weight B0/D0 exports) and out/, the ignored
# folder the README's commands write to (repshare makes no folder for an output file:
# a mistyped path fails at once instead).
#
#   scripts/bootstrap.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/setup.sh
cuda=()
[ -x /usr/local/cuda/bin/nvcc ] && cuda=(-DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc)
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release "${cuda[@]}"
cmake --build build -j"$(nproc)"
bash scripts/fetch_models.sh
mkdir -p out
