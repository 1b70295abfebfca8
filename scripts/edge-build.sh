#!/usr/bin/env bash
# The edge build: a fully static, CPU-only aarch64 `repshare` cross-compiled with
# Debian's g++-aarch64-linux-gnu (CMake preset edge-aarch64-static), then a smoke
# test that runs it under qemu-aarch64-static next to a native x86_64 build on
# the committed tiny EfficientNet fixture and fails unless both give the same
# top-5 classes, probabilities and logits within 1e-4 (logits relative above 1;
# the two builds take different SIMD paths, so not bitwise) and the same `inspect` report.
#
#   scripts/edge-build.sh NATIVE_REPSHARE [BUILD_DIR]     (default build-edge)
#
# As root it first installs what is missing (the cross compiler, qemu-user-static
# and the arm64 -dev libraries through Debian multiarch); CI runs it that way.
set -euo pipefail
cd "$(dirname "$0")/.."

native=${1:?usage: scripts/edge-build.sh NATIVE_REPSHARE [BUILD_DIR]}
build_dir=${2:-build-edge}
[ -x "$native" ] || { echo "edge-build: native binary '$native' is not executable" >&2; exit 1; }

# arm64 libraries co-install with the amd64 -dev packages of install-deps.sh
# (same versions: Debian's Multi-Arch: same); the headers are shared.
packages=(g++-aarch64-linux-gnu qemu-user-static file
          libprotobuf-dev:arm64 libopenblas-dev:arm64 libjpeg62-turbo-dev:arm64)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { echo "edge-build: missing ${missing[*]}; run as root to install" >&2; exit 1; }
  export DEBIAN_FRONTEND=noninteractive
  dpkg --print-foreign-architectures | grep -qx arm64 || dpkg --add-architecture arm64
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

start=$(date +%s)
cmake --preset edge-aarch64-static -B "$build_dir"
cmake --build "$build_dir" -j2 --target repshare
echo "edge-build: cross build took $(( $(date +%s) - start )) s"

edge="$build_dir/repshare"
info=$(file -b "$edge")
echo "edge-build: $edge: $info ($(stat -c %s "$edge") bytes)"
if [[ "$info" != *"ARM aarch64"* || "$info" != *"statically linked"* ]]; then
  echo "edge-build: FAIL: $edge is not a statically linked aarch64 executable" >&2
  exit 1
fi

model=tests/fixtures/tiny_tf_efficientnet/model.onnx
images=(tests/fixtures/images/wide.jpg tests/fixtures/images/tall.png data/samples/frame_000.jpg)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for run in native edge; do
  if [ $run = native ]; then cmd=("$native"); else cmd=(qemu-aarch64-static "$edge"); fi
  "${cmd[@]}" classify --model "$model" "${images[@]}" --json --top 5 \
    --logits-out "$work/$run.f32" > "$work/$run.json"
  "${cmd[@]}" inspect "$model" > "$work/$run.inspect"
done

if ! diff -u "$work/native.inspect" "$work/edge.inspect"; then
  echo "edge-build: FAIL: 'repshare inspect $model' differs between native and aarch64" >&2
  exit 1
fi

python3 - "$work" <<'PY'
import json, struct, sys
work = sys.argv[1]
tol = 1e-4
native, edge = (json.load(open(f"{work}/{r}.json")) for r in ("native", "edge"))
def floats(run):
    data = open(f"{work}/{run}.f32", "rb").read()
    return struct.unpack(f"{len(data) // 4}f", data)
logits_native, logits_edge = floats("native"), floats("edge")
errors = []
if len(native) != len(edge) or len(logits_native) != len(logits_edge) or not logits_native:
    errors.append(f"result counts differ: {len(native)} vs {len(edge)} images, "
                  f"{len(logits_native)} vs {len(logits_edge)} logits")
for n, e in zip(native, edge):
    classes_n = [t["class"] for t in n["top"]]
    classes_e = [t["class"] for t in e["top"]]
    if classes_n != classes_e:
        errors.append(f"{n['input']}: top-5 classes {classes_n} (native) vs {classes_e} (aarch64)")
    for tn, te in zip(n["top"], e["top"]):
        if abs(tn["prob"] - te["prob"]) > tol:
            errors.append(f"{n['input']}: class {tn['class']} prob {tn['prob']} vs {te['prob']}")
# Logits relative to their size above 1: random-weight logits reach ~80 on the
# sample frame, where float32 rounding alone differs by ~1e-5.
worst = max((abs(a - b) / max(1.0, abs(a)) for a, b in zip(logits_native, logits_edge)),
            default=float("inf"))
if worst > tol:
    errors.append(f"logits differ by up to {worst:.3g} (relative above 1; > {tol})")
for n in native:
    top = ", ".join(f"{t['class']}:{t['prob']:.4f}" for t in n["top"])
    print(f"edge-build: {n['input']}: {top}")
if errors:
    print("edge-build: FAIL: the aarch64 build disagrees with the native one:\n  " +
          "\n  ".join(errors), file=sys.stderr)
    sys.exit(1)
print(f"edge-build: OK: {len(native)} images, same top-5 classes; "
      f"{len(logits_native)} logits agree within {worst:.2g} (relative above 1; tolerance {tol}); "
      "same inspect report")
PY
