#!/usr/bin/env python3
"""Where onnxruntime spends its time on an ONNX file, by op type and by node:
the counterpart of `repshare bench --profile`, with the session set up as
scripts/bench_onnxruntime.py sets it up (same threads, all graph optimizations,
so the node names are those of ORT's fused graph: NCHWc convolutions,
QuickGelu for x * sigmoid(x), layout reorders).

    .venv/bin/python scripts/profile_onnxruntime.py --model models/M.onnx --threads 2
"""
import argparse
import collections
import json
import os
import tempfile

import numpy as np
import onnxruntime as ort


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--nodes", type=int, default=15, help="slowest nodes to list")
    args = ap.parse_args()
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.enable_profiling = True
    so.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "ort")
    sess = ort.InferenceSession(args.model, so, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in inp.shape]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    for _ in range(args.warmup + args.runs):
        sess.run(None, {inp.name: x})
    path = sess.end_profiling()
    with open(path) as f:
        events = json.load(f)
    os.remove(path)
    runs = args.warmup + args.runs  # the profile covers every run; the mean is per run
    by_op, by_node = collections.defaultdict(float), collections.defaultdict(float)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            op = e["args"]["op_name"]
            by_op[op] += e["dur"] / 1000.0 / runs
            by_node[(op, e["name"][: -len("_kernel_time")])] += e["dur"] / 1000.0 / runs
    total = sum(by_op.values())
    print(f"onnxruntime {ort.__version__} on {args.model}, {args.threads} threads: "
          f"{total:.2f} ms of kernels per run (mean of {runs})")
    for op, ms in sorted(by_op.items(), key=lambda t: -t[1]):
        print(f"  {op:<24} {ms:8.3f} ms  {100 * ms / total:5.1f}%")
    print("  slowest nodes:")
    for (op, name), ms in sorted(by_node.items(), key=lambda t: -t[1])[: args.nodes]:
        print(f"    {ms:8.3f} ms  {op:<14} {name}")


if __name__ == "__main__":
    main()
