"""Tiny image folders for runner tests: each class a colour and a shape, so they are learnable."""

from pathlib import Path

import numpy as np
from PIL import Image

PALETTE = [(220, 40, 40), (40, 200, 60), (50, 70, 230), (230, 200, 40), (200, 60, 210), (40, 210, 210)]


def make_image_folder(root: Path, classes: int = 3, per_class: int = 8, size=(40, 32), seed: int = 0,
                      names=None, fmt="JPEG") -> Path:
    rng = np.random.default_rng(seed)
    names = names or [f"n{i:08d}" for i in range(classes)]
    w, h = size
    for c, name in enumerate(names):
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            base = np.array(PALETTE[c % len(PALETTE)], dtype=np.float32)
            img = rng.normal(0, 25, (h, w, 3)) + base * rng.uniform(0.7, 1.1)
            y0, x0 = rng.integers(0, h // 2), rng.integers(0, w // 2)
            img[y0:y0 + h // 3, x0:x0 + w // 3] = 255 - base  # a block in the complementary colour
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(
                d / f"{name}_{i:04d}.{'jpg' if fmt == 'JPEG' else 'png'}", fmt)
    return root


def make_dataset(root: Path, classes=3, train_per_class=8, val_per_class=4, **kw) -> Path:
    make_image_folder(root / "train", classes, train_per_class, seed=1, **kw)
    make_image_folder(root / "val", classes, val_per_class, seed=2, **kw)
    return root
