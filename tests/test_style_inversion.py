"""Dataset Style Inversion on the tiny Stable Diffusion pipeline built from configs."""

import json
import signal
import subprocess

import pytest
import torch

from conftest import PYTHON, subprocess_env
from imagegen import make_dataset
from runner_helpers import events, final, make_run, run_in_process, start_until
from runners import generate, style_inversion
from runners.kinds.style_inversion import KIND
from runners.runtime import Device
from tiny_sd import build_tiny_sd

TINY = {"token": "<ds>", "initializer": "ab", "resolution": 32, "batch_size": 2, "log_every": 1, "samples": 0,
        "lr": 0.05}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return build_tiny_sd(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data"), classes=2, train_per_class=3, val_per_class=1)


def test_a_few_steps_train_the_new_token_and_nothing_else(model, data):
    cfg = KIND.resolve({**TINY, "model": str(model), "steps": 3})
    paths = [str(p) for p in sorted((data / "train").rglob("*.jpg"))]
    inv = style_inversion.Inversion(cfg, paths, Device(amp=False))
    start = inv.embedding.detach().clone()
    init = inv.tokenizer.encode("ab", add_special_tokens=False)
    assert torch.allclose(start, inv.table[init].mean(0))  # starts from the initializer
    before = {name: {k: v.detach().clone() for k, v in m.state_dict().items()}
              for name, m in (("vae", inv.vae), ("unet", inv.unet), ("text_encoder", inv.text_encoder))}
    for step in range(3):
        inv.step(step)
    assert not torch.allclose(inv.embedding, start)
    table_key = next(k for k, v in inv.text_encoder.state_dict().items() if v.data_ptr() == inv.table.data_ptr())
    for name, module in (("vae", inv.vae), ("unet", inv.unet), ("text_encoder", inv.text_encoder)):
        for key, value in module.state_dict().items():
            if name == "text_encoder" and key == table_key:
                others = torch.ones(len(value), dtype=torch.bool)
                others[inv.token_id] = False
                assert torch.equal(value[others], before[name][key][others]), "another token's embedding moved"
            else:
                assert torch.equal(value, before[name][key]), f"{name}.{key} changed"


def test_the_learned_token_loads_into_a_fresh_pipeline_and_generates_with_style(tmp_path, model, data):
    inv = make_run(tmp_path, "inv", **{"kind": "style-inversion", "model": str(model), "train_dir": str(data / "train"),
                                       **TINY, "steps": 2, "samples": 1})
    assert run_in_process(style_inversion, inv) == 0, final(inv)
    produced = {e["kind"]: e["path"] for e in events(inv) if e["type"] == "artifact"}
    assert produced["embedding"] == str(inv / "learned_embeds.safetensors") and (inv / "samples.png").exists()
    assert generate.style_token(produced["embedding"]) == "<ds>"
    classes = tmp_path / "classes.csv"
    classes.write_text("id,name,definition\nn01,tench,a fish\n")
    gen = make_run(tmp_path, "gen", **{"kind": "generate", "model": str(model), "classes": str(classes),
                                       "prompt": "{name} in the style of {style}", "style_path": produced["embedding"],
                                       "images_per_class": 2, "batch_size": 2, "steps": 2, "width": 32, "height": 32})
    assert run_in_process(generate, gen) == 0, final(gen)
    rows = [json.loads(line) for line in (gen / "data" / "manifest.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in rows] == ["tench in the style of <ds>"] * 2
    assert len(list((gen / "data" / "train" / "n01").iterdir())) == 2
    plain = make_run(tmp_path, "plain", **{"kind": "generate", "model": str(model), "classes": str(classes),
                                           "prompt": "{name} in the style of {style}"})
    assert run_in_process(generate, plain) == 1 and "set style_from" in final(plain)["error"]


def test_sigterm_then_resume_ends_with_the_uninterrupted_embedding(tmp_path, model, data):
    spec = {"kind": "style-inversion", "model": str(model), "train_dir": str(data / "train"), **TINY, "steps": 30,
            "checkpoint_every": 1000}
    straight = make_run(tmp_path, "straight", **spec)
    assert run_in_process(style_inversion, straight) == 0
    cut = make_run(tmp_path, "cut", **spec)
    env = subprocess_env(OMP_NUM_THREADS=1)
    proc = start_until("runners.style_inversion", cut,
                       lambda ev: any(e["type"] == "train_step" and e["step"] >= 3 for e in ev), env)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143 and final(cut)["type"] == "cancelled"
    stopped = torch.load(cut / "checkpoints" / "last.pt", weights_only=True)["step"]
    assert 3 <= stopped < 30
    subprocess.run([PYTHON, "-m", "runners.style_inversion", "--run-dir", str(cut), "--resume"], env=env,
                   check=True, capture_output=True)
    ev = events(cut)
    second = max(i for i, e in enumerate(ev) if e["type"] == "start")
    assert ev[second]["resumed"] is True
    # The second attempt ran only the remaining steps, from the checkpoint.
    assert [e["step"] for e in ev[second:] if e["type"] == "train_step"] == list(range(stopped + 1, 31))
    from safetensors.torch import load_file

    a = load_file(straight / "learned_embeds.safetensors")["<ds>"]
    b = load_file(cut / "learned_embeds.safetensors")["<ds>"]
    assert torch.equal(a, b)


def test_a_token_already_in_the_vocabulary_is_refused(tmp_path, model, data):
    run_dir = make_run(tmp_path, "dup", **{"kind": "style-inversion", "model": str(model),
                                           "train_dir": str(data / "train"), **TINY, "token": "a", "steps": 1})
    assert run_in_process(style_inversion, run_dir) == 1
    assert "already in the tokenizer's vocabulary" in final(run_dir)["error"]


@pytest.mark.parametrize("scale, batch, accumulate, expected", [(True, 2, 3, 0.05 * 6), (False, 2, 3, 0.05),
                                                                (True, 4, 1, 0.2)])
def test_the_learning_rate_is_scaled_as_diffusers_scale_lr(model, data, scale, batch, accumulate, expected):
    """Read off the built optimiser: lr x batch size x gradient accumulation with scale_lr
    (the example's documented command: 5e-4 x 1 x 4 = 2e-3)."""
    cfg = KIND.resolve({**TINY, "model": str(model), "scale_lr": scale, "batch_size": batch,
                        "gradient_accumulation": accumulate})
    inv = style_inversion.Inversion(cfg, [str(p) for p in sorted((data / "train").rglob("*.jpg"))], Device(amp=False))
    assert inv.optimizer.param_groups[0]["lr"] == pytest.approx(expected)
    assert inv.optimizer.defaults["weight_decay"] == 1e-2 and inv.optimizer.defaults["betas"] == (0.9, 0.999)
    assert KIND.resolve({})["lr"] * 4 == pytest.approx(style_inversion.effective_lr(KIND.resolve({})))


def test_images_are_prepared_as_the_example_prepares_them(tmp_path):
    """Resized to a square with bicubic (the aspect not kept, nothing cropped), flipped when drawn."""
    from PIL import Image
    from torchvision.transforms import functional as TF

    rng = torch.Generator().manual_seed(0)
    pixels = (torch.rand(3, 20, 50, generator=rng) * 255).to(torch.uint8)
    TF.to_pil_image(pixels).save(tmp_path / "a.png")
    plain, flipped = style_inversion.image_batch([str(tmp_path / "a.png")] * 2, [0, 1], 16, [False, True])
    expected = TF.to_tensor(Image.open(tmp_path / "a.png").convert("RGB").resize((16, 16), Image.Resampling.BICUBIC))
    assert torch.allclose(plain, expected * 2 - 1) and torch.equal(flipped, plain.flip(-1))
    assert KIND.resolve({})["flip"] == 0.5 and len(KIND.resolve({})["templates"]) == 19
