#!/usr/bin/env bash
# Makes the random-weight exports and PyTorch reference outputs that the parity
# tests compare the engine with (tests/test_model_parity.cpp: the B0 variants;
# tests/test_detect_app.cpp: D0): MODELS/NAME.onnx (+ NAME.json), the same
# exports as scripts/fetch_models.sh, and MODELS/parity/NAME/ with PyTorch's
# value of every named output for the input N(0,1) from numpy default_rng(1).
# They are too big to commit (16-21 MB each); CTest runs this first
# (test make_parity_models).
#
# Exits 77 (CTest: skipped; the parity tests then skip too) when the Python
# environment is missing (scripts/setup.sh makes it). Any other failure fails.
# Idempotent: an existing export is kept, and its reference too unless the
# export is newer (FORCE=1 remakes all).
# Usage: scripts/make_parity_models.sh   (MODELS: $REPSHARE_MODELS, else models/)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
models="${REPSHARE_MODELS:-$root/models}"
python="${PYTHON:-$root/.venv/bin/python}"

if ! why="$("$python" -c 'import torch, torchvision, timm, effdet, onnx, onnxruntime' 2>&1)"; then
  echo "skipped: $python cannot import torch/torchvision/timm/effdet/onnx/onnxruntime" \
       "(scripts/setup.sh installs them): ${why##*$'\n'}"
  exit 77
fi
mkdir -p "$models/parity"

# export_with_reference NAME SCRIPT ARGS...: MODELS/NAME.onnx from scripts/SCRIPT ARGS, and
# PyTorch's reference outputs in MODELS/parity/NAME/.
export_with_reference() {
  local name="$1" script="$2"; shift 2
  local onnx="$models/$name.onnx" ref="$models/parity/$name"
  if [[ -n "${FORCE:-}" || ! -f "$onnx" || ! -f "$models/$name.json" ]]; then
    "$python" "$root/scripts/$script" "$@" --out "$onnx" | sed -n '1p'
  fi
  # A reference from before the float64 outputs (fp64_file) is remade too.
  if [[ -n "${FORCE:-}" || ! -f "$ref/reference.json" || "$onnx" -nt "$ref/reference.json" ]] ||
     ! grep -q fp64_file "$ref/reference.json"; then
    rm -rf "$ref"
    "$python" "$root/scripts/reference_outputs.py" --model "$onnx" --seed 1 --out "$ref" | tail -n 1
  else
    echo "kept   $ref"
  fi
}

export_with_reference torchvision_b0_rand0 export_efficientnet.py --arch torchvision_b0 --random-weights --seed 0
export_with_reference timm_b0_rand0 export_efficientnet.py --arch timm_b0 --random-weights --seed 0
export_with_reference timm_tf_b0_rand0 export_efficientnet.py --arch timm_tf_b0 --random-weights --seed 0
export_with_reference tf_efficientdet_d0_rand0 export_efficientdet.py --arch tf_efficientdet_d0 --random-weights --seed 0
export_with_reference efficientdet_d0_rand0 export_efficientdet.py --arch efficientdet_d0 --random-weights --seed 0
# effdet's own post-processing of the D0 reference outputs (tests/test_detect_app.cpp).
for d0 in tf_efficientdet_d0_rand0 efficientdet_d0_rand0; do
  if [[ ! -f "$models/parity/$d0/detections_effdet.txt" ]]; then
    "$python" "$root/scripts/effdet_reference.py" parity "$models/parity/$d0" --model "$models/$d0.onnx"
  fi
done
