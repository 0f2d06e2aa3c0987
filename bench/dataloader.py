"""Multi-crop input pipeline: ours (runners.multicrop.MultiCrop) against the t-ReX one.

Reference: the DINO / t-ReX multi-crop written with PIL and torchvision.transforms
(tests/trex_reference.py), on the same 500x375 JPEGs, one thread, decode
included: the reference decodes with PIL as t-ReX does, ours with
torchvision.io as the runner does. Rounds alternate.
Last line: ``multicrop speedup: X.XXx``.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]
from runners.data import load_rgb  # noqa: E402
from runners.multicrop import MultiCrop  # noqa: E402
from trex_reference import IMAGENET_MEAN, IMAGENET_STD, trex_multicrop  # noqa: E402

N_IMAGES = 64
ROUNDS = 7


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
