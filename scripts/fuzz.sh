#!/usr/bin/env bash
# Fuzzes the ONNX loading path (tests/fuzz/fuzz_load_model.cpp) with libFuzzer
# under AddressSanitizer and UndefinedBehaviorSanitizer, seeded with the model
# fixtures in tests/fixtures and ONNX's node tests (libonnx-testdata).
#
#   scripts/fuzz.sh [SECONDS] [BUILD_DIR]     (default 300 s, build-fuzz)
#
# Needs clang, libomp-dev and libclang-rt-dev (Debian). Findings (crash-*,
# leak-*, timeout-*, oom-*) are written to BUILD_DIR/findings; the exit status
# is non-zero when there is one.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-300}
build=${2:-build-fuzz}
sanitize="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DCMAKE_CXX_FLAGS="$sanitize -fsanitize=fuzzer-no-link" -DCMAKE_C_FLAGS="$sanitize" \
  -DREPSHARE_CUDA=OFF -DREPSHARE_VIDEO=OFF -DREPSHARE_TESTS=OFF -DREPSHARE_BENCHMARKS=OFF >/dev/null
cmake --build "$build" -j2 --target repshare_lib
clang++ -std=c++17 $sanitize -fsanitize=fuzzer -g -O1 -I. -I"$build/gen" \
  tests/fuzz/fuzz_load_model.cpp "$build/librepshare_lib.a" "$build/libonnx_proto.a" \
  -lprotobuf -lopenblas -fopenmp -o "$build/fuzz_load_model"

corpus="$build/corpus"
mkdir -p "$corpus" "$build/findings"
# Seeds: every small model the repository and ONNX's node tests have.
find tests/fixtures /usr/share/libonnx-testdata/data/node -name '*.onnx' -size -200k 2>/dev/null | while read -r f; do
  cp "$f" "$corpus/$(echo "$f" | md5sum | cut -c1-16).onnx"
done
echo "fuzz: $(ls "$corpus" | wc -l) seeds, $seconds s"
# rss_limit: a model that asks for a huge tensor must be refused, not allocated.
"$build/fuzz_load_model" "$corpus" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 \
  -max_len=200000 -artifact_prefix="$build/findings/" -print_final_stats=1 2>&1 | tail -n 25
if ls "$build/findings"/* >/dev/null 2>&1; then
  echo "fuzz: findings in $build/findings:" && ls "$build/findings"
  exit 1
fi
