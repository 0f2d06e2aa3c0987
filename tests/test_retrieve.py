"""Retrieval from an image-text pool and the CLIP learner (The Unmet Promise), on a
tiny open_clip model built from a config and tiny webdataset pools."""

import json
import sqlite3
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
CLASSES = [{"id": "cat", "name": "cat"}, {"id": "dog", "name": "dog"}, {"id": "fox", "name": "red fox"}]
# caption -> the classes it is retrieved for: FTS5 tokens, anywhere in the caption, whole tokens
PLANTED = {"a cat on a sofa": {"cat"}, "catalog of products": set(), "a cat and a dog": {"cat", "dog"},
           "Dog!": {"dog"}, "dogs and cats": set(), "red fox in snow": {"fox"}, "the fox is red": {"fox"},
           "a fox": set(), "red car": set(), "the DOG park": {"dog"}}


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


def test_substring_retrieves_exactly_the_planted_captions_under_every_class_they_match(ws):
    captions = list(PLANTED)
    pool = make_pool(ws / "pool", [(c, jpeg(i)) for i, c in enumerate(captions)], per_shard=3)
    d = retrieve_run(ws, "sub", pool)
    assert run(d) == 0, final(d)
    got: dict[str, set] = {}
    for m in manifest(d):
        got.setdefault(m["caption"], set()).add(m["class"])
    assert got == {c: k for c, k in PLANTED.items() if k}
    for m in manifest(d):  # the pool's own bytes, in each class folder
        assert (d / "data" / "train" / m["file"]).read_bytes() == jpeg(captions.index(m["caption"]))
    summary = final(d)["summary"]
    assert summary["multi_class"] == 1 and summary["embedded"] == 0
    assert summary["per_class"] == {"cat": 2, "dog": 3, "fox": 2}
    (index,) = (ws / "ws" / "cache" / "caption-index").iterdir()
    again = retrieve_run(ws, "again", pool)  # the pool's index is built once
    assert run(again) == 0 and manifest(again) == manifest(d)
    assert any("caption index from the cache" in e.get("message", "") for e in events(again))


def authors_fts5(captions: list[str], classes: list[dict]) -> dict[str, set[int]]:
    """What the authors' filter_laion_metadata_substring.py returns, asked of SQLite
    directly: their query string built as they build it, formatted into the SQL."""
    db = sqlite3.connect(":memory:")
    db.execute("CREATE VIRTUAL TABLE samples USING fts5(SAMPLE_ID, TEXT)")
    db.executemany("INSERT INTO samples VALUES (?, ?)", enumerate(captions))
    out = {}
    for c in classes:
        temp = c.get("query", c["name"]).replace("'", "''")
        if ("-" in temp or "/" in temp) and ('"' not in temp):
            temp = '"' + temp + '"'
        rows = db.execute(f"SELECT * FROM samples WHERE TEXT MATCH '{temp}' COLLATE NOCASE").fetchall()
        out[c["id"]] = {int(r[0]) for r in rows}
    return out


def test_substring_sets_equal_sqlite_fts5_with_the_authors_query_construction(ws):
    classes = [{"id": "stick", "name": "walking stick"}, {"id": "tshirt", "name": "T-shirt/top"},
               {"id": "shirt", "name": "shirt"}, {"id": "f16", "name": "F-16A/B"},
               {"id": "iron", "name": "clothes iron"},
               {"id": "hummer", "name": "AM General Hummer SUV 2000",
                "query": '"AM" AND "General" AND "Hummer" AND "SUV" AND "2000"'},
               {"id": "banded", "name": "banded",
                "query": '"banded texture" OR "banded pattern" OR "banded thing" OR "banded object"'},
               {"id": "ship", "name": "pirate ship"}, {"id": "potter", "name": "potter's wheel",
                                                       "query": '"potter\'s wheel" OR "pottery wheel"'}]
    words = ("walking stick vintage brass handle t-shirt/top shirt t shirt top F-16A/B f 16a b clothes iron man "
             "am general hummer suv 2000 banded texture pattern thing object pirate ship potter's wheel pottery "
             "a the with of and red").split()
    rng = np.random.default_rng(0)
    captions = [" ".join(rng.choice(words, size=rng.integers(2, 9))) for _ in range(2500)]
    captions[:4] = ["vintage walking stick with brass handle", "Iron Man action figure",
                    "2000 Hummer SUV by AM General", "a banded-texture rug"]
    pool = make_pool(ws / "pool", [(c, jpeg(i % 7)) for i, c in enumerate(captions)], per_shard=500)
    (ws / "fts.json").write_text(json.dumps(classes))
    d = retrieve_run(ws, "fts", pool, classes=str(ws / "fts.json"), images_per_class=None)
    assert run(d) == 0, final(d)
    got: dict[str, set[int]] = {c["id"]: set() for c in classes}
    for m in manifest(d):
        got[m["class"]].add(int(m["key"]))
    expected = authors_fts5(captions, classes)
    assert got == expected
    assert 0 in got["stick"] and 1 not in got["iron"] and 2 in got["hummer"] and 3 in got["banded"]
    assert all(expected[k] for k in expected) and expected["shirt"] & expected["tshirt"]  # the test has teeth


def test_the_authors_caption_databases_work_as_a_pool_with_the_downloaded_shards(ws):
    """A pool of LAION-style metadata databases (their layout: an FTS5 table samples), searched
    as they search it; images from the shards img2dataset downloaded, matched by URL."""
    captions = ["a cat on a sofa", "the DOG park", "red fox in snow", "a cat and a dog", "catalog of products",
                "a dog never downloaded"]
    (ws / "dbs").mkdir()
    for part, rows in enumerate((captions[:3], captions[3:])):
        db = sqlite3.connect(ws / "dbs" / f"part-{part:05d}.db")
        db.execute("CREATE VIRTUAL TABLE samples USING fts5(SAMPLE_ID, URL, TEXT, HEIGHT, WIDTH, LICENSE, NSFW, "
                   "similarity)")
        db.executemany("INSERT INTO samples VALUES (?, ?, ?, 32, 32, '', 'UNLIKELY', 0.3)",
                       [(i, f"http://x/{captions.index(c)}.jpg", c) for i, c in enumerate(rows)])
        db.commit()
        db.close()
    shards = ws / "shards"
    shards.mkdir()
    from runners.pool import write_shard

    write_shard(shards / "00000.tar", [(f"{i:09d}", c, jpeg(i), f"http://x/{i}.jpg") for i, c in
                                       enumerate(captions[:5])])
    d = retrieve_run(ws, "dbs", ws / "dbs", images=str(shards))
    assert run(d) == 0, final(d)
    got = {(m["class"], m["caption"]) for m in manifest(d)}
    assert got == {("cat", "a cat on a sofa"), ("cat", "a cat and a dog"), ("dog", "the DOG park"),
                   ("dog", "a cat and a dog"), ("fox", "red fox in snow")}
    missing = [json.loads(line) for line in (d / "data" / "not-downloaded.jsonl").read_text().splitlines()]
    assert missing == [{"url": "http://x/5.jpg", "caption": "a dog never downloaded", "class": "dog"}]
    assert final(d)["summary"]["not_downloaded"] == 1
    assert "set `images`" in failed_error(retrieve, retrieve_run(ws, "noimg", ws / "dbs"))


def test_a_query_fts5_cannot_parse_is_named_before_the_pool_is_read(ws):
    (ws / "bad.json").write_text(json.dumps([{"id": "a", "name": "potter's wheel"}, {"id": "b", "name": "b"}]))
    error = failed_error(retrieve, retrieve_run(ws, "bad", ws / "nowhere", classes=str(ws / "bad.json")))
    assert "class a (\"potter's wheel\")" in error or "class a ('potter" in error, error


def test_builtin_class_lists_carry_the_authors_names_and_queries():
    from runners.classes import load_class_list

    imagenet100 = {c["id"]: c for c in load_class_list("imagenet100").classes}
    assert len(imagenet100) == 100 and len(load_class_list("imagenet").classes) == 1000
    names = {c["name"] for c in imagenet100.values()}
    assert {"pirate ship", "clothes iron"} <= names and "pirate" not in names
    cars = load_class_list("cars")
    hummer = cars.classes[0]
    assert hummer["name"] == "AM General Hummer SUV 2000"
    assert hummer["query"] == '"AM" AND "General" AND "Hummer" AND "SUV" AND "2000"'
    assert [len(load_class_list(n).classes) for n in ("aircraft", "cars", "dtd", "flowers102")] == [100, 196, 47, 102]
    assert len(load_class_list("imagenet").retrieval_templates) == 80


def test_substring_cap_is_a_seeded_sample(ws):
    pool = make_pool(ws / "pool", [(f"a cat, photo {i}", jpeg(i)) for i in range(12)])
    picks = []
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        d = retrieve_run(ws, name, pool, images_per_class=4, seed=seed)
        assert run(d) == 0, final(d)
        picks.append(sorted(m["key"] for m in manifest(d)))
    assert len(picks[0]) == 4 and picks[0] == picks[1] and picks[0] != picks[2]


def test_clip_knn_unions_one_search_per_template_and_index_and_caches_the_pool(ws, clip_dir):
    captions = [f"image {i}" if i % 3 else f"a photo of a red fox {i}" for i in range(30)]
    pool = make_pool(ws / "pool", [(c, jpeg(i)) for i, c in enumerate(captions)], per_shard=7)
    templates = ["a photo of a {name}.", "a drawing of a {name}.", "{name} in the wild"]
    spec = dict(method="clip-knn", clip_model="tiny", clip_pretrained=str(clip_dir), templates=templates, k=2)
    first = retrieve_run(ws, "knn1", pool, **spec)
    assert run(first) == 0, final(first)
    assert final(first)["summary"]["embedded"] == 60  # 30 images + 30 captions
    assert {e.get("phase") for e in events(first)} >= {"embed image", "embed text"}

    # The planted answer: brute force over embeddings computed here, independently of the cache.
    clip = load_clip("tiny", str(clip_dir))
    names = [c["name"] for c in CLASSES]
    images, ok = retrieve.embed_images(clip, open_pool(pool).samples, {"batch_size": 8, "workers": 0},
                                       retrieve.Device(amp=False))
    assert ok.all()
    with torch.no_grad():
        texts = nn.functional.normalize(clip.model.encode_text(clip.tokenizer(captions)).float(), dim=-1)
    pool_embs = [images.astype(np.float32), texts.numpy().astype(np.float16).astype(np.float32)]

    def top2(query):
        return {int(i) for emb in pool_embs for i in np.argsort(-(emb @ query), kind="stable")[:2]}

    per_template = [text_embeddings(clip, names, [t], torch.device("cpu")).numpy() for t in templates]
    expected = {c["id"]: set().union(*(top2(q[k]) for q in per_template)) for k, c in enumerate(CLASSES)}
    averaged = text_embeddings(clip, names, templates, torch.device("cpu")).numpy()
    assert any(expected[c["id"]] - top2(averaged[k]) for k, c in enumerate(CLASSES))  # one averaged query misses some
    got: dict[str, set] = {}
    for m in manifest(first):
        got.setdefault(m["class"], set()).add(int(m["key"]))
    assert got == expected
    found = sum(map(len, expected.values()))
    assert final(first)["summary"]["multi_class"] == found - len(set().union(*expected.values()))

    second = retrieve_run(ws, "knn2", pool, **spec)
    assert run(second) == 0, final(second)
    assert final(second)["summary"]["embedded"] == 0
    assert not any(str(e.get("phase")).startswith("embed") for e in events(second))
    third = retrieve_run(ws, "knn3", pool, **{**spec, "index": "flat"})  # another index, the same embeddings
    assert run(third) == 0, final(third)
    assert final(third)["summary"]["embedded"] == 0
    assert {(m["class"], m["key"]) for m in manifest(third)} == {(m["class"], m["key"]) for m in manifest(first)}
    (cache,) = (ws / "ws" / "cache" / "clip-index").iterdir()
    assert sorted(p.name for p in cache.glob("*index-*")) == ["index-auto.faiss", "index-flat.faiss",
                                                              "text-index-auto.faiss", "text-index-flat.faiss"]


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
    # A trainable linear head with a bias, as the authors' ClassificationHead
    assert clf.head.weight.requires_grad and torch.equal(clf.head.bias, torch.zeros(3))


def test_text_embeddings_average_the_templates(clip_dir):
    clip = load_clip("tiny", str(clip_dir))
    one = text_embeddings(clip, ["cat"], ["a photo of a {name}."], torch.device("cpu"))
    two = text_embeddings(clip, ["cat"], ["a photo of a {name}.", "a drawing of a {name}."], torch.device("cpu"))
    other = text_embeddings(clip, ["cat"], ["a drawing of a {name}."], torch.device("cpu"))
    assert torch.allclose(two, torch.nn.functional.normalize(one + other, dim=-1), atol=1e-5)


PROBE = {"seed": 0, "probe_lr": 1e-2, "probe_epochs": 200, "probe_batch_size": 32, "probe_weight_decay": 0.1,
         "probe_warmup_steps": 20}


def test_linear_probe_separates_separable_features():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(4, 16, generator=g) * 3
    y = torch.arange(4).repeat_interleave(25)
    x = nn.functional.normalize(centers[y] + torch.randn(100, 16, generator=g) * 0.5, dim=-1)
    head = linear_probe(x, y, 4, PROBE)
    assert isinstance(head, nn.Linear) and head.bias is not None
    assert (head(x).argmax(1) == y).all()
    x_new = nn.functional.normalize(centers[y] + torch.randn(100, 16, generator=g) * 0.5, dim=-1)
    assert (head(x_new).argmax(1) == y).float().mean() > 0.95


def test_linear_probe_steps_as_the_authors_adamw(monkeypatch):
    """The probe's optimiser as built: AdamW, betas (0.9, 0.95), the recipe's weight decay,
    warm-up then cosine per step, gradients clipped at 1.0."""
    built, lrs, clips = [], [], []
    adamw = torch.optim.AdamW

    def spy(params, **kw):
        opt = adamw(params, **kw)
        built.append(kw)
        step = opt.step

        def record(*a, **k):
            lrs.append(opt.param_groups[0]["lr"])
            return step(*a, **k)

        opt.step = record
        return opt

    monkeypatch.setattr(torch.optim, "AdamW", spy)
    clip_grad = nn.utils.clip_grad_norm_
    monkeypatch.setattr(nn.utils, "clip_grad_norm_", lambda p, m, **k: clips.append(m) or clip_grad(p, m, **k))
    x, y = nn.functional.normalize(torch.randn(64, 8), dim=-1), torch.arange(4).repeat(16)
    linear_probe(x, y, 4, {**PROBE, "probe_epochs": 5, "probe_warmup_steps": 4})
    assert built == [{"lr": 1e-2, "weight_decay": 0.1, "betas": (0.9, 0.95)}]
    assert len(lrs) == 10 and lrs[:4] == pytest.approx([2.5e-3, 5e-3, 7.5e-3, 1e-2])
    assert lrs[4] == pytest.approx(1e-2) and lrs[-1] < lrs[5] and set(clips) == {1.0}


def test_the_unmet_promise_recipe_builds_the_authors_optimiser(clip_dir):
    """Read off the optimiser train.py builds, not the config: AdamW with betas (0.9, 0.95),
    weight decay 0.1 on every parameter (head bias and norms too), lr 1e-5; ImageNet's lr 1e-6."""
    from runners.kinds.train import KIND

    clip = load_clip("tiny", str(clip_dir))
    model = ClipClassifier(clip, torch.eye(3, clip.model.text_projection.shape[1]))
    for classes, lr, epochs, probe_lr in ((None, 1e-5, 30, 1e-2), ("imagenet100", 1e-6, 10, 1e-3)):
        cfg = KIND.resolve({"recipe": "unmet-promise", **({"classes": classes} if classes else {})})
        opt = train.make_optimizer(model, cfg, cfg["lr"])
        assert isinstance(opt, torch.optim.AdamW) and opt.defaults["betas"] == (0.9, 0.95)
        assert [(g["lr"], g["weight_decay"]) for g in opt.param_groups] == [(lr, 0.1)]
        assert {id(p) for p in opt.param_groups[0]["params"]} == {id(p) for p in model.parameters()}
        assert (cfg["epochs"], cfg["probe_lr"], cfg["grad_clip"], cfg["amp"]) == (epochs, probe_lr, 1.0, False)


def test_gradients_are_clipped_to_the_recipe_s_norm(tmp_path):
    """One SGD step at lr 1 moves the weights by exactly the clipped gradient."""
    from runners.runtime import Device

    net = nn.Linear(4, 2, bias=False)
    nn.init.zeros_(net.weight)  # equal logits: the gradient's norm is 0.5 * |x| * sqrt(2) = 14
    before = net.weight.detach().clone()
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    x = torch.full((1, 4), 10.0)
    loader = [(x, torch.tensor([0]), [""])]
    cfg = {"seed": 0, "label_smoothing": 0.0, "grad_clip": 1.0, "log_every": 1}
    ctx = type("Ctx", (), {"emit": lambda *a, **k: None, "log": lambda *a, **k: None, "stop_requested": False})()
    stage = type("Stage", (), {"mixup": 0.0})()
    train.train_one_epoch(net, loader, opt, sched, Device(amp=False), ctx, epoch=0, stage=stage, cfg=cfg,
                          start_step=0, steps=1, global_step=0, total_steps=1, save_mid_epoch=None)
    assert float((net.weight.detach() - before).norm()) == pytest.approx(1.0, rel=1e-5)


def test_clip_adaptation_trains_the_head_from_the_zero_shot_weights(tmp_path, clip_dir):
    data = make_dataset(tmp_path / "data", classes=3, train_per_class=6, val_per_class=3, names=["cat", "dog", "fox"])
    templates = ["a photo of a {name}.", "a {name}."]
    common = dict(recipe="unmet-promise", arch="clip:tiny", pretrained=str(clip_dir), image_size=32, batch_size=6,
                  workers=0, warmup_steps=1, amp=False, log_every=1, eval_dir=str(data / "val"),
                  probe_dir=str(data / "train"), templates=templates, probe_epochs=3)
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
    clip = load_clip("tiny", str(clip_dir))
    zero_shot = text_embeddings(clip, ["cat", "dog", "fox"], templates, torch.device("cpu")) \
        * clip.model.logit_scale.exp()
    assert torch.allclose(before["head.weight"], zero_shot, atol=1e-5)  # it starts as the zero-shot head
    assert not torch.equal(before["head.weight"], after["head.weight"])  # and learns
    assert not torch.equal(before["head.bias"], after["head.bias"])
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("visual."))
    # The off-the-shelf model's accuracy is the zero-shot head on the untouched tower.
    assert all(torch.equal(v, clip.model.state_dict()[k]) for k, v in before.items() if k.startswith("visual."))


def test_the_holdout_split_is_disjoint_from_training_and_evaluation_and_selects_the_epoch(tmp_path):
    data = make_dataset(tmp_path / "data", classes=3, train_per_class=10, val_per_class=3)
    d = make_run(tmp_path, "held", recipe="plain", arch="resnet18", small_input=True, width=8, image_size=32,
                 batch_size=6, epochs=3, workers=0, amp=False, log_every=1, train_dir=str(data / "train"),
                 eval_dir=str(data / "val"), holdout=0.2, select="holdout", fraction=0.5)
    assert run_in_process(train, d) == 0, final(d)
    held = set((d / "holdout.txt").read_text().split())
    assert len(held) == 6 and all("/train/" in f for f in held)  # 2 of 10 per class, from the training data
    evals = {str(p) for p in (data / "val").rglob("*.jpg")}
    start = next(e for e in events(d) if e["type"] == "start")
    assert start["holdout_images"] == 6 and start["train_images"] == [12]  # half of the 8 left per class
    epochs = [e for e in events(d) if e["type"] == "epoch"]
    assert all(e["holdout_top1"] is not None for e in epochs) and not held & evals
    best = max(epochs, key=lambda e: e["holdout_top1"])
    summary = final(d)["summary"]
    assert summary["selected_epoch"] == best["epoch"] and summary["top1_mean"] == best["top1"]
    # The training loader never sees a held-out image.
    from runners.data import holdout_split, scan_folder

    rest, out = holdout_split(scan_folder(data / "train"), 0.2, 0)
    assert {f for f, _ in out.samples} == held and not held & {f for f, _ in rest.samples}


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


def test_a_clip_model_is_evaluated_with_open_clip_s_preprocessing():
    """The adapt/ code evaluates with open_clip's transform: shorter side to the crop
    (bicubic), centre crop; not the 256/224 bilinear reference crop."""
    from PIL import Image

    from runners.augment import eval_transform
    from runners.clip import image_transform

    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 70, 3), dtype=np.uint8))
    clip = Clip(None, None, (0.5, 0.4, 0.3), (0.2, 0.3, 0.4), 32)
    ours = eval_transform(clip.mean, clip.std, 32, open_clip=True)(img, torch.Generator().manual_seed(0))
    assert torch.allclose(ours, image_transform(clip)(img))
    reference = eval_transform(clip.mean, clip.std, 32)(img, torch.Generator().manual_seed(0))
    assert not torch.allclose(reference, ours)
