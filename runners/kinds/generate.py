"""``kind = "generate"``: a synthetic dataset (runner: ``runners/generate.py``).

Stable Diffusion through diffusers (txt2img, img2img perturbation of a real
dataset with strength gamma, unCLIP image variations), or the demo's small
class-conditional generator. Defaults are the FITYMI generation setup.
"""

from __future__ import annotations

import re

from runners import protocol
from runners.kinds.base import Chart, Field, Kind, Metric, Problem, Ref, class_count

# Short scheduler names (runners/generate.py maps each to its diffusers class);
# any diffusers scheduler class name (e.g. "UniPCMultistepScheduler") works too.
SCHEDULERS = ("default", "ddim", "dpm-solver++", "euler")
MODES = ("txt2img", "img2img", "variation")


def _scheduler(value: str) -> str | None:
    if value in SCHEDULERS or re.fullmatch(r"[A-Z][A-Za-z0-9]*Scheduler", value):
        return None
    return f"is {value!r}; allowed: {', '.join(map(repr, SCHEDULERS))} or a diffusers scheduler class name"


def _shard(value: str) -> str | None:
    m = re.fullmatch(r"(\d+)/(\d+)", value)
    if not m or not int(m.group(1)) < int(m.group(2)):
        return "must look like 'i/n' with 0 <= i < n, e.g. '0/4'"
    return None


F = Field
FIELDS = {
    "model": F(str, "CompVis/stable-diffusion-v1-4", "a hub id or a local model folder", path="local"),
    "mode": F(str, "txt2img", "what the pipeline starts from", choices=MODES),
    "classes": F(str, "imagenet100", "'imagenet100' or a JSON/CSV class file", path="file"),
    "prompt": F(str, "{name}, {definition}", "prompt template: {name}, {definition}, {hypernym}, {style} "
                "(with style_from)"),
    "negative_prompt": F(str, "", "negative prompt (txt2img, img2img)"),
    "guidance_scale": F(float, 2.0, "classifier-free guidance scale", min=0),
    "steps": F(int, 50, "denoising steps", min=1, max=1000),
    "width": F(int, 512, "image width in pixels", min=8),
    "height": F(int, 384, "image height in pixels", min=8),
    "images_per_class": F(int, 1300, "images per class (txt2img from the prompt template)", min=1),
    "prompts": F(str, help="a prompts file instead of the template (txt2img): JSONL of {\"class\": id, "
                 "\"prompt\": text}, CSV with class,prompt columns, or the Unmet Promise's raw caption file "
                 "(\"caption => class name\" lines); one image per line times images_per_prompt", path="file"),
    "images_per_prompt": F(int, 1, "images per line of the prompts file", min=1),
    "scheduler": F(str, "default", "the sampler: default keeps the model's own; a short name or any "
                   "diffusers scheduler class", check=_scheduler),
    "variant": F(str, help="weights variant to load, e.g. 'fp16' (half-precision files, half the download)"),
    "revision": F(str, help="the model's revision (a hub branch, tag or commit), recorded with the run"),
    "cpu_offload": F(bool, False, "keep submodules on the CPU until they run (CUDA; less GPU memory)"),
    "batch_size": F(int, 8, "images denoised together", min=1),
    "format": F(str, "jpg", "image file format", choices=("jpg", "png")),
    "source": F(str, help="the real images img2img and variation start from",
                ref=Ref(to="source_dir", split="train", artifact="dataset")),
    "style_from": F(str, help="a style-inversion run (or its learned_embeds file) whose token prompts use as {style}",
                    ref=Ref(to="style_path", split=None, artifact="embedding", path="file")),
    "strength": F(float, 0.75, "img2img noise strength gamma", min=0, max=1, min_open=True),
    "shard": F(str, "0/1", "this run's share of the images, 'i/n'", check=_shard),
    "compile": F(bool, False, "torch.compile the UNet"),
    "save_workers": F(int, 2, "threads encoding and saving images while the next batch denoises", min=1),
}


def check(p: dict) -> list[Problem]:
    out: list[Problem] = []
    if "prompts" in p and p.get("mode", "txt2img") != "txt2img":
        out.append(("prompts", "applies to mode = \"txt2img\" (img2img and variation start from source images)"))
    if p.get("mode", "txt2img") != "txt2img" and "source" not in p:
        out.append(("mode", f"{p['mode']!r} needs source (the real dataset to start from)"))
    if "{style}" in p.get("prompt", "") and "style_from" not in p:
        out.append(("prompt", "uses {style}: set style_from (a style-inversion run or its embedding file)"))
    if p.get("gpus", 1) > 1:
        out.append(("gpus", f"is {p['gpus']}; a generate run uses one GPU: split the images over several runs "
                            f"with shard, e.g. [runs.NAME.sweep] shard = [\"0/{p['gpus']}\", \"1/{p['gpus']}\", ...]"))
    return out


BYTES_PER_PIXEL = {"jpg": 0.3, "png": 2.0}  # quality-95 JPEG and PNG of generated images, with margin


def artifact_bytes(p: dict) -> int | None:
    """What a txt2img run's images take on disk, roughly (None: unknown, e.g. img2img)."""
    cfg = KIND.resolve(p)
    if cfg["mode"] != "txt2img":
        return None
    if cfg.get("prompts"):
        try:
            with open(cfg["prompts"], encoding="utf-8") as f:
                images = sum(1 for line in f if line.strip()) * cfg["images_per_prompt"]
        except OSError:
            return None
    else:
        classes = class_count(cfg["classes"])
        if classes is None:
            return None
        images = classes * cfg["images_per_class"]
    n, i = (int(x) for x in cfg["shard"].split("/"))
    return int(images / i * cfg["width"] * cfg["height"] * BYTES_PER_PIXEL[cfg["format"]])


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
    artifact_bytes=artifact_bytes,
)
