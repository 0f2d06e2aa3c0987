"""Tiny image-text pools as img2dataset writes them: webdataset tar shards of
KEY.jpg + KEY.txt + KEY.json."""

import io
from pathlib import Path

import numpy as np
from PIL import Image

from runners.pool import write_shard


def jpeg(seed: int, size: int = 32) -> bytes:
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def make_pool(root: Path, samples: list[tuple[str, bytes]], per_shard: int = 4) -> Path:
    """Shards of (caption, image bytes) in order; keys are 9 digits as img2dataset's."""
    root.mkdir(parents=True, exist_ok=True)
    keyed = [(f"{k:09d}", caption, image) for k, (caption, image) in enumerate(samples)]
    for start in range(0, len(keyed), per_shard):
        write_shard(root / f"{start // per_shard:05d}.tar", keyed[start:start + per_shard])
    return root
