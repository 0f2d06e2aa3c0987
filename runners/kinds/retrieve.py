"""``kind = "retrieve"``: real images for each class from an image-text pool (runner: ``runners/retrieve.py``).

The Unmet Promise of Synthetic Training Images compares targeted synthetic
images with targeted *retrieved* real ones, found as the authors' code finds
them: captions that match the class's SQLite full-text query (substring), or
the pool images and captions nearest each of the class's text queries, one
search per template (clip-knn). An image found for several classes is kept
under each. The output is an ImageFolder like a generate run's; curation
(CLIP score, de-duplication against an evaluation split) is a ``curate`` run,
the same step the synthetic arm goes through.
"""

from __future__ import annotations

from runners import protocol
from runners.kinds.base import CLASS_LISTS, Chart, Field, Kind, Metric, Problem, check_class_source, check_templates

METHODS = ("substring", "clip-knn")
INDEXES = ("auto", "flat", "ivf")
MODALITIES = ("image", "text")


def _modalities(value: list) -> str | None:
    if not value or not set(value) <= set(MODALITIES) or len(set(value)) != len(value):
        return f"must be a non-empty list of {', '.join(map(repr, MODALITIES))}, each once"
    return None


F = Field
FIELDS = {
    "pool": F(str, help="the image-text pool: a folder of webdataset .tar shards (img2dataset's output), of "
              "images with captions.csv, or of the authors' SQLite caption databases (*.db; substring only)",
              path="dir"),
    "images": F(str, help="a pool of databases: the webdataset shards img2dataset downloaded from their URLs "
                "(matched by the url in each sample's .json)", path="dir"),
    "captions": F(str, help="a folder pool's captions file (CSV with file,caption columns, or parquet); default "
                  "POOL/captions.csv", path="file"),
    "method": F(str, "substring", "captions matching the class's SQLite FTS5 query (the authors' substring "
                "search), or CLIP kNN from each of the class's text queries", choices=METHODS),
    "classes": F(str, "imagenet100", "the classes: " + ", ".join(CLASS_LISTS) + " (the authors' names and "
                 "queries), or a JSON/CSV with id,name[,query]", path="file", check=check_class_source),
    "images_per_class": F(int, help="at most this many images per class (a seeded sample; clip-knn: the most "
                          "similar); default: every match, as the authors kept", min=1),
    "templates": F(list, help="clip-knn: text queries per class, one search each; default: the class list's "
                   "retrieval templates, else 'a photo of a {name}.'", check=check_templates),
    "k": F(int, 500, "clip-knn: neighbours per query and index (the authors' results_per_query)", min=1),
    "knn_index": F(list, ["image", "text"], "clip-knn: search the pool's image embeddings, its caption "
                   "embeddings, or both (the authors used both)", check=_modalities),
    "clip_model": F(str, "ViT-L-14", "clip-knn: open_clip architecture of the embeddings (the authors' kNN "
                    "used OpenAI ViT-L/14)"),
    "clip_pretrained": F(str, help="its weights: a local file, a folder with open_clip_config.json, or a tag "
                         "such as 'openai' (downloaded: online boxes only)", path="local"),
    "index": F(str, "auto", "faiss index of the pool: exact ('flat'), inverted lists ('ivf'), or 'auto' (ivf "
               "from 200,000 images)", choices=INDEXES),
    "nprobe": F(int, 32, "inverted lists searched per query (ivf)", min=1),
    "batch_size": F(int, 64, "images embedded together", min=1),
    "workers": F(int, 4, "data loader processes decoding the images", min=0),
    "amp": F(bool, True, "half precision on CUDA"),
}


def check(p: dict) -> list[Problem]:
    out: list[Problem] = [] if "pool" in p else [("pool", "needs the image-text pool to retrieve from")]
    if "images" in p and p.get("method") == "clip-knn":
        out.append(("images", "a pool of caption databases is searched by substring; clip-knn embeds a pool of "
                              "images"))
    if p.get("method") == "clip-knn" and "clip_pretrained" not in p:
        out.append(("clip_pretrained", "clip-knn embeds the pool: name the CLIP weights (a local file or folder, "
                                       "or a tag on an online box)"))
    return out


KIND = Kind(
    name="retrieve",
    runner="runners.retrieve",
    help="retrieve real images per class from an image-text pool (caption full-text search or CLIP kNN)",
    fields=FIELDS,
    artifacts={"dataset": "the retrieved ImageFolder, data/train/"},
    metrics=(Metric("images", "Images", 0), Metric("multi_class", "In several classes", 0),
             Metric("short_classes", "Short classes", 0),
             Metric("embedded", "Embedded", 0), Metric("images_per_s", "Images/s", 2)),
    charts=(Chart("images/s", protocol.PROGRESS, "done", (("rate", "img/s"),)),),
    check=check,
)
