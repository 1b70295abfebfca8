#!/usr/bin/env python3
"""effdet 0.4.1's own detections, for tests/test_detect_app.cpp to compare with.

  parity DIR --model models/NAME.onnx
      reads the PyTorch head outputs that scripts/reference_outputs.py wrote to DIR
      (class_p3..7.bin, box_p3..7.bin) and writes DIR/detections_effdet.txt: effdet's
      _post_process + _batch_detection on them, with the anchors of NAME.json and
      the img_info of a 640x480 image letterboxed into the input (img_scale 1.25),
      so that clipping and rescaling are exercised too.

  tiny-fixture [--out tests/fixtures/tiny_detector]
      a small EfficientDet-shaped model (64x64 input, P3..P7 outputs from average
      pooling and 1x1 convs with seeded random weights, 90 classes) with its sidecar,
      and effdet's detections for tests/fixtures/images/{wide,tall}.png through the
      whole reference pipeline: effdet's letterbox transform, onnxruntime, effdet's
      post-processing. Small enough to commit, so the detect pipeline and the CLI
      are tested without the 16 MB D0 exports.

Detection rows: x_min y_min x_max y_max score category_id (effdet's zero padding rows
dropped), best first.
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from effdet.anchors import Anchors
from effdet.bench import _batch_detection, _post_process
from effdet.data.transforms import transforms_coco_eval

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
ASPECTS = [[1.0, 1.0], [1.4, 0.7], [0.7, 1.4]]
PARITY_FRAME = (1.25, 640.0, 480.0)  # img_scale, img_size (w, h)


def effdet_detections(sidecar, class_outputs, box_outputs, frame):
    """effdet's DetBenchPredict post-processing of one image's head outputs."""
    a = sidecar['anchors']
    anchors = Anchors(a['min_level'], a['max_level'], a['num_scales'],
                      [tuple(r) for r in a['aspect_ratios']], a['anchor_scale'],
                      tuple(a['image_size']))
    post = sidecar['postprocess']
    c, b, idx, classes = _post_process(
        [torch.from_numpy(x) for x in class_outputs], [torch.from_numpy(x) for x in box_outputs],
        num_levels=len(class_outputs), num_classes=sidecar['num_classes'],
        max_detection_points=post['max_detection_points'])
    img_scale = torch.tensor([frame[0]], dtype=torch.float32)
    img_size = torch.tensor([[frame[1], frame[2]]], dtype=torch.float32)
    det = _batch_detection(1, c, b, anchors.boxes, idx, classes, img_scale, img_size,
                           max_det_per_image=post['max_det_per_image'],
                           soft_nms=post['soft_nms'])[0].numpy()
    return det[det[:, 4] > 0]


def write_detections(path, det, header):
    with open(path, 'w') as f:
        f.write(f'# {header}\n# rows: x_min y_min x_max y_max score category_id\n')
        for row in det:
            f.write(' '.join(f'{v:.9g}' for v in row[:5]) + f' {int(row[5])}\n')
    print(f'{path}: {len(det)} detections')


def parity(args):
    with open(os.path.splitext(args.model)[0] + '.json') as f:
        sidecar = json.load(f)
    with open(os.path.join(args.dir, 'reference.json')) as f:
        outputs = json.load(f)['outputs']

    def load(name):
        return np.fromfile(os.path.join(args.dir, outputs[name]['file']),
                           dtype=np.float32).reshape(outputs[name]['shape'])
    det = effdet_detections(sidecar, [load(n) for n in sidecar['class_outputs']],
                            [load(n) for n in sidecar['box_outputs']], PARITY_FRAME)
    write_detections(os.path.join(args.dir, 'detections_effdet.txt'), det,
                     f'effdet 0.4.1 _post_process + _batch_detection on the PyTorch outputs in '
                     f'this folder (scripts/effdet_reference.py parity)\nframe {PARITY_FRAME[0]!r} '
                     f'{PARITY_FRAME[1]!r} {PARITY_FRAME[2]!r}')


class TinyDetector(nn.Module):
    """P3..P7 of a 64x64 input by average pooling (P7 = -P6, as P6 is already 1x1),
    and effdet-like heads shared across levels: a 1x1 conv per output kind."""

    def __init__(self, num_classes, num_anchors):
        super().__init__()
        self.cls = nn.Conv2d(3, num_anchors * num_classes, 1)
        self.box = nn.Conv2d(3, num_anchors * 4, 1)

    def forward(self, x):
        p3 = F.avg_pool2d(x, 8)
        p4 = F.avg_pool2d(p3, 2)
        p5 = F.avg_pool2d(p4, 2)
        p6 = F.avg_pool2d(p5, 2)
        levels = [p3, p4, p5, p6, -p6]
        return tuple([self.cls(p) for p in levels] + [self.box(p) for p in levels])


def tiny_fixture(args):
    size, num_classes, num_anchors = 64, 90, 9
    torch.manual_seed(args.seed)
    model = TinyDetector(num_classes, num_anchors).eval()
    with torch.no_grad():
        # Logits around -3 so scores spread over (0, 1) without saturating; small box deltas so the
        # decoded boxes stay near their anchors, as a trained head's do.
        model.cls.weight.normal_(0, 0.5)
        model.cls.bias.normal_(-3.0, 1.0)
        model.box.weight.normal_(0, 0.3)
        model.box.bias.normal_(0, 0.3)
    levels = range(3, 8)
    class_names = [f'class_p{l}' for l in levels]
    box_names = [f'box_p{l}' for l in levels]
    os.makedirs(args.out, exist_ok=True)
    onnx_path = os.path.join(args.out, 'model.onnx')
    torch.onnx.export(model, torch.zeros(1, 3, size, size), onnx_path, opset_version=13,
                      input_names=['input'], output_names=class_names + box_names)
    sidecar = {
        'model': 'tiny_detector',
        'source': f'random weights (seed {args.seed}, scripts/effdet_reference.py tiny-fixture)',
        'input': {'name': 'input', 'shape': [1, 3, size, size]},
        'task': 'detection',
        'preprocess': {'letterbox': True, 'resize': size, 'crop': None,
                       'interpolation': 'bilinear', 'fill': 'mean',
                       'mean': IMAGENET_MEAN, 'std': IMAGENET_STD},
        'anchors': {'min_level': 3, 'max_level': 7, 'num_scales': 3, 'aspect_ratios': ASPECTS,
                    'anchor_scale': 4.0, 'image_size': [size, size]},
        'num_classes': num_classes,
        'class_outputs': class_names,
        'box_outputs': box_names,
        'postprocess': {'max_detection_points': 5000, 'max_det_per_image': 100, 'nms_iou': 0.5,
                        'soft_nms': False},
    }
    with open(os.path.join(args.out, 'model.json'), 'w') as f:
        json.dump(sidecar, f, indent=1)
        f.write('\n')

    import onnxruntime as ort
    session = ort.InferenceSession(onnx_path, providers=['CPUExecutionProvider'])
    mean = torch.tensor([255 * m for m in IMAGENET_MEAN]).view(3, 1, 1)
    std = torch.tensor([255 * s for s in IMAGENET_STD]).view(3, 1, 1)
    images = os.path.join(ROOT, 'tests', 'fixtures', 'images')
    for image in ['wide.png', 'tall.png']:
        tf = transforms_coco_eval(size, interpolation='bilinear', use_prefetcher=True,
                                  fill_color='mean')
        pil = Image.open(os.path.join(images, image)).convert('RGB')
        chw, anno = tf(pil, {})
        x = torch.from_numpy(chw).float().sub_(mean).div_(std).unsqueeze(0).numpy()
        outs = session.run(None, {'input': x})
        with torch.no_grad():
            torch_outs = [t.numpy() for t in model(torch.from_numpy(x))]
        diff = max(float(np.abs(o - t).max()) for o, t in zip(outs, torch_outs))
        if diff > 1e-5:
            sys.exit(f'onnxruntime and PyTorch disagree on the tiny detector: {diff:.3g}')
        frame = (float(anno['img_scale']), float(pil.width), float(pil.height))
        det = effdet_detections(sidecar, outs[:5], outs[5:], frame)
        write_detections(os.path.join(args.out, f'detections_{image[:-4]}.txt'), det,
                         f'effdet 0.4.1 letterbox + onnxruntime + _post_process/_batch_detection '
                         f'of tests/fixtures/images/{image} (scripts/effdet_reference.py '
                         f'tiny-fixture)\nframe {frame[0]!r} {frame[1]!r} {frame[2]!r}')


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest='command', required=True)
    p = sub.add_parser('parity', help="effdet's detections on reference_outputs.py's outputs")
    p.add_argument('dir')
    p.add_argument('--model', required=True, help='models/NAME.onnx (its sidecar gives anchors)')
    t = sub.add_parser('tiny-fixture', help='the tiny detector fixture')
    t.add_argument('--out', default=os.path.join(ROOT, 'tests', 'fixtures', 'tiny_detector'))
    t.add_argument('--seed', type=int, default=0)
    args = ap.parse_args()
    parity(args) if args.command == 'parity' else tiny_fixture(args)


if __name__ == '__main__':
    main()
