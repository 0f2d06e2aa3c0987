import json
import math
import signal
import subprocess
from functools import partial

import numpy as np
import pytest
import torch

from conftest import PYTHON, subprocess_env
from imagegen import make_dataset, make_image_folder
from runner_helpers import TINY, events, failed_error, final, make_run, run_in_process, start_until
from runners import layers, train
from runners.data import ImageList, balanced_fraction, scan_folder
from runners.layers import Student, build_resnet, layer_param_counts
from runners.train import accuracy


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data"), classes=3, train_per_class=6, val_per_class=3)


run = partial(run_in_process, train)
_failed_error = partial(failed_error, train)


def test_layer_table_of_resnet50():
    net = build_resnet("resnet50", 100)
    counts = layer_param_counts(net)
    assert len(counts) == 18
    assert counts[0] == 64 * 3 * 7 * 7 + 2 * 64  # conv1 + bn1
    assert counts[17] == 2048 * 100 + 100  # fc
    assert sum(counts) == sum(p.numel() for p in net.parameters())
    for n in range(18):
        student = Student(build_resnet("resnet50", 100), frozen=n)
        assert layers.trainable_parameters(student) == sum(counts[n:])
    with pytest.raises(ValueError, match="0..17"):
        Student(build_resnet("resnet50", 10), frozen=18)


def test_freeze_keeps_prefix_bit_identical_and_reinitialises_the_rest(data, tmp_path):
    torch.manual_seed(123)
    # ResNet-50's 18 layers at an eighth of its width: the same numbering, 64x fewer weights.
    teacher = build_resnet("resnet50", 3, small_input=True, tau=0.1, width=8)
    init = tmp_path / "teacher.pt"
    torch.save(teacher.state_dict(), init)
    reference = teacher.state_dict()
    prefixes = layers.layer_prefixes(teacher)
    counts = layer_param_counts(teacher)
    for n in range(1, 18):
        run_dir = make_run(tmp_path, f"freeze{n}", **{**TINY, "arch": "resnet50", "tau": 0.1, "width": 8},
                           train_dir=str(data / "train"), eval_dir=str(data / "val"),
                           init_from_path=str(init), freeze_layers=n, max_steps_per_epoch=1)
        assert run(run_dir) == 0, final(run_dir)
        assert final(run_dir)["summary"]["trainable_params"] == sum(counts[n:])
        trained = torch.load(run_dir / "checkpoints" / "model.pt", weights_only=True)
        for i, layer in enumerate(prefixes):
            keys = [k for k in reference if k.startswith(layer) and not k.endswith("num_batches_tracked")]
            if i < n:  # parameters and BN statistics
                assert all(torch.equal(trained[k], reference[k]) for k in keys), f"N={n}: layer {i + 1} changed"
                continue
            # Re-initialised, not merely trained: one step moves a weight by about 1% of its norm, a fresh
            # draw from the same initialisation lies about sqrt(2) norms away.
            for k in (k for k in keys if reference[k].dim() > 1):
                moved = (trained[k] - reference[k]).norm() / reference[k].norm()
                assert moved > 0.5, f"N={n}: {k} moved {moved:.3f} from init_from, not re-initialised"


def test_sigterm_mid_epoch_then_resume_matches_uninterrupted_run(data, tmp_path):
    spec = {**TINY, "train_dir": str(data / "train"), "eval_dir": str(data / "val"), "epochs": 3,
            "batch_size": 2, "augment": "pytorch-example", "seed": 7}
    env = subprocess_env(OMP_NUM_THREADS=1)
    straight = make_run(tmp_path, "straight", **spec)
    subprocess.run([PYTHON, "-m", "runners.train", "--run-dir", str(straight)], env=env, check=True,
                   capture_output=True)
    cut = make_run(tmp_path, "cut", **spec)
    proc = start_until("runners.train", cut, lambda ev: any(e["type"] == "train_step" and e["step"] >= 2 for e in ev),
                       env)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143
    assert final(cut)["type"] == "cancelled"
    saved = torch.load(cut / "checkpoints" / "last.pt", weights_only=True)
    assert (saved["epoch"], saved["step_in_epoch"]) != (3, 0)  # stopped before the end
    before = len(events(cut))
    subprocess.run([PYTHON, "-m", "runners.train", "--run-dir", str(cut), "--resume"], env=env, check=True,
                   capture_output=True)
    assert final(cut)["type"] == "done"
    # The resumed process loaded the checkpoint and ran only the remaining steps.
    resumed = events(cut)[before:]
    assert next(e for e in resumed if e["type"] == "start")["resumed"] is True
    assert any(e["type"] == "log" and e["message"].startswith("resumed from") for e in resumed)
    steps = [e["step"] for e in resumed if e["type"] == "train_step"]
    total = len([e for e in events(straight) if e["type"] == "train_step"])
    assert steps == list(range(saved["global_step"] + 1, total + 1))
    a = torch.load(straight / "checkpoints" / "model.pt", weights_only=True)
    b = torch.load(cut / "checkpoints" / "model.pt", weights_only=True)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_fractions_are_balanced_nested_and_seeded(tmp_path):
    images = ImageList(tmp_path, ["a", "b", "c"], [(f"{c}{i}", k) for k, c in enumerate("abc") for i in range(40)])
    subsets = {f: set(balanced_fraction(images, f, seed=3)) for f in (1.0, 0.5, 0.25, 0.125, 1 / 16)}
    for f, idx in subsets.items():
        per_class = [sum(1 for i in idx if images.samples[i][1] == k) for k in range(3)]
        assert per_class == [math.ceil(40 * f)] * 3
    assert subsets[1 / 16] <= subsets[0.125] <= subsets[0.25] <= subsets[0.5] <= subsets[1.0]
    assert set(balanced_fraction(images, 0.25, seed=3)) == subsets[0.25]
    assert set(balanced_fraction(images, 0.25, seed=4)) != subsets[0.25]


def test_top1_top5_on_a_hand_built_case():
    logits = torch.tensor([[9., 1, 2, 3, 4, 5, 0],   # target 0: top-1 hit
                           [1., 9, 8, 7, 6, 5, 4],   # target 5: rank 5 -> top-5 hit only
                           [1., 9, 8, 7, 6, 5, 4],   # target 6: rank 6 -> miss
                           [0., 0, 3, 2, 0, 0, 0]])  # target 3: rank 2 -> top-5 hit
    assert accuracy(logits, torch.tensor([0, 5, 6, 3])) == [1, 3]


def test_class_mismatch_is_a_clear_error(data, tmp_path):
    other = make_image_folder(tmp_path / "other", classes=2, per_class=2)
    run_dir = make_run(tmp_path, "mismatch", **TINY, train_dir=str(other), eval_dir=str(data / "val"))
    assert "classes do not match" in _failed_error(run_dir) and "n00000002" in final(run_dir)["error"]


def test_empty_class_folder_is_a_clear_error(data, tmp_path):
    folder = make_image_folder(tmp_path / "t", classes=3, per_class=2)
    for f in (folder / "n00000001").iterdir():
        f.unlink()
    run_dir = make_run(tmp_path, "empty", **TINY, train_dir=str(folder), eval_dir=str(data / "val"))
    assert "class folder" in _failed_error(run_dir) and "has no images" in final(run_dir)["error"]


def test_missing_init_from_and_bad_n(data, tmp_path):
    run_dir = make_run(tmp_path, "noinit", **TINY, train_dir=str(data / "train"), eval_dir=str(data / "val"),
                       init_from_path=str(tmp_path / "nope.pt"), freeze_layers=3)
    assert "no checkpoint at" in _failed_error(run_dir)
    torch.save(build_resnet("resnet18", 3, small_input=True, width=TINY["width"]).state_dict(), tmp_path / "r18.pt")
    run_dir = make_run(tmp_path, "badn", **TINY, train_dir=str(data / "train"), eval_dir=str(data / "val"),
                       init_from_path=str(tmp_path / "r18.pt"), freeze_layers=10)
    assert "freeze_layers must be 0..9" in _failed_error(run_dir)


def test_mixed_precision_and_channels_last_path_trains(data, tmp_path, monkeypatch):
    """The loop as it runs on a GPU (autocast to bf16, channels_last inputs and
    model, scaler disabled for bf16), with the CPU standing in for CUDA."""
    from runners import runtime

    class CpuAsGpu(runtime.Device):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.amp, self.dtype, self.memory_format = True, torch.bfloat16, torch.channels_last

    monkeypatch.setattr(train, "Device", CpuAsGpu)
    seen = []
    real_forward = layers.Student.forward

    def forward(self, x):
        seen.append((x.is_contiguous(memory_format=torch.channels_last), torch.is_autocast_enabled("cpu")))
        out = real_forward(self, x)
        seen[-1] += (out.dtype,)
        return out

    monkeypatch.setattr(layers.Student, "forward", forward)
    run_dir = make_run(tmp_path, "amp", **{**TINY, "augment": "dino", "epochs": 2}, train_dir=str(data / "train"),
                       eval_dir=str(data / "val"))
    assert run(run_dir) == 0
    assert seen and all(cl for cl, *_ in seen)
    assert any(ac and dtype == torch.bfloat16 for _, ac, dtype in seen)  # training steps
    weights = torch.load(run_dir / "checkpoints" / "model.pt", weights_only=True)
    assert all(v.dtype in (torch.float32, torch.int64) for v in weights.values())  # autocast leaves fp32 masters
    assert all(math.isfinite(e["loss"]) for e in events(run_dir) if e["type"] == "train_step")


class _Log:
    def __init__(self):
        self.lines = []

    def log(self, message, level="info"):
        self.lines.append(message)


def test_weights_file_loads_the_backbone_or_fails_clearly(tmp_path):
    """ImageNet transfer: a torchvision state dict (1000 classes) gives every
    layer but the classifier; a file of another architecture is an error."""
    from torchvision.models import resnet18, resnet34

    from runners.kinds.train import KIND
    from runners.train import build_student

    torch.save(resnet18().state_dict(), tmp_path / "r18.pth")
    torch.save(resnet34().state_dict(), tmp_path / "r34.pth")
    spec = {**TINY, "width": 64, "small_input": False, "weights": str(tmp_path / "r18.pth")}
    ctx = _Log()
    student, _ = build_student(KIND.resolve(spec), ["a", "b", "c"], ctx)
    source = torch.load(tmp_path / "r18.pth", weights_only=True)
    for key, value in student.net.state_dict().items():
        if key.startswith("fc."):
            assert value.shape[0] == 3
        else:
            assert torch.equal(value, source[key]), key
    assert "loaded" in ctx.lines[0]
    with pytest.raises(ValueError, match="shape"):  # the 3x3 stem of small_input
        build_student(KIND.resolve({**spec, "small_input": True}), ["a", "b", "c"], _Log())
    with pytest.raises(ValueError, match=r"r34.pth: layer1.0.conv1.weight has shape \(64, 64, 3, 3\)"):
        build_student(KIND.resolve({**spec, "arch": "resnet50", "weights": str(tmp_path / "r34.pth")}), ["a", "b", "c"], _Log())
    with pytest.raises(FileNotFoundError, match="weights: no checkpoint"):
        build_student(KIND.resolve({**spec, "weights": str(tmp_path / "nope.pth")}), ["a", "b", "c"], _Log())


@pytest.mark.parametrize("augment", ["pytorch-example", "dino"])  # PIL and torchvision decoding
def test_corrupt_image_is_skipped_and_counted(data, tmp_path, augment):
    folder = make_image_folder(tmp_path / "t", classes=3, per_class=4)
    (folder / "n00000000" / "n00000000_0001.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    run_dir = make_run(tmp_path, "corrupt", **{**TINY, "augment": augment}, train_dir=str(folder),
                       eval_dir=str(data / "val"))
    assert run(run_dir) == 0
    assert final(run_dir)["summary"]["skipped_images"] == 1
    warnings = [e for e in events(run_dir) if e["type"] == "log" and e["level"] == "warning"]
    assert warnings and "n00000000_0001.jpg" in warnings[0]["message"]


def test_bridged_stages_mix_and_exact_normalization(data, tmp_path):
    synth = make_dataset(tmp_path / "synth", classes=3, train_per_class=4, val_per_class=1)
    run_dir = make_run(tmp_path, "bridged", **{**TINY, "normalization": "exact", "recipe": "plain", "save_every": 2},
                       eval_dir=str(data / "val"),
                       stages=[{"train_dir": str(synth / "train"), "epochs": 1, "mixup": 0.2},
                               {"train_dir": str(data / "train"), "epochs": 2, "reinit_classifier": True}])
    assert run(run_dir) == 0, final(run_dir)
    epochs = [e for e in events(run_dir) if e["type"] == "epoch"]
    assert [e["stage"] for e in epochs] == [0, 1, 1]
    # save_every counts epochs across stages: the snapshot after the second is kept beside the final model.
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["epoch_002.pt", "last.pt", "model.pt"]
    assert (synth / "train" / ".synthgap-stats.json").exists() or (data / "train" / ".synthgap-stats.json").exists()
    mixed = make_run(tmp_path, "mixed", **TINY, eval_dir=str(data / "val"),
                     mix=[{"data": "real", "dir": str(data / "train"), "weight": 1.0}, {"data": "synth", "dir": str(synth / "train"), "weight": 3.0}])
    assert run(mixed) == 0, final(mixed)


def test_ddp_two_processes_on_cpu(data, tmp_path):
    run_dir = make_run(tmp_path, "ddp", **{**TINY, "augment": "pytorch-example", "epochs": 2},
                       train_dir=str(data / "train"), eval_dir=str(data / "val"))
    out = subprocess.run([PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "-m", "runners.train", "--run-dir", str(run_dir)], env=subprocess_env(OMP_NUM_THREADS=1),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    start = next(e for e in events(run_dir) if e["type"] == "start")
    assert start["world_size"] == 2
    assert final(run_dir)["type"] == "done"
    assert len([e for e in events(run_dir) if e["type"] == "start"]) == 1  # only rank 0 writes


def test_scan_folder_rejects_missing_folder(tmp_path):
    from runners.data import DataError

    with pytest.raises(DataError, match="does not exist"):
        scan_folder(tmp_path / "nope")


@pytest.mark.parametrize("arch", ["torchvision:mobilenet_v3_small", "timm:resnet10t"])
def test_students_by_name_from_torchvision_and_timm_train_a_step(data, tmp_path, arch):
    spec = {**TINY, "arch": arch, "tau": 0.0, "augment": "pytorch-example", "max_steps_per_epoch": 1}
    for key in ("small_input",):  # a ResNet-only option
        spec.pop(key)
    r = make_run(tmp_path, "named", **spec, train_dir=str(data / "train"), eval_dir=str(data / "val"))
    assert run(r) == 0, final(r)
    start = next(e for e in events(r) if e["type"] == "start")
    net = layers.build_named(arch, 3)
    assert start["trainable_params"] == layers.trainable_parameters(net)  # the named model, whole
    assert math.isfinite(final(r)["summary"]["train_loss_mean"])
    bad = make_run(tmp_path, "typo", **{**spec, "arch": arch + "x"}, train_dir=str(data / "train"),
                   eval_dir=str(data / "val"))
    assert run(bad) == 1 and "has no" in _failed_error(bad) and "did you mean" in _failed_error(bad)


def test_deterministic_switch_turns_on_deterministic_algorithms():
    from runners.runtime import Device

    assert not torch.are_deterministic_algorithms_enabled()
    try:
        Device(amp=False, deterministic=True)
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)


def test_weights_take_a_torchvision_enum_name(tmp_path):
    from synthgap_tui import runs as lifecycle
    from synthgap_tui.specs import parse_spec
    from synthgap_tui.workspace import Workspace

    with pytest.raises(train.RunnerError, match="no such weights enum"):
        train.pretrained_state("ResNet50_Weights.NO_SUCH_TAG")
    (tmp_path / "d" / "train").mkdir(parents=True)
    (tmp_path / "d" / "val").mkdir()
    exp = parse_spec('[experiment]\nname = "w"\n[datasets]\nreal = "d"\n[runs.a]\nkind = "train"\ntrain = "real"\n'
                     'eval = "real"\nweights = "ResNet50_Weights.IMAGENET1K_V2"\n', base_dir=tmp_path)
    assert lifecycle.plan(exp, Workspace(tmp_path / "ws"))[1] == []  # an enum is not a missing file
    exp = parse_spec('[experiment]\nname = "w"\n[datasets]\nreal = "d"\n[runs.a]\nkind = "train"\ntrain = "real"\n'
                     'eval = "real"\nweights = "/nope/r50.pth"\n', base_dir=tmp_path)
    assert "file /nope/r50.pth does not exist" in lifecycle.plan(exp, Workspace(tmp_path / "ws"))[1][0]


def test_the_loss_scale_of_fp16_training_is_checkpointed_and_restored(data, tmp_path, monkeypatch):
    from runners import runtime

    real_init = runtime.Device.__init__

    def with_scaler(self, *args, **kwargs):  # the CPU stands in for an fp16 GPU: the scale doubles every step
        real_init(self, *args, **kwargs)
        self.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 4, growth_interval=1)

    monkeypatch.setattr(runtime.Device, "__init__", with_scaler)
    spec = {**TINY, "train_dir": str(data / "train"), "eval_dir": str(data / "val"), "augment": "pytorch-example",
            "max_steps_per_epoch": 2}
    r = make_run(tmp_path, "scaled", **spec)
    assert run(r) == 0, final(r)
    assert torch.load(r / "checkpoints" / "last.pt", weights_only=True)["scaler"]["scale"] == 2.0 ** 6
    (r / "spec.json").write_text(__import__("json").dumps({"id": "scaled", "name": "scaled", "kind": "train",
                                                           **spec, "epochs": 2}))
    assert run(r, "--resume") == 0, final(r)
    assert torch.load(r / "checkpoints" / "last.pt", weights_only=True)["scaler"]["scale"] == 2.0 ** 8


def test_single_crop_presets_crop_like_the_torchvision_reference():
    from torchvision import transforms as T
    from torchvision.transforms import InterpolationMode

    from runners.augment import train_transform

    for name in ("pytorch-example", "autoaugment", "augmix"):
        steps = train_transform(name, [0.5] * 3, [0.5] * 3, size=64).transform.transforms
        crop = next(t for t in steps if isinstance(t, T.RandomResizedCrop))
        assert crop.interpolation == InterpolationMode.BILINEAR and crop.scale == (0.08, 1.0)
        assert any(isinstance(t, T.RandomHorizontalFlip) for t in steps)


def test_exact_statistics_are_taken_at_full_resolution(tmp_path):
    from PIL import Image

    from runners.data import channel_stats

    stripes = np.zeros((128, 128, 3), dtype=np.uint8)
    stripes[:, ::2] = 255  # one-pixel columns: any downsampling averages them to grey
    (tmp_path / "d" / "a").mkdir(parents=True)
    Image.fromarray(stripes).save(tmp_path / "d" / "a" / "x.png")
    mean, std = channel_stats(scan_folder(tmp_path / "d", "stats"), tmp_path)
    assert np.allclose(mean, 0.5) and np.allclose(std, 0.5)


@pytest.mark.parametrize("mode", ["exact", "exact-train"])
def test_exact_normalisation_per_dataset_or_from_the_training_set(data, tmp_path, mode):
    from PIL import Image

    bright = tmp_path / "bright"
    for cls in sorted(p.name for p in (data / "val").iterdir()):
        (bright / cls).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((32, 40, 3), 240, dtype=np.uint8)).save(bright / cls / f"{i}.png")
    r = make_run(tmp_path, mode, **{**TINY, "augment": "pytorch-example", "max_steps_per_epoch": 1,
                                    "normalization": mode}, train_dir=str(data / "train"), eval_dir=str(bright))
    assert run(r) == 0, final(r)
    norm = next(e for e in events(r) if e["type"] == "start")["normalization"]
    if mode == "exact":  # the paper's reading: each dataset with its own statistics
        assert np.allclose(norm["eval"]["mean"], 240 / 255) and np.allclose(norm["eval"]["std"], 0, atol=1e-5)
        assert not np.allclose(norm["train"]["mean"], norm["eval"]["mean"])
    else:
        assert norm["eval"] == norm["train"]


@pytest.mark.parametrize("reinit", [True, False])
def test_layers_above_n_start_fresh_with_the_run_s_seed_or_from_init_from(tmp_path, reinit):
    from runners.data import mix_seed
    from runners.kinds.train import KIND

    torch.manual_seed(123)
    teacher = build_resnet("resnet18", 3, small_input=True, tau=0.1, width=TINY["width"])
    torch.save(teacher.state_dict(), tmp_path / "teacher.pt")
    reference = teacher.state_dict()
    for n in (1, 4, 9):
        cfg = KIND.resolve({**TINY, "tau": 0.1, "seed": 5, "init_from_path": str(tmp_path / "teacher.pt"),
                            "freeze_layers": n, "reinit": reinit})
        state = train.build_student(cfg, ["a", "b", "c"], _Log())[0].net.state_dict()  # before the first step
        torch.manual_seed(mix_seed("init", 5))
        fresh = build_resnet("resnet18", 3, small_input=True, tau=0.1, width=TINY["width"]).state_dict()
        for i, layer in enumerate(layers.layer_prefixes(teacher)):
            keys = [k for k in reference if k.startswith(layer)]
            expected = reference if i < n or not reinit else fresh
            assert all(torch.equal(state[k], expected[k]) for k in keys), f"N={n}: layer {i + 1}"
            if i >= n and reinit and any(reference[k].is_floating_point() for k in keys):
                assert not all(torch.equal(state[k], reference[k]) for k in keys), f"N={n}: layer {i + 1}"


def test_the_runner_records_its_provenance(data, tmp_path):
    import json
    import sys

    from conftest import REPO

    r = make_run(tmp_path, "prov", **{**TINY, "augment": "pytorch-example", "max_steps_per_epoch": 1, "seed": 3},
                 train_dir=str(data / "train"), eval_dir=str(data / "val"))
    assert run(r) == 0, final(r)
    prov = json.loads((r / "provenance.json").read_text())
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert prov["synthgap"]["git"]["commit"] == head and isinstance(prov["synthgap"]["git"]["dirty"], bool)
    assert torch.__version__.startswith(prov["libraries"]["torch"])
    assert prov["seed"] == 3 and prov["spec"]["name"] == "prov" and prov["command"][0] == sys.executable
    assert {"python", "cuda", "cudnn", "gpus", "driver", "host"} <= set(prov)
    assert any(line.startswith("torch==") for line in (r / "pip-freeze.txt").read_text().splitlines())


def test_stdout_log_says_what_the_run_does_one_line_per_epoch_and_logs_reads_it(tmp_path):
    """What `synthgap logs RUN -f` shows: a start line, one line per epoch, the outcome."""
    from conftest import PYTHON, subprocess_env
    from runners import protocol
    from synthgap_tui.store import RunStore
    from synthgap_tui.workspace import Workspace

    data = make_dataset(tmp_path / "data", classes=2, train_per_class=4, val_per_class=2)
    ws = Workspace(tmp_path / "ws").ensure()
    run_id = RunStore(ws).create({"name": "logged", "kind": "train", "state": "finished"})
    d = ws.run_dir(run_id)
    d.mkdir(parents=True)
    (d / "spec.json").write_text(json.dumps({**TINY, "id": run_id, "name": "logged", "kind": "train", "epochs": 3,
                                             "train_dir": str(data / "train"), "eval_dir": str(data / "val")}))
    with open(d / protocol.STDOUT_FILE, "wb") as out:
        subprocess.run([PYTHON, "-m", "runners.train", "--run-dir", str(d)], stdout=out, stderr=subprocess.STDOUT,
                       env=subprocess_env(), check=True, timeout=300)
    lines = (d / protocol.STDOUT_FILE).read_text().splitlines()
    assert any(f"train logged ({run_id}) started: device cpu" in line for line in lines), lines
    for epoch in range(3):
        assert len([line for line in lines if f" epoch {epoch}: train loss " in line and " top-1 " in line]) == 1
    assert "finished: top1_mean" in lines[-1]
    tail = subprocess.run([PYTHON, "-m", "synthgap_tui.cli", "-w", str(ws.root), "logs", run_id, "-n", "2"],
                          capture_output=True, text=True, env=subprocess_env())
    assert tail.returncode == 0 and tail.stdout.splitlines() == lines[-2:]
    usage = subprocess.run([PYTHON, "-m", "synthgap_tui.cli", "-w", str(ws.root), "logs"], capture_output=True,
                           text=True, env=subprocess_env())
    assert usage.returncode == 2 and "logs takes a RUN" in usage.stderr
