"""``kind = "generate"``: a synthetic dataset (runner: ``runners/generate.py``).

Stable Diffusion through diffusers (txt2img, img2img perturbation of a real
dataset with strength gamma, unCLIP image variations), or the demo's small
class-conditional generator. Defaults are the FITYMI generation setup.
"""

from __future__ import annotations

import re

from runners import protocol
from runners.kinds.base import Chart, Field, Kind, Metric, Problem, Ref

# Scheduler names; runners/generate.py maps each to its diffusers class.
SCHEDULERS = ("default", "ddim", "dpm-solver++", "euler")
MODES = ("txt2img", "img2img", "variation")


def _shard(value: str) -> str | None:
    m = re.fullmatch(r"(\d+)/(\d+)", value)
    if not m or not int(m.group(1)) < int(m.group(2)):
        return "must look like 'i/n' with 0 <= i < n, e.g. '0/4'"
    return None


F = Field
FIELDS = {
    "model": F(str, "CompVis/stable-diffusion-v1-4", "a hub id or a local model folder"),
    "mode": F(str, "txt2img", "what the pipeline starts from", choices=MODES),
    "classes": F(str, "imagenet100", "'imagenet100' or a JSON/CSV class file"),
    "prompt": F(str, "{name}, {definition}", "prompt template: {name}, {definition}, {hypernym}"),
    "negative_prompt": F(str, "", "negative prompt (txt2img, img2img)"),
    "guidance_scale": F(float, 2.0, "classifier-free guidance scale", min=0),
    "steps": F(int, 50, "denoising steps", min=1, max=1000),
    "width": F(int, 512, "image width in pixels", min=8),
    "height": F(int, 384, "image height in pixels", min=8),
    "images_per_class": F(int, 1300, "images per class (txt2img)", min=1),
    "scheduler": F(str, "default", "the sampler; default keeps the model's own", choices=SCHEDULERS),
    "batch_size": F(int, 8, "images denoised together", min=1),
    "format": F(str, "jpg", "image file format", choices=("jpg", "png")),
    "source": F(str, help="the real images img2img and variation start from",
                ref=Ref(to="source_dir", split="train", artifact="dataset")),
    "strength": F(float, 0.75, "img2img noise strength gamma", min=0, max=1, min_open=True),
    "shard": F(str, "0/1", "this run's share of the images, 'i/n'", check=_shard),
    "compile": F(bool, False, "torch.compile the UNet"),
    "save_workers": F(int, 2, "threads encoding and saving images while the next batch denoises", min=1),
}


def check(p: dict) -> list[Problem]:
    if p.get("mode", "txt2img") != "txt2img" and "source" not in p:
        return [("mode", f"{p['mode']!r} needs source (the real dataset to start from)")]
    return []


KIND = Kind(
    name="generate",
    runner="runners.generate",
    help="generate a synthetic ImageFolder with Stable Diffusion (or the demo generator)",
    fields=FIELDS,
    artifacts={"dataset": "an ImageFolder of the generated images, data/train/"},
    metrics=(Metric("images", "Images", 0), Metric("images_per_s", "Images/s", 2)),
    charts=(Chart("images/s  ·  GPU memory (GiB)", protocol.PROGRESS, "done", (("rate", "img/s"),),
                  gpu_memory=True),),
    check=check,
)
