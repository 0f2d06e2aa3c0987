"""Train the small class-conditional generator: ``python -m runners.train_generator --run-dir DIR``.

The demo's stand-in for Stable Diffusion (``runners/class_diffusion.py``):
DDPM objective, classifier-free guidance by dropping the class 10% of the
time, an exponential moving average of the weights (what is saved), warm-up
and cosine learning rate. Batches are drawn from a generator seeded by the
step, so a resumed run continues exactly. Writes the model folder to
``checkpoints/generator/`` and a grid of samples to ``samples.png``.
"""

from __future__ import annotations

import math
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.optim.swa_utils import AveragedModel

from runners import protocol
from runners.class_diffusion import ClassConditionalGenerator, build_unet, train_scheduler
from runners.kinds.train_generator import KIND
from runners.data import DataError, load_rgb, mix_seed, scan_folder
from runners.runtime import Cancelled, RunContext, RunnerError, run_main, runner_args_parser, atomic_torch_save



def ema_update(max_decay: float):
    """AveragedModel's update: an exponential average whose decay warms up from 0.1."""

    def update(averaged: torch.Tensor, current: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        decay = min(max_decay, (1 + float(n)) / (10 + float(n)))
        return averaged.lerp(current, 1 - decay)

    return update


def load_images(folder: str, size: int) -> tuple[torch.Tensor, torch.Tensor, list[str], int]:
    """All images in memory as uint8 [N, C, size, size] (C = 1 for grayscale data)."""
    try:
        images = scan_folder(folder, "generator training data")
    except DataError as e:
        raise RunnerError(str(e)) from None
    with Image.open(images.samples[0][0]) as first:
        channels = 1 if first.mode in ("L", "1", "I;16") else 3
    arrays = []
    for path, _ in images.samples:
        img = load_rgb(path)
        img = img.convert("L") if channels == 1 else img
        if img.size != (size, size):
            img = img.resize((size, size), Image.BILINEAR)
        arr = np.asarray(img)
        arrays.append(arr[None] if channels == 1 else arr.transpose(2, 0, 1))
    x = torch.from_numpy(np.stack(arrays))
    y = torch.tensor([label for _, label in images.samples])
    return x, y, images.classes, channels


def lr_at(step: int, cfg: dict) -> float:
    if step < cfg["warmup_steps"]:
        return cfg["lr"] * (step + 1) / cfg["warmup_steps"]
    progress = (step - cfg["warmup_steps"]) / max(1, cfg["steps"] - cfg["warmup_steps"])
    return cfg["lr"] * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def sample_grid(gen: ClassConditionalGenerator, per_class: int, cfg: dict) -> Image.Image:
    labels = [c for c in range(len(gen.classes)) for _ in range(per_class)]
    seeds = [mix_seed("grid", cfg["seed"], i) for i in range(len(labels))]
    x = gen.sample(labels, seeds, steps=cfg["sample_steps"], guidance_scale=cfg["guidance_scale"])
    n, c, h, w = x.shape
    grid = x.view(len(gen.classes), per_class, c, h, w).permute(0, 3, 1, 4, 2).reshape(len(gen.classes) * h,
                                                                                          per_class * w, c)
    arr = (grid * 255).round().byte().numpy()
    return Image.fromarray(arr[..., 0] if c == 1 else arr)


def run(ctx: RunContext, args) -> dict:
    cfg = KIND.resolve(ctx.spec)
    if not ctx.spec.get("data_dir"):
        raise RunnerError("the spec names no training data (data)")
    x, y, classes, channels = load_images(ctx.spec["data_dir"], cfg["image_size"])
    torch.manual_seed(mix_seed("init", cfg["seed"]))
    unet = build_unet(len(classes), cfg["image_size"], channels, cfg["channels"])
    ema = AveragedModel(unet, avg_fn=ema_update(cfg["ema_decay"])).requires_grad_(False)
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg["lr"], weight_decay=0.0)
    noise_schedule = train_scheduler()
    start = 0
    last = ctx.checkpoints / "last.pt"
    if args.resume and last.is_file():
        state = torch.load(last, map_location="cpu", weights_only=True)
        unet.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        start = state["step"]
        ctx.log(f"resumed at step {start}")
    params = sum(p.numel() for p in unet.parameters())
    ctx.emit(protocol.START, config=cfg, classes=classes, images=len(x), channels=channels, params=params,
             resumed=start > 0)

    def save(step: int) -> None:
        atomic_torch_save({"model": unet.state_dict(), "ema": ema.state_dict(), "optimizer": opt.state_dict(),
                           "step": step}, last)
        ctx.emit(protocol.CHECKPOINT, path=str(last), step=step)

    unet.train()
    losses: list[float] = []
    t0 = time.perf_counter()
    for step in range(start, cfg["steps"]):
        g = torch.Generator().manual_seed(mix_seed("batch", cfg["seed"], step))
        idx = torch.randint(0, len(x), (cfg["batch_size"],), generator=g)
        clean = x[idx].float().div(127.5).sub(1)
        flip = torch.rand(len(idx), generator=g) < 0.5
        clean[flip] = clean[flip].flip(-1)
        labels = y[idx].clone()
        labels[torch.rand(len(idx), generator=g) < cfg["class_dropout"]] = len(classes)
        noise = torch.randn(clean.shape, generator=g)
        t = torch.randint(0, noise_schedule.config.num_train_timesteps, (len(idx),), generator=g)
        noisy = noise_schedule.add_noise(clean, noise, t)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        loss = F.mse_loss(unet(noisy, t, class_labels=labels).sample, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        ema.update_parameters(unet)
        losses.append(loss.item())
        done = step + 1
        if done % cfg["log_every"] == 0 or done == cfg["steps"]:
            rate = (done - start) / (time.perf_counter() - t0)
            ctx.emit(protocol.TRAIN_STEP, step=done, epoch=done * cfg["batch_size"] // len(x),
                     loss=statistics.fmean(losses[-cfg["log_every"]:]), lr=lr_at(step, cfg),
                     images_per_s=round(rate * cfg["batch_size"], 1))
            ctx.emit(protocol.PROGRESS, done=done, total=cfg["steps"], unit="step", rate=round(rate, 3),
                     eta=round((cfg["steps"] - done) / max(rate, 1e-9)))
        if done % cfg["checkpoint_every"] == 0:
            save(done)
        if ctx.stop_requested:
            save(done)
            raise Cancelled("SIGTERM: checkpoint saved")
    save(cfg["steps"])
    generator = ClassConditionalGenerator(ema.module, classes, cfg["image_size"])
    out = ctx.checkpoints / "generator"
    generator.save(out)
    ctx.emit(protocol.ARTIFACT, path=str(out), kind="generator")
    grid = ctx.run_dir / "samples.png"
    sample_grid(generator, 8, cfg).save(grid)
    ctx.emit(protocol.ARTIFACT, path=str(grid), kind="samples")
    tail = losses[-100:] or [float("nan")]
    return {"steps": cfg["steps"], "params": params, "final_loss": statistics.fmean(tail),
            "generator": str(out), "classes": classes, "config": cfg}


def get_args_parser():
    return runner_args_parser("Train the demo's class-conditional generator.")


def main(args) -> int:
    return run_main(args, run)


if __name__ == "__main__":
    raise SystemExit(main(get_args_parser().parse_args()))
