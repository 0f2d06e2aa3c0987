"""Retrieve real images per class from an image-text pool: ``python -m runners.retrieve --run-dir DIR [--resume]``.

The Unmet Promise of Synthetic Training Images, targeted retrieval. Candidates
per class come from captions that name the class or one of its synonyms as
whole words (``substring``; a caption naming two classes is ambiguous and
dropped), or from the pool images nearest the class's text embedding in a
faiss index (``clip-knn``; an image near several classes goes to the nearest).
Then the filters: a minimum CLIP score, de-duplication against an evaluation
split, and the per-class cap (substring: a seeded sample; clip-knn: the
nearest). Writes ``DIR/data/train/<class id>/<image>`` with the pool's own
bytes and ``DIR/data/manifest.jsonl`` (source, key, caption, score, method).

The pool's image embeddings and its index are computed once per pool and
model and kept in the workspace's ``cache/`` (as clip-retrieval does), so a
second retrieval from the same pool embeds nothing.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import re
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset

from runners import protocol
from runners.classes import load_classes
from runners.data import IMAGE_EXTENSIONS, mix_seed
from runners.kinds.retrieve import KIND
from runners.pool import Pool, PoolError, Sample, identity, open_pool
from runners.runtime import Cancelled, Device, RunContext, RunnerError, run_main, runner_args_parser

IVF_FROM = 200_000  # index = "auto": exact search below this many images


# -- substring ---------------------------------------------------------------
def words(text: str) -> tuple[str, ...]:
    return tuple(re.findall(r"[a-z0-9]+", text.lower()))


class PhraseMatcher:
    """Which classes a caption names: runs of whole words looked up among the classes'
    names and synonyms ("cat" does not match "catalog"), the longest name first, so
    "t-shirt" names the T-shirt and not also the shirt."""

    def __init__(self, classes: list[dict]):
        self.phrases: dict[tuple[str, ...], set[int]] = {}
        for c, cls in enumerate(classes):
            for name in cls["names"]:
                if words(name):
                    self.phrases.setdefault(words(name), set()).add(c)
        self.longest = max((len(p) for p in self.phrases), default=0)

    def classes_in(self, caption: str) -> set[int]:
        w = words(caption)
        found: set[int] = set()
        i = 0
        while i < len(w):
            for n in range(min(self.longest, len(w) - i), 0, -1):
                if w[i:i + n] in self.phrases:
                    found |= self.phrases[w[i:i + n]]
                    i += n
                    break
            else:
                i += 1
        return found


def substring_candidates(pool: Pool, classes: list[dict]) -> tuple[dict[int, list[int]], int]:
    """Sample indices per class, in pool order, and the number of ambiguous captions."""
    matcher = PhraseMatcher(classes)
    out: dict[int, list[int]] = {c: [] for c in range(len(classes))}
    ambiguous = 0
    for i, s in enumerate(pool.samples):
        hit = matcher.classes_in(s.caption)
        if len(hit) == 1:
            out[hit.pop()].append(i)
        elif hit:
            ambiguous += 1
    return out, ambiguous


# -- embeddings and the index ------------------------------------------------
class PoolImages(Dataset):
    """(image tensor, readable): an unreadable image is a blank one, flagged."""

    def __init__(self, samples: list[Sample], transform, size: int):
        self.samples, self.transform, self.size = samples, transform, size

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        try:
            return self.transform(self.samples[i].image()), True
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
            return torch.zeros(3, self.size, self.size), False


@torch.no_grad()
def embed_images(clip, samples: list[Sample], cfg: dict, device: Device, on_batch=None) -> tuple[np.ndarray, np.ndarray]:
    """Normalised image embeddings (float16) and which images could be read (``samples``
    must not be empty)."""
    from runners.clip import image_transform

    model = clip.model.to(device.device).eval()
    loader = DataLoader(PoolImages(samples, image_transform(clip), clip.image_size), batch_size=cfg["batch_size"],
                        num_workers=cfg["workers"], pin_memory=device.cuda)
    embs, valid = [], []
    for images, ok in loader:
        with device.autocast():
            e = torch.nn.functional.normalize(model.encode_image(device.to(images)).float(), dim=-1)
        embs.append(e.cpu().numpy().astype(np.float16))
        valid.append(ok.numpy())
        if on_batch:
            on_batch(len(ok))
    return np.concatenate(embs), np.concatenate(valid)


def build_index(emb: np.ndarray, index_type: str, seed: int = 0):
    """A faiss inner-product index: exact, or inverted lists over k-means cells
    (2 sqrt(N) of them, trained on 40 images per cell) for large pools."""
    import faiss

    x = np.ascontiguousarray(emb, dtype=np.float32)
    n, d = x.shape
    if index_type == "flat" or (index_type == "auto" and n < IVF_FROM):
        index = faiss.IndexFlatIP(d)
    else:
        nlist = max(1, min(int(2 * n ** 0.5), n // 40))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        train = x[rng.choice(n, size=min(n, 40 * nlist), replace=False)]
        index.train(train)
    index.add(x)
    return index


def model_identity(cfg: dict) -> list:
    p = Path(cfg.get("clip_pretrained") or "")
    files = sorted(p.iterdir()) if p.is_dir() else [p] if p.is_file() else []
    return [cfg["clip_model"], cfg.get("clip_pretrained"), [[f.name, f.stat().st_size, f.stat().st_mtime_ns]
                                                           for f in files]]


class PoolIndex:
    """The pool's embeddings and readable flags, cached per pool and model, and its
    faiss index of the requested type, cached beside them."""

    def __init__(self, ctx: RunContext, cfg: dict, pool: Pool, clip, device: Device):
        import faiss

        key = hashlib.sha256(json.dumps([identity(pool), model_identity(cfg)]).encode()).hexdigest()
        self.folder = protocol.workspace_cache(ctx.run_dir) / "clip-index" / key[:24]
        self.embedded, self.embed_rate = 0, 0.0
        if (self.folder / "valid.npy").is_file():
            ctx.log(f"pool embeddings from the cache {self.folder}")
        else:
            self._embed(ctx, cfg, pool, clip, device)
        self.emb = np.load(self.folder / "embeddings.npy")
        self.valid = np.load(self.folder / "valid.npy")
        index_file = self.folder / f"index-{cfg['index']}.faiss"
        if not index_file.is_file():
            # Unreadable images stay in as zero vectors, so index ids are pool positions; they are filtered out.
            index = build_index(self.emb, cfg["index"], cfg["seed"])
            # Streamed into the temp file (not serialised in memory first: a LAION-scale index is big).
            protocol.write_atomic(index_file, lambda f: faiss.write_index(index, faiss.PyCallbackIOWriter(f.write)))
        self.index = faiss.read_index(str(index_file))
        if hasattr(self.index, "nprobe"):
            self.index.nprobe = cfg["nprobe"]

    def _embed(self, ctx, cfg, pool, clip, device) -> None:
        total, start, done = len(pool.samples), time.time(), [0]

        def progress(n: int) -> None:
            done[0] += n
            rate = done[0] / max(1e-9, time.time() - start)
            ctx.emit(protocol.PROGRESS, phase="embed", done=done[0], total=total, unit="image", rate=round(rate, 2),
                     eta=round((total - done[0]) / rate, 1) if rate else None)
            if ctx.stop_requested:
                raise Cancelled("SIGTERM while embedding the pool (nothing cached yet)")

        emb, valid = embed_images(clip, pool.samples, cfg, device, progress)
        self.embedded, self.embed_rate = len(emb), len(emb) / max(1e-9, time.time() - start)
        # The folder appears whole or not at all; a retrieval that built it first wins.
        tmp = self.folder.with_name(f"{self.folder.name}.tmp-{os.getpid()}")
        tmp.mkdir(parents=True, exist_ok=True)
        np.save(tmp / "embeddings.npy", emb)
        np.save(tmp / "valid.npy", valid)
        (tmp / "pool.json").write_text(json.dumps({"pool": str(pool.root), "images": len(emb),
                                                   "model": model_identity(cfg)[:2]}))
        try:
            tmp.rename(self.folder)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
        ctx.log(f"embedded {len(emb)} pool images ({int((~valid).sum())} unreadable), cached in {self.folder}")

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)


# -- the run ---------------------------------------------------------------
def retrieve(ctx: RunContext, args) -> dict:
    cfg = KIND.resolve(ctx.spec)
    classes = load_classes(cfg["classes"])
    try:
        pool = open_pool(cfg["pool"], cfg.get("captions"))
    except PoolError as e:
        raise RunnerError(str(e)) from None
    for bad in pool.bad_shards:
        ctx.log(f"malformed shard skipped: {bad}", "warning")
    if not pool.samples:
        raise RunnerError(f"pool: {pool.root} holds no readable image with a caption")
    ctx.emit(protocol.START, config=cfg, pool_images=len(pool.samples), classes=len(classes),
             bad_shards=len(pool.bad_shards))
    device = Device(amp=cfg["amp"])
    counts = {"ambiguous": 0, "below_score": 0, "duplicates": 0, "corrupt": 0, "embedded": 0}
    needs_clip = cfg["method"] == "clip-knn" or cfg["min_clip_score"] or cfg.get("dedup_dir")
    scores: dict[tuple[int, int], float] = {}
    if needs_clip:
        from runners.clip import load_clip, text_embeddings

        clip = load_clip(cfg["clip_model"], cfg.get("clip_pretrained"))
        text = text_embeddings(clip, [c["name"] for c in classes], cfg["templates"], torch.device("cpu")).numpy()
        index = PoolIndex(ctx, cfg, pool, clip, device)
        counts["embedded"] = index.embedded
    if cfg["method"] == "substring":
        candidates, counts["ambiguous"] = substring_candidates(pool, classes)
        for c, idx in candidates.items():
            random.Random(mix_seed("retrieve", cfg["seed"], classes[c]["id"])).shuffle(idx)
    else:
        candidates = knn_candidates(index, text, cfg["images_per_class"] * cfg["candidates"])
    if needs_clip:
        candidates = {c: [i for i in idx if index.valid[i]] for c, idx in candidates.items()}
        for c, idx in candidates.items():
            for i in idx:
                scores[c, i] = float(index.emb[i].astype(np.float32) @ text[c])
    if cfg["min_clip_score"]:
        before = sum(map(len, candidates.values()))
        candidates = {c: [i for i in idx if scores[c, i] >= cfg["min_clip_score"]] for c, idx in candidates.items()}
        counts["below_score"] = before - sum(map(len, candidates.values()))
    if cfg.get("dedup_dir"):
        leaked = duplicates_of(index, {i for idx in candidates.values() for i in idx}, cfg, clip, device)
        counts["duplicates"] = len(leaked)
        candidates = {c: [i for i in idx if i not in leaked] for c, idx in candidates.items()}
        ctx.log(f"de-duplication against {cfg['dedup_dir']}: {len(leaked)} pool image(s) dropped")
    chosen, counts["corrupt"], rate = write_images(ctx, cfg, pool, classes, candidates, scores, args.resume)
    per_class = {classes[c]["id"]: len(v) for c, v in chosen.items()}
    counts_sorted = sorted(per_class.items(), key=lambda kv: kv[1])
    ctx.log(f"images per class over {len(per_class)} classes: min {counts_sorted[0][1]} ({counts_sorted[0][0]}), "
            f"median {counts_sorted[len(counts_sorted) // 2][1]}, max {counts_sorted[-1][1]}")
    short = {k: n for k, n in per_class.items() if n < cfg["images_per_class"]}
    for cid, n in list(short.items())[:20]:
        ctx.log(f"class {cid}: {n} of {cfg['images_per_class']} images found", "warning")
    if len(short) > 20:
        ctx.log(f"... and {len(short) - 20} more classes short of {cfg['images_per_class']} images", "warning")
    out = ctx.run_dir / protocol.DATA_DIR / "train"
    ctx.emit(protocol.ARTIFACT, path=str(out), kind="dataset")
    return {"images": sum(per_class.values()), "short_classes": len(short), "per_class": per_class,
            "pool_images": len(pool.samples), "bad_shards": len(pool.bad_shards), **counts,
            "images_per_s": round(index.embed_rate if counts["embedded"] else rate, 2)}


def knn_candidates(index: PoolIndex, text: np.ndarray, k: int) -> dict[int, list[int]]:
    """The k pool images nearest each class's text embedding, nearest first; an image
    found for several classes stays with the one it is nearest to."""
    sims, ids = index.search(text, k)
    best: dict[int, tuple[float, int]] = {}
    for c in range(len(text)):
        for s, i in zip(sims[c], ids[c]):
            if i >= 0 and (i not in best or s > best[i][0]):
                best[int(i)] = (float(s), c)
    out: dict[int, list[int]] = {c: [] for c in range(len(text))}
    for c in range(len(text)):
        out[c] = [int(i) for i in ids[c] if i >= 0 and best[int(i)][1] == c]
    return out


def duplicates_of(index: PoolIndex, wanted: set[int], cfg: dict, clip, device: Device) -> set[int]:
    """Pool images among ``wanted`` whose embedding is within the threshold of an
    image of the evaluation split."""
    import faiss

    root = Path(cfg["dedup_dir"])
    if not root.is_dir():
        raise RunnerError(f"dedup_against: folder {root} does not exist")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files or not wanted:
        return set()
    evals, ok = embed_images(clip, [Sample(str(f), str(f), "", f.suffix) for f in files], cfg, device)
    flat = faiss.IndexFlatIP(evals.shape[1])
    flat.add(np.ascontiguousarray(evals[ok], dtype=np.float32))
    order = sorted(wanted)
    sims, _ = flat.search(np.ascontiguousarray(index.emb[order], dtype=np.float32), 1)
    return {i for i, s in zip(order, sims[:, 0]) if s >= cfg["dedup_threshold"]}


def write_images(ctx: RunContext, cfg: dict, pool: Pool, classes: list[dict], candidates: dict[int, list[int]],
                 scores: dict, resume: bool) -> tuple[dict[int, list[dict]], int, float]:
    """Up to images_per_class readable images per class, in candidate order (an
    unreadable one is skipped, counted and replaced by the next candidate)."""
    out = ctx.run_dir / protocol.DATA_DIR
    chosen: dict[int, list[dict]] = {c: [] for c in candidates}
    corrupt, done, start = 0, 0, time.time()
    total = sum(min(len(v), cfg["images_per_class"]) for v in candidates.values())
    for c, idx in candidates.items():
        folder = out / "train" / classes[c]["id"]
        for i in idx:
            if len(chosen[c]) == cfg["images_per_class"]:
                break
            s = pool.samples[i]
            name = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{Path(s.source).stem}_{s.key}" if s.offset >= 0 else s.key)
            name = Path(name).stem + s.ext
            path = folder / name
            if not (resume and path.is_file()):
                data = s.read()
                if not readable(data):
                    corrupt += 1
                    continue
                folder.mkdir(parents=True, exist_ok=True)
                protocol.write_atomic(path, lambda f: f.write(data))
            chosen[c].append({"class": classes[c]["id"], "file": f"{classes[c]['id']}/{name}", "source": s.source,
                              "key": s.key, "caption": s.caption, "score": scores.get((c, i)),
                              "method": cfg["method"]})
            done += 1
            if done % 200 == 0 or done == total:
                rate = done / max(1e-9, time.time() - start)
                ctx.emit(protocol.PROGRESS, phase="write", done=done, total=total, unit="image", rate=round(rate, 2))
            if ctx.stop_requested:
                raise Cancelled("SIGTERM while writing images (a resumed run keeps what is written)")
    lines = [json.dumps(m) for c in chosen for m in chosen[c]]
    protocol.write_text_atomic(out / "manifest.jsonl", "".join(line + "\n" for line in lines))
    return chosen, corrupt, done / max(1e-9, time.time() - start)


def readable(data: bytes) -> bool:
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.verify()
        return True
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
        return False


def get_args_parser():
    return runner_args_parser("Retrieve real images per class from an image-text pool.")


def main(args) -> int:
    return run_main(args, retrieve)


if __name__ == "__main__":
    raise SystemExit(main(get_args_parser().parse_args()))
