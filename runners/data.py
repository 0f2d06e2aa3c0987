"""Image folders, class mapping by name, balanced nested fractions, mixing, seeding.

Every random choice of the input pipeline is a function of (seed, epoch,
index): the sampler yields ``(epoch, index)`` pairs and the dataset derives
each sample's augmentation generator from them. That makes a run resumed in
the middle of an epoch see exactly the batches an uninterrupted run would,
with any number of loader workers.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset, Sampler

from runners import protocol

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff"}
STATS_FILE = ".synthgap-stats.json"


class DataError(Exception):
    """A dataset problem the user must fix (message names the folder)."""


@dataclass
class ImageList:
    root: Path
    classes: list[str]  # sorted class folder names; index = label
    samples: list[tuple[str, int]]


def scan_folder(root: str | os.PathLike, what: str = "dataset") -> ImageList:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{what}: folder {root} does not exist")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError(f"{what}: {root} has no class folders (expected {root}/<class>/<image>)")
    samples, classes = [], []
    for label, d in enumerate(class_dirs):
        files = sorted(f for f in d.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise DataError(f"{what}: class folder {d} has no images")
        classes.append(d.name)
        samples.extend((str(f), label) for f in files)
    return ImageList(root, classes, samples)


def check_same_classes(reference: ImageList, other: ImageList, what: str) -> None:
    if reference.classes == other.classes:
        return
    missing = sorted(set(reference.classes) - set(other.classes))
    extra = sorted(set(other.classes) - set(reference.classes))
    parts = []
    if missing:
        parts.append(f"{len(missing)} class(es) of {reference.root} are missing in {other.root}: "
                     f"{', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}")
    if extra:
        parts.append(f"{len(extra)} class(es) of {other.root} are not in {reference.root}: "
                     f"{', '.join(extra[:5])}{' …' if len(extra) > 5 else ''}")
    raise DataError(f"{what}: classes do not match; " + "; ".join(parts))


def mix_seed(*parts: int | str) -> int:
    """A stable 63-bit seed from ints and strings (Python's hash is salted for str)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def balanced_fraction(images: ImageList, fraction: float, seed: int) -> list[int]:
    """Indices of a class-balanced subset; smaller fractions are subsets of larger
    ones (each class is shuffled once per seed and cut at ceil(n * fraction))."""
    if not 0 < fraction <= 1:
        raise DataError(f"fraction must be in (0, 1], got {fraction}")
    by_class: dict[int, list[int]] = {}
    for i, (_, label) in enumerate(images.samples):
        by_class.setdefault(label, []).append(i)
    keep = []
    for label, idx in sorted(by_class.items()):
        g = torch.Generator().manual_seed(mix_seed("fraction", seed, images.classes[label]))
        order = torch.randperm(len(idx), generator=g).tolist()
        n = max(1, math.ceil(len(idx) * fraction - 1e-9))
        keep.extend(idx[j] for j in order[:n])
    return sorted(keep)


def holdout_split(images: ImageList, share: float, seed: int) -> tuple[ImageList, ImageList]:
    """(training, held out): a class-balanced, seeded share of each class held out
    (ceil(n * share), leaving at least one image to train on), drawn apart from
    ``balanced_fraction``'s order so that ``fraction`` subsets the rest."""
    train, held = [], []
    by_class: dict[int, list[tuple[str, int]]] = {}
    for sample in images.samples:
        by_class.setdefault(sample[1], []).append(sample)
    for label, samples in sorted(by_class.items()):
        g = torch.Generator().manual_seed(mix_seed("holdout", seed, images.classes[label]))
        order = torch.randperm(len(samples), generator=g).tolist()
        n = min(len(samples) - 1, math.ceil(len(samples) * share - 1e-9))
        held += [samples[j] for j in sorted(order[:n])]
        train += [samples[j] for j in sorted(order[n:])]
    return ImageList(images.root, images.classes, train), ImageList(images.root, images.classes, held)


def load_rgb(path: str) -> Image.Image:
    with Image.open(path) as img:
        img.draft("RGB", img.size)  # JPEG: decode straight to RGB
        return img.convert("RGB")


class SeededImages(Dataset):
    """Samples ``(image after transform, label, bad path or '')`` by ``(epoch, index)``.

    An unreadable image is replaced by the next readable one of the list and
    its path returned, so the loop can count and report it.
    """

    def __init__(self, samples: Sequence[tuple[str, int]], transform: Callable, seed: int):
        self.samples = list(samples)
        self.transform = transform
        self.load = getattr(transform, "load", load_rgb)  # a transform may decode its own way
        self.seed = seed

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: tuple[int, int] | int):
        epoch, index = key if isinstance(key, tuple) else (0, key)
        bad = ""
        for attempt in range(len(self.samples)):
            path, label = self.samples[(index + attempt) % len(self.samples)]
            try:
                img = self.load(path)
                break
            except (OSError, UnidentifiedImageError, ValueError, RuntimeError):  # RuntimeError: torchvision decode
                bad = bad or path
        else:
            raise DataError("no readable image in the dataset")
        g = torch.Generator().manual_seed(mix_seed(self.seed, epoch, index))
        return self.transform(img, g), label, bad


class EpochSampler(Sampler):
    """Yields ``(epoch, index)`` for one epoch: a seeded permutation, or weighted
    draws with replacement (mixing datasets), sharded across DDP ranks and
    optionally starting at a batch (mid-epoch resume)."""

    def __init__(self, size: int, seed: int, weights: torch.Tensor | None = None,
                 rank: int = 0, world: int = 1):
        self.size, self.seed, self.weights = size, seed, weights
        self.rank, self.world = rank, world
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip_samples: int = 0) -> None:
        self.epoch, self.skip = epoch, skip_samples

    def epoch_indices(self) -> list[int]:
        g = torch.Generator().manual_seed(mix_seed("order", self.seed, self.epoch))
        if self.weights is None:
            order = torch.randperm(self.size, generator=g)
        else:
            order = torch.multinomial(self.weights, self.size, replacement=True, generator=g)
        per_rank = self.size // self.world  # drop the ragged tail so ranks stay in step
        return order[self.rank: per_rank * self.world: self.world].tolist()

    def __iter__(self):
        return iter([(self.epoch, i) for i in self.epoch_indices()[self.skip:]])

    def __len__(self) -> int:
        return self.size // self.world - self.skip


def mix_weights(lengths: list[int], weights: list[float]) -> torch.Tensor:
    """Per-sample probabilities so that dataset k is drawn with share weights[k]."""
    total = sum(weights)
    return torch.cat([torch.full((n,), w / total / n) for n, w in zip(lengths, weights)])


def channel_stats(images: ImageList, cache_dir: Path, max_images: int = 2000) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of a dataset at full resolution, over a seeded
    sample of ``max_images`` images (all if fewer), one image at a time; cached
    beside the dataset (or in ``cache_dir`` when its folder is read-only)."""
    key = {"root": str(images.root), "n": len(images.samples), "max_images": max_images, "resolution": "full"}
    for place in (images.root / STATS_FILE, cache_dir / STATS_FILE):
        try:
            cached = json.loads(place.read_text())
            if cached.get("key") == key:
                return cached["mean"], cached["std"]
        except (OSError, ValueError, KeyError):
            pass
    g = torch.Generator().manual_seed(0)
    pick = torch.randperm(len(images.samples), generator=g)[:max_images].tolist()
    s = torch.zeros(3, dtype=torch.float64)
    s2 = torch.zeros(3, dtype=torch.float64)
    n = 0
    for i in pick:
        try:
            img = load_rgb(images.samples[i][0])
        except (OSError, UnidentifiedImageError, ValueError):
            continue
        x = torch.from_numpy(np.asarray(img, dtype=np.float64).reshape(-1, 3) / 255)
        s += x.sum(0)
        s2 += (x * x).sum(0)
        n += x.shape[0]
    if n == 0:
        raise DataError(f"no readable image in {images.root} to compute normalisation statistics")
    mean = s / n
    std = (s2 / n - mean * mean).clamp_min(1e-12).sqrt()
    result = {"key": key, "mean": mean.tolist(), "std": std.tolist()}
    for place in (images.root / STATS_FILE, cache_dir / STATS_FILE):
        try:
            protocol.write_json_atomic(place, result)
            break
        except OSError:
            continue
    return result["mean"], result["std"]
