"""``kind = "retrieve"``: real images for each class from an image-text pool (runner: ``runners/retrieve.py``).

The Unmet Promise of Synthetic Training Images compares targeted synthetic
images with targeted *retrieved* real ones: captions that name the class
(substring), or the pool images nearest the class's CLIP text embedding
(clip-knn), filtered by CLIP score and de-duplicated against the evaluation
split. The output is an ImageFolder like a generate run's.
"""

from __future__ import annotations

from runners import protocol
from runners.kinds.base import Chart, Field, Kind, Metric, Problem, Ref, check_templates

METHODS = ("substring", "clip-knn")
INDEXES = ("auto", "flat", "ivf")


F = Field
FIELDS = {
    "pool": F(str, help="the image-text pool: a folder of webdataset .tar shards (img2dataset's output) or of "
              "images with captions.csv", path="dir"),
    "captions": F(str, help="a folder pool's captions file (CSV with file,caption columns, or parquet); default "
                  "POOL/captions.csv", path="file"),
    "method": F(str, "substring", "caption names the class as whole words, or CLIP text-to-image kNN",
                choices=METHODS),
    "classes": F(str, "imagenet100", "the classes: 'imagenet100' (WordNet names and synonyms) or a JSON/CSV "
                 "with id,name[,names]", path="file"),
    "images_per_class": F(int, 100, "at most this many images per class", min=1),
    "templates": F(list, ["a photo of a {name}."], "text queries per class (clip-knn, CLIP score), averaged",
                   check=check_templates),
    "clip_model": F(str, "ViT-B-16", "open_clip architecture of the embeddings"),
    "clip_pretrained": F(str, help="its weights: a local file, a folder with open_clip_config.json, or a tag "
                         "such as 'laion2b_s34b_b88k' (downloaded: online boxes only)", path="local"),
    "min_clip_score": F(float, 0.0, "keep images whose cosine similarity to their class's text embedding is at "
                        "least this (0 = off)", min=-1, max=1),
    "dedup_against": F(str, help="a dataset whose evaluation split must not leak in",
                       ref=Ref(to="dedup_dir", split="val", artifact="dataset")),
    "dedup_threshold": F(float, 0.95, "a pool image this similar (cosine) to an evaluation image is dropped",
                         min=0, max=1),
    "candidates": F(int, 4, "clip-knn: neighbours fetched per class, as a multiple of images_per_class", min=1),
    "index": F(str, "auto", "faiss index of the pool: exact ('flat'), inverted lists ('ivf'), or 'auto' (ivf "
               "from 200,000 images)", choices=INDEXES),
    "nprobe": F(int, 32, "inverted lists searched per query (ivf)", min=1),
    "batch_size": F(int, 64, "images embedded together", min=1),
    "workers": F(int, 4, "data loader processes decoding the images", min=0),
    "amp": F(bool, True, "half precision on CUDA"),
}


def _needs_clip(p: dict) -> bool:
    return p.get("method") == "clip-knn" or bool(p.get("min_clip_score")) or "dedup_against" in p


def check(p: dict) -> list[Problem]:
    out: list[Problem] = [] if "pool" in p else [("pool", "needs the image-text pool to retrieve from")]
    if _needs_clip(p) and "clip_pretrained" not in p:
        out.append(("clip_pretrained", "clip-knn, min_clip_score and dedup_against embed images: name the CLIP "
                                       "weights (a local file or folder, or a tag on an online box)"))
    return out


KIND = Kind(
    name="retrieve",
    runner="runners.retrieve",
    help="retrieve real images per class from an image-text pool (caption substring or CLIP kNN)",
    fields=FIELDS,
    artifacts={"dataset": "the retrieved ImageFolder, data/train/"},
    metrics=(Metric("images", "Images", 0), Metric("short_classes", "Short classes", 0),
             Metric("embedded", "Embedded", 0), Metric("images_per_s", "Images/s", 2)),
    charts=(Chart("images/s", protocol.PROGRESS, "done", (("rate", "img/s"),)),),
    check=check,
)
