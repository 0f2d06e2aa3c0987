"""The FITYMI / t-ReX multi-crop (augment preset ``dino``), batched.

The reference pipeline runs nine PIL chains per image: crop and resize, flip,
four colour-jitter operations, grayscale, blur, solarise, to-tensor,
normalise. Here the image is decoded once into a uint8 tensor, every crop is
cut and resized from it with torch's vectorised antialiased kernel, and each
crop's colour jitter, grayscale, the /255 and the normalisation fold into one
affine colour map, applied to all crops of a size in one batched matrix
product. Blur is linear too, so only the final clamp differs from the
reference order (torchvision clamps after every colour operation). Random
parameters come from the sample's generator, so a sample's crops are
reproducible.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.io import ImageReadMode, decode_image, read_file

ASPECT = (3 / 4, 4 / 3)
# Crops are small and the loader's workers are the parallelism: OpenCV's own
# thread pool would only add hand-offs.
cv2.setNumThreads(0)


def crop_boxes(height: int, width: int, n: int, scale: tuple[float, float], ratio: tuple[float, float],
               g: torch.Generator) -> list[tuple[int, int, int, int]]:
    """``n`` draws of torchvision's RandomResizedCrop.get_params as (top, left, h, w):
    up to ten tries of area and aspect ratio, then its centre-crop fallback.
    Vectorised over crops and tries; the random numbers come from ``g``."""
    r = torch.rand(n, 10, 4, generator=g, dtype=torch.float64).numpy()
    area = height * width * (scale[0] + (scale[1] - scale[0]) * r[..., 0])
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = np.exp(log_lo + (log_hi - log_lo) * r[..., 1])
    # np.round rounds half to even, as Python's round in torchvision does.
    w = np.round(np.sqrt(area * aspect)).astype(np.int64)
    h = np.round(np.sqrt(area / aspect)).astype(np.int64)
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first, rows = fits.argmax(1), np.arange(n)
    h, w, r = h[rows, first], w[rows, first], r[rows, first]
    top = (r[:, 2] * (height - h + 1)).astype(np.int64)  # uniform integers in [0, height - h]
    left = (r[:, 3] * (width - w + 1)).astype(np.int64)
    boxes = list(zip(top.tolist(), left.tolist(), h.tolist(), w.tolist()))
    found = fits.any(1)
    if not found.all():
        fallback = _centre_crop(height, width, ratio)
        boxes = [box if ok else fallback for box, ok in zip(boxes, found.tolist())]
    return boxes


def _centre_crop(height: int, width: int, ratio: tuple[float, float]) -> tuple[int, int, int, int]:
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


_GRAY_W = np.array([0.2989, 0.587, 0.114])  # torchvision's rgb_to_grayscale
_GRAY_ROWS = np.tile(_GRAY_W, (3, 1))
# Rotation about the grey axis (1,1,1)/sqrt(3) (Rodrigues): cos * I + sin * _CROSS + (1 - cos) * _AXIS.
_AXIS = np.full((3, 3), 1 / 3)
_CROSS = np.array([[0, -1, 1], [1, 0, -1], [-1, 1, 0]]) / np.sqrt(3)


def colour_map(mean_rgb: np.ndarray, factors: np.ndarray, order: list[int],
               gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """torchvision's ColorJitter then RandomGrayscale as affine maps y = A x + b.

    ``mean_rgb`` [n,3] is each crop's mean colour in [0,1]; ``factors`` [n,4]
    the brightness, contrast and saturation factors and the hue shift (in
    turns, as torchvision's ``hue_factor``); ``order`` the order of the four
    operations (torchvision draws one per call); ``gray`` [n] bool.

    Brightness, saturation and grayscale are linear in RGB; contrast blends
    towards the mean grey of the crop as it is at that point, which follows
    from the crop's mean colour. The HSV hue shift is not linear: it becomes
    the rotation about the grey axis by the same angle, its closest linear
    map (within 0.04 of torchvision's on average for a 0.1-turn shift; see
    tests). (numpy: these are 3x3 matrices, where torch's per-call overhead
    would dominate.)
    """
    n = len(mean_rgb)
    eye = np.broadcast_to(np.eye(3), (n, 3, 3))
    a, b = eye.copy(), np.zeros((n, 3, 1))
    for op in order:
        shift = 0.0
        if op == 0:  # brightness
            step = eye * factors[:, 0, None, None]
        elif op == 1:  # contrast: blend with the current mean grey
            f = factors[:, 1]
            grey = _GRAY_W @ (a @ mean_rgb[:, :, None] + b)  # [n,1]
            step, shift = eye * f[:, None, None], ((1 - f)[:, None] * grey)[:, :, None]
        elif op == 2:  # saturation: blend with the pixel's grey
            f = factors[:, 2, None, None]
            step = f * eye + (1 - f) * _GRAY_ROWS
        else:  # hue
            theta = (factors[:, 3] * 2 * math.pi)[:, None, None]
            step = np.cos(theta) * eye + np.sin(theta) * _CROSS + (1 - np.cos(theta)) * _AXIS
        a, b = step @ a, step @ b + shift
    a = np.where(gray[:, None, None], _GRAY_ROWS @ a, a)
    b = np.where(gray[:, None, None], _GRAY_ROWS @ b, b)
    return a, b[:, :, 0]


def random_colour_maps(mean_rgb: np.ndarray, g: torch.Generator, jitter=(0.4, 0.4, 0.2, 0.1),
                       jitter_p: float = 0.8, gray_p: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """RandomApply(ColorJitter(*jitter), jitter_p) then RandomGrayscale(gray_p), per crop."""
    n = len(mean_rgb)
    r = torch.rand(n, 6, generator=g, dtype=torch.float64).numpy()
    order = torch.randperm(4, generator=g).tolist()
    spread = np.array(jitter)
    # Factors 1 +- spread for brightness/contrast/saturation, a shift of +-spread for hue.
    factors = np.array([1.0, 1.0, 1.0, 0.0]) + spread * (2 * r[:, 2:] - 1)
    factors = np.where(r[:, :1] < jitter_p, factors, [1.0, 1.0, 1.0, 0.0])
    return colour_map(mean_rgb, factors, order, r[:, 1] < gray_p)


def gaussian_blur_(x: torch.Tensor, sigmas: list[float]) -> torch.Tensor:
    """Gaussian blur of a contiguous float32 [N,C,H,W], in place, one sigma per image;
    kernel radius ceil(3 sigma) and reflected borders, as torchvision's
    gaussian_blur. OpenCV's separable SIMD filter: on one core a third to a
    half of the time of torch's grouped convolution, which has no fast CPU path."""
    _, _, h, w = x.shape
    for image, sigma in zip(x.numpy(), sigmas):
        r = min(h - 1, w - 1, max(1, math.ceil(3 * sigma)))
        for plane in image:
            cv2.GaussianBlur(plane, (2 * r + 1, 2 * r + 1), sigma, dst=plane, borderType=cv2.BORDER_REFLECT_101)
    return x


class MultiCrop:
    """DINO-style multi-crop: ``global_crops`` crops of ``size`` and ``local_crops`` of
    ``local_size``. Returns (globals [G,3,s,s], locals [L,3,l,l]), normalised.

    Per crop, as the t-ReX pipeline: RandomResizedCrop (bicubic, antialiased),
    horizontal flip p 0.5, ColorJitter(0.4, 0.4, 0.2, 0.1) p 0.8, grayscale
    p 0.2, Gaussian blur sigma 0.1-2 (p 0.2 global, 0.5 local), solarisation
    p 0.2 (global).
    """

    def __init__(self, mean, std, size=224, local_size=96, global_crops=1, local_crops=8,
                 global_scale=(0.25, 1.0), local_scale=(0.05, 0.25), jitter=(0.4, 0.4, 0.2, 0.1)):
        self.jitter = jitter
        self.groups = [(global_crops, size, global_scale, 0.2, 0.2),  # n, size, scale, blur p, solarise p
                       (local_crops, local_size, local_scale, 0.5, 0.0)]
        self.mean, self.std = np.array(mean), np.array(std)
        # The [0,1] range and the solarisation threshold, normalised.
        self.lo = torch.tensor(-self.mean / self.std, dtype=torch.float32).view(1, 3, 1, 1)
        self.hi = torch.tensor((1 - self.mean) / self.std, dtype=torch.float32).view(1, 3, 1, 1)
        self.half = (self.lo + self.hi) / 2
        self.bounds = list(zip(self.lo.flatten().tolist(), self.hi.flatten().tolist()))

    @staticmethod
    def load(path: str) -> torch.Tensor:
        """Decode straight to a [1,3,H,W] channels_last uint8 tensor (libjpeg-turbo
        through torchvision), a third faster than PIL plus a copy to a tensor;
        channels_last is the layout torch's fast uint8 antialiased resize wants."""
        img = decode_image(read_file(path), mode=ImageReadMode.RGB)
        return img.unsqueeze(0).contiguous(memory_format=torch.channels_last)

    def __call__(self, img: Image.Image | torch.Tensor, g: torch.Generator):
        src = img if isinstance(img, torch.Tensor) else torch.from_numpy(np.array(img)).permute(2, 0, 1)[None]
        _, _, height, width = src.shape
        batches, draws = [], []
        for n, size, scale, blur_p, sol_p in self.groups:
            u = torch.rand(n, 4, generator=g, dtype=torch.float64).numpy()  # flip, blur, sigma, solarise
            # Crops of a size are exchangeable: putting the blurred ones first
            # lets the blur work on a slice instead of gathering and scattering.
            u = u[np.argsort(u[:, 1] >= blur_p, kind="stable")]
            out = torch.empty(n, 3, size, size, dtype=torch.uint8)
            for k, (i, j, h, w) in enumerate(crop_boxes(height, width, n, scale, ASPECT, g)):
                # uint8 in, uint8 out: torch's vectorised antialiased kernel.
                crop = F.interpolate(src[:, :, i:i + h, j:j + w], size=(size, size), mode="bicubic",
                                     antialias=True, align_corners=False)[0]
                out[k] = crop.flip(-1) if u[k, 0] < 0.5 else crop
            batches.append(out.view(n, 3, size * size).float())
            draws.append((u, blur_p, sol_p, size))
        means = torch.cat([x.mean(-1) for x in batches]).double().numpy() / 255
        a, b = random_colour_maps(means, g, self.jitter)
        # Fold x / 255 before and (x - mean) / std after the colour map into it.
        a = torch.from_numpy(a / (255 * self.std[:, None])).float()
        b = torch.from_numpy((b - self.mean) / self.std).float().unsqueeze(-1)
        results, start = [], 0
        for x, (u, blur_p, sol_p, size) in zip(batches, draws):
            n = x.shape[0]
            x = torch.baddbmm(b[start:start + n], a[start:start + n], x).view(n, 3, size, size)
            start += n
            blurred = int((u[:, 1] < blur_p).sum())
            gaussian_blur_(x[:blurred], (0.1 + 1.9 * u[:blurred, 2]).tolist())
            for c, (lo, hi) in enumerate(self.bounds):  # one pass; tensor bounds take a slow path
                x[:, c].clamp_(lo, hi)
            solarised = torch.from_numpy(u[:, 3] < sol_p)
            if solarised.any():
                # v >= 0.5 -> 1 - v in [0,1] is x >= half -> lo + hi - x once normalised.
                y = x[solarised]
                x[solarised] = torch.where(y >= self.half, self.lo + self.hi - y, y)
            results.append(x)
        return tuple(results)
