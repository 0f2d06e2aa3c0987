"""Augmentation presets. Every transform is called as ``transform(pil_image, generator)``.

``dino`` is the FITYMI / t-ReX multi-crop. Instead of nine PIL pipelines of
four colour operations each, it folds each crop's colour jitter and grayscale
into one affine colour map and applies the maps of all crops of a size in one
batched pass, with per-crop random parameters drawn from the sample's
generator. Crop geometry follows torchvision's RandomResizedCrop exactly
(see ``crop_params``).
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
from torchvision.io import ImageReadMode, decode_image, read_file
from torchvision.transforms import InterpolationMode

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PRESETS = ("none", "pytorch-example", "autoaugment", "augmix", "dino", "pixmix")


def pil_to_uint8(img: Image.Image) -> torch.Tensor:
    """[3,H,W] uint8 whose memory is HWC (channels_last): the layout torch's fast
    uint8 antialiased resize wants."""
    return torch.from_numpy(np.array(img)).permute(2, 0, 1)


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


_GRAY_W = np.array([0.299, 0.587, 0.114])
_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_FROM_YIQ = np.linalg.inv(_TO_YIQ)
_GRAY_ROWS = np.tile(_GRAY_W, (3, 1))


def colour_matrices(mean_rgb: torch.Tensor, g: torch.Generator, jitter=(0.4, 0.4, 0.2, 0.1),
                    jitter_p: float = 0.8, gray_p: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """ColorJitter (random order) and RandomGrayscale as one affine colour map per crop.

    Brightness, saturation, hue (a rotation in YIQ space) and grayscale are
    linear in RGB; contrast blends towards the mean grey of the crop, which
    follows from the crop's mean colour. Composing them gives y = A x + b,
    applied in a single pass. Unlike torchvision, values are clamped once at
    the end rather than after every operation. (numpy: these are 3x3 matrices,
    where torch's per-call overhead would dominate.)
    """
    n = mean_rgb.shape[0]
    r = torch.rand(n, 6, generator=g).double().numpy()
    order = torch.randperm(4, generator=g).tolist()
    br, co, sa, hu = jitter
    jit = r[:, 0] < jitter_p
    eye = np.broadcast_to(np.eye(3), (n, 3, 3))
    a, b = eye.copy(), np.zeros((n, 3))
    mean = mean_rgb.double().numpy()
    for op in order:
        shift = 0.0
        if op == 0:  # brightness
            f = np.where(jit, 1 - br + 2 * br * r[:, 2], 1.0)
            step = eye * f[:, None, None]
        elif op == 1:  # contrast: blend with the current mean grey
            f = np.where(jit, 1 - co + 2 * co * r[:, 3], 1.0)
            grey = (np.einsum("nij,nj->ni", a, mean) + b) @ _GRAY_W
            step, shift = eye * f[:, None, None], ((1 - f) * grey)[:, None]
        elif op == 2:  # saturation: blend with the pixel's grey
            f = np.where(jit, 1 - sa + 2 * sa * r[:, 4], 1.0)[:, None, None]
            step = f * eye + (1 - f) * _GRAY_ROWS
        else:  # hue
            theta = np.where(jit, (-hu + 2 * hu * r[:, 5]) * 2 * math.pi, 0.0)
            rot = np.zeros((n, 3, 3))
            rot[:, 0, 0] = 1
            rot[:, 1, 1], rot[:, 1, 2] = np.cos(theta), -np.sin(theta)
            rot[:, 2, 1], rot[:, 2, 2] = np.sin(theta), np.cos(theta)
            step = _FROM_YIQ @ rot @ _TO_YIQ
        a = step @ a
        b = np.einsum("nij,nj->ni", step, b) + shift
    gray = r[:, 1] < gray_p
    a = np.where(gray[:, None, None], _GRAY_ROWS @ a, a)
    b = np.where(gray[:, None], (b @ _GRAY_W)[:, None], b)
    return torch.from_numpy(a).float(), torch.from_numpy(b).float()


def blur_matrix(n: int, sigma: float) -> torch.Tensor:
    """[n, n] matrix of a 1-D Gaussian blur (3 sigma, reflected borders): y = M @ x."""
    radius = min(n - 1, max(1, math.ceil(3 * sigma)))
    offsets = torch.arange(-radius, radius + 1)
    weights = torch.exp(-offsets.float() ** 2 / (2 * sigma * sigma))
    weights = weights / weights.sum()
    rows = torch.arange(n).view(-1, 1).expand(n, len(offsets))
    cols = (rows + offsets).abs()
    cols = torch.where(cols > n - 1, 2 * (n - 1) - cols, cols)
    return torch.zeros(n, n).index_put_((rows, cols), weights.expand(n, -1).contiguous(), accumulate=True)


def _kernels(sigmas: list[float]) -> tuple[torch.Tensor, int]:
    radius = max(1, math.ceil(3 * max(sigmas)))
    k = torch.arange(-radius, radius + 1, dtype=torch.float32)
    w = torch.exp(-k * k / (2 * torch.tensor(sigmas).view(-1, 1) ** 2))
    return w / w.sum(1, keepdim=True), radius


def gaussian_blur(x: torch.Tensor, sigmas: list[float]) -> torch.Tensor:
    """Separable Gaussian blur (3 sigma, reflected borders) of [N,3,H,W], one sigma
    per image. Measured on one core: a grouped convolution is fastest for
    batches of small crops, two matrix products for a large single crop
    (torch picks a slow convolution path there)."""
    n, c, h, w = x.shape
    if h * w > 128 * 128:
        mw = torch.stack([blur_matrix(w, s) for s in sigmas])
        mh = mw if h == w else torch.stack([blur_matrix(h, s) for s in sigmas])
        y = torch.bmm(x.reshape(n, c * h, w), mw.transpose(1, 2)).view(n, c, h, w)
        return torch.matmul(mh.unsqueeze(1), y)
    kernels, r = _kernels(sigmas)
    k = kernels.repeat_interleave(c, 0)
    y = x.reshape(1, n * c, h, w)
    y = F.conv2d(F.pad(y, (r, r, 0, 0), mode="reflect"), k.view(n * c, 1, 1, -1), groups=n * c)
    y = F.conv2d(F.pad(y, (0, 0, r, r), mode="reflect"), k.view(n * c, 1, -1, 1), groups=n * c)
    return y.view(n, c, h, w)


class MultiCrop:
    """DINO-style multi-crop: ``global_crops`` crops of ``size`` and ``local_crops`` of
    ``local_size``. Returns (globals [G,3,s,s], locals [L,3,l,l]), normalised.

    The image is converted to a tensor once; every crop is cut and resized
    (bicubic, antialiased) from it. The colour maps of all crops are built in
    one call and applied per size in one batched matrix product; blur (linear
    too) runs before the single clamp, so its order relative to the colour
    map does not matter.
    """

    def __init__(self, mean, std, size=224, local_size=96, global_crops=1, local_crops=8,
                 global_scale=(0.25, 1.0), local_scale=(0.05, 0.25)):
        self.groups = [(global_crops, size, global_scale, 0.2, 0.2),  # n, size, scale, blur p, solarise p
                       (local_crops, local_size, local_scale, 0.5, 0.0)]
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)

    @staticmethod
    def load(path: str) -> torch.Tensor:
        """Decode straight to a [1,3,H,W] channels_last uint8 tensor (libjpeg-turbo
        through torchvision), a third faster than PIL plus a copy to a tensor."""
        img = decode_image(read_file(path), mode=ImageReadMode.RGB)
        return img.unsqueeze(0).contiguous(memory_format=torch.channels_last)

    def __call__(self, img: Image.Image | torch.Tensor, g: torch.Generator):
        src = img if isinstance(img, torch.Tensor) else pil_to_uint8(img).unsqueeze(0)
        _, _, height, width = src.shape
        batches, settings = [], []
        for n, size, scale, blur_p, sol_p in self.groups:
            out = torch.empty(n, 3, size, size, dtype=torch.uint8)
            u = torch.rand(n, 4, generator=g)
            # Crops of a size are exchangeable: putting the blurred ones first
            # lets the blur work on a slice instead of gathering and scattering.
            u = u[torch.argsort((u[:, 1] >= blur_p).int(), stable=True)]
            for k in range(n):
                i, j, h, w = crop_params(height, width, scale, (3 / 4, 4 / 3), g)
                # uint8 in, uint8 out: torch's vectorised antialiased kernel.
                crop = F.interpolate(src[:, :, i:i + h, j:j + w], size=(size, size), mode="bicubic",
                                     antialias=True, align_corners=False)[0]
                out[k] = crop.flip(-1) if u[k, 0] < 0.5 else crop
            batches.append(out.float().div_(255).view(n, 3, -1))
            settings.append((u, blur_p, sol_p, size))
        a, b = colour_matrices(torch.cat([x.mean(-1) for x in batches]), g)
        results, start = [], 0
        for x, (u, blur_p, sol_p, size) in zip(batches, settings):
            n = x.shape[0]
            x = torch.baddbmm(b[start:start + n].unsqueeze(-1), a[start:start + n], x).view(n, 3, size, size)
            start += n
            m = int((u[:, 1] < blur_p).sum())
            if m:
                x[:m] = gaussian_blur(x[:m], (0.1 + 1.9 * u[:m, 2]).tolist())
            x.clamp_(0, 1)
            sol = u[:, 3] < sol_p
            if sol.any():
                x[sol] = torch.where(x[sol] >= 0.5, 1 - x[sol], x[sol])
            results.append(x.sub_(self.mean).div_(self.std))
        return tuple(results)


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
