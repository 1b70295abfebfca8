#!/usr/bin/env python3
"""Writes data/samples/: a few small synthetic frames for `repshare run` on a
fresh machine (the evaluation data in ../shared/data must not be copied into the
repository). Each frame is drawn here from a fixed seed: a sky/ground gradient
with coloured shapes that drift from frame to frame like a slow camera pan, so
consecutive frames differ the way video frames do. CC0 (see data/samples/LICENSE).

    .venv/bin/python scripts/make_samples.py [--out data/samples] [--frames 6]
"""
import argparse
import os

import numpy as np
from PIL import Image, ImageDraw

WIDTH, HEIGHT = 320, 240


def frame(index, rng_seed=7):
    rng = np.random.default_rng(rng_seed)  # the same scene in every frame
    y = np.linspace(0.0, 1.0, HEIGHT)[:, None, None]
    sky = np.array([110, 160, 220]) * (1 - y) + np.array([200, 220, 240]) * y
    ground = np.array([70, 120, 60]) * (1 - y) + np.array([40, 80, 40]) * y
    horizon = HEIGHT * 0.55
    pixels = np.where(np.arange(HEIGHT)[:, None, None] < horizon, sky, ground)
    pixels = np.broadcast_to(pixels, (HEIGHT, WIDTH, 3)).astype(np.uint8)
    img = Image.fromarray(np.ascontiguousarray(pixels))
    draw = ImageDraw.Draw(img)
    pan = 6 * index  # pixels the scene moved since frame 0
    for _ in range(7):
        x = int(rng.integers(0, WIDTH + 120)) - pan
        cy = int(rng.integers(int(horizon) - 40, HEIGHT - 20))
        w, h = int(rng.integers(20, 70)), int(rng.integers(20, 60))
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.rectangle([x, cy - h, x + w, cy], fill=color, outline=(20, 20, 20))
        else:
            draw.ellipse([x, cy - h, x + w, cy], fill=color, outline=(20, 20, 20))
    return img


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "data", "samples"))
    ap.add_argument("--frames", type=int, default=6)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    for i in range(a.frames):
        path = os.path.join(a.out, f"frame_{i:03d}.jpg")
        frame(i).save(path, quality=85)
        print(path, os.path.getsize(path), "bytes")


if __name__ == "__main__":
    main()
