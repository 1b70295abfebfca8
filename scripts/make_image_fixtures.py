#!/usr/bin/env python3
"""Makes tests/fixtures/images/: tiny synthetic images and what PIL, torchvision and
effdet make of them, for tests/test_image.cpp.

The references come from the libraries the models were evaluated with (Pillow's
decoder and resampler, torchvision 0.14's eval transform, effdet's
transforms_coco_eval plus its prefetcher's normalisation), so the C++ preprocessing
is checked against the real thing, not against a re-implementation.

Run from anywhere: .venv/bin/python scripts/make_image_fixtures.py

fuzz_stb_shift33.jpg is not made here: it is the scripts/fuzz.sh finding that
made stb_image's JPEG decoder shift by 33 bits, kept as a regression input.
"""
import json
import os

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image
from effdet.data.transforms import transforms_coco_eval
from torchvision.models._meta import _COCO_CATEGORIES

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'tests', 'fixtures', 'images')
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
PIL_INTERP = {'nearest': Image.NEAREST, 'bilinear': Image.BILINEAR, 'bicubic': Image.BICUBIC}
TV_INTERP = {'nearest': T.InterpolationMode.NEAREST, 'bilinear': T.InterpolationMode.BILINEAR,
             'bicubic': T.InterpolationMode.BICUBIC}


def synthetic_image(width, height, seed):
    """Gradients, hard edges and noise: smooth areas test the filter weights, edges
    the overshoot clipping of bicubic, noise the rounding."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    img = np.stack([255 * x / width, 255 * y / height, 128 + 100 * np.sin(x / 5 + y / 7)], axis=-1)
    img[(x - width / 3) ** 2 + (y - height / 2) ** 2 < (height / 4) ** 2] = [250, 20, 30]
    img[height // 5:height // 5 + 6, width // 2:] = [0, 0, 0]
    img[:, width - 9:width - 6] = [255, 255, 255]
    img += rng.normal(0, 12, img.shape)
    return Image.fromarray(np.clip(np.round(img), 0, 255).astype(np.uint8), 'RGB')


def corrupt_scan(src, dst):
    """Flips bits in every 397th byte of the entropy-coded data of src's first scan,
    from a third of the way in, never making or breaking a 0xFF (a marker): libjpeg
    recovers with warnings, and PIL decodes the file."""
    data = bytearray(open(os.path.join(OUT, src), 'rb').read())
    sos = data.index(b'\xff\xda')
    start = sos + 2 + (data[sos + 2] << 8 | data[sos + 3])
    end = data.index(b'\xff\xd9', start)
    for i in range(start + (end - start) // 3, end - 200, 397):
        if 0xff not in (data[i - 1], data[i], data[i] ^ 0x5a):
            data[i] ^= 0x5a
    with open(os.path.join(OUT, dst), 'wb') as f:
        f.write(data)


def save_u8(name, array):
    np.ascontiguousarray(array, dtype=np.uint8).tofile(os.path.join(OUT, name))
    return name


def save_f32(name, array):
    np.ascontiguousarray(array, dtype=np.float32).tofile(os.path.join(OUT, name))
    return name


def main():
    os.makedirs(OUT, exist_ok=True)
    wide = synthetic_image(97, 73, seed=1)
    wide.save(os.path.join(OUT, 'wide.png'))
    # 4:2:0 chroma subsampling, as almost every camera JPEG (and the COCO/ImageNet files).
    wide.save(os.path.join(OUT, 'wide.jpg'), quality=90, subsampling='4:2:0')
    tall = synthetic_image(41, 67, seed=2)
    tall.save(os.path.join(OUT, 'tall.png'))
    grey = wide.convert('L').resize((23, 17), Image.BILINEAR)
    grey.save(os.path.join(OUT, 'grey.png'))
    # The other JPEG decoding paths: a progressive file (all coefficients first,
    # block smoothing), 4:2:2 (horizontal-only upsampling), one grey channel, and
    # CMYK (PIL writes it inverted, Adobe's way, and reads it back inverted).
    wide.save(os.path.join(OUT, 'wide_progressive.jpg'), quality=90, subsampling='4:2:0',
              progressive=True)
    tall.save(os.path.join(OUT, 'tall_422.jpg'), quality=90, subsampling='4:2:2')
    wide.convert('L').save(os.path.join(OUT, 'grey.jpg'), quality=90)
    tall.convert('CMYK').save(os.path.join(OUT, 'tall_cmyk.jpg'), quality=90)
    corrupt_scan('wide.jpg', 'wide_corrupt.jpg')
    corrupt_scan('wide_progressive.jpg', 'wide_progressive_corrupt.jpg')

    manifest = {'decode': [], 'resize': [], 'classify': [], 'detect': []}
    for image, name in [('wide.png', 'wide_png.u8'), ('wide.jpg', 'wide_jpg_pil.u8'),
                        ('tall.png', 'tall_png.u8'), ('grey.png', 'grey_png.u8'),
                        ('wide_progressive.jpg', 'wide_progressive_jpg_pil.u8'),
                        ('tall_422.jpg', 'tall_422_jpg_pil.u8'), ('grey.jpg', 'grey_jpg_pil.u8'),
                        ('tall_cmyk.jpg', 'tall_cmyk_jpg_pil.u8'),
                        ('wide_corrupt.jpg', 'wide_corrupt_jpg_pil.u8'),
                        ('wide_progressive_corrupt.jpg', 'wide_progressive_corrupt_jpg_pil.u8')]:
        pil = Image.open(os.path.join(OUT, image)).convert('RGB')
        manifest['decode'].append({'image': image, 'width': pil.width, 'height': pil.height,
                                   'expected': save_u8(name, np.asarray(pil))})

    # Down (antialiased: filter support grows with the factor), up, and mixed.
    wide_pixels = Image.open(os.path.join(OUT, 'wide.png')).convert('RGB')
    for interp in ['bicubic', 'bilinear', 'nearest']:
        for w, h in [(31, 22), (120, 80), (60, 90)]:
            out = wide_pixels.resize((w, h), PIL_INTERP[interp])
            manifest['resize'].append({'image': 'wide.png', 'interp': interp, 'width': w, 'height': h,
                                       'expected': save_u8(f'resize_{interp}_{w}x{h}.u8', np.asarray(out))})

    # torchvision's eval transform. The crop > resize case exercises its zero padding.
    cases = [('wide.png', 'bicubic', 48, 40), ('tall.png', 'bilinear', 60, 52),
             ('wide.png', 'nearest', 36, 40), ('tall.png', 'bicubic', 40, 32)]
    for image, interp, resize, crop in cases:
        tf = T.Compose([T.Resize(resize, interpolation=TV_INTERP[interp]), T.CenterCrop(crop), T.ToTensor(),
                        T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
        out = tf(Image.open(os.path.join(OUT, image)).convert('RGB')).numpy()
        manifest['classify'].append({
            'image': image, 'interp': interp, 'resize': resize, 'crop': crop, 'mean': IMAGENET_MEAN,
            'std': IMAGENET_STD, 'input_scale': 1 / 255,
            'expected': save_f32(f'classify_{image[:-4]}_{interp}_{resize}_{crop}.f32', out)})
    # EfficientNet-Lite's TF convention: raw 0..255 values, mean 127, std 128.
    tf = T.Compose([T.Resize(60, interpolation=T.InterpolationMode.BILINEAR), T.CenterCrop(56)])
    raw = np.asarray(tf(Image.open(os.path.join(OUT, 'wide.png')).convert('RGB')), dtype=np.float32)
    manifest['classify'].append({
        'image': 'wide.png', 'interp': 'bilinear', 'resize': 60, 'crop': 56, 'mean': [127.0] * 3,
        'std': [128.0] * 3, 'input_scale': 1.0,
        'expected': save_f32('classify_wide_lite_60_56.f32', ((raw - 127) / 128).transpose(2, 0, 1))})

    # effdet: ResizePad with the mean colour, then the prefetcher's (x - 255 mean) / (255 std).
    mean = torch.tensor([255 * m for m in IMAGENET_MEAN]).view(3, 1, 1)
    std = torch.tensor([255 * s for s in IMAGENET_STD]).view(3, 1, 1)
    for image, target in [('wide.png', 64), ('tall.png', 80)]:
        tf = transforms_coco_eval(target, interpolation='bilinear', use_prefetcher=True, fill_color='mean')
        chw, anno = tf(Image.open(os.path.join(OUT, image)).convert('RGB'), {})
        out = (torch.from_numpy(chw).float().sub_(mean).div_(std)).numpy()
        manifest['detect'].append({
            'image': image, 'target': target, 'interp': 'bilinear',
            'fill': [int(round(255 * m)) for m in IMAGENET_MEAN], 'mean': IMAGENET_MEAN, 'std': IMAGENET_STD,
            'image_scale': anno['img_scale'],  # effdet's 1 / scale: image pixels per input pixel
            'expected': save_f32(f'detect_{image[:-4]}_{target}.f32', out)})

    # COCO's 80 classes in contiguous order with their category ids, from torchvision's table.
    with open(os.path.join(OUT, 'coco_categories.txt'), 'w') as f:
        for cat_id, name in enumerate(_COCO_CATEGORIES):
            if name not in ('__background__', 'N/A'):
                f.write(f'{cat_id} {name}\n')

    with open(os.path.join(OUT, 'manifest.json'), 'w') as f:
        json.dump(manifest, f, indent=1)
        f.write('\n')


if __name__ == '__main__':
    main()
