#!/usr/bin/env bash
# Creates .venv (seeing Debian's python3-torch/torchvision through
# --system-site-packages) and installs scripts/requirements.txt. Idempotent.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/.venv"
if [[ ! -x "$venv/bin/python" ]]; then
  /usr/bin/python3 -m venv --system-site-packages "$venv"
fi
"$venv/bin/python" -m pip install --quiet -r "$root/scripts/requirements.txt"
"$venv/bin/python" -c 'import torch, torchvision, timm, effdet, onnx, onnxruntime, efficientnet_lite_pytorch; print("venv ok: torch", torch.__version__, "timm", timm.__version__, "onnx", onnx.__version__, "onnxruntime", onnxruntime.__version__)'
