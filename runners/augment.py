"""Augmentation presets. Every transform is called as ``transform(pil_image, generator)``.

``dino``, the FITYMI / t-ReX multi-crop, lives in ``multicrop.py``.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

from runners.multicrop import MultiCrop

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
from runners.kinds.train import AUGMENTS as PRESETS


class Seeded:
    """Runs a torchvision transform with the torch RNG seeded from the sample's
    generator, so that torchvision's own random draws are reproducible too."""

    def __init__(self, transform: Callable):
        self.transform = transform

    def __call__(self, img: Image.Image, g: torch.Generator):
        seed = int(torch.randint(0, 2**62, (1,), generator=g))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            random.seed(seed)
            return self.transform(img)


class PixMix:
    """PixMix (Hendrycks et al. 2022): mix the image with fractal-like pictures
    from ``mixing_dir`` by additive or multiplicative blends."""

    def __init__(self, base: Callable, mixing_dir: str, k: int = 4, beta: float = 3.0):
        self.base = base
        self.pictures = sorted(p for p in Path(mixing_dir).rglob("*") if p.suffix.lower() in
                               {".jpg", ".jpeg", ".png"})
        if not self.pictures:
            raise ValueError(f"pixmix_dir {mixing_dir} has no images")
        self.k, self.beta = k, beta
        self.aug = T.AugMix()

    def __call__(self, img: Image.Image) -> Image.Image:
        size = img.size
        orig = self.base(img)
        mixed = self.aug(orig) if random.random() < 0.5 else orig
        for _ in range(random.randint(0, self.k)):
            if random.random() < 0.5:
                other = self.aug(orig)
            else:
                with Image.open(random.choice(self.pictures)) as pic:
                    other = pic.convert("RGB").resize(orig.size if isinstance(orig, Image.Image) else size)
            a = torch.from_numpy(np.asarray(mixed, dtype=np.float32) / 255)
            b = torch.from_numpy(np.asarray(other, dtype=np.float32) / 255)
            w = float(torch.distributions.Beta(self.beta, self.beta).sample())
            if random.random() < 0.5:
                out = w * a + (1 - w) * b
            else:
                out = a.clamp_min(1e-6) ** w * b.clamp_min(1e-6) ** (1 - w)
            mixed = Image.fromarray((out.clamp(0, 1) * 255).byte().numpy())
        return mixed


def train_transform(name: str, mean, std, size: int = 224, local_size: int = 96, local_crops: int = 8,
                    pixmix_dir: str | None = None, small_input: bool = False):
    normalize = [T.ToTensor(), T.Normalize(mean, std)]
    if small_input:
        crop = T.RandomCrop(size, padding=size // 8)  # the CIFAR recipe's crop
    else:
        # torchvision's classification reference (the "PyTorch example" of Mind the
        # Gap's Table 2) crops with its default, bilinear; the dino preset is bicubic.
        crop = T.RandomResizedCrop(size, interpolation=InterpolationMode.BILINEAR)
    base = [crop, T.RandomHorizontalFlip()]
    if name == "none":
        resize = int(round(size * 256 / 224))
        return Seeded(T.Compose([T.Resize(resize), T.CenterCrop(size), *normalize]))
    if name == "clip":  # open_clip's training transform: a light bicubic crop, no flip
        return Seeded(T.Compose([T.RandomResizedCrop(size, scale=(0.9, 1.0), interpolation=InterpolationMode.BICUBIC),
                                 *normalize]))
    if name == "pytorch-example":
        return Seeded(T.Compose([*base, *normalize]))
    if name == "autoaugment":
        return Seeded(T.Compose([*base, T.AutoAugment(), *normalize]))
    if name == "augmix":
        return Seeded(T.Compose([*base, T.AugMix(), *normalize]))
    if name == "pixmix":
        if not pixmix_dir:
            raise ValueError("augment = 'pixmix' needs pixmix_dir")
        return Seeded(T.Compose([PixMix(T.Compose(base), pixmix_dir), *normalize]))
    if name == "dino":
        return MultiCrop(mean, std, size=size, local_size=local_size, local_crops=local_crops)
    raise ValueError(f"unknown augmentation {name!r}; allowed: {', '.join(PRESETS)}")


def center_resize(size: int) -> int:
    """The shorter side an image is resized to before its centre ``size`` crop: 256 for
    224, as ImageNet evaluation and Stylized-ImageNet do."""
    return int(round(size * 256 / 224))


def eval_transform(mean, std, size: int = 224, open_clip: bool = False):
    """The reference evaluation crop (shorter side to 256/224 of the crop, bilinear), or
    open_clip's (shorter side to the crop, bicubic) for a CLIP model, as the Unmet
    Promise's adapt/ code evaluates."""
    resize = T.Resize(size, interpolation=InterpolationMode.BICUBIC) if open_clip else \
        T.Resize(center_resize(size), interpolation=InterpolationMode.BILINEAR)
    return Seeded(T.Compose([resize, T.CenterCrop(size), T.ToTensor(), T.Normalize(mean, std)]))
