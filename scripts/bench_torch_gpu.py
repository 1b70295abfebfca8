#!/usr/bin/env python3
"""PyTorch anchor for GPU benchmarks (run by scripts/gpu-check.sh on the GPU
machine): batch-1 latency of EfficientNet-B0 (timm) or EfficientDet-D0 (effdet,
network only) in eager mode and under torch.compile(mode="reduce-overhead"),
fp32 and fp16. Random weights: latency does not depend on them.

PyTorch's fp32 convolutions run in TF32 on tensor cores by default
(torch.backends.cudnn.allow_tf32): 10-bit mantissas for the products, where
repshare's fp32 keeps fp32 throughout. compile_fp32_strict is torch.compile with
TF32 off, the same arithmetic as repshare's fp32.

  scripts/bench_torch_gpu.py --model b0 --out b0.json [--no-compile]

Prints and writes {"model", "device", "torch", "results": {"eager_fp32": {"median_ms",
"p90_ms", "runs"}, "compile_fp32", "compile_fp32_strict", "eager_fp16", ...},
"errors": {...}}.
"""
import argparse
import json
import statistics
import sys
import time


def build(name):
    if name == "b0":
        import timm
        return timm.create_model("efficientnet_b0", pretrained=False), (1, 3, 224, 224)
    import effdet
    # pretrained_backbone=False: the default fetches ImageNet backbone weights from a hub.
    model = effdet.create_model("tf_efficientdet_d0", pretrained=False, pretrained_backbone=False,
                                bench_task="")
    return model, (1, 3, 512, 512)


def timed(fn, x, runs, warmup):
    import torch
    for _ in range(warmup):
        fn(x)
    torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn(x)
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return {"median_ms": statistics.median(times), "p90_ms": times[int(0.9 * (len(times) - 1))],
            "runs": runs}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=["b0", "d0"], required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--no-compile", action="store_true")
    args = ap.parse_args()
    import torch
    torch.backends.cudnn.benchmark = True
    model, shape = build(args.model)
    model = model.eval().cuda()
    report = {"model": args.model, "device": torch.cuda.get_device_name(0),
              "torch": torch.__version__, "input": list(shape), "results": {}, "errors": {}}
    for dtype_name, dtype in [("fp32", torch.float32), ("fp16", torch.float16)]:
        m = model.to(dtype)
        x = torch.randn(shape, device="cuda", dtype=dtype)
        modes = [("eager_" + dtype_name, False, False)]  # (key, compiled, TF32 off)
        if not args.no_compile:
            modes.append(("compile_" + dtype_name, True, False))
            if dtype_name == "fp32":
                modes.append(("compile_fp32_strict", True, True))
        for key, compiled, strict in modes:
            torch.backends.cudnn.allow_tf32 = not strict
            try:
                with torch.inference_mode():
                    fn = m
                    if compiled:
                        # A fresh compile: kernels and CUDA graphs chosen under this
                        # mode's TF32 setting, not reused from the previous mode's.
                        torch._dynamo.reset()
                        fn = torch.compile(m, mode="reduce-overhead")
                    report["results"][key] = timed(fn, x, args.runs, 20 if compiled else 10)
            except Exception as e:  # record and go on: one failing mode must not hide the rest
                report["errors"][key] = "%s: %s" % (type(e).__name__, str(e)[:300])
            torch.backends.cudnn.allow_tf32 = True
            print(key, report["results"].get(key, report["errors"].get(key)), flush=True)
            # Written after every mode: a time limit that stops a slow compile keeps the rest.
            with open(args.out, "w") as f:
                json.dump(report, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
