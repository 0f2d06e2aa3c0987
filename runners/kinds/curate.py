"""``kind = "curate"``: the step both arms of The Unmet Promise go through (runner: ``runners/curate.py``).

The authors filter every targeted dataset, retrieved and synthetic alike
(their ``data_sourcing/filtering/clip_filter_and_dedup.py``): each image's
CLIP score against its class's filtering templates (open_clip ViT-B-16,
laion2b_s34b_b88k), kept above a per-class threshold (the top fraction of the
class, capped at a count) or a global one; then images too close to an
evaluation image by the ISC21 copy-detection descriptor (``isc_ft_v107``,
similarity above 0.604169) are dropped. The output is an ImageFolder of the
kept images (hard links where the filesystem allows) with a manifest saying
what was dropped and why.
"""

from __future__ import annotations

from runners import protocol
from runners.kinds.base import CLASS_LISTS, Chart, Field, Kind, Metric, Problem, Ref, check_class_source, \
    check_templates

DEDUP = ("descriptor", "clip")
DEDUP_THRESHOLDS = {"descriptor": 0.604169, "clip": 0.95}

F = Field
FIELDS = {
    "data": F(str, help="the images to curate: a dataset's train split or a run that produces a dataset",
              ref=Ref(to="data_dir", split="train", artifact="dataset")),
    "classes": F(str, help="names of the class folders for the templates: " + ", ".join(CLASS_LISTS)
                 + ", or a JSON/CSV with id,name; default: the folder names", path="file", check=check_class_source),
    "templates": F(list, help="filtering templates, their text embeddings averaged per class; default: the "
                   "class list's (the authors'), else 'a photo of a {name}.'", check=check_templates),
    "keep_fraction": F(float, help="keep the top fraction of each class by CLIP score (the authors' example: 0.3)",
                       min=0, max=1, min_open=True),
    "keep_count": F(int, help="keep at most this many images per class, the highest scores", min=1),
    "min_score": F(float, help="keep images whose CLIP score is at least this (used when neither keep_fraction "
                   "nor keep_count is set)", min=-1, max=1),
    "clip_model": F(str, "ViT-B-16", "open_clip architecture of the CLIP score"),
    "clip_pretrained": F(str, help="its weights (the authors': laion2b_s34b_b88k): a local file, a folder with "
                         "open_clip_config.json, or a tag (downloaded: online boxes only)", path="local"),
    "dedup_against": F(str, help="a dataset whose evaluation split must not leak in",
                       ref=Ref(to="dedup_dir", split="val")),
    "dedup": F(str, "descriptor", "near-duplicates by the ISC21 copy-detection descriptor (the authors'), or by "
               "CLIP image cosine (a fallback without those weights)", choices=DEDUP),
    "dedup_weights": F(str, help="the descriptor's checkpoint file (isc_ft_v107.pth.tar)", path="file"),
    "dedup_threshold": F(float, help="an image this similar to an evaluation image is dropped; default 0.604169 "
                         "(descriptor) or 0.95 (clip)", min=-1, max=1),
    "batch_size": F(int, 64, "images embedded together", min=1),
    "workers": F(int, 4, "data loader processes decoding the images", min=0),
    "amp": F(bool, True, "half precision on CUDA"),
}


def scores(p: dict) -> bool:
    """Whether the run filters by CLIP score."""
    return any(p.get(k) is not None for k in ("keep_fraction", "keep_count", "min_score"))


def check(p: dict) -> list[Problem]:
    out: list[Problem] = [] if "data" in p else [("data", "needs the images to curate")]
    if not scores(p) and "dedup_against" not in p:
        out.append((None, "curates nothing: set keep_fraction, keep_count or min_score, or dedup_against"))
    needs_clip = scores(p) or ("dedup_against" in p and p.get("dedup") == "clip")
    if needs_clip and "clip_pretrained" not in p:
        out.append(("clip_pretrained", "the CLIP score embeds the images: name the CLIP weights"))
    if "dedup_against" in p and p.get("dedup", "descriptor") == "descriptor" and "dedup_weights" not in p:
        out.append(("dedup_weights", "de-duplication by descriptor needs its checkpoint file (or dedup = \"clip\")"))
    return out


def defaults_for(p: dict) -> dict:
    return {"dedup_threshold": DEDUP_THRESHOLDS[p.get("dedup") or "descriptor"]}


KIND = Kind(
    name="curate",
    runner="runners.curate",
    help="filter a dataset by CLIP score per class and drop near-duplicates of an evaluation split",
    fields=FIELDS,
    artifacts={"dataset": "the kept images as an ImageFolder, data/train/"},
    metrics=(Metric("kept", "Kept", 0), Metric("below_score", "Below score", 0), Metric("duplicates", "Duplicates", 0)),
    charts=(Chart("images/s", protocol.PROGRESS, "done", (("rate", "img/s"),)),),
    check=check,
    defaults_for=defaults_for,
)
