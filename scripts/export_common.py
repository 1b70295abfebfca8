"""Shared tail of export_efficientnet.py and export_efficientdet.py: export the
staged model, prove onnxruntime agrees with PyTorch, write the sidecar JSON."""
import json
import os
import sys

import numpy as np
import torch

import repshare_models as rm

# onnxruntime vs PyTorch on the same fp32 graph: differences are summation
# order only. Relative to each output's largest magnitude.
MAX_RELATIVE_DIFF = 1e-4


def fail(message):
    sys.exit("error: " + message)


def sidecar_path(onnx_path):
    return os.path.splitext(onnx_path)[0] + ".json"


def example_input(seed, shape):
    gen = torch.Generator().manual_seed(seed + 12345)
    return torch.randn(shape, generator=gen)


def export_and_verify(args, model, resolution, sidecar):
    """Exports args.out, checks it, writes the sidecar, prints a summary."""
    arch = args.arch
    staged = rm.staged(arch, model).eval()
    names = staged.output_names()
    shape = (args.batch, 3, resolution, resolution)
    x = example_input(args.seed, shape)
    try:
        with torch.no_grad():
            torch_out = dict(zip(names, (t.numpy() for t in staged(x))))
        onnx_model = rm.export_onnx(staged, (x,), args.out, names, opset=args.opset)
        rm.check_static(onnx_model)
    except rm.ExportError as e:
        fail("%s: %s" % (args.out, e))

    ort_out = rm.run_onnxruntime(args.out, {"input": x.numpy()})
    diffs = rm.compare(torch_out, ort_out)
    worst = max(diffs, key=lambda n: rm.relative_error(diffs[n]))
    if rm.relative_error(diffs[worst]) > MAX_RELATIVE_DIFF:
        fail("%s: onnxruntime and PyTorch differ on %s by %.3g (max |value| %.3g)"
             % (args.out, worst, *diffs[worst]))

    name = os.path.splitext(os.path.basename(args.out))[0]
    outputs = {o.name: rm.static_shape(o) for o in onnx_model.graph.output}
    stage_names = [n for n in names if n in rm.STAGE_NAMES or n in rm.BIFPN_NAMES or n == "head"]
    hist = rm.op_histogram(onnx_model)
    full = {"model": name}
    full.update({
        "arch": arch,
        "source": sidecar.pop("source"),
        "input": {"name": "input", "shape": list(shape)},
    })
    full.update(sidecar)
    full["stages"] = [{"name": n, "tensor": n, "shape": outputs[n]} for n in stage_names]
    full["outputs"] = [{"name": n, "shape": outputs[n]} for n in names]
    full["rebuild"] = {
        "script": "scripts/repshare_models.py make_model",
        "arch": arch, "random_weights": bool(args.random_weights), "seed": args.seed,
        "resolution": resolution, "batch": args.batch,
        "weights_sha256": rm.weights_digest(model),
        "note": "fpn fusion rewritten as a weighted sum (repshare_models._weighted_sum_forward)"
        if arch in rm.DETECTOR_ARCHS else "",
    }
    full["export"] = {"opset": args.opset, "torch": torch.__version__,
                      "batchnorm": "kept as BatchNormalization nodes (TrainingMode.PRESERVE)",
                      "ops": hist}
    full["check"] = {"onnxruntime_vs_torch_max_abs_diff": {n: d[0] for n, d in diffs.items()}}
    if not full["rebuild"]["note"]:
        del full["rebuild"]["note"]
    with open(sidecar_path(args.out), "w") as f:
        json.dump(full, f, indent=1)
        f.write("\n")

    size_mb = os.path.getsize(args.out) / 1e6
    print("%s: %.1f MB, %s" % (args.out, size_mb, full["source"]))
    print("  ops: %s" % rm.pretty_ops(hist))
    for n in names:
        ref = torch_out[n]
        print("  %-9s %-20s std %-9.4g ort max|diff| %.2e" % (n, outputs[n], float(np.std(ref)), diffs[n][0]))
    return full
