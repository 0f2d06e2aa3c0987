"""Retrieval from an image-text pool and the CLIP learner (The Unmet Promise), on a
tiny open_clip model built from a config and tiny webdataset pools."""

import json
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from imagegen import make_dataset
from runner_helpers import events, failed_error, final, make_run, run_in_process
from runners import retrieve, train
from runners.clip import Clip, ClipClassifier, linear_probe, load_clip, text_embeddings
from runners.pool import open_pool
from tiny_clip import make_tiny_clip
from tiny_pool import jpeg, make_pool

run = partial(run_in_process, retrieve)
CLASSES = [{"id": "cat", "name": "cat", "names": ["cat", "house cat"]}, {"id": "dog", "name": "dog"},
           {"id": "fox", "name": "red fox"}]
# caption -> the class it must be retrieved for (None: not at all)
PLANTED = {"a cat on a sofa": "cat", "My House-Cat, asleep": "cat", "catalog of products": None,
           "a cat and a dog": None, "Dog!": "dog", "dogs and cats": None, "red fox in snow": "fox",
           "a fox": None, "red car": None, "the DOG park": "dog"}


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return make_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny")


@pytest.fixture
def ws(tmp_path):
    (tmp_path / "ws" / "runs").mkdir(parents=True)
    (tmp_path / "classes.json").write_text(json.dumps(CLASSES))
    return tmp_path


def retrieve_run(ws: Path, name: str, pool: Path, **spec) -> Path:
    spec = {"classes": str(ws / "classes.json"), "images_per_class": 50, "workers": 0, "amp": False, **spec}
    return make_run(ws / "ws" / "runs", name, kind="retrieve", pool=str(pool), **spec)


def manifest(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "data" / "manifest.jsonl").read_text().splitlines()]


def test_substring_retrieves_exactly_the_planted_captions(ws):
    captions = list(PLANTED)
    pool = make_pool(ws / "pool", [(c, jpeg(i)) for i, c in enumerate(captions)], per_shard=3)
    d = retrieve_run(ws, "sub", pool)
    assert run(d) == 0, final(d)
    got = {m["caption"]: m["class"] for m in manifest(d)}
    assert got == {c: k for c, k in PLANTED.items() if k}
    for m in manifest(d):  # the pool's own bytes, in the class folder
        assert (d / "data" / "train" / m["file"]).read_bytes() == jpeg(captions.index(m["caption"]))
    summary = final(d)["summary"]
    assert summary["ambiguous"] == 1 and summary["embedded"] == 0  # "dogs and cats" names no class: whole words
    assert summary["per_class"] == {"cat": 2, "dog": 2, "fox": 1} and summary["short_classes"] == 3
    warnings = [e["message"] for e in events(d) if e["type"] == "log" and e["level"] == "warning"]
    assert "class fox: 1 of 50 images found" in warnings


def test_a_longer_name_wins_over_the_name_inside_it():
    matcher = retrieve.PhraseMatcher([{"names": ["shirt"]}, {"names": ["t-shirt", "T-shirt/top"]},
                                      {"names": ["cat", "house cat"]}])
    assert matcher.classes_in("a photo of a T-shirt/top") == {1}
    assert matcher.classes_in("red t-shirt") == {1}
    assert matcher.classes_in("a shirt, not a t-shirt") == {0, 1}  # ambiguous
    assert matcher.classes_in("house cat") == {2} and matcher.classes_in("shirts") == set()


def test_substring_cap_is_a_seeded_sample(ws):
    pool = make_pool(ws / "pool", [(f"a cat, photo {i}", jpeg(i)) for i in range(12)])
    picks = []
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        d = retrieve_run(ws, name, pool, images_per_class=4, seed=seed)
        assert run(d) == 0, final(d)
        picks.append(sorted(m["key"] for m in manifest(d)))
    assert len(picks[0]) == 4 and picks[0] == picks[1] and picks[0] != picks[2]


def test_clip_knn_returns_the_nearest_images_and_caches_the_pool(ws, clip_dir):
    pool = make_pool(ws / "pool", [(f"image {i}", jpeg(i)) for i in range(30)], per_shard=7)
    spec = dict(method="clip-knn", clip_model="tiny", clip_pretrained=str(clip_dir), images_per_class=3, candidates=2)
    first = retrieve_run(ws, "knn1", pool, **spec)
    assert run(first) == 0, final(first)
    assert final(first)["summary"]["embedded"] == 30
    assert any(e.get("phase") == "embed" for e in events(first))

    # The planted answer: brute force over embeddings computed here, independently of the cache.
    clip = load_clip("tiny", str(clip_dir))
    text = text_embeddings(clip, [c["name"] for c in CLASSES], ["a photo of a {name}."], torch.device("cpu")).numpy()
    emb, ok = retrieve.embed_images(clip, open_pool(pool).samples, {"batch_size": 8, "workers": 0},
                                    retrieve.Device(amp=False))
    assert ok.all()
    sims = emb.astype(np.float32) @ text.T  # [images, classes]
    top = {c: [int(i) for i in np.argsort(-sims[:, c], kind="stable")[:6]] for c in range(3)}

    def owner(i):  # an image found for several classes stays with the nearest
        return max((c for c in range(3) if i in top[c]), key=lambda c: sims[i, c])

    expected = {CLASSES[c]["id"]: {f"{i:09d}" for i in [i for i in top[c] if owner(i) == c][:3]} for c in range(3)}
    got = {}
    for m in manifest(first):
        got.setdefault(m["class"], set()).add(m["key"])
    assert got == {k: v for k, v in expected.items() if v}

    second = retrieve_run(ws, "knn2", pool, **{**spec, "images_per_class": 2})
    assert run(second) == 0, final(second)
    assert final(second)["summary"]["embedded"] == 0
    assert not any(e.get("phase") == "embed" for e in events(second))
    third = retrieve_run(ws, "knn3", pool, **{**spec, "index": "flat"})  # another index, the same embeddings
    assert run(third) == 0, final(third)
    assert final(third)["summary"]["embedded"] == 0 and manifest(third) == manifest(first)
    (cache,) = (ws / "ws" / "cache" / "clip-index").iterdir()
    assert sorted(p.name for p in cache.glob("index-*")) == ["index-auto.faiss", "index-flat.faiss"]


def test_planted_duplicates_of_the_eval_split_are_removed(ws, clip_dir):
    data = make_dataset(ws / "target", classes=2, train_per_class=2, val_per_class=3, names=["cat", "dog"])
    eval_files = sorted((data / "val").rglob("*.jpg"))
    samples = [(f"a cat number {i}", jpeg(100 + i)) for i in range(6)]
    samples += [(f"a cat copied from the test set {i}", f.read_bytes()) for i, f in enumerate(eval_files[:2])]
    pool = make_pool(ws / "pool", samples)
    d = retrieve_run(ws, "dedup", pool, clip_model="tiny", clip_pretrained=str(clip_dir),
                     dedup_against=str(data), dedup_dir=str(data / "val"), dedup_threshold=0.999)
    assert run(d) == 0, final(d)
    kept = {m["caption"] for m in manifest(d)}
    assert kept == {c for c, _ in samples[:6]}
    assert final(d)["summary"]["duplicates"] == 2


def test_min_clip_score_drops_low_scores(ws, clip_dir):
    pool = make_pool(ws / "pool", [(f"a cat, photo {i}", jpeg(i)) for i in range(10)])
    base = retrieve_run(ws, "all", pool, clip_model="tiny", clip_pretrained=str(clip_dir), min_clip_score=-1.0)
    assert run(base) == 0
    scores = sorted(m["score"] for m in manifest(base))
    cut = scores[4]
    d = retrieve_run(ws, "cut", pool, clip_model="tiny", clip_pretrained=str(clip_dir), min_clip_score=cut)
    assert run(d) == 0
    assert all(m["score"] >= cut for m in manifest(d)) and len(manifest(d)) == 6
    assert final(d)["summary"]["below_score"] == 4


def test_corrupt_images_and_malformed_shards_are_skipped_and_counted(ws):
    samples = [("a cat", jpeg(0)), ("a cat again", b"not a jpeg at all"), ("a dog", jpeg(2)), ("a red fox", jpeg(3))]
    pool = make_pool(ws / "pool", samples, per_shard=2)
    (pool / "00007.tar").write_bytes(b"\x00garbage" * 100)  # not a tar
    truncated = (pool / "00001.tar").read_bytes()
    (pool / "00008.tar").write_bytes(truncated[: len(truncated) // 2])
    d = retrieve_run(ws, "bad", pool)
    assert run(d) == 0, final(d)
    summary = final(d)["summary"]
    assert summary["corrupt"] == 1 and summary["bad_shards"] == 2
    assert {m["caption"] for m in manifest(d)} == {"a cat", "a dog", "a red fox"}
    logs = [e["message"] for e in events(d) if e["type"] == "log"]
    assert any("00007.tar" in m for m in logs) and any("00008.tar" in m for m in logs)


def test_a_pool_without_shards_or_captions_is_a_clear_error(ws):
    (ws / "empty").mkdir()
    assert "no .tar shards and no captions.csv" in failed_error(retrieve, retrieve_run(ws, "e", ws / "empty"))


def test_folder_pool_with_captions_csv(ws):
    folder = ws / "folder"
    (folder / "imgs").mkdir(parents=True)
    for i in range(3):
        (folder / "imgs" / f"{i}.jpg").write_bytes(jpeg(i))
    (folder / "captions.csv").write_text("file,caption\nimgs/0.jpg,a cat\nimgs/1.jpg,a dog\nimgs/2.jpg,a car\n")
    d = retrieve_run(ws, "csv", folder)
    assert run(d) == 0, final(d)
    assert {m["class"]: m["caption"] for m in manifest(d)} == {"cat": "a cat", "dog": "a dog"}


# -- the CLIP learner ------------------------------------------------------
class Visual(nn.Module):
    output_dim = 3

    def forward(self, x):
        return x


def test_zero_shot_head_classifies_a_hand_built_case():
    model = nn.Module()
    model.visual, model.logit_scale = Visual(), nn.Parameter(torch.tensor(0.0))
    text = torch.eye(3)  # class k's text embedding is axis k
    clf = ClipClassifier(Clip(model, None, (0, 0, 0), (1, 1, 1), 1), text)
    x = torch.tensor([[0.1, 2.0, 0.3], [5.0, 1.0, -1.0], [0.0, -1.0, 0.2]])
    assert clf(x).argmax(1).tolist() == [1, 0, 2]
    assert torch.allclose(clf.features(x).norm(dim=1), torch.ones(3))


def test_text_embeddings_average_the_templates(clip_dir):
    clip = load_clip("tiny", str(clip_dir))
    one = text_embeddings(clip, ["cat"], ["a photo of a {name}."], torch.device("cpu"))
    two = text_embeddings(clip, ["cat"], ["a photo of a {name}.", "a drawing of a {name}."], torch.device("cpu"))
    other = text_embeddings(clip, ["cat"], ["a drawing of a {name}."], torch.device("cpu"))
    assert torch.allclose(two, torch.nn.functional.normalize(one + other, dim=-1), atol=1e-5)


def test_linear_probe_separates_separable_features():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(4, 16, generator=g) * 3
    y = torch.arange(4).repeat_interleave(25)
    x = centers[y] + torch.randn(100, 16, generator=g) * 0.5 + 7.0  # offset: the probe standardises
    head = linear_probe(x, y, 4)
    assert (head(x).argmax(1) == y).all()
    x_new = centers[y] + torch.randn(100, 16, generator=g) * 0.5 + 7.0
    assert (head(x_new).argmax(1) == y).float().mean() > 0.95


def test_clip_adaptation_and_the_off_the_shelf_model(tmp_path, clip_dir):
    data = make_dataset(tmp_path / "data", classes=3, train_per_class=6, val_per_class=3, names=["cat", "dog", "fox"])
    common = dict(recipe="unmet-promise", arch="clip:tiny", pretrained=str(clip_dir), image_size=32, batch_size=6,
                  workers=0, warmup_steps=1, amp=False, log_every=1, eval_dir=str(data / "val"),
                  probe_dir=str(data / "train"), templates=["a photo of a {name}.", "a {name}."])
    off = make_run(tmp_path, "off", **common, epochs=0)
    assert run_in_process(train, off) == 0, final(off)
    adapt = make_run(tmp_path, "adapt", **common, epochs=2, train_dir=str(data / "train"), lr=1e-3)
    assert run_in_process(train, adapt) == 0, final(adapt)
    s_off, s_adapt = final(off)["summary"], final(adapt)["summary"]
    for s in (s_off, s_adapt):
        assert s["top1_mean"] is not None and 0 <= s["linear_probe_top1"] <= 100
    assert s_off["epochs"] == 1 and s_adapt["config"]["optimizer"] == "adamw"
    before = torch.load(off / "checkpoints" / "model.pt", weights_only=True)
    after = torch.load(adapt / "checkpoints" / "model.pt", weights_only=True)
    assert torch.equal(before["head"], after["head"])  # the zero-shot head stays the text head
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("visual."))
    # The off-the-shelf model's accuracy is the zero-shot head on the untouched tower.
    clip = load_clip("tiny", str(clip_dir))
    assert all(torch.equal(v, clip.model.state_dict()[k]) for k, v in before.items() if k.startswith("visual."))


def test_clip_image_size_mismatch_is_a_clear_error(tmp_path, clip_dir):
    data = make_dataset(tmp_path / "data", classes=2, train_per_class=2, val_per_class=2)
    d = make_run(tmp_path, "bad", recipe="unmet-promise", arch="clip:tiny", pretrained=str(clip_dir), image_size=224,
                 epochs=0, workers=0, eval_dir=str(data / "val"))
    assert "takes 32 px images" in failed_error(train, d)


def test_retrieve_then_adapt_clip_through_the_supervisor_and_export_figure_2(tmp_path, clip_dir):
    """The Unmet Promise's pipeline on tiny data, through `synthgap submit`, the real
    supervisor and runners, then `synthgap export`."""
    import subprocess

    from conftest import PYTHON, subprocess_env
    from supervised import states, wait_for

    data = make_dataset(tmp_path / "target", classes=3, train_per_class=4, val_per_class=2, names=["cat", "dog", "fox"])
    (tmp_path / "classes.json").write_text(json.dumps(CLASSES))
    pool = make_pool(tmp_path / "pool", [(f"a {name} photo {i}", jpeg(10 * c + i))
                                         for c, name in enumerate(("cat", "dog", "red fox")) for i in range(4)])
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "config.toml").write_text("[supervisor]\ngpus = []\ncpu_slots = 1\npoll_seconds = 0.1\n")
    (tmp_path / "unmet.toml").write_text(f"""
[experiment]
name = "unmet e2e"
[datasets]
target = {{ path = "{data}" }}
[defaults]
gpus = 0
classes = "{tmp_path / 'classes.json'}"
recipe = "unmet-promise"
arch = "clip:tiny"
pretrained = "{clip_dir}"
image_size = 32
batch_size = 2
workers = 0
warmup_steps = 1
amp = false
eval = "target"
probe = "target"
[runs.retrieved]
kind = "retrieve"
pool = "{pool}"
images_per_class = 4
[runs.off-the-shelf]
kind = "train"
epochs = 0
[runs.adapt]
kind = "train"
train = "retrieved"
epochs = 1
[runs.adapt.sweep]
fraction = [0.5, 1.0]
""")
    env = subprocess_env()

    def cli(*args):
        return subprocess.run([PYTHON, "-m", "synthgap_tui.cli", "-w", str(ws), *args], capture_output=True,
                              text=True, env=env, timeout=120)

    try:
        out = cli("submit", str(tmp_path / "unmet.toml"))
        assert out.returncode == 0, out.stderr
        wait_for(lambda: set(states(ws).values()) <= {"finished", "failed", "blocked"} and len(states(ws)) == 4,
                 timeout=300, what="all runs ended")
        assert set(states(ws).values()) == {"finished"}, cli("ls").stdout
        out = cli("export", "--experiment", "unmet e2e", "--out", str(tmp_path / "export"))
        assert out.returncode == 0, out.stderr
        table = (tmp_path / "export" / "sweep.csv").read_text().splitlines()
        assert table[0] == "Series,adaptation images,top-1 accuracy (%),linear-probe top-1 (%)"
        assert [line.split(",")[:2] for line in table[1:]] == [["adapt", "6"], ["adapt", "12"], ["off-the-shelf", ""]]
    finally:
        cli("supervisor", "stop")
