"""kind = "curate": the CLIP-score filter and the de-duplication both arms of The
Unmet Promise go through, on a tiny open_clip model and a tiny random descriptor."""

import argparse
import io
import json
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from imagegen import make_image_folder
from runner_helpers import failed_error, final, make_run, run_in_process
from runners import curate
from runners.clip import image_transform, load_clip
from runners.copy_detection import Descriptor, load_descriptor
from runners.data import load_rgb
from tiny_clip import make_tiny_clip

run = partial(run_in_process, curate)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return make_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny")


def curate_run(tmp_path: Path, name: str, data: Path, **spec) -> Path:
    spec = {"workers": 0, "amp": False, "batch_size": 8, **spec}
    return make_run(tmp_path / "ws" / "runs", name, kind="curate", data_dir=str(data), **spec)


def manifest(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "data" / "manifest.jsonl").read_text().splitlines()]


def kept_files(run_dir: Path) -> set[str]:
    return {str(p.relative_to(run_dir / "data" / "train")) for p in (run_dir / "data" / "train").rglob("*.jpg")}


@torch.no_grad()
def reference_scores(clip_dir: Path, files: list[str], labels: list[int], names: list[str], templates: list[str]):
    """The authors' clip_filter score, computed here from the model alone: normalised image
    features against the normalised mean of each class's raw template embeddings."""
    clip = load_clip("tiny", str(clip_dir))
    tf = image_transform(clip)
    images = F.normalize(clip.model.encode_image(torch.stack([tf(load_rgb(f)) for f in files])), dim=-1)
    text = torch.stack([F.normalize(clip.model.encode_text(clip.tokenizer([t.format(name=n) for t in templates]))
                                    .mean(0), dim=-1) for n in names])
    return (images * text[labels]).sum(1).numpy()


def test_the_percentile_filter_keeps_exactly_the_top_fraction_of_each_class(tmp_path, clip_dir):
    data = tmp_path / "data"
    make_image_folder(data, per_class=10, names=["cat"], seed=1)
    make_image_folder(data, per_class=20, names=["dog"], seed=2)
    files = sorted(str(p) for p in data.rglob("*.jpg"))
    labels = [0 if "/cat/" in f else 1 for f in files]
    templates = ["a photo of a {name}.", "a {name} outdoors."]
    s = reference_scores(clip_dir, files, labels, ["cat", "dog"], templates)
    expected = set()
    for y, (cls, keep) in enumerate((("cat", 3), ("dog", 6))):
        mine = [i for i in range(len(files)) if labels[i] == y]
        expected |= {f"{cls}/{Path(files[i]).name}" for i in sorted(mine, key=lambda i: -s[i])[:keep]}

    d = curate_run(tmp_path, "frac", data, keep_fraction=0.3, templates=templates, clip_model="tiny",
                   clip_pretrained=str(clip_dir))
    assert run(d) == 0, final(d)
    assert kept_files(d) == expected
    summary = final(d)["summary"]
    assert summary["per_class"] == {"cat": 3, "dog": 6} and summary["below_score"] == 21
    by_file = {m["file"]: m for m in manifest(d)}
    assert all(by_file[f]["dropped"] is None for f in expected)
    assert all(m["dropped"] == "score" and m["score"] < m["threshold"] for f, m in by_file.items() if f not in expected)
    assert np.allclose(sorted(m["score"] for m in manifest(d)), sorted(s), atol=1e-4)

    capped = curate_run(tmp_path, "count", data, keep_fraction=0.5, keep_count=4, templates=templates,
                        clip_model="tiny", clip_pretrained=str(clip_dir))
    assert run(capped) == 0, final(capped)
    assert final(capped)["summary"]["per_class"] == {"cat": 4, "dog": 4}
    assert {m["file"] for m in manifest(capped) if m["dropped"] is None} <= {m["file"] for m in manifest(d)}


def grating(seed: int, size: int = 128) -> Image.Image:
    """Three coloured sine gratings: images a random convolutional network tells apart."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = np.zeros((size, size, 3)) + rng.uniform(60, 200, 3)
    for _ in range(3):
        theta, freq = rng.uniform(0, np.pi), rng.uniform(2, 12)
        wave = np.sin(2 * np.pi * freq * (xx * np.cos(theta) + yy * np.sin(theta)) + rng.uniform(0, 6))
        img += wave[..., None] * rng.uniform(-80, 80, 3)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def near_copy(img: Image.Image) -> bytes:
    """Resized, cropped and re-encoded: what a copy found on the web looks like."""
    buf = io.BytesIO()
    img.resize((112, 112)).crop((3, 3, 109, 109)).save(buf, "JPEG", quality=75)
    return buf.getvalue()


def tiny_descriptor(path: Path) -> Path:
    """A checkpoint in the published layout (arch, args.input_size, DataParallel keys)
    with random weights; the last BatchNorm's statistics taken from unrelated images,
    as training would set them."""
    torch.manual_seed(0)
    import timm

    model = Descriptor(timm.create_model("test_resnet", features_only=True, pretrained=False)).eval()
    ckpt = {"arch": "test_resnet", "args": argparse.Namespace(input_size=96),
            "state_dict": {"module." + k: v for k, v in model.state_dict().items()}}
    torch.save(ckpt, path)
    model, tf = load_descriptor(path)
    with torch.no_grad():
        x = model.backbone(torch.stack([tf(grating(100 + i)) for i in range(64)]))[-1]
        fc = model.fc(x.mean((2, 3)))
    ckpt["state_dict"]["module.bn.running_mean"] = fc.mean(0)
    ckpt["state_dict"]["module.bn.running_var"] = fc.var(0)
    torch.save(ckpt, path)
    return path


def test_planted_near_duplicates_of_the_eval_split_are_removed_by_the_descriptor(tmp_path):
    weights = tiny_descriptor(tmp_path / "isc_ft_v107.pth.tar")
    target = tmp_path / "target"
    (target / "val" / "a").mkdir(parents=True)
    evals = [grating(i) for i in range(8)]
    for i, img in enumerate(evals):
        img.save(target / "val" / "a" / f"{i}.png")
    data = tmp_path / "data" / "a"
    data.mkdir(parents=True)
    for i in range(4):
        (data / f"copy{i}.jpg").write_bytes(near_copy(evals[i]))
    for i in range(8):
        grating(50 + i).save(data / f"other{i}.jpg", quality=90)

    # The reference: the same descriptor applied here, every pair compared.
    model, tf = load_descriptor(weights)
    with torch.no_grad():
        ours = model(torch.stack([tf(load_rgb(str(f))) for f in sorted(data.iterdir())]))
        theirs = model(torch.stack([tf(load_rgb(str(f))) for f in sorted((target / "val" / "a").iterdir())]))
    best = (ours @ theirs.T).max(1).values.numpy()
    names = [f.name for f in sorted(data.iterdir())]
    threshold = 0.9
    expected_dropped = {n for n, b in zip(names, best) if b > threshold}
    assert expected_dropped == {f"copy{i}.jpg" for i in range(4)}  # the planted copies, and only they

    d = curate_run(tmp_path, "dedup", tmp_path / "data", dedup_dir=str(target / "val"), dedup_weights=str(weights),
                   dedup_threshold=threshold)
    assert run(d) == 0, final(d)
    assert kept_files(d) == {f"a/other{i}.jpg" for i in range(8)}
    dropped = {m["file"]: m for m in manifest(d) if m["dropped"]}
    assert {f.split("/")[1] for f in dropped} == expected_dropped
    assert all(m["dropped"] == "duplicate" and m["similarity"] > threshold and m["duplicate_of"].endswith(".png")
               for m in dropped.values())
    assert final(d)["summary"]["duplicates"] == 4


def test_clip_cosine_is_the_documented_fallback(tmp_path, clip_dir):
    target = make_image_folder(tmp_path / "target" / "val", per_class=3, names=["cat"], seed=5)
    data = make_image_folder(tmp_path / "data", per_class=4, names=["cat"], seed=6)
    copied = sorted(target.rglob("*.jpg"))[0]
    (data / "cat" / "leak.jpg").write_bytes(copied.read_bytes())
    d = curate_run(tmp_path, "clipdedup", data, dedup_dir=str(target), dedup="clip", dedup_threshold=0.999,
                   clip_model="tiny", clip_pretrained=str(clip_dir))
    assert run(d) == 0, final(d)
    assert kept_files(d) == {f"cat/{p.name}" for p in (data / "cat").iterdir() if p.name != "leak.jpg"}


def test_a_wrong_weights_file_is_a_clear_error(tmp_path):
    data = make_image_folder(tmp_path / "data", per_class=2, names=["cat"])
    (tmp_path / "bad.pth.tar").write_bytes(b"not a checkpoint")
    target = make_image_folder(tmp_path / "t", per_class=1, names=["cat"])
    error = failed_error(curate, curate_run(tmp_path, "bad", data, dedup_dir=str(target),
                                            dedup_weights=str(tmp_path / "bad.pth.tar")))
    assert "is not an ISC21 descriptor checkpoint" in error
