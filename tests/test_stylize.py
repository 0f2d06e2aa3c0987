"""AdaIN and the stylize runner, with random weights in the published format."""

import json
import signal
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import PYTHON, subprocess_env
from imagegen import make_dataset, make_image_folder
from runner_helpers import events, failed_error, final, make_run, run_in_process, start_until
from runners import adain, stylize


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Random AdaIN weights saved as the published files are: the full VGG state
    dict has layers past relu4_1 too (they must be ignored)."""
    root = tmp_path_factory.mktemp("adain")
    torch.manual_seed(0)
    vgg = adain.encoder().state_dict()
    vgg.update({"31.weight": torch.zeros(512, 512, 3, 3), "31.bias": torch.zeros(512)})
    torch.save(vgg, root / "vgg_normalised.pth")
    torch.save(adain.decoder().state_dict(), root / "decoder.pth")
    return root


@pytest.fixture(scope="module")
def styles(tmp_path_factory):
    root = tmp_path_factory.mktemp("styles")
    make_image_folder(root, classes=1, per_class=5, seed=9, size=(40, 30))
    return root


def test_adain_gives_the_content_the_style_s_channel_statistics():
    torch.manual_seed(1)
    content, style = torch.randn(3, 8, 6, 5) * 3 + 1, torch.randn(3, 8, 7, 4) * 0.5 - 2
    mean, std = adain.mean_std(style)
    out = adain.adain(content, mean, std)
    out_mean, out_std = adain.mean_std(out)
    assert torch.allclose(out_mean, mean, atol=1e-5) and torch.allclose(out_std, std, atol=1e-3)


def test_alpha_zero_returns_the_content_and_one_the_style_statistics(weights):
    net = adain.Stylizer.from_files(weights / "vgg_normalised.pth", weights / "decoder.pth")
    content, style = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    feat = net.encoder(content)
    mean, std = net.style_stats(style)
    assert torch.equal(adain.blend(feat, mean, std, 0.0), feat)
    mixed_mean, mixed_std = adain.mean_std(adain.blend(feat, mean, std, 1.0))
    assert torch.allclose(mixed_mean, mean, atol=1e-4) and torch.allclose(mixed_std, std, rtol=1e-3, atol=1e-4)
    assert torch.allclose(net(content, mean, std, 0.0), net.decoder(feat))


@pytest.mark.parametrize("size", [(37, 50), (64, 96)])
def test_the_inference_network_computes_what_the_published_layout_does(weights, size):
    """Upsampling convolutions done at the input's resolution: the same output, on odd sizes too."""
    net = adain.Stylizer.from_files(weights / "vgg_normalised.pth", weights / "decoder.pth")
    fast = net.for_inference()
    assert sum(isinstance(m, adain.UpsampleConv) for m in fast.decoder) == 3
    torch.manual_seed(2)
    x = torch.rand(3, 64, 7, 10)
    up = fast.decoder[-4]
    plain = torch.nn.Sequential(torch.nn.Upsample(scale_factor=2), torch.nn.ReflectionPad2d(1), net.decoder[-4])
    assert torch.allclose(up(x), plain(x), atol=1e-5)
    content, style = torch.rand(2, 3, *size), torch.rand(2, 3, 40, 40)
    mean, std = net.style_stats(style)
    expected = net(content, mean, std)
    assert torch.allclose(fast(content.contiguous(memory_format=torch.channels_last), mean, std), expected,
                          atol=1e-5 * expected.abs().max().item())


def test_weights_in_another_format_are_a_clear_error(tmp_path, weights):
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="not a normalised VGG-19 in the AdaIN format"):
        adain.Stylizer.from_files(tmp_path / "bad.pth", weights / "decoder.pth")
    with pytest.raises(ValueError, match="not an AdaIN decoder"):
        adain.Stylizer.from_files(weights / "vgg_normalised.pth", tmp_path / "bad.pth")


def test_content_images_are_cropped_as_stylized_imagenet_crops_them(tmp_path):
    """Stylized-ImageNet's preprocessing: Resize(256), CenterCrop(224), ToTensor."""
    from PIL import Image
    from torchvision import transforms as T
    file = next(make_image_folder(tmp_path, classes=1, per_class=1, seed=4, size=(300, 260)).rglob("*.*"))
    img = Image.open(file).convert("RGB")
    ours = stylize.Contents([(0, str(file))], 224)[0][0]
    theirs = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor()])(img)
    assert torch.allclose(ours, theirs, atol=1e-6)


def _run(tmp_path, name, data, weights, styles, **spec):
    return make_run(tmp_path, name, **{"kind": "stylize", "source_dir": str(data / "train"), "styles": str(styles),
                                       "vgg": str(weights / "vgg_normalised.pth"),
                                       "decoder": str(weights / "decoder.pth"), "image_size": 32, "batch_size": 4,
                                       "workers": 0, **spec})


def manifest(run_dir):
    return [json.loads(line) for line in (run_dir / "data" / "manifest.jsonl").read_text().splitlines()]


def test_the_output_mirrors_the_input_and_the_seed_fixes_the_styles(tmp_path, weights, styles):
    data = make_dataset(tmp_path / "data", classes=3, train_per_class=5, val_per_class=1)
    a = _run(tmp_path, "a", data, weights, styles, seed=3)
    assert run_in_process(stylize, a) == 0, final(a)
    out = a / "data" / "train"
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in (data / "train").iterdir())
    for cls in (data / "train").iterdir():
        assert sorted(p.stem for p in (out / cls.name).iterdir()) == sorted(p.stem for p in cls.iterdir())
    rows = manifest(a)
    assert len(rows) == 15 and all(r["content"].startswith(str(data / "train")) for r in rows)
    assert [e for e in events(a) if e["type"] == "artifact"][-1]["path"] == str(out)
    b = _run(tmp_path, "b", data, weights, styles, seed=3, batch_size=7)  # other batching, same draw
    c = _run(tmp_path, "c", data, weights, styles, seed=4)
    for run in (b, c):
        assert run_in_process(stylize, run) == 0
    style_of = {run: {r["index"]: r["style"] for r in manifest(run)} for run in (a, b, c)}
    assert style_of[a] == style_of[b] and style_of[a] != style_of[c]
    assert len(set(style_of[a].values())) > 1


def test_sigterm_then_resume_finishes_without_redoing_images(tmp_path, weights, styles):
    data = make_dataset(tmp_path / "data", classes=2, train_per_class=40, val_per_class=1)
    run_dir = _run(tmp_path, "cut", data, weights, styles, batch_size=2)
    env = subprocess_env(OMP_NUM_THREADS=1)
    proc = start_until("runners.stylize", run_dir, lambda ev: any(e["type"] == "progress" and e["done"] >= 4
                                                                 for e in ev), env)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143 and final(run_dir)["type"] == "cancelled"
    first = [r["index"] for r in manifest(run_dir)]
    assert 4 <= len(first) < 80
    subprocess.run([PYTHON, "-m", "runners.stylize", "--run-dir", str(run_dir), "--resume"], env=env, check=True,
                   capture_output=True)
    indices = [r["index"] for r in manifest(run_dir)]
    assert sorted(indices) == list(range(80)) and len(indices) == 80  # each image once
    assert final(run_dir)["type"] == "done" and final(run_dir)["summary"]["images"] == 80


def test_missing_styles_or_weights_are_clear_errors(tmp_path, weights, styles):
    data = make_dataset(tmp_path / "data", classes=2, train_per_class=2, val_per_class=1)
    assert "styles: folder" in failed_error(stylize, _run(tmp_path, "s", data, weights, tmp_path / "none"))
    no_vgg = make_run(tmp_path, "w", kind="stylize", source_dir=str(data / "train"), styles=str(styles),
                      vgg=str(tmp_path / "missing.pth"), decoder=str(weights / "decoder.pth"), workers=0)
    assert "AdaIN vgg weights" in failed_error(stylize, no_vgg) and "do not exist" in failed_error(stylize, no_vgg)


def test_submit_refuses_a_missing_weights_file_or_style_folder(tmp_path, weights):
    from synthgap_tui.runs import plan
    from synthgap_tui.specs import parse_spec
    from synthgap_tui.workspace import Workspace

    data = make_dataset(tmp_path / "data", classes=2, train_per_class=2, val_per_class=1)
    exp = parse_spec(f'[experiment]\nname = "s"\n[datasets]\nreal = "{data}"\n'
                     f'[runs.st]\nkind = "stylize"\nsource = "real"\nstyles = "{tmp_path / "paintings"}"\n'
                     f'vgg = "{weights / "vgg_normalised.pth"}"\ndecoder = "{tmp_path / "decoder.pth"}"\n')
    _, missing = plan(exp, Workspace(tmp_path / "ws"))
    assert any(f"folder {tmp_path / 'paintings'} does not exist" in m for m in missing)
    assert any(f"file {tmp_path / 'decoder.pth'} does not exist" in m for m in missing)


def test_images_are_saved_rounded_as_stylized_imagenet_saves_them(tmp_path):
    """torchvision's save_image rounds (x * 255 + 0.5); to_pil_image alone would truncate."""
    img = torch.tensor([100.6, 100.4, 254.7]).div(255).view(3, 1, 1).expand(3, 2, 2).clone()
    stylize._save(img, tmp_path / "a.png", "png", 95)
    assert np.asarray(Image.open(tmp_path / "a.png"))[0, 0].tolist() == [101, 100, 255]
