"""Multi-crop input pipeline: ours (runners.augment.MultiCrop) against the t-ReX one.

Reference: the DINO / t-ReX multi-crop written with PIL and torchvision.transforms
(1 global RandomResizedCrop(224, 0.25-1) + 8 local RandomResizedCrop(96, 0.05-0.25),
bicubic, flip, ColorJitter(0.4, 0.4, 0.2, 0.1) p 0.8, grayscale 0.2, PIL Gaussian
blur 0.1-2.0 (p 0.2 global, 0.5 local), solarisation p 0.2 global), on the same
500x375 JPEGs, one thread, decode included: the reference decodes with PIL as
t-ReX does, ours with torchvision.io as the runner does. Rounds alternate.
Last line: ``multicrop speedup: X.XXx``.
"""

from __future__ import annotations

import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter, ImageOps
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from runners.augment import IMAGENET_MEAN, IMAGENET_STD, MultiCrop  # noqa: E402
from runners.data import load_rgb  # noqa: E402

N_IMAGES = 64
ROUNDS = 7


class GaussianBlur:
    def __init__(self, p):
        self.p = p

    def __call__(self, img):
        if random.random() > self.p:
            return img
        return img.filter(ImageFilter.GaussianBlur(radius=random.uniform(0.1, 2.0)))


class Solarization:
    def __init__(self, p):
        self.p = p

    def __call__(self, img):
        return ImageOps.solarize(img) if random.random() < self.p else img


def trex_multicrop():
    jitter = T.Compose([T.RandomHorizontalFlip(p=0.5),
                        T.RandomApply([T.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
                        T.RandomGrayscale(p=0.2)])
    normalize = T.Compose([T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    glob = T.Compose([T.RandomResizedCrop(224, scale=(0.25, 1.0), interpolation=InterpolationMode.BICUBIC),
                      jitter, GaussianBlur(0.2), Solarization(0.2), normalize])
    local = T.Compose([T.RandomResizedCrop(96, scale=(0.05, 0.25), interpolation=InterpolationMode.BICUBIC),
                       jitter, GaussianBlur(0.5), normalize])
    return lambda img: [glob(img)] + [local(img) for _ in range(8)]


def make_jpegs(root: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    yy, xx = np.mgrid[0:375, 0:500]
    for i in range(N_IMAGES):
        base = np.stack([np.sin(xx / rng.uniform(20, 80)) * 90 + 128, np.cos(yy / rng.uniform(20, 80)) * 90 + 128,
                         (xx + yy) % 255], -1) + rng.normal(0, 12, (375, 500, 3))
        path = root / f"img{i:03d}.jpg"
        Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def one_pass(fn, paths) -> float:
    """Images per second of ``fn(path)``: decoding included."""
    t = time.perf_counter()
    for p in paths:
        fn(str(p))
    return len(paths) / (time.perf_counter() - t)


def main() -> None:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_jpegs(Path(tmp))
        ours_tf = MultiCrop(IMAGENET_MEAN, IMAGENET_STD)
        g = torch.Generator().manual_seed(0)
        ref_tf = trex_multicrop()
        ours_fn = lambda p: ours_tf(ours_tf.load(p), g)  # noqa: E731 (decodes with torchvision)
        ref_fn = lambda p: ref_tf(load_rgb(p))  # noqa: E731 (PIL, as t-ReX)
        one_pass(ours_fn, paths[:4]), one_pass(ref_fn, paths[:4])  # warm-up
        # Alternate the two so that drift in a shared machine's speed hits both.
        pairs = [(one_pass(ours_fn, paths), one_pass(ref_fn, paths)) for _ in range(ROUNDS)]
    ours = statistics.median(o for o, _ in pairs)
    ref = statistics.median(r for _, r in pairs)
    ratio = statistics.median(o / r for o, r in pairs)
    print(f"{N_IMAGES} JPEGs of 500x375, 1 x 224 + 8 x 96 crops, 1 thread, decode included, "
          f"median of {ROUNDS} alternating rounds")
    print(f"t-ReX PIL pipeline:   {ref:7.1f} images/s per core")
    print(f"SynthGap MultiCrop:   {ours:7.1f} images/s per core")
    print(f"multicrop speedup: {ratio:.2f}x")


if __name__ == "__main__":
    main()
