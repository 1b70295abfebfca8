#!/usr/bin/env python3
"""Regenerates tests/fixtures/: small ONNX models cut from the real building
blocks (timm's MBConv block, effdet's BiFPN node, a narrow timm EfficientNet)
with seeded random weights and BN statistics, plus PyTorch reference outputs
stored like ONNX's own node tests:

  tests/fixtures/<case>/model.onnx
  tests/fixtures/<case>/test_data_set_0/input_<i>.pb, output_<i>.pb

Every reference is PyTorch's output; the script also runs onnxruntime on the
exported model and fails if the two differ by more than 1e-4 relative.
"""
import argparse
import os
import shutil
import sys
import types
from functools import partial

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import repshare_models as rm  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_FIXTURE_BYTES = 200 * 1024
MAX_RELATIVE_DIFF = 1e-4


# ------------------------------------------------------------------ cases

def mbconv_block(stride, tf_same):
    """timm's InvertedResidual with SE, as efficientnet_b0 / tf_efficientnet_b0 build it:
    16 -> 16 channels, expand 6, SE reduced to in_chs/4 = 4 channels, swish.
    Stride 1 uses k3 and has the residual; stride 2 uses k5 on an even size,
    where TF SAME pads (1, 2) asymmetrically."""
    from timm.layers import BatchNormAct2d
    from timm.models._efficientnet_blocks import InvertedResidual, SqueezeExcite
    exp_ratio = 6.0
    eps = 1e-3 if tf_same else 1e-5
    block = InvertedResidual(
        16, 16 if stride == 1 else 24, dw_kernel_size=3 if stride == 1 else 5, stride=stride,
        pad_type="same" if tf_same else "", exp_ratio=exp_ratio, act_layer=nn.SiLU,
        norm_layer=partial(BatchNormAct2d, eps=eps),
        se_layer=partial(SqueezeExcite, rd_ratio=0.25 / exp_ratio))
    size = 9 if stride == 1 else 10
    return block, [(1, 16, size, size)]


class BiFpnNode(nn.Module):
    """One effdet BiFPN node: FpnCombine (resample, fast normalised fusion)
    followed by swish -> separable conv (bias) -> BN, built exactly as
    effdet.efficientdet.BiFpnLayer builds its Fnodes (tf_efficientdet_d0 config)."""

    def __init__(self, feature_info, inputs_offsets, output_size, channels):
        super().__init__()
        from effdet.efficientdet import FpnCombine, SeparableConv2d
        from timm.layers import get_act_layer
        norm_layer = partial(nn.BatchNorm2d, eps=1e-3, momentum=0.01)
        self.combine = FpnCombine(
            feature_info, channels, inputs_offsets, output_size, pad_type="same",
            downsample="max", upsample="nearest", norm_layer=norm_layer,
            apply_resample_bn=True, redundant_bias=True, weight_method="fastattn")
        self.combine.forward = types.MethodType(rm._weighted_sum_forward, self.combine)
        self.act = get_act_layer("swish")(inplace=False)
        self.conv = SeparableConv2d(channels, channels, kernel_size=3, padding="same", bias=True,
                                    norm_layer=norm_layer, act_layer=None)

    def forward(self, *features):
        return self.conv(self.act(self.combine(list(features))))


def bifpn_top_down():
    """P5' = node(P5 (24 ch, 4x4) via 1x1 conv + BN + nearest 2x up, P4 (16 ch, 8x8)):
    a 2-input fusion with a channel-changing resample."""
    info = [dict(num_chs=16, size=(8, 8)), dict(num_chs=24, size=(4, 4))]
    node = BiFpnNode(info, (0, 1), (8, 8), 16)
    return node, [(1, 16, 8, 8), (1, 24, 4, 4)]


def bifpn_bottom_up():
    """P4'' = node(P4 in, P4 top-down, P3'' (16x16) via SAME max-pool k3 s2): a 3-input
    fusion; one fusion weight is negative so that the ReLU on the weights matters."""
    info = [dict(num_chs=16, size=(8, 8)), dict(num_chs=16, size=(8, 8)),
            dict(num_chs=16, size=(16, 16))]
    node = BiFpnNode(info, (0, 1, 2), (8, 8), 16)
    return node, [(1, 16, 8, 8), (1, 16, 8, 8), (1, 16, 16, 16)]


def tiny_efficientnet():
    """timm's tf_efficientnet_b0 generator at channel multiplier 1/16 (widths
    rounded to multiples of 4), depth 0.5, 10 classes, 48x48 input: every B0
    layer kind (TF SAME pads, SE, residuals, head, pooling, FC) in a model small
    enough to commit."""
    from timm.models.efficientnet import _gen_efficientnet
    model = _gen_efficientnet("tf_efficientnet_b0", channel_multiplier=0.0625, depth_multiplier=0.5,
                              channel_divisor=4,
                              pretrained=False, num_classes=10, bn_eps=1e-3, pad_type="same")
    return model, [(1, 3, 48, 48)]


CASES = {
    "mbconv_se_s1_torchpad": lambda: mbconv_block(1, tf_same=False),
    "mbconv_se_s2_torchpad": lambda: mbconv_block(2, tf_same=False),
    "mbconv_se_s1_tfsame": lambda: mbconv_block(1, tf_same=True),
    "mbconv_se_s2_tfsame": lambda: mbconv_block(2, tf_same=True),
    "bifpn_node_top_down": bifpn_top_down,
    "bifpn_node_bottom_up": bifpn_bottom_up,
    "tiny_tf_efficientnet": tiny_efficientnet,
}


# -------------------------------------------------------------- generation

@torch.no_grad()
def randomize_multi(module, seed, shapes):
    """randomize_ for any number of inputs: calibrates BN on a batch of 8 N(0,1)
    inputs (the tiny model ends at 2x2, where 2 samples would give noisy stats)."""
    gen = torch.Generator().manual_seed(seed + 1)
    calib = [torch.randn((8,) + tuple(s[1:]), generator=gen) for s in shapes]

    class Calib(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = module

        def forward(self, _):
            return self.inner(*calib)

    rm.randomize_(Calib(), seed, shapes[0], calib_batch=8)


def write_case(name, module, shapes, seed, out_dir):
    import onnx
    from onnx import numpy_helper
    torch.manual_seed(seed)
    randomize_multi(module, seed, shapes)
    if name == "bifpn_node_bottom_up":
        with torch.no_grad():  # exercise the ReLU on the fusion weights
            module.combine.edge_weights[1] = -0.5
    module.eval()
    gen = torch.Generator().manual_seed(seed + 2)
    inputs = [torch.randn(s, generator=gen) for s in shapes]
    with torch.no_grad():
        outputs = module(*inputs)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    in_names = ["input_%d" % i for i in range(len(inputs))]
    out_names = ["output_%d" % i for i in range(len(outputs))]

    case_dir = os.path.join(out_dir, name)
    shutil.rmtree(case_dir, ignore_errors=True)
    data_dir = os.path.join(case_dir, "test_data_set_0")
    os.makedirs(data_dir)
    model_path = os.path.join(case_dir, "model.onnx")
    model = rm.export_onnx(module, inputs, model_path, out_names, input_names=in_names)
    rm.check_static(model)

    feeds = {n: t.numpy() for n, t in zip(in_names, inputs)}
    ort = rm.run_onnxruntime(model_path, feeds)
    diffs = rm.compare({n: t.numpy() for n, t in zip(out_names, outputs)}, ort)
    for i, (n, t) in enumerate(zip(in_names, inputs)):
        with open(os.path.join(data_dir, "input_%d.pb" % i), "wb") as f:
            f.write(numpy_helper.from_array(t.numpy(), n).SerializeToString())
    for i, (n, t) in enumerate(zip(out_names, outputs)):
        with open(os.path.join(data_dir, "output_%d.pb" % i), "wb") as f:
            f.write(numpy_helper.from_array(t.numpy(), n).SerializeToString())

    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(case_dir) for f in fs)
    worst = max(rm.relative_error(d) for d in diffs.values())
    print("%-22s %6.1f KB  ort-vs-torch max|diff| %.2e  out %s  ops: %s" % (
        name, size / 1024, max(d[0] for d in diffs.values()),
        [list(o.shape) for o in outputs], rm.pretty_ops(rm.op_histogram(onnx.load(model_path)))))
    if worst > MAX_RELATIVE_DIFF:
        sys.exit("error: %s: onnxruntime differs from PyTorch by %.3g relative" % (name, worst))
    if size > MAX_FIXTURE_BYTES:
        sys.exit("error: %s is %d bytes, over the %d-byte fixture budget" % (name, size, MAX_FIXTURE_BYTES))


def check_bifpn_rewrite(seed):
    """The weighted-sum fusion the fixtures use must equal effdet's stacked sum."""
    from effdet.efficientdet import FpnCombine
    node, shapes = bifpn_bottom_up()
    randomize_multi(node, seed, shapes)
    node.eval()
    xs = [torch.randn(s) for s in shapes]
    with torch.no_grad():
        ours = node(*xs)
        node.combine.forward = types.MethodType(FpnCombine.forward, node.combine)
        theirs = node(*xs)
    diff = float((ours - theirs).abs().max())
    print("weighted-sum fusion vs effdet FpnCombine.forward: max|diff| %.2e" % diff)
    if diff > 1e-5:
        sys.exit("error: weighted-sum BiFPN fusion differs from effdet's")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("cases", nargs="*", help="subset of: " + ", ".join(CASES))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    check_bifpn_rewrite(args.seed)
    for name in args.cases or CASES:
        if name not in CASES:
            sys.exit("error: unknown case %r (choose from %s)" % (name, ", ".join(CASES)))
        module, shapes = CASES[name]()
        write_case(name, module, shapes, args.seed, args.out)


if __name__ == "__main__":
    main()
