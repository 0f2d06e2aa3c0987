"""Curate a dataset as The Unmet Promise's authors do: ``python -m runners.curate --run-dir DIR [--resume]``.

1. CLIP score: each image's cosine similarity to its class's text embedding
   (the mean of the raw template embeddings, normalised, as the authors'
   ``clip_filter``). Per class the threshold is the (100 - 100 f)-th
   percentile of its scores for ``keep_fraction`` f, raised to the
   (100 - 100 n / N)-th for ``keep_count`` n (numpy's percentile, linear
   interpolation); otherwise ``min_score``. Images at or above it are kept.
2. De-duplication of the kept images against the evaluation split: the largest
   similarity to any evaluation image, by the copy-detection descriptor
   (``runners/copy_detection.py``) or CLIP's image embeddings; above the
   threshold the image is dropped.

Writes ``DIR/data/train/<class>/<file>`` (hard links, or copies across
filesystems) and ``DIR/data/manifest.jsonl``: one line per input image with
its score, the threshold of its class, and ``dropped`` = why (``score``,
``duplicate`` with the evaluation file and similarity, ``unreadable``).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from runners import protocol
from runners.classes import load_class_list
from runners.clip import DEFAULT_TEMPLATES, class_names
from runners.data import IMAGE_EXTENSIONS, DataError, load_rgb, scan_folder
from runners.embed import Flagged, embed
from runners.kinds.curate import KIND, scores as filters_by_score
from runners.runtime import Cancelled, Device, RunContext, RunnerError, run_main, runner_args_parser



def class_thresholds(sims: np.ndarray, labels: np.ndarray, n_classes: int, cfg: dict) -> np.ndarray:
    """The score each image must reach: per class from keep_fraction / keep_count
    (the authors' percentile rule), else min_score for all."""
    out = np.full(len(sims), -np.inf if cfg.get("min_score") is None else cfg["min_score"])
    if cfg.get("keep_fraction") is None and cfg.get("keep_count") is None:
        return out
    for y in range(n_classes):
        mine = np.flatnonzero(labels == y)
        if not len(mine):
            continue
        s = sims[mine]
        thr = np.percentile(s, 100 - cfg["keep_fraction"] * 100) if cfg.get("keep_fraction") is not None else -np.inf
        if cfg.get("keep_count") is not None and len(s) > cfg["keep_count"]:
            thr = max(thr, np.percentile(s, 100 - cfg["keep_count"] / len(s) * 100))
        out[mine] = thr
    return out


def curate(ctx: RunContext, args) -> dict:
    cfg = KIND.resolve(ctx.spec)
    try:
        images = scan_folder(cfg["data_dir"], "data")
    except DataError as e:
        raise RunnerError(str(e)) from None
    files = [f for f, _ in images.samples]
    labels = np.array([y for _, y in images.samples])
    ctx.emit(protocol.START, config=cfg, images=len(files), classes=len(images.classes))
    ctx.log(f"curating {len(files)} images of {len(images.classes)} classes from {images.root}")
    device = Device(amp=cfg["amp"])
    progress = Progress(ctx)
    dropped: dict[int, dict] = {}
    sims = np.full(len(files), np.nan)
    thresholds = np.full(len(files), np.nan)
    clip_emb = None
    if filters_by_score(cfg) or (cfg.get("dedup_dir") and cfg["dedup"] == "clip"):
        from runners.clip import image_transform, load_clip, text_embeddings

        clip = load_clip(cfg["clip_model"], cfg.get("clip_pretrained"))
        clip.model.to(device.device).eval()
        class_list = load_class_list(cfg["classes"]) if cfg.get("classes") else None
        clip_emb, ok = embed(clip.model.visual, Flagged(files, load_rgb, image_transform(clip), clip.image_size),
                             cfg, device, progress.phase("clip score", len(files)))
        for i in np.flatnonzero(~ok):
            dropped[int(i)] = {"dropped": "unreadable"}
        if filters_by_score(cfg):
            templates = cfg.get("templates") or (class_list and class_list.filtering_templates) \
                or list(DEFAULT_TEMPLATES)
            names = class_names(images.classes, class_list.classes if class_list else None)
            text = text_embeddings(clip, names, templates, torch.device("cpu"), normalize_each=False).numpy()
            sims = np.einsum("nd,nd->n", clip_emb, text[labels])
            sims[~ok] = -np.inf
            thresholds = class_thresholds(sims, labels, len(images.classes), cfg)
            for i in np.flatnonzero(ok & (sims < thresholds)):
                dropped[int(i)] = {"dropped": "score"}
    if cfg.get("dedup_dir"):
        candidates = [i for i in range(len(files)) if i not in dropped]
        for i, (j, sim, eval_file) in dedup(ctx, cfg, files, candidates, clip_emb, device, progress).items():
            dropped[i] = {"dropped": "duplicate", "duplicate_of": eval_file, "similarity": round(sim, 6)}
    kept = write_output(ctx, images, files, labels, sims, thresholds, dropped)
    per_class = {c: int(n) for c, n in zip(images.classes, np.bincount(labels[kept], minlength=len(images.classes)))}
    reasons = [d["dropped"] for d in dropped.values()]
    summary = {"images_in": len(files), "kept": len(kept), "below_score": reasons.count("score"),
               "duplicates": reasons.count("duplicate"), "unreadable": reasons.count("unreadable"),
               "per_class": per_class}
    ctx.log(f"kept {len(kept)} of {len(files)} images: {summary['below_score']} below their class's score "
            f"threshold, {summary['duplicates']} near-duplicates of the evaluation split, "
            f"{summary['unreadable']} unreadable")
    empty = [c for c, n in per_class.items() if not n]
    if empty:
        ctx.log(f"{len(empty)} class(es) kept no image: {', '.join(empty[:10])}", "warning")
    out = ctx.run_dir / protocol.DATA_DIR / "train"
    ctx.emit(protocol.ARTIFACT, path=str(out), kind="dataset")
    return summary


def dedup(ctx: RunContext, cfg: dict, files: list[str], candidates: list[int], clip_emb, device: Device,
          progress: "Progress") -> dict[int, tuple[int, float, str]]:
    """candidate index -> (evaluation index, similarity, evaluation file) for every
    candidate more similar than the threshold to some evaluation image."""
    root = Path(cfg["dedup_dir"])
    if not root.is_dir():
        raise RunnerError(f"dedup_against: folder {root} does not exist")
    evals = sorted(str(p) for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not evals or not candidates:
        return {}
    if cfg["dedup"] == "descriptor":
        from runners.copy_detection import load_descriptor

        model, transform = load_descriptor(cfg["dedup_weights"])
        model.to(device.device)
        size = transform.transforms[0].size[0]
        ours, _ = embed(model, Flagged([files[i] for i in candidates], load_rgb, transform, size), cfg, device,
                        progress.phase("descriptor", len(candidates)))
        theirs, ok = embed(model, Flagged(evals, load_rgb, transform, size), cfg, device,
                           progress.phase("descriptor (eval)", len(evals)))
    else:
        from runners.clip import image_transform, load_clip

        clip = load_clip(cfg["clip_model"], cfg.get("clip_pretrained"))
        clip.model.to(device.device).eval()
        ours = clip_emb[candidates]
        theirs, ok = embed(clip.model.visual, Flagged(evals, load_rgb, image_transform(clip), clip.image_size), cfg,
                           device, progress.phase("clip (eval)", len(evals)))
    if (~ok).any():
        ctx.log(f"{int((~ok).sum())} unreadable evaluation image(s) not compared", "warning")
    theirs = theirs[ok]
    evals = [f for f, good in zip(evals, ok) if good]
    out = {}
    for start in range(0, len(candidates), 4096):  # bounded memory: [4096, evaluation images] at a time
        sim = ours[start:start + 4096] @ theirs.T
        j = sim.argmax(1)
        best = sim[np.arange(len(j)), j]
        for k in np.flatnonzero(best > cfg["dedup_threshold"]):
            out[candidates[start + k]] = (int(j[k]), float(best[k]), evals[j[k]])
    return out


def write_output(ctx: RunContext, images, files: list[str], labels: np.ndarray, sims: np.ndarray,
                 thresholds: np.ndarray, dropped: dict[int, dict]) -> np.ndarray:
    """Link the kept images into data/train/<class>/ and write the manifest; the kept indices."""
    out = ctx.run_dir / protocol.DATA_DIR
    lines, kept = [], []
    for i, f in enumerate(files):
        cls = images.classes[labels[i]]
        rec = {"file": f"{cls}/{Path(f).name}", "source": f, "class": cls,
               "score": None if np.isnan(sims[i]) or np.isinf(sims[i]) else round(float(sims[i]), 6),
               "threshold": None if np.isnan(thresholds[i]) or np.isinf(thresholds[i]) else
               round(float(thresholds[i]), 6), **dropped.get(i, {"dropped": None})}
        lines.append(json.dumps(rec) + "\n")
        if i in dropped:
            continue
        kept.append(i)
        dest = out / "train" / rec["file"]
        if not dest.is_file():
            dest.parent.mkdir(parents=True, exist_ok=True)
            link_or_copy(f, dest)
        if ctx.stop_requested:
            raise Cancelled("SIGTERM while writing the curated set (a resumed run keeps what is written)")
    protocol.write_text_atomic(out / "manifest.jsonl", "".join(lines))
    return np.array(kept, dtype=int)


def link_or_copy(src: str, dest: Path) -> None:
    tmp = protocol.temp_path(dest)
    try:
        os.link(src, tmp)
    except OSError:  # another filesystem, or one without hard links
        shutil.copyfile(src, tmp)
    os.replace(tmp, dest)


class Progress:
    """progress events of the embedding phases, and the SIGTERM check between batches."""

    def __init__(self, ctx: RunContext):
        self.ctx = ctx

    def phase(self, name: str, total: int):
        start, done = time.time(), [0]

        def on_batch(n: int) -> None:
            done[0] += n
            rate = done[0] / max(1e-9, time.time() - start)
            self.ctx.emit(protocol.PROGRESS, phase=name, done=done[0], total=total, unit="image",
                          rate=round(rate, 2), eta=round((total - done[0]) / rate, 1) if rate else None)
            if self.ctx.stop_requested:
                raise Cancelled(f"SIGTERM during {name} (nothing written yet)")

        return on_batch


def get_args_parser():
    return runner_args_parser("Curate a dataset: CLIP score per class and de-duplication against an eval split.")


def main(args) -> int:
    return run_main(args, curate)


if __name__ == "__main__":
    raise SystemExit(main(get_args_parser().parse_args()))
