#!/usr/bin/env python3
"""Exports effdet's EfficientDet-D0 network (no anchors/NMS: bench_task='') to
ONNX at 512x512 with named outputs: backbone stages stem, stage1..stage7,
BiFPN levels bifpn_p3..bifpn_p7, class_p3..class_p7 and box_p3..box_p7; plus
the sidecar models/NAME.json with the anchor configuration.

  scripts/export_efficientdet.py --arch tf_efficientdet_d0 --random-weights --seed 0 \\
      --out models/tf_efficientdet_d0_rand0.onnx
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import repshare_models as rm  # noqa: E402
from export_common import export_and_verify, fail  # noqa: E402


def detection_sidecar(model):
    cfg = model.config
    # effdet normalises with the ImageNet statistics for D0 (both variants);
    # its eval transform letterboxes: resize the longer side to image_size
    # (bilinear), pad bottom/right with the mean colour.
    return {
        "task": "detection",
        "preprocess": {"letterbox": True, "resize": cfg.image_size[0], "crop": None,
                       "interpolation": "bilinear", "fill": "mean",
                       "note": "scale the longer side to resize (keep aspect), pad bottom/right "
                               "with the mean colour; box outputs are in that scaled frame",
                       "mean": rm.IMAGENET_MEAN, "std": rm.IMAGENET_STD},
        "anchors": {
            "min_level": cfg.min_level, "max_level": cfg.max_level,
            "num_scales": cfg.num_scales,
            "aspect_ratios": [list(r) for r in cfg.aspect_ratios],
            "anchor_scale": cfg.anchor_scale,
            "image_size": list(cfg.image_size),
        },
        "num_classes": cfg.num_classes,
        "class_outputs": ["class_p%d" % lvl for lvl in range(cfg.min_level, cfg.max_level + 1)],
        "box_outputs": ["box_p%d" % lvl for lvl in range(cfg.min_level, cfg.max_level + 1)],
        "box_order": "ty, tx, th, tw per anchor (TF order), 9 anchors x 4 channels",
        "class_order": "anchor-major: channel = anchor * num_classes + class; sigmoid logits",
        "postprocess": {"max_detection_points": cfg.max_detection_points,
                        "max_det_per_image": cfg.max_det_per_image,
                        "nms_iou": 0.5, "soft_nms": cfg.soft_nms},
    }


def check_fusion_rewrite(model, resolution, seed):
    """The weighted-sum BiFPN fusion must agree with effdet's own forward."""
    import types
    import torch
    from effdet.efficientdet import FpnCombine
    from export_common import example_input
    x = example_input(seed, (1, 3, resolution, resolution))
    with torch.no_grad():
        ours = model(x)
        combines = [m for m in model.modules() if isinstance(m, FpnCombine)]
        for m in combines:
            m.forward = types.MethodType(FpnCombine.forward, m)
        theirs = model(x)
        for m in combines:
            m.forward = types.MethodType(rm._weighted_sum_forward, m)
    worst = 0.0
    for a, b in zip(ours[0] + ours[1], theirs[0] + theirs[1]):
        worst = max(worst, float((a - b).abs().max() / b.abs().max().clamp(min=1e-6)))
    print("  weighted-sum fusion vs effdet FpnCombine: max relative diff %.2e" % worst)
    if worst > 1e-4:
        fail("weighted-sum BiFPN fusion differs from effdet's by %.3g" % worst)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", required=True, choices=rm.DETECTOR_ARCHS)
    ap.add_argument("--random-weights", action="store_true",
                    help="seeded random weights (the only option here: no hub for checkpoints)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--opset", type=int, default=13)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    resolution = 512
    try:
        model, source = rm.make_model(args.arch, args.random_weights, args.seed, resolution, args.batch)
    except rm.ExportError as e:
        fail(str(e))
    check_fusion_rewrite(model, resolution, args.seed)
    sidecar = {"source": source}
    sidecar.update(detection_sidecar(model))
    export_and_verify(args, model, resolution, sidecar)


if __name__ == "__main__":
    main()
