#!/usr/bin/env python3
"""Times onnxruntime on an ONNX file (the anchor `repshare bench --vs-onnxruntime`
compares with): batch as in the file, random N(0,1) input or the .npy given by
--input (the engine's preprocessed image), the same thread count.
Prints one JSON line: {"times_ms": [...], "threads": T, "version": ..., "input_sum": S}
(S lets the caller check that the input it passed is the one timed).

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
    ap.add_argument("--input", default="", help=".npy input (default: N(0,1) noise)")
    args = ap.parse_args()
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(args.model, so, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    if args.input:
        x = np.load(args.input).astype(np.float32).reshape(inp.shape)
    else:
        x = np.random.default_rng(0).standard_normal(inp.shape).astype(np.float32)
    outputs = [o for o in args.outputs.split(",") if o] or None
    for _ in range(args.warmup):
        sess.run(outputs, {inp.name: x})
    times = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        sess.run(outputs, {inp.name: x})
        times.append((time.perf_counter() - t0) * 1e3)
    print(json.dumps({"times_ms": times, "threads": args.threads, "version": ort.__version__,
                      "input_sum": float(np.sum(x, dtype=np.float64))}))


if __name__ == "__main__":
    main()
