#!/usr/bin/env python3
"""Reference outputs for an exported model, for the C++ side to compare with.

Rebuilds the PyTorch model from the sidecar's "rebuild" entry (arch, seed,
resolution; the weights' sha256 must match the export's), runs it and
onnxruntime on the same input, and writes to DIR:
  input.bin            the input, raw float32 NCHW
  NAME.bin             PyTorch's value of every named output, raw float32
  NAME.f64.bin         the same network run in float64, raw float64: the value
                       every fp32 implementation (PyTorch's included) approximates
  reference.json       shapes, files, and onnxruntime-vs-PyTorch max abs diff

  scripts/reference_outputs.py --model models/lite0.onnx --seed 1 --out out/ref_lite0
  scripts/reference_outputs.py --model models/lite0.onnx --input img.bin --out out/ref
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import repshare_models as rm  # noqa: E402
from export_common import MAX_RELATIVE_DIFF, fail, sidecar_path  # noqa: E402


def load_input(args, shape):
    if args.input:
        if args.input.endswith(".npy"):
            data = np.load(args.input).astype(np.float32)
        else:
            data = np.fromfile(args.input, dtype=np.float32)
        if data.size != int(np.prod(shape)):
            fail("%s holds %d floats; the model input %s needs %d"
                 % (args.input, data.size, shape, int(np.prod(shape))))
        return data.reshape(shape)
    rng = np.random.default_rng(args.seed)
    return rng.standard_normal(shape).astype(np.float32)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="models/NAME.onnx (with models/NAME.json)")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", help="raw float32 NCHW .bin (or .npy) of the model's input shape")
    src.add_argument("--seed", type=int, help="N(0,1) input from numpy's default_rng(seed)")
    ap.add_argument("--out", required=True, help="output directory")
    args = ap.parse_args(argv)

    side_path = sidecar_path(args.model)
    if not os.path.exists(args.model) or not os.path.exists(side_path):
        fail("%s or its sidecar %s is missing (scripts/fetch_models.sh makes them)" % (args.model, side_path))
    with open(side_path) as f:
        sidecar = json.load(f)
    rebuild = sidecar["rebuild"]
    import torch
    try:
        model = rm.rebuild_from_sidecar(rebuild)
    except rm.ExportError as e:
        fail(str(e))
    shape = sidecar["input"]["shape"]
    x = load_input(args, shape)
    staged = rm.staged(rebuild["arch"], model).eval()
    names = staged.output_names()
    with torch.no_grad():
        torch_out = dict(zip(names, (t.numpy() for t in staged(torch.from_numpy(x)))))
        # PyTorch against itself on another thread count (other summation splits):
        # how reproducible an fp32 result is at all, next to the engine's distance.
        threads = torch.get_num_threads()
        torch.set_num_threads(1 if threads > 1 else 4)
        other_threads = dict(zip(names, (t.numpy() for t in staged(torch.from_numpy(x)))))
        torch.set_num_threads(threads)
    ort_out = rm.run_onnxruntime(args.model, {"input": x})
    # Float64 in place, after every fp32 use of the model: how far PyTorch's own
    # fp32 result is from the exact one is the scale the engine's error is judged on.
    with torch.no_grad():
        exact = staged.double()(torch.from_numpy(x).double())
    exact_out = dict(zip(names, (t.numpy() for t in exact)))
    try:
        diffs = rm.compare(torch_out, ort_out)
    except rm.ExportError as e:
        fail("%s: %s" % (args.model, e))

    os.makedirs(args.out, exist_ok=True)
    x.tofile(os.path.join(args.out, "input.bin"))
    report = {"model": sidecar["model"], "onnx": os.path.abspath(args.model),
              "input": {"file": "input.bin", "shape": shape,
                        "source": args.input or "numpy default_rng(%d).standard_normal" % args.seed},
              "outputs": {}}
    worst = 0.0
    for name in names:
        value = torch_out[name].astype(np.float32)
        value.tofile(os.path.join(args.out, name + ".bin"))
        exact_out[name].astype(np.float64).tofile(os.path.join(args.out, name + ".f64.bin"))
        report["outputs"][name] = {"file": name + ".bin", "shape": list(value.shape),
                                   "ort_max_abs_diff": diffs[name][0],
                                   "max_abs": diffs[name][1],
                                   "fp64_file": name + ".f64.bin",
                                   "torch_vs_fp64_max_abs_diff":
                                       float(np.abs(value.astype(np.float64) - exact_out[name]).max()),
                                   "torch_threads_max_abs_diff":
                                       float(np.abs(value - other_threads[name]).max())}
        worst = max(worst, rm.relative_error(diffs[name]))
        print("%-9s %-20s ort max|diff| %.2e" % (name, list(value.shape), diffs[name][0]))
    with open(os.path.join(args.out, "reference.json"), "w") as f:
        json.dump(report, f, indent=1)
        f.write("\n")
    if worst > MAX_RELATIVE_DIFF:
        fail("onnxruntime and PyTorch disagree (max relative diff %.3g)" % worst)
    print("wrote %d outputs to %s" % (len(names), args.out))


if __name__ == "__main__":
    main()
