#!/usr/bin/env bash
# Fuzzes what repshare reads from users with libFuzzer under AddressSanitizer
# and UndefinedBehaviorSanitizer: the ONNX loading path (tests/fuzz/
# fuzz_load_model.cpp, seeded with the model fixtures and ONNX's node tests from
# libonnx-testdata) and images, .npy files, plans and model sidecars (fuzz_inputs.cpp,
# seeded with the fixture images, feature files and JSON files and the example plans).
#
#   scripts/fuzz.sh [SECONDS] [BUILD_DIR]     (default 300 s per target, build-fuzz)
#
# Needs clang, libomp-dev and libclang-rt-dev (Debian). Findings (crash-*,
# leak-*, timeout-*, oom-*) are written to BUILD_DIR/findings; the exit status
# is non-zero when this run made one (earlier runs' files are kept, not counted).
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
for target in fuzz_load_model fuzz_inputs; do
  clang++ -std=c++17 $sanitize -fsanitize=fuzzer -g -O1 -I. -I"$build/gen" -I/usr/include/stb \
    "tests/fuzz/$target.cpp" "$build/librepshare_lib.a" "$build/libonnx_proto.a" \
    -lprotobuf -lopenblas -ljpeg -fopenmp -o "$build/$target"
done

mkdir -p "$build/findings"
# Findings of earlier runs stay for reference; only this run's fail it.
started="$build/findings/.started"
touch "$started"
# Seeds: every small model the repository and ONNX's node tests have; the
# fixture images, videos' frames, .npy and JSON files, and the example plans.
mkdir -p "$build/corpus_models" "$build/corpus_inputs"
find tests/fixtures /usr/share/libonnx-testdata/data/node -name '*.onnx' -size -200k 2>/dev/null |
  while read -r f; do cp "$f" "$build/corpus_models/$(echo "$f" | md5sum | cut -c1-16).onnx"; done
find tests/fixtures examples/plans \( -name '*.png' -o -name '*.jpg' -o -name '*.npy' -o -name '*.json' \) \
  -size -200k |
  while read -r f; do cp "$f" "$build/corpus_inputs/$(echo "$f" | md5sum | cut -c1-16)"; done

status=0
for target in fuzz_load_model fuzz_inputs; do
  corpus="$build/corpus_models"
  [ "$target" = fuzz_inputs ] && corpus="$build/corpus_inputs"
  echo "fuzz: $target, $(ls "$corpus" | wc -l) seeds, $seconds s"
  # rss_limit: an input that asks for a huge tensor must be refused, not allocated.
  "$build/$target" "$corpus" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 \
    -max_len=200000 -artifact_prefix="$build/findings/$target-" -print_final_stats=1 2>&1 |
    grep -E "^(Done|stat::|==|SUMMARY|.*runtime error)" || true
done
new_findings=$(find "$build/findings" -type f -newer "$started" ! -name .started)
if [ -n "$new_findings" ]; then
  echo "fuzz: new findings:" && echo "$new_findings"
  status=1
fi
exit $status
