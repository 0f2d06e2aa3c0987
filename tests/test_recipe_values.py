"""The training recipe's values, each checked where a wrong value would show."""

import math
import statistics
from pathlib import Path

import pytest
import torch
from torch import nn

from imagegen import make_dataset
from runner_helpers import TINY, events, final, make_run, run_in_process
from runners import train
from runners.data import EpochSampler, mix_weights
from runners.kinds.train import KIND
from runners.layers import CosineClassifier, Student, build_resnet
from runners.runtime import Device


def test_warm_up_then_cosine_to_min_lr():
    f = train.lr_lambda(0.1, 1e-6, warmup_steps=10, total_steps=110)
    assert [round(f(s), 6) for s in (0, 4, 9)] == [0.1, 0.5, 1.0]  # linear warm-up, per step
    assert f(10) == pytest.approx(1.0)  # the cosine starts at the base lr
    mid = 1e-6 + 0.5 * (0.1 - 1e-6) * (1 + math.cos(math.pi * 0.5))
    assert f(60) * 0.1 == pytest.approx(mid)
    assert f(110) * 0.1 == pytest.approx(1e-6) and f(500) * 0.1 == pytest.approx(1e-6)


def test_weight_decay_on_weights_only():
    net = build_resnet("resnet18", 5, tau=0.1, width=8)
    decay, no_decay = train.param_groups(net, 1e-4)
    names = {id(p): n for n, p in net.named_parameters()}
    assert decay["weight_decay"] == 1e-4 and no_decay["weight_decay"] == 0.0
    assert all(names[id(p)].endswith("weight") and p.ndim > 1 for p in decay["params"])
    assert {names[id(p)] for p in no_decay["params"]} >= {"bn1.weight", "bn1.bias", "layer1.0.bn2.bias"}
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(net.parameters()))


def test_cosine_classifier_is_cosine_over_tau():
    head = CosineClassifier(2, 2, tau=0.1)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[3.0, 0.0], [1.0, 1.0]]))
    logits = head(torch.tensor([[2.0, 0.0], [0.0, 5.0]]))
    expected = torch.tensor([[1.0, 1 / math.sqrt(2)], [0.0, 1 / math.sqrt(2)]]) / 0.1
    assert torch.allclose(logits, expected, atol=1e-6)


def test_bn_eval_mode_train_uses_batch_statistics():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 2 * 2, 3))
    with torch.no_grad():
        net[1].running_mean.fill_(5.0)  # statistics that do not fit the data
    x, y = torch.randn(8, 3, 2, 2), torch.randint(0, 3, (8,))
    loader = [(x, y, [None] * 8)]
    device = Device(amp=False)
    as_eval = train.evaluate(net, loader, device, "eval")
    as_train = train.evaluate(net, loader, device, "train")
    net.train()
    with torch.no_grad():
        expected = nn.functional.cross_entropy(net(x), y).item()
    assert as_train["val_loss"] == pytest.approx(expected) and as_eval["val_loss"] != pytest.approx(expected)


@pytest.mark.parametrize("frozen_bn, moving", [("frozen", False), ("train", True)])
def test_frozen_layers_batchnorm_statistics(frozen_bn, moving):
    student = Student(build_resnet("resnet18", 3, small_input=True, width=8), frozen=1, frozen_bn=frozen_bn).train()
    before = student.net.bn1.running_mean.clone()
    student(torch.randn(4, 3, 16, 16) + 3)
    assert (not torch.equal(before, student.net.bn1.running_mean)) == moving
    assert not student.net.conv1.weight.requires_grad  # parameters stay frozen either way


def test_reported_mean_and_std_are_over_the_last_n_epochs():
    history = [{"epoch": e, "top1": t, "top5": t + 10, "val_loss": 1.0, "train_loss": 2.0 - e / 10,
                "images_per_s": 100.0, "skipped": 0} for e, t in enumerate([10, 50, 60, 62, 61])]
    out = train.summarize(history, {"report_last": 3}, trainable=7)
    assert out["top1_mean"] == pytest.approx(61.0) and out["top1_std"] == pytest.approx(statistics.stdev([60, 62, 61]))
    assert out["last_n"] == 3 and out["best_top1"] == 62 and out["epochs"] == 5


def test_mix_weights_set_the_share_of_each_dataset():
    weights = mix_weights([10, 90], [3.0, 1.0])  # a small set drawn three times as often as a large one
    sampler = EpochSampler(100, seed=1, weights=weights)
    draws = [i for e in range(50) for i in (sampler.set_epoch(e) or sampler.epoch_indices())]
    share = sum(1 for i in draws if i < 10) / len(draws)
    assert share == pytest.approx(0.75, abs=0.02)


def test_stages_take_their_own_lr_mixup_and_classifier_reset():
    cfg = train.KIND.resolve({"recipe": "plain", "lr": 0.2, "stages": [
        {"train_dir": "/s", "epochs": 1, "mixup": 0.2},
        {"train_dir": "/r", "epochs": 2, "lr": 0.01, "reinit_classifier": True}]})
    first, second = train.stages_of(cfg)
    assert (first.lr, first.mixup, first.reinit_classifier, first.dirs) == (0.2, 0.2, False, ["/s"])
    assert (second.lr, second.mixup, second.reinit_classifier, second.epochs) == (0.01, 0.0, True, 2)


def test_mixup_mixes_inputs_and_keeps_both_targets():
    x, y = torch.arange(8.0).view(4, 2), torch.tensor([0, 1, 2, 3])
    (mixed, ya, yb, lam), = train.mixup([(x, y)], alpha=0.4, g=torch.Generator().manual_seed(3))
    perm = [int(t) for t in yb]
    assert 0 < lam < 1 and torch.equal(ya, y) and sorted(perm) == [0, 1, 2, 3]
    assert torch.allclose(mixed, lam * x + (1 - lam) * x[perm])


@pytest.mark.parametrize("reinit", [True, False])
def test_reinit_classifier_resets_the_head_at_the_stage_start(tmp_path, monkeypatch, reinit):
    data = make_dataset(tmp_path / "data", classes=3, train_per_class=4, val_per_class=1)
    resets = []
    real = train.classifier_of
    monkeypatch.setattr(train, "classifier_of", lambda net: resets.append(1) or real(net))
    r = make_run(tmp_path, "bridged", **{**TINY, "recipe": "plain", "augment": "pytorch-example"},
                 eval_dir=str(data / "val"), stages=[{"train_dir": str(data / "train"), "epochs": 1},
                                                     {"train_dir": str(data / "train"), "epochs": 1,
                                                      "reinit_classifier": reinit}])
    assert run_in_process(train, r) == 0, final(r)
    assert len(resets) == int(reinit)
    assert [e["stage"] for e in events(r) if e["type"] == "epoch"] == [0, 1]


def test_mixing_is_the_union_by_default_and_weighted_on_request():
    """The bridged transfer paper's "mixed": both sets together, each image once per epoch."""
    from runners.data import ImageList
    from runners.runtime import Device

    real = ImageList(Path("/r"), ["a"], [(f"/r/a/{i}.jpg", 0) for i in range(10)])
    synth = ImageList(Path("/s"), ["a"], [(f"/s/a/{i}.jpg", 0) for i in range(30)])
    stage = train.Stage(dirs=["/r", "/s"], weights=[3.0, 1.0], epochs=1, lr=0.1, mixup=0.0, reinit_classifier=False,
                        fraction=1.0, augment="none")
    cfg = {**KIND.resolve({"mix": [{"data": "r"}, {"data": "s"}]}), "workers": 0}
    _, sampler = train.make_loader([real, synth], stage, cfg, None, 4, Device(amp=False), 0, 1)
    assert sorted(sampler.epoch_indices()) == list(range(40))  # every image once
    _, weighted = train.make_loader([real, synth], stage, {**cfg, "mix_sampling": "weighted"}, None, 4,
                                    Device(amp=False), 0, 1)
    drawn = weighted.epoch_indices()
    assert len(drawn) == 40 and len(set(drawn)) < 40  # drawn with replacement, by weight
    problems = KIND.problems({"mix": [{"data": "r", "weight": 3.0}, {"data": "s"}], "eval": "r"})
    assert ("mix", "weights apply to mix_sampling = \"weighted\"; the union takes each image once") in problems


def test_a_single_reported_value_has_no_spread():
    """report_last = 1 (the CLIP recipe): the table shows 61.0, not 61.0 ± 0.0."""
    from synthgap_tui import analysis

    history = [{"epoch": e, "top1": t, "top5": 90.0, "val_loss": 1.0, "train_loss": 1.0, "images_per_s": 1.0,
                "skipped": 0} for e, t in enumerate([50.0, 61.0])]
    out = train.summarize(history, {"report_last": 1}, trainable=1)
    assert out["top1_mean"] == 61.0 and out["top1_std"] is None
    run = analysis.RunData({"id": "abcdef0123", "name": "adapt", "kind": "train", "summary": out}, {})
    header, rows = analysis.results_table([run], ids=True)
    assert header[:2] == ["Run", "Id"] and rows[0][:3] == ["adapt", "abcdef0123", "61.0"]
