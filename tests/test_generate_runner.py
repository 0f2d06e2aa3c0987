import errno
import json
import signal
import subprocess
import time
from functools import partial
from pathlib import Path

import pytest

from conftest import PYTHON, subprocess_env
from imagegen import make_image_folder
import runner_helpers
from runner_helpers import events, failed_error, final, run_in_process
from runners import generate, protocol, train_generator
from tiny_sd import build_tiny_sd


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return build_tiny_sd(tmp_path_factory.mktemp("models"))


@pytest.fixture
def classes(tmp_path):
    path = tmp_path / "classes.csv"
    path.write_text("id,name,definition\nn01440764,tench,freshwater fish\nn02869837,bonnet,a hat tied under the chin\n")
    return path


def make_gen_run(root: Path, name: str, model, classes, **spec) -> Path:
    run_dir = root / name
    run_dir.mkdir(parents=True)
    base = {"id": name, "name": name, "kind": "generate", "model": str(model), "classes": str(classes),
            "images_per_class": 3, "batch_size": 2, "steps": 3, "width": 32, "height": 32, "seed": 11}
    (run_dir / "spec.json").write_text(json.dumps({**base, **spec}))
    return run_dir


run = partial(run_in_process, generate)
_error = partial(failed_error, generate)


def files(run_dir: Path) -> dict[str, bytes]:
    root = run_dir / "data" / "train"
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def images(run_dir: Path) -> list[Path]:
    """The whole images written so far (not write_atomic's temp files, which end in .tmp)."""
    return sorted((run_dir / "data" / "train").rglob("*.jpg"))


def test_same_spec_twice_gives_identical_images_and_a_manifest(tmp_path, model, classes):
    a = make_gen_run(tmp_path, "a", model, classes)
    b = make_gen_run(tmp_path, "b", model, classes)
    assert run(a) == 0, final(a)
    assert run(b) == 0
    fa = files(a)
    assert sorted(fa) == [f"{c}/{c}_{i:05d}.jpg" for c in ("n01440764", "n02869837") for i in range(3)]
    assert fa == files(b)
    manifest = [json.loads(line) for line in (a / "data" / "manifest.jsonl").read_text().splitlines()]
    assert len(manifest) == 6 and manifest[0]["prompt"] == "tench, freshwater fish"
    assert {"file", "class", "prompt", "seed", "model", "scheduler", "steps", "guidance", "size"} <= set(manifest[0])
    assert len({m["seed"] for m in manifest}) == 6
    progress = [e for e in events(a) if e["type"] == "progress"]
    assert progress[-1]["done"] == 6 and progress[-1]["total"] == 6


def test_shards_together_equal_the_unsharded_set(tmp_path, model, classes):
    whole = make_gen_run(tmp_path, "whole", model, classes, images_per_class=5)
    s0 = make_gen_run(tmp_path, "s0", model, classes, images_per_class=5, shard="0/2")
    s1 = make_gen_run(tmp_path, "s1", model, classes, images_per_class=5, shard="1/2")
    for r in (whole, s0, s1):
        assert run(r) == 0, final(r)
    f0, f1 = files(s0), files(s1)
    assert not set(f0) & set(f1)
    assert {**f0, **f1} == files(whole)


def test_killed_run_resumes_to_exactly_the_uninterrupted_files(tmp_path, model, classes):
    ref = make_gen_run(tmp_path, "ref", model, classes, images_per_class=6, batch_size=1)
    assert run(ref) == 0
    cut = make_gen_run(tmp_path, "cut", model, classes, images_per_class=6, batch_size=1)
    proc = subprocess.Popen([PYTHON, "-m", "runners.generate", "--run-dir", str(cut)], env=subprocess_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while len(images(cut)) < 3:
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 3 <= len(images(cut)) < 12
    # What a kill during a save leaves (write_atomic's temp file): the resumed run clears it.
    stray = next((cut / "data" / "train").iterdir()) / ".x_00009.jpg.123.456.tmp"
    stray.write_bytes(b"\xff\xd8 half a jpeg")
    proc = subprocess.run([PYTHON, "-m", "runners.generate", "--run-dir", str(cut), "--resume"],
                          env=subprocess_env(), capture_output=True)
    assert proc.returncode == 0
    assert files(cut) == files(ref)
    summary = final(cut)["summary"]
    assert summary["skipped_existing"] >= 3


def start_until(run_dir: Path, event_type: str) -> subprocess.Popen:
    """The runner in a process of its own, once it has written an event of this type."""
    return runner_helpers.start_until("runners.generate", run_dir,
                                      lambda ev: any(e["type"] == event_type for e in ev), subprocess_env())


def test_sigterm_stops_cleanly_with_whole_files_only(tmp_path, model, classes):
    cut = make_gen_run(tmp_path, "term", model, classes, images_per_class=20, batch_size=1, steps=8)
    proc = start_until(cut, "progress")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143
    assert final(cut)["type"] == "cancelled"
    written = files(cut)
    assert 0 < len(written) < 40
    assert not list((cut / "data").rglob(".*.tmp"))
    from PIL import Image

    for name in written:
        with Image.open(cut / "data" / "train" / name) as img:
            img.verify()


def test_missing_model_folder(tmp_path, classes):
    r = make_gen_run(tmp_path, "nomodel", tmp_path / "models" / "sd14", classes)
    assert "model folder" in _error(r) and "not found" in final(r)["error"]


def test_unreadable_class_file_and_unsafe_class_ids(tmp_path, model):
    r = make_gen_run(tmp_path, "noclasses", model, tmp_path / "missing.json")
    assert "cannot read the class file" in _error(r)
    for bad in ("../etc", "a/b", ".."):
        path = tmp_path / f"bad{len(bad)}.csv"
        path.write_text(f"id,name,definition\n{bad},x,y\n")
        r = make_gen_run(tmp_path, f"bad{len(bad)}", model, path)
        assert "cannot be a folder name" in _error(r)
        assert not (r / "data").exists() or not list((r / "data").rglob("*.jpg"))


def test_a_prompts_file_gives_each_line_its_images(tmp_path, model, classes):
    """The Unmet Promise's synthetic arm: captions per class written elsewhere (an LLM),
    one image per line times images_per_prompt, in JSONL, CSV or their raw format."""
    prompts = ["a tench in a green pond", "a tench held by an angler", "a red bonnet on a shelf"]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps({"class": c, "prompt": p}) + "\n" for c, p in
                                              zip(["n01440764", "n01440764", "n02869837"], prompts)))
    (tmp_path / "p.txt").write_text("a tench in a green pond => tench\na tench held by an angler => tench\n"
                                    "a red bonnet on a shelf => bonnet\n")
    runs = [make_gen_run(tmp_path, "jsonl", model, classes, prompts=str(tmp_path / "p.jsonl"), images_per_prompt=2),
            make_gen_run(tmp_path, "txt", model, classes, prompts=str(tmp_path / "p.txt"), images_per_prompt=2)]
    for r in runs:
        assert run(r) == 0, final(r)
    manifest = [json.loads(line) for line in (runs[0] / "data" / "manifest.jsonl").read_text().splitlines()]
    assert [(m["class"], m["prompt"]) for m in manifest] == [(c, p) for c, p in
                                                             zip(["n01440764"] * 4 + ["n02869837"] * 2,
                                                                 [q for q in prompts for _ in range(2)])]
    assert sorted(files(runs[0])) == [f"n01440764/n01440764_{i:05d}.jpg" for i in range(4)] + \
        [f"n02869837/n02869837_{i:05d}.jpg" for i in range(2)]
    assert files(runs[0]) == files(runs[1])  # the same prompts and seeds, whatever the file's format


def test_a_prompts_file_s_problems_are_named_by_line(tmp_path, model, classes):
    (tmp_path / "bad.csv").write_text("class,prompt\nn01440764,a tench\nzebra,a zebra\nn02869837,\n")
    r = make_gen_run(tmp_path, "bad", model, classes, prompts=str(tmp_path / "bad.csv"))
    error = _error(r)
    assert "line 3: class 'zebra' is not in the class list" in error and "line 4: no prompt" in error


def test_unknown_placeholder_fails_before_generating(tmp_path, model, classes):
    r = make_gen_run(tmp_path, "tpl", model, classes, prompt="{name}, {colour}")
    assert "unknown placeholder" in _error(r) and "{colour}" in final(r)["error"]
    assert not (r / "data").exists()


def test_full_disk_leaves_no_partial_image(tmp_path, model, classes, monkeypatch):
    from PIL import Image

    real_save = Image.Image.save
    calls = []

    def save(self, fp, *a, **k):
        calls.append(fp)
        if len(calls) >= 3:
            fp.write(b"\xff\xd8partial")  # the runner saves into an open temp file
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(self, fp, *a, **k)

    monkeypatch.setattr(Image.Image, "save", save)
    r = make_gen_run(tmp_path, "full", model, classes)
    assert run(r) == protocol.NO_SPACE_EXIT
    error = final(r)["error"]
    assert error.startswith(f"no space left on device in {r / 'data' / 'train'}") and "synthgap resume" in error
    monkeypatch.undo()
    assert not list((r / "data").rglob(".*.tmp"))
    for p in (r / "data" / "train").rglob("*.jpg"):
        with Image.open(p) as img:
            img.verify()  # whatever is there is whole


def test_img2img_from_a_real_dataset(tmp_path, model, classes):
    real = make_image_folder(tmp_path / "real", classes=2, per_class=2, size=(40, 32),
                             names=["n01440764", "n02869837"])
    r = make_gen_run(tmp_path, "i2i", model, classes, mode="img2img", strength=0.5, source_dir=str(real))
    assert run(r) == 0, final(r)
    assert sorted(files(r)) == ["n01440764/n01440764_00000.jpg", "n01440764/n01440764_00001.jpg",
                                "n02869837/n02869837_00000.jpg", "n02869837/n02869837_00001.jpg"]


def test_demo_generator_trains_and_generates(tmp_path):
    data = make_image_folder(tmp_path / "fm", classes=3, per_class=6, size=(28, 28))
    tg = tmp_path / "tg"
    tg.mkdir()
    (tg / "spec.json").write_text(json.dumps({"id": "tg", "name": "tg", "kind": "train-generator",
                                              "data_dir": str(data), "steps": 4, "batch_size": 8,
                                              "channels": [8, 16], "image_size": 16, "sample_steps": 2,
                                              "checkpoint_every": 2}))
    assert run_in_process(train_generator, tg) == 0
    assert (tg / "samples.png").is_file()
    gen = tg / "checkpoints" / "generator"
    r = make_gen_run(tmp_path, "demo", gen, "unused", images_per_class=2, steps=3, guidance_scale=2.0)
    assert run(r) == 0, final(r)
    out = files(r)
    assert len(out) == 6 and sorted({k.split("/")[0] for k in out}) == ["n00000000", "n00000001", "n00000002"]
    r2 = make_gen_run(tmp_path, "demo2", gen, "unused", images_per_class=2, steps=3, guidance_scale=2.0)
    assert run(r2) == 0 and files(r2) == out


def test_sigterm_while_the_demo_generator_samples_ends_cancelled(tmp_path):
    from synthgap_tui.demo import GENERATOR

    cut = tmp_path / "demo-gen"
    cut.mkdir()
    # One batch of 100 images: the signal lands while the generator denoises.
    (cut / "spec.json").write_text(json.dumps({"id": "d", "name": "d", "kind": "generate", "model": str(GENERATOR),
                                               "images_per_class": 10, "batch_size": 100, "steps": 50,
                                               "format": "png"}))
    proc = start_until(cut, "start")
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143
    assert final(cut)["type"] == "cancelled"
    assert not files(cut)  # the interrupted batch is not kept


def test_autopipeline_with_a_weights_variant_and_a_scheduler_by_class_name(tmp_path, classes):
    model = build_tiny_sd(tmp_path / "models", variant="fp16")
    assert list(model.rglob("*.fp16.safetensors")) and not list(model.rglob("*model.safetensors"))
    r = make_gen_run(tmp_path, "v", model, classes, variant="fp16", revision="main",
                     scheduler="EulerAncestralDiscreteScheduler")
    assert run(r) == 0, final(r)
    logs = [e["message"] for e in events(r) if e["type"] == "log"]
    assert "pipeline: StableDiffusionPipeline with EulerAncestralDiscreteScheduler" in logs
    manifest = json.loads((r / "data" / "manifest.jsonl").read_text().splitlines()[0])
    assert manifest["variant"] == "fp16" and manifest["revision"] == "main"
    plain = make_gen_run(tmp_path, "plain", model, classes)  # the folder has only the fp16 variant's files
    assert run(plain) == 1 and "cannot load the model" in _error(plain)
    bad = make_gen_run(tmp_path, "bad", model, classes, variant="fp16", scheduler="NoSuchScheduler")
    assert run(bad) == 1 and "not a diffusers scheduler" in _error(bad) and "UniPCMultistepScheduler" in _error(bad)


@pytest.mark.parametrize("mode", ["txt2img", "img2img"])
def test_the_spec_s_values_reach_the_pipeline_and_the_files(tmp_path, model, classes, monkeypatch, mode):
    import diffusers
    from PIL import Image

    cls = diffusers.StableDiffusionPipeline if mode == "txt2img" else diffusers.StableDiffusionImg2ImgPipeline
    calls = []
    real_call = cls.__call__

    def spy(self, *args, **kwargs):
        calls.append(kwargs)
        return real_call(self, *args, **kwargs)

    monkeypatch.setattr(cls, "__call__", spy)
    extra = {}
    if mode == "img2img":
        extra = {"strength": 0.6, "source_dir": str(make_image_folder(
            tmp_path / "real", classes=2, per_class=1, size=(40, 24), names=["n01440764", "n02869837"]))}
    r = make_gen_run(tmp_path, mode, model, classes, mode=mode, guidance_scale=3.5, steps=4, width=40, height=24,
                     images_per_class=1, **extra)
    assert run(r) == 0, final(r)
    assert calls and all(c["guidance_scale"] == 3.5 and c["num_inference_steps"] == 4 for c in calls)
    if mode == "img2img":
        assert all(c["strength"] == 0.6 for c in calls)
    else:
        assert all((c["width"], c["height"]) == (40, 24) for c in calls)
    for name in files(r):
        with Image.open(r / "data" / "train" / name) as img:
            assert img.size == (40, 24)
    manifest = [json.loads(line) for line in (r / "data" / "manifest.jsonl").read_text().splitlines()]
    assert all(m["size"] == [40, 24] and m["guidance"] == 3.5 and m["steps"] == 4 for m in manifest)


def test_unclip_variations_at_the_requested_size_from_centre_crops(tmp_path, classes):
    from PIL import Image

    from tiny_sd import build_tiny_unclip

    model = build_tiny_unclip(tmp_path / "models")
    real = make_image_folder(tmp_path / "real", classes=2, per_class=1, size=(64, 24), names=["n01440764", "n02869837"])
    r = make_gen_run(tmp_path, "var", model, classes, mode="variation", width=40, height=24, steps=2,
                     source_dir=str(real))
    assert run(r) == 0, final(r)
    assert len(files(r)) == 2
    for name in files(r):
        with Image.open(r / "data" / "train" / name) as img:
            assert img.size == (40, 24)
    manifest = [json.loads(line) for line in (r / "data" / "manifest.jsonl").read_text().splitlines()]
    assert all(m["size"] == [40, 24] and m["mode"] == "variation" and m["source"] for m in manifest)
    # The source keeps its aspect: a centre crop of the middle, not the whole image squashed.
    wide = Image.new("RGB", (64, 24), (255, 0, 0))
    wide.paste((0, 0, 255), (12, 0, 52, 24))  # blue in the middle 40 columns
    wide.save(tmp_path / "wide.png")
    crop = generate.source_image(str(tmp_path / "wide.png"), (40, 24))
    assert crop.size == (40, 24) and crop.getpixel((1, 12))[2] > 200 and crop.getpixel((38, 12))[2] > 200
