"""Image sets embedded in batches (CLIP for retrieval and curation, the copy-detection
descriptor), an unreadable image standing in as a blank one and flagged."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset

from runners.runtime import Device

UNREADABLE = (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError)


class Flagged(Dataset):
    """(image tensor, readable) per item: ``load(item)`` then ``transform``; a failure is a
    blank image flagged unreadable, so the batch goes on and the caller leaves it out."""

    def __init__(self, items: Sequence, load: Callable, transform, size: int):
        self.items, self.load, self.transform, self.size = items, load, transform, size

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        try:
            return self.transform(self.load(self.items[i])), True
        except UNREADABLE:
            return torch.zeros(3, self.size, self.size), False


@torch.no_grad()
def embed(encode: Callable, images: Flagged, cfg: dict, device: Device, on_batch=None) -> tuple[np.ndarray, np.ndarray]:
    """Normalised embeddings [N, dim] (float32) by ``encode`` and which images were readable
    (``cfg``: batch_size, workers; ``on_batch(n)`` after each batch)."""
    loader = DataLoader(images, batch_size=cfg["batch_size"], num_workers=cfg["workers"], pin_memory=device.cuda)
    out, ok = [], []
    for batch, readable in loader:
        with device.autocast():
            out.append(torch.nn.functional.normalize(encode(device.to(batch)).float(), dim=-1).cpu().numpy())
        ok.append(readable.numpy())
        if on_batch:
            on_batch(len(readable))
    return np.concatenate(out), np.concatenate(ok)
