"""Dataset Style Inversion: ``python -m runners.style_inversion --run-dir DIR [--resume]``.

Textual inversion of one new token on a dataset, following diffusers'
textual-inversion recipe: the token is added to the tokenizer, its
embedding starts from the initializer word(s), and only that embedding
trains (AdamW) on the usual denoising loss over the dataset's images with
prompts such as "a painting in the style of <token>"; every other row of the
embedding table is put back after each step and the VAE, the UNet and the
rest of the text encoder are frozen. Writes ``DIR/learned_embeds.safetensors``
in diffusers' format (the run's ``embedding`` artifact: generate runs load it
with ``style_from``) and a grid of samples.

Each step draws its images, timesteps and noise from (seed, step), so a
resumed run continues exactly where the checkpoint left off.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms import functional as TF

from runners import protocol
from runners.data import DataError, load_rgb, mix_seed, scan_folder
from runners.kinds.style_inversion import KIND
from runners.runtime import (Cancelled, Device, RunContext, RunnerError, atomic_torch_save, run_main,
                             runner_args_parser)

EMBEDDING_FILE = "learned_embeds.safetensors"
LAST = "last.pt"


def load_parts(model: str):
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    try:
        return (CLIPTokenizer.from_pretrained(model, subfolder="tokenizer"),
                CLIPTextModel.from_pretrained(model, subfolder="text_encoder"),
                AutoencoderKL.from_pretrained(model, subfolder="vae"),
                UNet2DConditionModel.from_pretrained(model, subfolder="unet"),
                DDPMScheduler.from_pretrained(model, subfolder="scheduler"))
    except (OSError, ValueError) as e:
        raise RunnerError(f"cannot load the Stable Diffusion model {model!r}: {e}") from None


def add_token(tokenizer, text_encoder, token: str, initializer: str) -> int:
    """Add ``token``, its embedding the mean of the initializer's; returns its id."""
    if token in tokenizer.get_vocab() or tokenizer.add_tokens(token) != 1:
        raise RunnerError(f"token {token!r} is already in the tokenizer's vocabulary: pick another")
    init_ids = tokenizer.encode(initializer, add_special_tokens=False)
    if not init_ids:
        raise RunnerError(f"initializer {initializer!r} has no tokens")
    token_id = tokenizer.convert_tokens_to_ids(token)
    text_encoder.resize_token_embeddings(max(len(tokenizer), token_id + 1))
    table = text_encoder.get_input_embeddings().weight
    with torch.no_grad():
        table[token_id] = table[init_ids].mean(0)
    return token_id


def freeze_all_but_embeddings(text_encoder, vae, unet) -> None:
    for module in (vae, unet, text_encoder):
        module.requires_grad_(False)
    text_encoder.get_input_embeddings().requires_grad_(True)


def image_batch(paths: list[str], indices: list[int], size: int, flips: list[bool]) -> torch.Tensor:
    """As the example prepares an image: resized to size x size (bicubic, the aspect not
    kept), flipped where drawn, scaled to [-1, 1]."""
    out = []
    for i, flip in zip(indices, flips):
        img = load_rgb(paths[i]).resize((size, size), resample=Image.Resampling.BICUBIC)
        if flip:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        out.append(TF.to_tensor(img) * 2 - 1)
    return torch.stack(out)


def effective_lr(cfg: dict, world: int = 1) -> float:
    """diffusers' --scale_lr: lr x gradient accumulation x batch size x processes."""
    return cfg["lr"] * (cfg["gradient_accumulation"] * cfg["batch_size"] * world if cfg["scale_lr"] else 1)


def save_embedding(path: Path, token: str, vector: torch.Tensor) -> None:
    from safetensors.torch import save

    payload = save({token: vector.detach().float().cpu()[None].contiguous()})  # diffusers' format: {token: [1, dim]}
    protocol.write_atomic(path, lambda f: f.write(payload))


class Inversion:
    """The models and the optimiser of one textual inversion; ``step(i)`` is step i."""

    def __init__(self, cfg: dict, paths: list[str], device: Device):
        self.cfg, self.paths, self.device = cfg, paths, device
        self.tokenizer, self.text_encoder, self.vae, self.unet, self.noise = load_parts(cfg["model"])
        self.token_id = add_token(self.tokenizer, self.text_encoder, cfg["token"], cfg["initializer"])
        freeze_all_but_embeddings(self.text_encoder, self.vae, self.unet)
        self.dtype = device.dtype if device.amp else torch.float32  # the frozen parts'
        self.vae.to(device.device, dtype=self.dtype)
        self.unet.to(device.device, dtype=self.dtype)
        self.text_encoder.to(device.device).train()
        self.table = self.text_encoder.get_input_embeddings().weight
        self.original = self.table.detach().clone()
        self.keep = torch.ones(len(self.tokenizer), dtype=torch.bool, device=self.table.device)
        self.keep[self.token_id] = False
        # The example's AdamW: betas (0.9, 0.999), weight decay 1e-2, eps 1e-8; a constant lr.
        self.optimizer = torch.optim.AdamW(self.text_encoder.get_input_embeddings().parameters(), lr=effective_lr(cfg),
                                           betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)

    @property
    def embedding(self) -> torch.Tensor:
        return self.table[self.token_id]

    def state(self, step: int) -> dict:
        return {"embedding": self.embedding.detach().cpu(), "optimizer": self.optimizer.state_dict(), "step": step}

    def load(self, state: dict) -> int:
        with torch.no_grad():
            self.table[self.token_id] = state["embedding"].to(self.table.device)
        self.optimizer.load_state_dict(state["optimizer"])
        return state["step"]

    def step(self, step: int) -> float:
        """One optimisation step over gradient_accumulation micro-batches; their mean loss."""
        accumulate = self.cfg["gradient_accumulation"]
        loss = sum(self._micro_batch(step, m, accumulate) for m in range(accumulate)) / accumulate
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():  # only the new token learns (AdamW's decay would move every row)
            self.table[self.keep] = self.original[self.keep]
        return loss

    def _micro_batch(self, step: int, micro: int, accumulate: int) -> float:
        cfg, dev = self.cfg, self.device.device
        g = torch.Generator().manual_seed(mix_seed("style-step", cfg["seed"], step, micro))
        picks = torch.randint(len(self.paths), (cfg["batch_size"],), generator=g).tolist()
        prompts = [cfg["templates"][i].format(style=cfg["token"])
                   for i in torch.randint(len(cfg["templates"]), (cfg["batch_size"],), generator=g).tolist()]
        flips = (torch.rand(cfg["batch_size"], generator=g) < cfg["flip"]).tolist()
        pixels = image_batch(self.paths, picks, cfg["resolution"], flips).to(dev, dtype=self.dtype)
        with torch.no_grad():
            latents = self.vae.encode(pixels).latent_dist.sample(g) * self.vae.config.scaling_factor
        noise = torch.randn(latents.shape, generator=g).to(latents)
        timesteps = torch.randint(self.noise.config.num_train_timesteps, (len(picks),), generator=g).to(dev)
        noisy = self.noise.add_noise(latents, noise, timesteps)
        ids = self.tokenizer(prompts, padding="max_length", truncation=True,
                             max_length=self.tokenizer.model_max_length, return_tensors="pt").input_ids.to(dev)
        with self.device.autocast():
            states = self.text_encoder(ids)[0].to(self.dtype)
            pred = self.unet(noisy, timesteps, states).sample
        target = noise if self.noise.config.prediction_type == "epsilon" else \
            self.noise.get_velocity(latents, noise, timesteps)
        loss = F.mse_loss(pred.float(), target.float())
        (loss / accumulate).backward()
        return loss.item()


def train(ctx: RunContext, args) -> dict:
    cfg = KIND.resolve(ctx.spec)
    try:
        data = scan_folder(cfg.get("train_dir") or "", "data")
    except DataError as e:
        raise RunnerError(str(e)) from None
    paths = [p for p, _ in data.samples]
    if cfg["images"] and cfg["images"] < len(paths):
        g = torch.Generator().manual_seed(mix_seed("style-sample", cfg["seed"]))
        paths = [paths[i] for i in sorted(torch.randperm(len(paths), generator=g)[:cfg["images"]].tolist())]
    device = Device(amp=cfg["amp"], channels_last=False)
    inv = Inversion(cfg, paths, device)
    start, last = 0, ctx.checkpoints / LAST
    if args.resume and last.is_file():
        start = inv.load(torch.load(last, map_location="cpu", weights_only=True))
        ctx.log(f"resumed from {last} at step {start}")
    ctx.emit(protocol.START, config=cfg, images=len(paths), token=cfg["token"], resumed=start > 0,
             device=str(device.device))

    def checkpoint(step: int) -> None:
        atomic_torch_save(inv.state(step), last)
        ctx.emit(protocol.CHECKPOINT, path=str(last), step=step)

    t0, loss_sum, n = time.time(), 0.0, 0
    for step in range(start, cfg["steps"]):
        loss_sum, n, done = loss_sum + inv.step(step), n + 1, step + 1
        if done % cfg["log_every"] == 0 or done == cfg["steps"]:
            rate = n * cfg["batch_size"] * cfg["gradient_accumulation"] / max(1e-9, time.time() - t0)
            ctx.emit(protocol.TRAIN_STEP, step=done, loss=round(loss_sum / n, 6), lr=effective_lr(cfg),
                     images_per_s=round(rate, 2))
            ctx.emit(protocol.PROGRESS, done=done, total=cfg["steps"], unit="step", rate=round(rate, 2),
                     eta=round((cfg["steps"] - done) * cfg["batch_size"] / rate, 1) if rate else None)
            t0, loss_sum, n = time.time(), 0.0, 0
        if done % cfg["checkpoint_every"] == 0 or ctx.stop_requested:
            checkpoint(done)
        if ctx.stop_requested:
            raise Cancelled(f"SIGTERM: stopped at step {done}; `synthgap resume` continues")

    embedding = ctx.run_dir / EMBEDDING_FILE
    save_embedding(embedding, cfg["token"], inv.embedding)
    checkpoint(cfg["steps"])
    ctx.emit(protocol.ARTIFACT, path=str(embedding), kind="embedding")
    if cfg["samples"]:
        grid = ctx.run_dir / "samples.png"
        sample_grid(cfg, inv).save(grid)
        ctx.emit(protocol.ARTIFACT, path=str(grid), kind="samples")
    return {"steps": cfg["steps"], "images": len(paths), "token": cfg["token"]}


def sample_grid(cfg: dict, inv: Inversion) -> Image.Image:
    """``samples`` images of the first template with the learned token, side by side."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline(vae=inv.vae, text_encoder=inv.text_encoder.eval(), tokenizer=inv.tokenizer,
                                   unet=inv.unet,
                                   scheduler=DDIMScheduler.from_pretrained(cfg["model"], subfolder="scheduler"),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    prompt = cfg["templates"][0].format(style=cfg["token"])
    generator = torch.Generator("cpu").manual_seed(cfg["seed"])
    with torch.no_grad(), inv.device.autocast():
        images = pipe([prompt] * cfg["samples"], num_inference_steps=25, generator=generator,
                      height=cfg["resolution"], width=cfg["resolution"]).images
    grid = Image.new("RGB", (cfg["resolution"] * len(images), cfg["resolution"]))
    for i, img in enumerate(images):
        grid.paste(img, (i * cfg["resolution"], 0))
    return grid


def get_args_parser():
    return runner_args_parser("Learn a dataset's style as one token (textual inversion).")


def main(args) -> int:
    return run_main(args, train)


if __name__ == "__main__":
    raise SystemExit(main(get_args_parser().parse_args()))
