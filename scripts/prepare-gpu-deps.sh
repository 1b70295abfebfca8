#!/usr/bin/env bash
# Packs the Debian build dependencies the GPU machine may lack (it has CUDA, cmake,
# ninja and PyTorch but no internet) into .gpu/deps.tar.xz, mirroring /usr's
# layout (include/, lib/x86_64-linux-gnu/, bin/, share/cmake/) so the CMake
# package configs copied along find their files. scripts/gpu-check.sh unpacks it
# into .gpu/deps and points CMake and the loader at it when a probe finds the
# system copy missing.
#
#   scripts/prepare-gpu-deps.sh         # from the repo root, on the dev machine
#   then carry .gpu/deps.tar.xz to the GPU machine (about 8 MB; .gpu/ is git-ignored)
#
# Packs: protobuf (headers, libprotobuf, protoc and libprotoc), onnx.proto,
# OpenBLAS (pthread flavour, with libgfortran/libquadmath it needs), GoogleTest,
# Google Benchmark, nlohmann-json and stb headers.
set -euo pipefail

cd "$(dirname "$0")/.."
arch_lib=/usr/lib/x86_64-linux-gnu
# Staged outside the tree: only the ~8 MB archive should travel, not ~55 MB of files.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
stage=$tmp/deps
mkdir -p "$stage" .gpu
rm -f .gpu/deps.tar.xz

# Copies absolute paths under /usr into the stage at their path below /usr
# (symlinks stay links, so the .so names and their targets both go along).
take() {
  local p rel
  for p in "$@"; do
    [ -e "$p" ] || { echo "prepare-gpu-deps: missing $p (install the Debian -dev package)" >&2; exit 1; }
    rel=${p#/usr/}
    mkdir -p "$stage/$(dirname "$rel")"
    cp -a "$p" "$stage/$rel"
  done
}

# protobuf 3.21 (the generated onnx.pb.cc must match these headers and protoc)
take /usr/include/google/protobuf /usr/bin/protoc
take "$arch_lib"/libprotobuf.so "$arch_lib"/libprotobuf.so.32* "$arch_lib"/libprotoc.so.32*
take /usr/include/onnx/onnx.proto
# OpenBLAS: the .so and cblas headers, plus the Fortran runtime it links against
take /usr/include/x86_64-linux-gnu/openblas-pthread "$arch_lib"/openblas-pthread/libopenblas.so
take "$arch_lib"/openblas-pthread/libopenblas.so.0 "$arch_lib"/openblas-pthread/libopenblasp-r0.3.21.so
take "$arch_lib"/libgfortran.so.5* "$arch_lib"/libquadmath.so.0*
# GoogleTest and Google Benchmark, with their CMake package configs
take /usr/include/gtest /usr/include/gmock "$arch_lib"/libgtest.a "$arch_lib"/libgtest_main.a
take "$arch_lib"/libgmock.a "$arch_lib"/libgmock_main.a "$arch_lib"/cmake/GTest
take /usr/include/benchmark "$arch_lib"/libbenchmark.so "$arch_lib"/libbenchmark.so.1* "$arch_lib"/libbenchmark_main.a
take "$arch_lib"/cmake/benchmark
# header-only libraries
take /usr/include/nlohmann /usr/share/cmake/nlohmann_json /usr/include/stb

# A libopenblas.so beside the other libraries lets find_library(openblas) find it
# under the prefix, and the loader find it through one LD_LIBRARY_PATH entry.
ln -sf openblas-pthread/libopenblas.so.0 "$stage/lib/x86_64-linux-gnu/libopenblas.so"
ln -sf openblas-pthread/libopenblas.so.0 "$stage/lib/x86_64-linux-gnu/libopenblas.so.0"

tar -C "$tmp" -cJf .gpu/deps.tar.xz deps
echo "prepare-gpu-deps: $(du -sh "$stage" | cut -f1) of files packed into" \
     "$(du -h .gpu/deps.tar.xz | cut -f1) .gpu/deps.tar.xz"
