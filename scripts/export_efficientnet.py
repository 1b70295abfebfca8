#!/usr/bin/env python3
"""Exports an EfficientNet-B0 / EfficientNet-Lite classifier to ONNX with every
stage (stem, stage1..stage7, head, logits) as a named graph output, plus the
sidecar models/NAME.json that the engine reads (preprocessing, stage shapes,
how to rebuild the PyTorch model).

  scripts/export_efficientnet.py --arch lite0 --out models/lite0.onnx
  scripts/export_efficientnet.py --arch timm_tf_b0 --random-weights --seed 0 \\
      --out models/timm_tf_b0_rand0.onnx
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import repshare_models as rm  # noqa: E402
from export_common import export_and_verify, fail  # noqa: E402


def preprocess_entry(arch, model, resolution):
    """The reference eval transform for these weights (pixels scaled to 0..1)."""
    if arch == "torchvision_b0":
        # torchvision EfficientNet_B0_Weights.IMAGENET1K_V1.transforms():
        # resize 256 bicubic, centre crop 224.
        resize = resolution * 256 // 224
        return {"resize": resize, "crop": resolution, "interpolation": "bicubic",
                "mean": rm.IMAGENET_MEAN, "std": rm.IMAGENET_STD}
    if arch in ("timm_b0", "timm_tf_b0"):
        cfg = model.pretrained_cfg
        return {"resize": int(resolution / cfg["crop_pct"]), "crop": resolution,
                "interpolation": cfg["interpolation"], "mean": list(cfg["mean"]),
                "std": list(cfg["std"]), "crop_pct": cfg["crop_pct"]}
    # TF EfficientNet(-Lite) eval preprocessing (preprocessing.py
    # _decode_and_center_crop): centre crop of image_size / (image_size + 32) of
    # the shorter side, bicubic resize to image_size; i.e. resize to size + 32.
    return {"resize": resolution + 32, "crop": resolution, "interpolation": "bicubic",
            "mean": rm.LITE_MEAN, "std": rm.LITE_STD,
            "note": "TF Lite release: (pixel_0_255 - 127) / 128"}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", required=True, choices=rm.CLASSIFIER_ARCHS)
    ap.add_argument("--random-weights", action="store_true",
                    help="seeded random weights and BN statistics instead of pretrained ones")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resolution", type=int, help="input height = width (default: the arch's own)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--opset", type=int, default=13)
    ap.add_argument("--out", required=True, help="models/NAME.onnx; the sidecar is models/NAME.json")
    args = ap.parse_args(argv)

    resolution = args.resolution or rm.default_resolution(args.arch)
    if args.arch in rm.LITE_RESOLUTION and resolution != rm.LITE_RESOLUTION[args.arch]:
        # The package's SAME padding is computed for its own image size at build time.
        fail("%s is built for %dx%d input (its SAME pads are static); drop --resolution"
             % (args.arch, rm.LITE_RESOLUTION[args.arch], rm.LITE_RESOLUTION[args.arch]))
    try:
        model, source = rm.make_model(args.arch, args.random_weights, args.seed, resolution, args.batch)
    except rm.ExportError as e:
        fail(str(e))
    sidecar = {
        "arch": args.arch,
        "source": source,
        "preprocess": preprocess_entry(args.arch, model, resolution),
        "task": "classification",
        "output": "logits",
        "num_classes": 1000,
    }
    export_and_verify(args, model, resolution, sidecar)


if __name__ == "__main__":
    main()
