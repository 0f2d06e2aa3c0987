"""Generate a synthetic dataset: ``python -m runners.generate --run-dir DIR [--resume]``.

Writes ``DIR/data/train/<class_id>/<class_id>_<index:05d>.<jpg|png>`` and
``DIR/data/manifest.jsonl``. Backends: Stable Diffusion through diffusers
(txt2img, img2img perturbation of a real dataset with strength gamma, unCLIP
image variations), or the small class-conditional generator of the demo.

Every image has its own seed from (base seed, class, index), and the work is
cut into fixed batches before sharding or resuming, so a resumed or sharded
generation writes exactly the images an uninterrupted one would. Encoding and
saving run in a thread pool while the next batch denoises; files appear
whole (temp file, then rename).
"""

from __future__ import annotations

import csv
import io
import json
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, ImageOps

from runners import protocol
from runners.class_diffusion import ClassConditionalGenerator, is_generator_folder
from runners.classes import check_template, load_classes, prompt_for
from runners.kinds.generate import KIND
from runners.data import DataError, mix_seed, scan_folder
from runners.runtime import Cancelled, RunContext, RunnerError, run_main, runner_args_parser



@dataclass
class Item:
    class_id: str
    index: int
    seed: int
    prompt: str
    label: int
    source: str | None = None  # the real image for img2img / variation

    def filename(self, fmt: str) -> str:
        return f"{self.class_id}/{self.class_id}_{self.index:05d}.{fmt}"


def load_prompts(path: str, classes: list[dict]) -> list[tuple[str, str]]:
    """(class id, prompt) per line of a prompts file: JSONL ({"class", "prompt"}), CSV
    (class,prompt) or the Unmet Promise's raw captions ("caption => class name", the
    class by its name). Every problem is reported at once, with its line."""
    by_id = {c["id"]: c["id"] for c in classes}
    by_name = {c["name"]: c["id"] for c in classes}
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise RunnerError(f"prompts: cannot read {path}: {e}") from None
    rows, problems = [], []
    if path.lower().endswith(".csv"):
        reader = csv.DictReader(io.StringIO(text))
        if not reader.fieldnames or not {"class", "prompt"} <= set(reader.fieldnames):
            raise RunnerError(f"prompts: {path} needs a header with class,prompt columns")
        lines = [(n + 2, r["class"], r["prompt"]) for n, r in enumerate(reader)]
    elif path.lower().endswith(".txt"):
        lines = [(n + 1, *reversed([x.strip() for x in line.rsplit("=>", 1)])) for n, line in
                 enumerate(text.splitlines()) if line.strip()]
    else:
        lines = []
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                lines.append((n, str(row["class"]), row["prompt"]))
            except (ValueError, KeyError, TypeError):
                problems.append(f"line {n}: not a JSON object with class and prompt")
    for n, cls, *prompt in lines:
        cid = by_id.get(cls) or by_name.get(cls)
        if not prompt or not isinstance(prompt[0], str) or not prompt[0].strip():
            problems.append(f"line {n}: no prompt")
        elif cid is None:
            problems.append(f"line {n}: class {cls!r} is not in the class list")
        else:
            rows.append((cid, prompt[0].strip()))
    if problems:
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        raise RunnerError(f"prompts: {path}: " + "; ".join(problems[:10]) + more)
    if not rows:
        raise RunnerError(f"prompts: {path} holds no prompt")
    return rows


def plan_items(cfg: dict, classes: list[dict]) -> list[Item]:
    """Every image of the unsharded run, in a fixed order."""
    items = []
    if cfg["mode"] == "txt2img" and cfg.get("prompts"):
        labels = {c["id"]: i for i, c in enumerate(classes)}
        counters: dict[str, int] = {}
        for cid, prompt in load_prompts(cfg["prompts"], classes):
            for _ in range(cfg["images_per_prompt"]):
                i = counters[cid] = counters.get(cid, -1) + 1
                items.append(Item(cid, i, mix_seed("gen", cfg["seed"], cid, i), prompt, labels[cid]))
        return items
    if cfg["mode"] == "txt2img":
        for label, cls in enumerate(classes):
            prompt = prompt_for(cfg["prompt"], cls, cfg.get("style_token", ""))
            for i in range(cfg["images_per_class"]):
                items.append(Item(cls["id"], i, mix_seed("gen", cfg["seed"], cls["id"], i), prompt, label))
        return items
    source = cfg.get("source_dir")
    if not source:
        raise RunnerError(f"mode {cfg['mode']!r} needs source (the real dataset to start from)")
    try:
        real = scan_folder(source, "source")
    except DataError as e:
        raise RunnerError(str(e)) from None
    by_id = {c["id"]: c for c in classes}
    counters: dict[str, int] = {}
    for path, label in real.samples:
        cid = real.classes[label]
        cls = by_id.get(cid, {"id": cid, "name": cid, "definition": "", "hypernym": ""})
        i = counters[cid] = counters.get(cid, -1) + 1
        items.append(Item(cid, i, mix_seed("gen", cfg["seed"], cid, i), prompt_for(cfg["prompt"], cls, cfg.get("style_token", "")),
                          label, path))
    return items


def batches_for_shard(items: list[Item], batch_size: int, shard: str) -> list[list[Item]]:
    """Fixed batches of the whole run; shard i of n takes batches i, i+n, …"""
    i, n = (int(x) for x in shard.split("/"))
    chunks = [items[k:k + batch_size] for k in range(0, len(items), batch_size)]
    return chunks[i::n]


def readable(path: Path) -> bool:
    try:
        with Image.open(path) as img:
            img.verify()
        return True
    except (OSError, ValueError, SyntaxError):
        return False


def save_image(img: Image.Image, path: Path, fmt: str) -> None:
    """Encode and write atomically: a crash or a full disk leaves no partial image."""
    if fmt == "jpg":
        img = img.convert("RGB" if img.mode not in ("L", "RGB") else img.mode)
    protocol.write_atomic(path, lambda f: img.save(f, "JPEG", quality=95) if fmt == "jpg" else img.save(f, "PNG"))


# -- backends ---------------------------------------------------------------
class DemoBackend:
    """The class-conditional generator in runners/class_diffusion.py."""

    def __init__(self, folder: Path, cfg: dict, device: torch.device):
        if cfg["mode"] != "txt2img":
            raise RunnerError(f"the demo generator only does txt2img, not {cfg['mode']!r}")
        self.gen = ClassConditionalGenerator.load(folder, device=device)
        self.cfg = cfg
        self.description = f"the demo's class-conditional generator ({folder})"

    def classes(self) -> list[dict]:
        return [{"id": c, "name": c, "definition": "", "hypernym": ""} for c in self.gen.classes]

    def __call__(self, batch: list[Item], stop) -> list[Image.Image]:
        def callback(step, total):
            return not stop()

        try:
            x = self.gen.sample([it.label for it in batch], [it.seed for it in batch], steps=self.cfg["steps"],
                                guidance_scale=self.cfg["guidance_scale"], callback=callback)
        except InterruptedError:  # SIGTERM mid-denoising: the run loop sees stop() and ends cancelled
            return []
        arr = (x * 255).round().to(torch.uint8).cpu()
        return [Image.fromarray(a[0].numpy()) if a.shape[0] == 1 else Image.fromarray(a.permute(1, 2, 0).numpy())
                for a in arr]


# The short names of the registry; any other value is a diffusers scheduler class.
SCHEDULERS = {
    "ddim": ("DDIMScheduler", {}),
    "dpm-solver++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "euler": ("EulerDiscreteScheduler", {}),
}


def scheduler_class(name: str):
    """(diffusers scheduler class, extra config) for a short name or a class name."""
    import diffusers

    cls_name, extra = SCHEDULERS.get(name, (name, {}))
    cls = getattr(diffusers, cls_name, None)
    if not (isinstance(cls, type) and issubclass(cls, diffusers.SchedulerMixin)):
        known = sorted(n for n in dir(diffusers) if n.endswith("Scheduler") and n != "Scheduler")
        raise RunnerError(f"scheduler {name!r} is not a diffusers scheduler; this diffusers has: {', '.join(known)}")
    return cls, extra


class DiffusersBackend:
    """Any text-to-image family diffusers' AutoPipeline knows (Stable Diffusion,
    SDXL, ...) for txt2img and img2img; Stable unCLIP for image variations."""

    def __init__(self, model: str, cfg: dict, device: torch.device):
        import diffusers

        cls = {"txt2img": diffusers.AutoPipelineForText2Image, "img2img": diffusers.AutoPipelineForImage2Image,
               "variation": diffusers.StableUnCLIPImg2ImgPipeline}[cfg["mode"]]
        dtype = torch.float16 if device.type == "cuda" else torch.float32
        load = {"dtype": dtype, "variant": cfg.get("variant"), "revision": cfg.get("revision")}
        if cfg["mode"] != "variation":
            load.update(safety_checker=None, requires_safety_checker=False)
        try:
            pipe = cls.from_pretrained(model, **{k: v for k, v in load.items() if v is not None})
        except (OSError, ValueError, EnvironmentError) as e:
            raise RunnerError(f"cannot load the model {model!r}"
                              + (f" (variant {cfg['variant']!r})" if cfg.get("variant") else "") + f": {e}") from None
        if cfg["scheduler"] != "default":
            scheduler, extra = scheduler_class(cfg["scheduler"])
            pipe.scheduler = scheduler.from_config(pipe.scheduler.config, **extra)
        if cfg["cpu_offload"] and device.type == "cuda":
            try:
                pipe.enable_model_cpu_offload(device=device)  # submodules move to the GPU only while they run
            except ImportError as e:
                raise RunnerError(f"cpu_offload needs the accelerate package ({e}): pip install accelerate") from None
        else:
            pipe = pipe.to(device)
        pipe.set_progress_bar_config(disable=True)
        self.description = f"{type(pipe).__name__} with {type(pipe.scheduler).__name__}"
        if cfg.get("style_path"):
            try:  # the pipeline's own textual-inversion loader; prompts carry the token through {style}
                pipe.load_textual_inversion(cfg["style_path"])
            except (OSError, ValueError) as e:
                raise RunnerError(f"style_from {cfg['style_path']}: cannot load the learned token: {e}") from None
            self.description += f", style token {cfg['style_token']}"
        if cfg["compile"]:
            pipe.unet = torch.compile(pipe.unet)
        self.pipe, self.cfg, self.device = pipe, cfg, device

    def __call__(self, batch: list[Item], stop) -> list[Image.Image]:
        cfg = self.cfg

        def on_step_end(pipe, step, timestep, kwargs):
            if stop():
                pipe._interrupt = True  # diffusers skips the remaining steps
            return kwargs

        def on_step(step, timestep, latents):  # the older callback of pipelines such as Stable unCLIP
            if stop():
                raise InterruptedError("SIGTERM")

        common = dict(num_inference_steps=cfg["steps"], guidance_scale=cfg["guidance_scale"],
                      generator=[torch.Generator("cpu").manual_seed(it.seed) for it in batch], output_type="pil")
        size = (cfg["width"], cfg["height"])
        if cfg["mode"] == "variation":
            try:
                return self.pipe(image=[source_image(it.source, size) for it in batch], width=size[0],
                                 height=size[1], callback=on_step, callback_steps=1, **common).images
            except InterruptedError:  # the run loop sees stop() and ends cancelled
                return []
        common["callback_on_step_end"] = on_step_end
        prompts = [it.prompt for it in batch]
        negative = [cfg["negative_prompt"]] * len(batch) if cfg["negative_prompt"] else None
        if cfg["mode"] == "img2img":
            images = [source_image(it.source, size) for it in batch]
            return self.pipe(prompt=prompts, image=images, strength=cfg["strength"], negative_prompt=negative,
                             **common).images
        return self.pipe(prompt=prompts, negative_prompt=negative, width=cfg["width"], height=cfg["height"],
                         **common).images


def source_image(path: str, size: tuple[int, int]) -> Image.Image:
    """A real image at the requested size, centre-cropped to its aspect first (not squashed)."""
    with Image.open(path) as img:
        return ImageOps.fit(img.convert("RGB"), size, Image.BICUBIC)


def style_token(path: str) -> str:
    """The token a textual-inversion file teaches (diffusers' {token: embedding} format)."""
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt") as f:
            keys = list(f.keys())
    except (OSError, ValueError, RuntimeError) as e:  # also a foreign or truncated file
        raise RunnerError(f"style_from {path}: not a learned-embedding file ({e})") from None
    if len(keys) != 1:
        raise RunnerError(f"style_from {path}: expected one token, found {len(keys)}")
    return keys[0]


def is_hub_id(model: str) -> bool:
    """'org/name' that is not a folder here: diffusers takes it from the hub cache or the network."""
    return not model.startswith(("/", ".", "~")) and model.count("/") == 1 and not Path(model).exists()


def load_backend(cfg: dict, device: torch.device):
    model = cfg["model"]
    if is_hub_id(model):
        return DiffusersBackend(model, cfg, device)
    path = Path(model).expanduser()
    if is_generator_folder(path):
        return DemoBackend(path, cfg, device)
    if not (path / "model_index.json").is_file():
        raise RunnerError(f"model folder {path} not found (or it has no model_index.json); give a local "
                          "diffusers folder or a hub id such as CompVis/stable-diffusion-v1-4")
    return DiffusersBackend(str(path), cfg, device)


# -- the run ----------------------------------------------------------------
def run(ctx: RunContext, args) -> dict:
    cfg = KIND.resolve(ctx.spec)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    demo = is_generator_folder(Path(cfg["model"]).expanduser())
    if cfg.get("style_path"):
        if demo:
            raise RunnerError("style_from needs a Stable Diffusion model; the demo generator has no text encoder")
        cfg["style_token"] = style_token(cfg["style_path"])
    elif "{style}" in cfg["prompt"]:
        raise RunnerError("the prompt uses {style}: set style_from (a style-inversion run or its embedding file)")
    if not demo:  # cheap checks before the model loads
        check_template(cfg["prompt"])
        classes = load_classes(cfg["classes"])
    backend = load_backend(cfg, device)
    ctx.log(f"pipeline: {backend.description}")
    if demo:
        classes = backend.classes()
    out = ctx.run_dir / protocol.DATA_DIR
    items = plan_items(cfg, classes)
    batches = batches_for_shard(items, cfg["batch_size"], cfg["shard"])
    total = sum(len(b) for b in batches)
    for cls in {it.class_id for b in batches for it in b}:
        (out / "train" / cls).mkdir(parents=True, exist_ok=True)
    ctx.emit(protocol.START, config={k: v for k, v in cfg.items()}, images=total, classes=len(classes),
             device=str(device), resumed=args.resume)

    fmt = cfg["format"]
    manifest = open(out / "manifest.jsonl", "a")
    pool = ThreadPoolExecutor(max_workers=cfg["save_workers"])
    pending: list[tuple[list[Item], list[Future], list[tuple[int, int]]]] = []
    done = skipped = generated = 0
    t0 = time.perf_counter()

    def settle(wait_all: bool) -> None:
        """Write manifest lines for batches whose files are all saved; raise save errors."""
        nonlocal done
        while pending and (wait_all or all(f.done() for f in pending[0][1])):
            batch, futures, sizes = pending.pop(0)
            for f in futures:
                f.result()
            for it, size in zip(batch, sizes):
                manifest.write(json.dumps({"file": f"train/{it.filename(fmt)}", "class": it.class_id,
                                           "prompt": it.prompt, "seed": it.seed, "model": cfg["model"],
                                           "revision": cfg.get("revision"), "variant": cfg.get("variant"),
                                           "mode": cfg["mode"], "scheduler": cfg["scheduler"],
                                           "steps": cfg["steps"], "guidance": cfg["guidance_scale"],
                                           "size": list(size), "source": it.source}) + "\n")
            manifest.flush()
            done += len(batch)

    try:
        queue = list(batches)
        while queue:
            batch = queue.pop(0)
            todo = [it for it in batch if not readable(out / "train" / it.filename(fmt))]
            if not todo:
                skipped += len(batch)
                done += len(batch)
                continue
            try:
                images = backend(batch, lambda: ctx.stop_requested)  # the whole batch: same composition
            except torch.cuda.OutOfMemoryError:
                if len(batch) == 1:
                    raise RunnerError("CUDA out of memory with a batch of one image: lower width/height")
                torch.cuda.empty_cache()
                half = len(batch) // 2
                queue[:0] = [batch[:half], batch[half:]]
                ctx.log(f"CUDA out of memory: batch of {len(batch)} split in two", "warning")
                continue
            if ctx.stop_requested:
                break  # this batch was interrupted mid-denoising: none of it is kept
            wanted = {id(it) for it in todo}
            futures = [pool.submit(save_image, img, out / "train" / it.filename(fmt), fmt)
                       for it, img in zip(batch, images) if id(it) in wanted]
            generated += len(todo)
            pending.append((batch, futures, [img.size for img in images]))  # the size made, not asked
            settle(wait_all=False)
            rate = generated / (time.perf_counter() - t0)
            progress = done + sum(len(b) for b, *_ in pending)
            ctx.emit(protocol.PROGRESS, done=progress, total=total, unit="image", rate=round(rate, 3),
                     eta=round((total - progress) / rate, 1) if rate else None)
            if device.type == "cuda":
                ctx.emit(protocol.GPU, devices=[{"index": device.index or 0,
                                                 "memory_allocated": torch.cuda.max_memory_allocated(),
                                                 "memory_reserved": torch.cuda.memory_reserved()}])
        settle(wait_all=True)
    finally:
        pool.shutdown(wait=True)
        manifest.close()
    if ctx.stop_requested:
        raise Cancelled(f"SIGTERM: {done} of {total} images written; `synthgap resume` continues")
    ctx.emit(protocol.ARTIFACT, path=str(out / "train"), kind="dataset")
    elapsed = time.perf_counter() - t0
    return {"images": total, "generated": generated, "skipped_existing": skipped,
            "images_per_s": round(generated / elapsed, 3) if elapsed and generated else None,
            "output": str(out / "train"), "config": cfg}


def get_args_parser():
    return runner_args_parser("Generate a synthetic ImageFolder with a diffusion pipeline.")


def main(args) -> int:
    return run_main(args, run)


if __name__ == "__main__":
    raise SystemExit(main(get_args_parser().parse_args()))
