#!/usr/bin/env python3
"""Times onnxruntime on an ONNX file (the anchor `repshare bench --vs-onnxruntime`
compares with): batch as in the file, random N(0,1) input, the same thread count.
Prints one JSON line: {"times_ms": [...], "threads": T, "version": ...}.

Only the model's task outputs are fetched (--outputs), as repshare's bench does,
so both sides compute the same nodes.
"""
import argparse
import json
import time

import numpy as np
import onnxruntime as ort


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--outputs", default="", help="comma-separated output names")
    args = ap.parse_args()
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(args.model, so, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    x = np.random.default_rng(0).standard_normal(inp.shape).astype(np.float32)
    outputs = [o for o in args.outputs.split(",") if o] or None
    for _ in range(args.warmup):
        sess.run(outputs, {inp.name: x})
    times = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        sess.run(outputs, {inp.name: x})
        times.append((time.perf_counter() - t0) * 1e3)
    print(json.dumps({"times_ms": times, "threads": args.threads, "version": ort.__version__}))


if __name__ == "__main__":
    main()
