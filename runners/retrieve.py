"""Retrieve real images per class from an image-text pool: ``python -m runners.retrieve --run-dir DIR [--resume]``.

The Unmet Promise of Synthetic Training Images, targeted retrieval as the
authors' ``data_sourcing/retrieval`` does it. ``substring``: the captions that
SQLite FTS5 matches for the class's query (``runners/caption_index.py``).
``clip-knn``: for each of the class's templates, the k pool images nearest the
query in the image index and the k captions nearest it in the caption index
(faiss), unioned. Either way an image found for several classes is kept under
each, labelled by the query that found it; curation is a ``curate`` run. Writes
``DIR/data/train/<class id>/<image>`` with the pool's own bytes and
``DIR/data/manifest.jsonl`` (class, source, key, caption, score, method).

The pool's caption index, embeddings and faiss indexes are computed once per
pool (and model) and kept in the workspace's ``cache/`` (as clip-retrieval
does), so a second retrieval from the same pool indexes nothing.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import re
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from runners import caption_index, protocol
from runners.embed import Flagged, embed
from runners.classes import load_class_list
from runners.clip import DEFAULT_TEMPLATES
from runners.data import mix_seed
from runners.kinds.retrieve import KIND
from runners.pool import Pool, PoolError, Sample, identity, metadata_databases, open_pool
from runners.runtime import Cancelled, Device, RunContext, RunnerError, run_main, runner_args_parser

IVF_FROM = 200_000  # index = "auto": exact search below this many images


# -- substring ---------------------------------------------------------------
def substring_candidates(ctx: RunContext, pool: Pool, classes: list[dict]) -> dict[int, list[int]]:
    """Sample indices per class, in pool order: what FTS5 matches for each class's query."""
    path = protocol.workspace_cache(ctx.run_dir) / "caption-index" / f"{pool_key(pool)}.sqlite"
    if path.is_file():
        ctx.log(f"caption index from the cache {path}")
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        start = time.time()
        caption_index.build(path, (s.caption for s in pool.samples))
        ctx.log(f"indexed {len(pool.samples)} captions for full-text search in {time.time() - start:.1f} s ({path})")
    index = caption_index.CaptionIndex(path)
    try:
        return {c: index.match(caption_index.fts_query(cls)) for c, cls in enumerate(classes)}
    finally:
        index.close()


def database_candidates(ctx: RunContext, databases: list[Path], pool: Pool, classes: list[dict]
                        ) -> tuple[dict[int, list[int]], int]:
    """Per class, the downloaded images (``pool``, by URL) of the rows the authors'
    databases match; the matches with no image are listed in data/not-downloaded.jsonl
    (url, caption, class: img2dataset's input) and counted."""
    by_url = {s.url: i for i, s in enumerate(pool.samples) if s.url}
    out: dict[int, list[int]] = {}
    missing: list[str] = []
    for c, cls in enumerate(classes):
        found: dict[int, None] = {}
        for db in databases:
            try:
                rows = caption_index.search_database(db, caption_index.fts_query(cls))
            except caption_index.QueryError as e:
                raise RunnerError(str(e)) from None
            for url, caption in rows:
                if url in by_url:
                    found[by_url[url]] = None
                else:
                    missing.append(json.dumps({"url": url, "caption": caption, "class": cls["id"]}) + "\n")
        out[c] = list(found)
    ctx.log(f"searched {len(databases)} caption database(s): {sum(map(len, out.values()))} matches downloaded, "
            f"{len(missing)} not")
    if missing:
        path = ctx.run_dir / protocol.DATA_DIR / "not-downloaded.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        protocol.write_text_atomic(path, "".join(missing))
        ctx.log(f"{len(missing)} matched URL(s) have no image in {pool.root}: listed in {path} for img2dataset",
                "warning")
    return out, len(missing)


def pool_key(pool: Pool) -> str:
    return hashlib.sha256(json.dumps(identity(pool)).encode()).hexdigest()[:24]


# -- embeddings and the index ------------------------------------------------
def embed_images(clip, samples: list[Sample], cfg: dict, device: Device,
                 on_batch=None) -> tuple[np.ndarray, np.ndarray]:
    """Normalised image embeddings (float16) and which images could be read
    (``samples`` must not be empty)."""
    from runners.clip import image_transform

    model = clip.model.to(device.device).eval()
    emb, ok = embed(model.encode_image, Flagged(samples, Sample.image, image_transform(clip), clip.image_size), cfg,
                    device, on_batch)
    return emb.astype(np.float16), ok


@torch.no_grad()
def embed_captions(clip, samples: list[Sample], cfg: dict, device: Device, on_batch=None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Normalised caption embeddings (float16), every caption valid."""
    model = clip.model.to(device.device).eval()
    embs = []
    for i in range(0, len(samples), cfg["batch_size"]):
        batch = [s.caption for s in samples[i:i + cfg["batch_size"]]]
        with device.autocast():
            tokens = clip.tokenizer(batch).to(device.device)
            e = torch.nn.functional.normalize(model.encode_text(tokens).float(), dim=-1)
        embs.append(e.cpu().numpy().astype(np.float16))
        if on_batch:
            on_batch(len(batch))
    return np.concatenate(embs), np.ones(len(samples), dtype=bool)


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
    """The pool's embeddings of one modality ("image" or "text": its captions) with
    readable flags, cached per pool and model, and its faiss index of the requested
    type, cached beside them."""

    def __init__(self, ctx: RunContext, cfg: dict, pool: Pool, clip, device: Device, modality: str):
        import faiss

        key = hashlib.sha256(json.dumps([identity(pool), model_identity(cfg)]).encode()).hexdigest()
        self.folder = protocol.workspace_cache(ctx.run_dir) / "clip-index" / key[:24]
        prefix = "" if modality == "image" else "text-"  # image files keep the names older caches have
        self.embedded, self.embed_rate = 0, 0.0
        if (self.folder / f"{prefix}valid.npy").is_file():
            ctx.log(f"pool {modality} embeddings from the cache {self.folder}")
        else:
            self._embed(ctx, cfg, pool, clip, device, modality, prefix)
        self.emb = np.load(self.folder / f"{prefix}embeddings.npy")
        self.valid = np.load(self.folder / f"{prefix}valid.npy")
        index_file = self.folder / f"{prefix}index-{cfg['index']}.faiss"
        if not index_file.is_file():
            # Unreadable images stay in as zero vectors, so index ids are pool positions; they are filtered out.
            index = build_index(self.emb, cfg["index"], cfg["seed"])
            # Streamed into the temp file (not serialised in memory first: a LAION-scale index is big).
            protocol.write_atomic(index_file, lambda f: faiss.write_index(index, faiss.PyCallbackIOWriter(f.write)))
        self.index = faiss.read_index(str(index_file))
        if hasattr(self.index, "nprobe"):
            self.index.nprobe = cfg["nprobe"]

    def _embed(self, ctx, cfg, pool, clip, device, modality: str, prefix: str) -> None:
        total, start, done = len(pool.samples), time.time(), [0]

        def progress(n: int) -> None:
            done[0] += n
            rate = done[0] / max(1e-9, time.time() - start)
            ctx.emit(protocol.PROGRESS, phase=f"embed {modality}", done=done[0], total=total, unit=modality,
                     rate=round(rate, 2), eta=round((total - done[0]) / rate, 1) if rate else None)
            if ctx.stop_requested:
                raise Cancelled(f"SIGTERM while embedding the pool's {modality}s (nothing cached yet)")

        embed = embed_images if modality == "image" else embed_captions
        emb, valid = embed(clip, pool.samples, cfg, device, progress)
        self.embedded, self.embed_rate = len(emb), len(emb) / max(1e-9, time.time() - start)
        # Each file appears whole or not at all, valid.npy last: it marks the embeddings complete.
        self.folder.mkdir(parents=True, exist_ok=True)
        protocol.write_atomic(self.folder / f"{prefix}embeddings.npy", lambda f: np.save(f, emb))
        protocol.write_json_atomic(self.folder / "pool.json", {"pool": str(pool.root), "images": len(emb),
                                                                "model": model_identity(cfg)[:2]})
        protocol.write_atomic(self.folder / f"{prefix}valid.npy", lambda f: np.save(f, valid))
        ctx.log(f"embedded {len(emb)} pool {modality}s ({int((~valid).sum())} unreadable), cached in {self.folder}")

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.index.search(np.ascontiguousarray(queries, dtype=np.float32), min(k, self.index.ntotal))


# -- the run ---------------------------------------------------------------
def retrieve(ctx: RunContext, args) -> dict:
    cfg = KIND.resolve(ctx.spec)
    class_list = load_class_list(cfg["classes"])
    classes = class_list.classes
    if cfg["method"] == "substring" and (bad := caption_index.check_queries(classes)):
        raise RunnerError("SQLite FTS5 cannot parse these classes' queries (give each a `query` in the class "
                          "file):\n  " + "\n  ".join(bad))
    databases = metadata_databases(cfg["pool"])
    if databases and cfg["method"] != "substring":
        raise RunnerError(f"pool: {cfg['pool']} holds caption databases, searched by substring; clip-knn needs a "
                          "pool of images")
    if databases and not cfg.get("images"):
        raise RunnerError(f"pool: {cfg['pool']} holds caption databases; set `images` to the shards img2dataset "
                          "downloaded from their URLs")
    try:
        pool = open_pool(cfg["images"] if databases else cfg["pool"], None if databases else cfg.get("captions"))
    except PoolError as e:
        raise RunnerError(str(e)) from None
    for bad in pool.bad_shards:
        ctx.log(f"malformed shard skipped: {bad}", "warning")
    if not pool.samples:
        raise RunnerError(f"pool: {pool.root} holds no readable image with a caption")
    ctx.emit(protocol.START, config=cfg, pool_images=len(pool.samples), classes=len(classes),
             bad_shards=len(pool.bad_shards))
    ctx.log(f"retrieving {len(classes)} classes from {len(pool.samples)} pool images by {cfg['method']}")
    counts = {"corrupt": 0, "embedded": 0}
    scores: dict[tuple[int, int], float] = {}
    if cfg["method"] == "substring":
        if databases:
            candidates, counts["not_downloaded"] = database_candidates(ctx, databases, pool, classes)
        else:
            candidates = substring_candidates(ctx, pool, classes)
        for c, idx in candidates.items():  # images_per_class caps by a seeded sample
            random.Random(mix_seed("retrieve", cfg["seed"], classes[c]["id"])).shuffle(idx)
        embed_rate = 0.0
    else:
        from runners.clip import load_clip, text_embeddings

        device = Device(amp=cfg["amp"])
        clip = load_clip(cfg["clip_model"], cfg.get("clip_pretrained"))
        templates = cfg.get("templates") or class_list.retrieval_templates or list(DEFAULT_TEMPLATES)
        # One query per (class, template): the authors search with each template alone.
        queries = torch.stack([text_embeddings(clip, [c["name"] for c in classes], [t], torch.device("cpu"))
                               for t in templates], dim=1).numpy()
        indexes = [PoolIndex(ctx, cfg, pool, clip, device, m) for m in cfg["knn_index"]]
        counts["embedded"] = sum(ix.embedded for ix in indexes)
        embed_rate = max(ix.embed_rate for ix in indexes)
        candidates, scores = knn_candidates(indexes, queries, cfg["k"])
    chosen, counts["corrupt"], rate = write_images(ctx, cfg, pool, classes, candidates, scores, args.resume)
    per_class = {classes[c]["id"]: len(v) for c, v in chosen.items()}
    counts_sorted = sorted(per_class.items(), key=lambda kv: kv[1])
    ctx.log(f"images per class over {len(per_class)} classes: min {counts_sorted[0][1]} ({counts_sorted[0][0]}), "
            f"median {counts_sorted[len(counts_sorted) // 2][1]}, max {counts_sorted[-1][1]}")
    keys = [(m["source"], m["key"]) for ms in chosen.values() for m in ms]
    multi = len(keys) - len(set(keys))
    if multi:
        ctx.log(f"{multi} image(s) retrieved for more than one class are kept under each")
    wanted = cfg.get("images_per_class") or 1
    short = {k: n for k, n in per_class.items() if n < wanted}
    for cid, n in list(short.items())[:20]:
        ctx.log(f"class {cid}: {n} of {wanted} images found" if cfg.get("images_per_class")
                else f"class {cid}: no image found", "warning")
    if len(short) > 20:
        ctx.log(f"... and {len(short) - 20} more classes short of {wanted} images", "warning")
    out = ctx.run_dir / protocol.DATA_DIR / "train"
    ctx.emit(protocol.ARTIFACT, path=str(out), kind="dataset")
    return {"images": sum(per_class.values()), "multi_class": multi, "short_classes": len(short),
            "per_class": per_class, "pool_images": len(pool.samples), "bad_shards": len(pool.bad_shards), **counts,
            "images_per_s": round(embed_rate if counts["embedded"] else rate, 2)}


def knn_candidates(indexes: list[PoolIndex], queries: np.ndarray, k: int
                   ) -> tuple[dict[int, list[int]], dict[tuple[int, int], float]]:
    """Per class, the union over its queries (``queries``: [classes, templates, dim])
    and over the indexes of the k nearest pool samples, unreadable images left out;
    most similar first. The same image may be found for several classes: it stays
    with each, as the authors' per-class searches keep it."""
    n_classes, n_templates, dim = queries.shape
    # Captions are always readable; an image index knows which images are not.
    readable = np.logical_and.reduce([ix.valid for ix in indexes])
    best: dict[tuple[int, int], float] = {}
    for ix in indexes:
        sims, ids = ix.search(queries.reshape(-1, dim), k)
        for row, (ss, ii) in enumerate(zip(sims, ids)):
            c = row // n_templates
            for s, i in zip(ss, ii):
                i = int(i)
                if i >= 0 and readable[i] and s > best.get((c, i), -np.inf):
                    best[c, i] = float(s)
    out: dict[int, list[int]] = {c: [] for c in range(n_classes)}
    for (c, i), s in sorted(best.items(), key=lambda kv: -kv[1]):
        out[c].append(i)
    return out, best


def write_images(ctx: RunContext, cfg: dict, pool: Pool, classes: list[dict], candidates: dict[int, list[int]],
                 scores: dict, resume: bool) -> tuple[dict[int, list[dict]], int, float]:
    """The readable images of each class (up to images_per_class, in candidate order;
    an unreadable one is skipped, counted and replaced by the next candidate)."""
    cap = cfg.get("images_per_class") or max(map(len, candidates.values()), default=0)
    out = ctx.run_dir / protocol.DATA_DIR
    chosen: dict[int, list[dict]] = {c: [] for c in candidates}
    corrupt, done, start = 0, 0, time.time()
    total = sum(min(len(v), cap) for v in candidates.values())
    for c, idx in candidates.items():
        folder = out / "train" / classes[c]["id"]
        for i in idx:
            if len(chosen[c]) == cap:
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
                              "method": cfg["method"], "query": caption_index.fts_query(classes[c])
                              if cfg["method"] == "substring" else None})
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
