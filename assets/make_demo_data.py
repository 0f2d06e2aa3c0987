"""Make the demo's real data from Debian's dataset-fashion-mnist package.

    apt-get install dataset-fashion-mnist
    python assets/make_demo_data.py                       # writes assets/fashion-mnist-demo.npz
    python assets/make_demo_data.py --generator-data DIR  # the disjoint images the demo generator trains on

The demo subset is class-balanced: 300 training images per class from the
Fashion-MNIST training file and 100 evaluation images per class from its test
file, chosen with a fixed seed. The generator's training folder holds every
other image of the training file, so the generator never sees the demo's
real images. The retrieval pool is 120 images per class of that generator
training data, captioned with the Fashion-MNIST label the generator was
conditioned on (as an image-text pool's captions name what they show).
"""

from __future__ import annotations

import argparse
import gzip
from pathlib import Path

import numpy as np

SOURCE = Path("/usr/share/datasets/fashion-mnist")
OUT = Path(__file__).resolve().parent / "fashion-mnist-demo.npz"
CLASSES = ["tshirt-top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
           "ankle-boot"]
# Fashion-MNIST's own label names, in label order: the pool's captions.
LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
TRAIN_PER_CLASS, EVAL_PER_CLASS, POOL_PER_CLASS, SEED = 300, 100, 120, 0


def read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def balanced(labels: np.ndarray, per_class: int, rng) -> np.ndarray:
    return np.sort(np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:per_class]
                                   for c in range(len(CLASSES))]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generator-data", type=Path, help="write the generator's training ImageFolder here")
    args = parser.parse_args()
    if not SOURCE.is_dir():
        raise SystemExit(f"{SOURCE} not found: apt-get install dataset-fashion-mnist")
    x_train = read_idx(SOURCE / "train-images-idx3-ubyte.gz")
    y_train = read_idx(SOURCE / "train-labels-idx1-ubyte.gz")
    x_test = read_idx(SOURCE / "t10k-images-idx3-ubyte.gz")
    y_test = read_idx(SOURCE / "t10k-labels-idx1-ubyte.gz")
    rng = np.random.default_rng(SEED)
    train_idx = balanced(y_train, TRAIN_PER_CLASS, rng)
    eval_idx = balanced(y_test, EVAL_PER_CLASS, rng)
    rest = np.setdiff1d(np.arange(len(y_train)), train_idx)
    pool_idx = rest[balanced(y_train[rest], POOL_PER_CLASS, rng)]  # drawn last: the other subsets stay as they were
    if args.generator_data:
        from PIL import Image

        for c, name in enumerate(CLASSES):
            (args.generator_data / "train" / name).mkdir(parents=True, exist_ok=True)
        for i in rest:
            Image.fromarray(x_train[i]).save(args.generator_data / "train" / CLASSES[y_train[i]] / f"fm{i:05d}.png")
        print(f"wrote {len(rest)} images to {args.generator_data / 'train'}")
        return
    np.savez_compressed(OUT, classes=np.array(CLASSES), train_x=x_train[train_idx], train_y=y_train[train_idx],
                        train_index=train_idx, eval_x=x_test[eval_idx], eval_y=y_test[eval_idx],
                        pool_x=x_train[pool_idx], pool_y=y_train[pool_idx], pool_index=pool_idx,
                        pool_captions=np.array([LABELS[y] for y in y_train[pool_idx]]))
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e6:.1f} MB): {len(train_idx)} train, {len(eval_idx)} eval, "
          f"{len(pool_idx)} pool images")


if __name__ == "__main__":
    main()
