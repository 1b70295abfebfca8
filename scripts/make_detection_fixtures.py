#!/usr/bin/env python3
"""Makes tests/fixtures/detection/: effdet's post-processing and pycocotools' COCOeval
results that tests/test_detection.cpp and tests/test_coco_eval.cpp compare against.

Network outputs are not stored: they come from an integer formula that the C++
test evaluates identically (every value is a small dyadic fraction, exact in
float32, and the class logits are all distinct so top-k and NMS have no ties):
  class logit at flat index i (all levels' NCHW tensors back to back):
      ((i * CLS_MUL + CLS_ADD) mod 2^24) / 2^21 - 7, plus BOOST for the channels of an
      object's class at the cells whose centre lies inside the object's box
  box delta at flat index j: ((j * BOX_MUL + BOX_ADD) mod 2^24) / 2^24 - 0.5

Usage: .venv/bin/python scripts/make_detection_fixtures.py [--coco-data ../shared/data/coco-val128]
The real-data cross-check is written only when that folder exists.
"""
import argparse
import contextlib
import io
import os
import sys

import numpy as np
import torch
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from effdet.anchors import Anchors
from effdet.bench import _post_process, _batch_detection

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, 'tests', 'fixtures', 'detection')

CLS_MUL, CLS_ADD = 2654435, 12345      # odd multiplier: a bijection mod 2^24
BOX_MUL, BOX_ADD = 1103515, 4242
BOOST = 3.0
# Synthetic objects: class index, box (ymin, xmin, ymax, xmax) in input pixels.
OBJECTS = [(0, 100, 80, 300, 200), (17, 250, 260, 450, 480), (61, 40, 300, 140, 420),
           (5, 120, 100, 280, 190)]
IMAGE = 512
NUM_CLASSES = 90
ASPECTS = [(1.0, 1.0), (1.4, 0.7), (0.7, 1.4)]
NUM_ANCHORS = 9
COCO_IDS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24,
            25, 27, 28, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49,
            50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74,
            75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90]


def network_outputs():
    sizes = [IMAGE // 2 ** level for level in range(3, 8)]
    cls_out, box_out = [], []
    cls_base = box_base = 0
    for level, s in zip(range(3, 8), sizes):
        n = NUM_ANCHORS * NUM_CLASSES * s * s
        i = np.arange(cls_base, cls_base + n, dtype=np.int64)
        logits = (((i * CLS_MUL + CLS_ADD) % (1 << 24)).astype(np.float64) / 2 ** 21 - 7)
        logits = logits.reshape(NUM_ANCHORS, NUM_CLASSES, s, s)
        stride = IMAGE // s
        centres = np.arange(s) * stride + stride / 2
        for cls, y0, x0, y1, x1 in OBJECTS:
            rows = (centres >= y0) & (centres <= y1)
            cols = (centres >= x0) & (centres <= x1)
            logits[:, cls, rows[:, None] & cols[None, :]] += BOOST
        cls_out.append(torch.from_numpy(logits.reshape(1, -1, s, s).astype(np.float32)))
        cls_base += n
        n = NUM_ANCHORS * 4 * s * s
        j = np.arange(box_base, box_base + n, dtype=np.int64)
        deltas = ((j * BOX_MUL + BOX_ADD) % (1 << 24)).astype(np.float64) / 2 ** 24 - 0.5
        box_out.append(torch.from_numpy(deltas.reshape(1, -1, s, s).astype(np.float32)))
        box_base += n
    return cls_out, box_out


def write_formula(f):
    f.write(f'formula {CLS_MUL} {CLS_ADD} {BOX_MUL} {BOX_ADD} {BOOST!r}\n')
    for cls, y0, x0, y1, x1 in OBJECTS:
        f.write(f'object {cls} {y0} {x0} {y1} {x1}\n')


def make_postprocess_fixture():
    anchors = Anchors(3, 7, 3, ASPECTS, 4.0, (IMAGE, IMAGE))
    boxes = anchors.boxes.numpy()
    with open(os.path.join(OUT, 'anchors_512.txt'), 'w') as f:
        f.write(f'# effdet 0.4.1 Anchors(3, 7, 3, {ASPECTS}, 4.0, (512, 512)): '
                f'index ymin xmin ymax xmax of every 53rd anchor and the last\n')
        f.write(f'count {len(boxes)}\n')
        for i in list(range(0, len(boxes), 53)) + [len(boxes) - 1]:
            f.write(f'{i} ' + ' '.join(f'{v:.9g}' for v in boxes[i]) + '\n')

    cls_out, box_out = network_outputs()
    cases = [('hard', False, None), ('soft', True, None),
             # a 640x480 image letterboxed into 512: img_scale 1.25, size (w, h)
             ('frame', False, (1.25, 640.0, 480.0))]
    for name, soft, frame in cases:
        c, b, idx, classes = _post_process(cls_out, box_out, num_levels=5,
                                           num_classes=NUM_CLASSES, max_detection_points=5000)
        img_scale = img_size = None
        if frame:
            img_scale = torch.tensor([frame[0]], dtype=torch.float32)
            img_size = torch.tensor([[frame[1], frame[2]]], dtype=torch.float32)
        det = _batch_detection(1, c, b, anchors.boxes, idx, classes, img_scale, img_size,
                               max_det_per_image=100, soft_nms=soft)[0].numpy()
        det = det[det[:, 4] > 0]  # effdet pads to 100 rows with zeros
        with open(os.path.join(OUT, f'postprocess_{name}.txt'), 'w') as f:
            f.write('# effdet 0.4.1 _post_process + _batch_detection on the formula outputs '
                    '(scripts/make_detection_fixtures.py); rows: x_min y_min x_max y_max '
                    'score category_id\n')
            write_formula(f)
            f.write(f'soft_nms {int(soft)}\n')
            if frame:
                f.write(f'frame {frame[0]!r} {frame[1]!r} {frame[2]!r}\n')
            for row in det:
                f.write(' '.join(f'{v:.9g}' for v in row[:5]) + f' {int(row[5])}\n')
        print(f'postprocess_{name}: {len(det)} detections, best {det[0]}')


def run_cocoeval(images, categories, gts, dets):
    """pycocotools on in-memory lists; returns its 12 stats and per-category AP."""
    gt = COCO()
    gt.dataset = {'images': [{'id': i, 'width': w, 'height': h} for i, w, h in images],
                  'categories': [{'id': c, 'name': str(c)} for c in categories],
                  'annotations': [{'id': a, 'image_id': i, 'category_id': c, 'bbox': list(box),
                                   'area': area, 'iscrowd': crowd}
                                  for a, i, c, box, area, crowd in gts]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        dt = gt.loadRes([{'image_id': i, 'category_id': c, 'bbox': list(box), 'score': s}
                         for i, c, box, s in dets]) if dets else COCO()
        ev = COCOeval(gt, dt, 'bbox')
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    precision = ev.eval['precision'][:, :, :, 0, 2]  # all areas, 100 dets
    per_cat = []
    for k in range(precision.shape[2]):
        p = precision[:, :, k]
        per_cat.append(float(np.mean(p[p > -1])) if (p > -1).any() else -1.0)
    return ev.stats, per_cat


def parse_back(lines):
    """Reads det lines as the C++ test will, so both sides use the same doubles."""
    dets = []
    for line in lines:
        t = line.split()
        dets.append((int(t[1]), int(t[2]), tuple(float(v) for v in t[3:7]), float(t[7])))
    return dets


def write_stats(f, stats, per_cat, categories):
    f.write('stats ' + ' '.join(repr(float(v)) for v in stats) + '\n')
    for c, ap in zip(categories, per_cat):
        f.write(f'category_ap {c} {ap!r}\n')


def make_small_coco_fixture():
    """A few images with the edge cases: crowd, all area ranges, duplicates, a
    category without detections, detections without ground truth, > 100 detections
    in one image, tied scores."""
    rng = np.random.default_rng(7)
    images = [(1, 640, 480), (2, 500, 375), (5, 320, 320), (9, 800, 600)]
    categories = [1, 3, 18, 44, 90]  # 90 has detections but no ground truth
    gts = []

    def add_gt(img, cat, box, crowd=0):
        gts.append((len(gts) + 1, img, cat, tuple(float(v) for v in box),
                    float(box[2] * box[3]), crowd))

    add_gt(1, 1, (10, 20, 200, 300))
    add_gt(1, 1, (300, 40, 60, 150))
    add_gt(1, 1, (250, 20, 300, 400), crowd=1)
    add_gt(1, 3, (400, 300, 20, 25))       # small
    add_gt(1, 18, (50, 50, 70, 60))        # medium; category 18 gets no detections
    add_gt(2, 1, (100, 100, 150, 200))
    add_gt(2, 3, (10, 10, 12, 14))
    add_gt(2, 3, (30, 12, 14, 10))
    add_gt(5, 44, (0, 0, 320, 320))
    add_gt(5, 44, (100, 100, 40, 40))
    for _ in range(6):
        add_gt(9, 1, tuple(np.round(rng.uniform([0, 0, 8, 8], [700, 500, 200, 200]), 2)))

    det_lines = []

    def add_det(img, cat, box, score):
        det_lines.append(f'det {img} {cat} ' + ' '.join(f'{v:.6g}' for v in box) + f' {score:.6g}')

    # Jittered matches, a duplicate, misses and false positives.
    for _, img, cat, box, _, crowd in gts:
        if crowd or cat == 18:
            continue
        for copy in range(2 if img == 1 else 1):
            jitter = rng.normal(0, 0.08, 4) * np.array([box[2], box[3], box[2], box[3]])
            b = np.maximum(np.array(box) + jitter, [0, 0, 1, 1])
            add_det(img, cat, b, rng.uniform(0.3, 0.99))
    for score in (0.5, 0.5, 0.5):  # tied scores inside the crowd region
        add_det(1, 1, rng.uniform([260, 30, 50, 50], [400, 200, 120, 120]), score)
    add_det(1, 90, (10, 10, 50, 50), 0.9)
    add_det(2, 90, (20, 10, 50, 50), 0.4)
    add_det(5, 3, (5, 5, 30, 30), 0.7)     # no ground truth of that category there
    for _ in range(120):                   # more than maxDets in one image/category
        add_det(9, 1, rng.uniform([0, 0, 8, 8], [700, 500, 200, 200]), rng.uniform(0.01, 0.6))
    dets = parse_back(det_lines)
    stats, per_cat = run_cocoeval(images, categories, gts, dets)
    with open(os.path.join(OUT, 'coco_small.txt'), 'w') as f:
        f.write('# pycocotools 2.0.11 COCOeval bbox on this ground truth and these detections '
                '(scripts/make_detection_fixtures.py)\n')
        for i, w, h in images:
            f.write(f'image {i} {w} {h}\n')
        for c in categories:
            f.write(f'category {c}\n')
        for a, i, c, box, area, crowd in gts:
            f.write(f'gt {a} {i} {c} ' + ' '.join(repr(v) for v in box) + f' {area!r} {crowd}\n')
        f.write('\n'.join(det_lines) + '\n')
        write_stats(f, stats, per_cat, categories)
    print('coco_small:', np.round(stats, 4))


def make_tiny_yolo_folder():
    """A 3-image YOLO folder for the loader test (one image without labels)."""
    root = os.path.join(OUT, 'yolo_tiny')
    os.makedirs(os.path.join(root, 'images'), exist_ok=True)
    os.makedirs(os.path.join(root, 'labels'), exist_ok=True)
    for stem, (w, h) in {'000000000042': (40, 30), '000000000007': (16, 24),
                         '000000000100': (8, 8)}.items():
        Image.new('RGB', (w, h), (90, 120, 200)).save(
            os.path.join(root, 'images', stem + '.jpg'), quality=50)
    with open(os.path.join(root, 'labels', '000000000042.txt'), 'w') as f:
        f.write('0 0.5 0.5 0.5 0.4\n79 0.25 0.75 0.1 0.2\n')
    with open(os.path.join(root, 'labels', '000000000007.txt'), 'w') as f:
        f.write('11 0.5 0.5 1 1\n')


def make_real_crosscheck(data):
    """coco-val128 ground truth (converted here as the C++ loader converts it) with
    synthetic detections: jittered ground truth, misses, duplicates, false positives."""
    rng = np.random.default_rng(128)
    names = sorted(n for n in os.listdir(os.path.join(data, 'images')) if n.endswith('.jpg'))
    images, gts, det_lines = [], [], []
    for name in names:
        stem = name[:-4]
        img_id = int(stem)
        with Image.open(os.path.join(data, 'images', name)) as im:
            w, h = im.size
        images.append((img_id, w, h))
        path = os.path.join(data, 'labels', stem + '.txt')
        lines = open(path).read().split('\n') if os.path.exists(path) else []
        for line in lines:
            if not line.strip():
                continue
            cls, cx, cy, bw, bh = line.split()
            cx, cy, bw, bh = float(cx), float(cy), float(bw), float(bh)
            box = ((cx - bw / 2) * w, (cy - bh / 2) * h, bw * w, bh * h)
            gts.append((len(gts) + 1, img_id, COCO_IDS[int(cls)], box, box[2] * box[3], 0))
    for _, img_id, cat, box, _, _ in gts:
        if rng.uniform() < 0.15:
            continue  # missed
        for _ in range(1 if rng.uniform() < 0.9 else 2):
            jitter = rng.normal(0, 0.1, 4) * np.array([box[2], box[3], box[2], box[3]])
            b = np.maximum(np.array(box) + jitter, [0, 0, 1, 1])
            det_lines.append(f'det {img_id} {cat} ' + ' '.join(f'{v:.5g}' for v in b) +
                             f' {rng.uniform(0.05, 1):.4g}')
    for img_id, w, h in images:
        for _ in range(rng.integers(0, 4)):
            b = rng.uniform([0, 0, 5, 5], [w * 0.8, h * 0.8, w * 0.5, h * 0.5])
            det_lines.append(f'det {img_id} {COCO_IDS[rng.integers(0, 80)]} ' +
                             ' '.join(f'{v:.5g}' for v in b) + f' {rng.uniform(0.01, 0.8):.4g}')
    stats, per_cat = run_cocoeval(images, COCO_IDS, gts, parse_back(det_lines))
    with open(os.path.join(OUT, 'coco_val128_synthetic.txt'), 'w') as f:
        f.write('# pycocotools 2.0.11 COCOeval bbox: ../shared/data/coco-val128 labels (not '
                'stored here) with these synthetic detections '
                '(scripts/make_detection_fixtures.py)\n')
        f.write('\n'.join(det_lines) + '\n')
        write_stats(f, stats, per_cat, COCO_IDS)
    print(f'coco_val128: {len(images)} images, {len(gts)} objects, {len(det_lines)} detections:',
          np.round(stats, 4))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--coco-data',
                    default=os.path.join(ROOT, '..', 'shared', 'data', 'coco-val128'))
    args = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    torch.set_num_threads(1)
    make_postprocess_fixture()
    make_small_coco_fixture()
    make_tiny_yolo_folder()
    if os.path.isdir(args.coco_data):
        make_real_crosscheck(args.coco_data)
    else:
        print(f'{args.coco_data} not found: real-data cross-check not regenerated',
              file=sys.stderr)


if __name__ == '__main__':
    main()
