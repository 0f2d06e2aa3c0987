"""Augmentation presets. Every transform is called as ``transform(pil_image, generator)``.

``dino`` is the FITYMI / t-ReX multi-crop. Instead of running nine PIL
pipelines per image, it decodes once, cuts the crops from one uint8 tensor
and applies the photometric operations to all crops of a size at once, with
per-crop random parameters drawn from the sample's generator. Crop geometry
follows torchvision's RandomResizedCrop exactly (see ``crop_params``).
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PRESETS = ("none", "pytorch-example", "autoaugment", "augmix", "dino", "pixmix")


def pil_to_uint8(img: Image.Image) -> torch.Tensor:
    w, h = img.size
    return torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(h, w, 3).permute(2, 0, 1)


def crop_params(height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float],
                g: torch.Generator) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop.get_params, drawing from ``g``."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * (scale[0] + (scale[1] - scale[0]) * torch.rand(1, generator=g).item())
        aspect = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * torch.rand(1, generator=g).item())
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            i = int(torch.randint(0, height - h + 1, (1,), generator=g))
            j = int(torch.randint(0, width - w + 1, (1,), generator=g))
            return i, j, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


_GRAY = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)


def _gray(x: torch.Tensor) -> torch.Tensor:
    return (x * _GRAY).sum(1, keepdim=True)


def _blend(a: torch.Tensor, b: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (b + factor.view(-1, 1, 1, 1) * (a - b)).clamp_(0, 1)


def _hue_shift(x: torch.Tensor, hue: torch.Tensor) -> torch.Tensor:
    """Rotate chroma in YIQ space by hue * 2*pi (ColorJitter's hue, batched)."""
    to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    from_yiq = torch.linalg.inv(to_yiq)
    theta = hue * 2 * math.pi
    c, s = torch.cos(theta), torch.sin(theta)
    rot = torch.zeros(len(hue), 3, 3)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = c, -s, s, c
    m = from_yiq @ rot @ to_yiq  # [N,3,3]
    return torch.einsum("nij,njhw->nihw", m, x).clamp_(0, 1)


def _gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    radius = int(math.ceil(3 * float(sigma.max())))
    k = torch.arange(-radius, radius + 1, dtype=x.dtype)
    kernel = torch.exp(-(k.view(1, -1) ** 2) / (2 * sigma.view(-1, 1) ** 2))
    kernel = kernel / kernel.sum(1, keepdim=True)  # [N, K]
    n, c, h, w = x.shape
    weight = kernel.repeat_interleave(c, 0)  # one kernel per image and channel
    y = x.reshape(1, n * c, h, w)
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="reflect"), weight.view(n * c, 1, 1, -1), groups=n * c)
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="reflect"), weight.view(n * c, 1, -1, 1), groups=n * c)
    return y.view(n, c, h, w)


def photometric(x: torch.Tensor, g: torch.Generator, blur_p: float, solarize_p: float,
                jitter=(0.4, 0.4, 0.2, 0.1), jitter_p=0.8, gray_p=0.2) -> torch.Tensor:
    """Flip, colour jitter, grayscale, blur and solarise a batch of crops in [0, 1]."""
    n = x.shape[0]
    u = torch.rand(n, 6, generator=g)
    flip = u[:, 0] < 0.5
    if flip.any():
        x[flip] = x[flip].flip(-1)
    jit = u[:, 1] < jitter_p
    if jit.any():
        b, c, s, h = jitter
        r = torch.rand(n, 4, generator=g)
        bright = 1 - b + 2 * b * r[:, 0]
        contrast = 1 - c + 2 * c * r[:, 1]
        sat = 1 - s + 2 * s * r[:, 2]
        hue = -h + 2 * h * r[:, 3]
        y = x[jit]
        j = jit.nonzero().squeeze(1)
        for op in torch.randperm(4, generator=g).tolist():  # ColorJitter's random order
            if op == 0:
                y = (y * bright[j].view(-1, 1, 1, 1)).clamp_(0, 1)
            elif op == 1:
                y = _blend(y, _gray(y).mean((2, 3), keepdim=True), contrast[j])
            elif op == 2:
                y = _blend(y, _gray(y), sat[j])
            else:
                y = _hue_shift(y, hue[j])
        x[jit] = y
    gray = u[:, 2] < gray_p
    if gray.any():
        x[gray] = _gray(x[gray]).expand(-1, 3, -1, -1)
    blur = u[:, 3] < blur_p
    if blur.any():
        sigma = 0.1 + 1.9 * torch.rand(int(blur.sum()), generator=g)
        x[blur] = _gaussian_blur(x[blur], sigma)
    sol = u[:, 4] < solarize_p
    if sol.any():
        y = x[sol]
        x[sol] = torch.where(y >= 0.5, 1 - y, y)
    return x


class MultiCrop:
    """DINO-style multi-crop: ``global_crops`` crops of ``size`` and ``local_crops`` of
    ``local_size``. Returns (globals [G,3,s,s], locals [L,3,l,l])."""

    def __init__(self, mean, std, size=224, local_size=96, global_crops=1, local_crops=8,
                 global_scale=(0.25, 1.0), local_scale=(0.05, 0.25)):
        self.size, self.local_size = size, local_size
        self.global_crops, self.local_crops = global_crops, local_crops
        self.global_scale, self.local_scale = global_scale, local_scale
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)

    def _crops(self, x: torch.Tensor, n: int, size: int, scale, g) -> torch.Tensor:
        if n == 0:
            return torch.empty(0, 3, size, size)
        _, h, w = x.shape
        out = []
        for _ in range(n):
            i, j, ch, cw = crop_params(h, w, scale, (3 / 4, 4 / 3), g)
            out.append(TF.resized_crop(x, i, j, ch, cw, [size, size],
                                       interpolation=InterpolationMode.BICUBIC, antialias=True))
        return torch.stack(out).float().div_(255)

    def __call__(self, img: Image.Image, g: torch.Generator):
        x = pil_to_uint8(img)
        glob = photometric(self._crops(x, self.global_crops, self.size, self.global_scale, g), g,
                           blur_p=0.2, solarize_p=0.2)
        loc = photometric(self._crops(x, self.local_crops, self.local_size, self.local_scale, g), g,
                          blur_p=0.5, solarize_p=0.0)
        return (glob - self.mean) / self.std, (loc - self.mean) / self.std


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
        crop = T.RandomResizedCrop(size, interpolation=InterpolationMode.BICUBIC)
    base = [crop, T.RandomHorizontalFlip()]
    if name == "none":
        resize = int(round(size * 256 / 224))
        return Seeded(T.Compose([T.Resize(resize), T.CenterCrop(size), *normalize]))
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


def eval_transform(mean, std, size: int = 224):
    resize = int(round(size * 256 / 224))
    return Seeded(T.Compose([T.Resize(resize, interpolation=InterpolationMode.BILINEAR),
                             T.CenterCrop(size), T.ToTensor(), T.Normalize(mean, std)]))
