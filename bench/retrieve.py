"""Top-k retrieval with the cached faiss index against numpy brute force, and
the pool embedding throughput.

100 class queries (k = 400: 100 images per class x 4 candidates, the runner's
defaults) over N = 1,000,000 random unit 512-d embeddings. The index is what
the retrieve runner builds and caches for a pool that size (``index =
"auto"``: inverted lists, nprobe 32), written and read back as the cache
does; the reference is a float32 matmul plus ``argpartition`` and a sort of
the top k, as one would write it in numpy. Both answer the same queries on
the same data, best of three, and the index's recall of the exact top k is
printed. Random vectors (the measure the last line reports) have no cluster
structure, the hardest case for inverted lists: there the index is fast and
its recall low. The same is then measured on clustered embeddings, the shape
of real CLIP embeddings (images of one concept near each other). Then the
tiny open_clip model of the tests embeds a pool of JPEGs through the runner's
loader on one thread: images/s per core. Then substring retrieval: 1,000,000
generated captions, 100 class names of one to three words; the runner's SQLite
FTS5 index (built once, timed apart: a pool's index is cached) answers each
class's query, against a compiled-regex scan of every caption per class (each
of the name's words as a whole word, case-insensitive: the same sets, checked).
Lines: ``retrieval speedup: X.XXx``, then last ``substring speedup: X.XXx``.
"""

from __future__ import annotations

import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import faiss  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from runners import caption_index, retrieve  # noqa: E402
from runners.clip import load_clip  # noqa: E402
from runners.pool import open_pool  # noqa: E402
from runners.runtime import Device  # noqa: E402
from tiny_clip import make_tiny_clip  # noqa: E402
from tiny_pool import jpeg, make_pool  # noqa: E402

N, DIM, CLASSES, K, NPROBE, POOL_IMAGES = 1_000_000, 512, 100, 400, 32, 512


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def best_of(n: int, fn):
    times, out = [], None
    for _ in range(n):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def brute_force(emb: np.ndarray, queries: np.ndarray) -> np.ndarray:
    sims = queries @ emb.T
    top = np.argpartition(-sims, K, axis=1)[:, :K]
    order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1)
    return np.take_along_axis(top, order, axis=1)


def embedding_rate(tmp: Path) -> float:
    torch.set_num_threads(1)
    clip = load_clip("tiny", str(make_tiny_clip(tmp / "clip")))
    pool = open_pool(make_pool(tmp / "pool", [(f"image {i}", jpeg(i, size=64)) for i in range(POOL_IMAGES)], 128))
    device = Device(amp=False)
    retrieve.embed_images(clip, pool.samples[:64], {"batch_size": 64, "workers": 0}, device)  # warm-up
    start = time.perf_counter()
    retrieve.embed_images(clip, pool.samples, {"batch_size": 64, "workers": 0}, device)
    return POOL_IMAGES / (time.perf_counter() - start)


def clustered(rng) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings around 1,000 centres (cosine 0.8 to their centre, as images of one
    concept are) and queries near 100 of the centres: how real pools look."""
    centres = unit(rng.standard_normal((1000, DIM), dtype=np.float32))
    emb = unit(centres[rng.integers(0, 1000, N)] + rng.standard_normal((N, DIM), dtype=np.float32) * 0.75 / DIM ** 0.5)
    picked = centres[rng.choice(1000, CLASSES, replace=False)]
    return emb, unit(picked + rng.standard_normal((CLASSES, DIM), dtype=np.float32) / DIM ** 0.5)


def measure(emb: np.ndarray, queries: np.ndarray, tmp: Path) -> dict:
    start = time.perf_counter()
    built = retrieve.build_index(emb, "auto")
    build_s = time.perf_counter() - start
    faiss.write_index(built, str(tmp / "index.faiss"))
    del built
    start = time.perf_counter()
    index = faiss.read_index(str(tmp / "index.faiss"))  # the cached index, as a second retrieval reads it
    load_s = time.perf_counter() - start
    index.nprobe = NPROBE
    t_index, (_, ids) = best_of(3, lambda: index.search(queries, K))
    t_numpy, exact = best_of(3, lambda: brute_force(emb, queries))
    recall = float(np.mean([len(set(a) & set(b)) / K for a, b in zip(ids, exact)]))
    return {"index": index, "build": build_s, "load": load_s, "faiss": t_index, "numpy": t_numpy, "recall": recall}


CAPTIONS, VOCAB = 1_000_000, 20_000


def captions_and_classes(rng) -> tuple[list[str], list[dict]]:
    """Captions of 6-15 words drawn Zipf-like from a vocabulary, a class name planted
    in one caption in twenty; class names of one to three rarer words."""
    words = np.array([f"w{i}" for i in range(VOCAB)])
    probs = 1 / np.arange(1, VOCAB + 1)
    probs /= probs.sum()
    classes = [{"id": f"c{c}", "name": " ".join(words[rng.integers(2000, VOCAB, rng.integers(1, 4))])}
               for c in range(CLASSES)]
    lengths = rng.integers(6, 16, CAPTIONS)
    drawn = iter(words[rng.choice(VOCAB, size=int(lengths.sum()), p=probs)])
    captions = []
    for i, n in enumerate(lengths):
        caption = [next(drawn) for _ in range(n)]
        if i % 20 == 0:
            caption.insert(int(rng.integers(0, n)), classes[int(rng.integers(0, CLASSES))]["name"])
        captions.append(" ".join(caption))
    return captions, classes


def substring(tmp: Path) -> dict:
    captions, classes = captions_and_classes(np.random.default_rng(1))
    path = tmp / "captions.sqlite"
    start = time.perf_counter()
    caption_index.build(path, captions)
    build_s = time.perf_counter() - start
    index = caption_index.CaptionIndex(path)
    start = time.perf_counter()
    fts = {c["id"]: index.match(caption_index.fts_query(c)) for c in classes}
    fts_s = time.perf_counter() - start
    start = time.perf_counter()
    scanned = {}
    for c in classes:
        tokens = [re.compile(rf"\b{re.escape(w)}\b", re.IGNORECASE) for w in c["name"].split()]
        scanned[c["id"]] = [i for i, cap in enumerate(captions) if all(t.search(cap) for t in tokens)]
    regex_s = time.perf_counter() - start
    return {"build": build_s, "fts": fts_s, "regex": regex_s, "same": fts == scanned,
            "matches": sum(map(len, fts.values()))}


def main() -> int:
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        emb = unit(rng.standard_normal((N, DIM), dtype=np.float32))
        rand = measure(emb, unit(rng.standard_normal((CLASSES, DIM), dtype=np.float32)), tmp)
        del emb
        clus = measure(*clustered(rng), tmp)
        rate = embedding_rate(tmp)
        sub = substring(tmp)
    index = rand["index"]
    print(f"index: {type(index).__name__} with {index.nlist} lists, nprobe {NPROBE}; built once in "
          f"{rand['build']:.1f} s, read from the cache in {rand['load']:.2f} s")
    for name, m in (("clustered", clus), ("random", rand)):
        print(f"{name}: top-{K} for {CLASSES} queries over {N:,} x {DIM}-d: faiss {m['faiss'] * 1000:.0f} ms, numpy "
              f"brute force {m['numpy'] * 1000:.0f} ms ({m['numpy'] / m['faiss']:.2f}x); recall@{K} of the exact "
              f"answer {m['recall']:.3f}")
    print(f"pool embedding, tiny open_clip model, 64 px JPEGs, 1 thread: {rate:.0f} images/s per core")
    print(f"retrieval speedup: {rand['numpy'] / rand['faiss']:.2f}x")
    print(f"substring: {CLASSES} classes over {CAPTIONS:,} captions ({sub['matches']:,} matches, the same sets: "
          f"{sub['same']}): FTS5 index built once in {sub['build']:.1f} s; queries {sub['fts'] * 1000:.0f} ms, "
          f"regex scan {sub['regex']:.1f} s")
    print(f"substring speedup: {sub['regex'] / sub['fts']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
