"""``kind = "train-generator"``: the demo's small class-conditional diffusion model
(runner: ``runners/train_generator.py``), the stand-in for Stable Diffusion."""

from __future__ import annotations

from runners import protocol
from runners.kinds.base import Chart, Field, Kind, Metric, Ref

F = Field
FIELDS = {
    "data": F(str, help="the images to learn", ref=Ref(to="data_dir", split="train", artifact="dataset")),
    "steps": F(int, 3000, "optimisation steps", min=1),
    "batch_size": F(int, 128, "images per step", min=1),
    "lr": F(float, 1e-3, "peak AdamW learning rate (warm-up, then cosine)", min=0, min_open=True),
    "image_size": F(int, 32, "images are resized to this square size", min=8),
    "channels": F(list, [32, 64, 64], "UNet widths per resolution",
                  check=lambda v: None if v and all(isinstance(c, int) and c % 8 == 0 for c in v)
                  else "must be a list of widths divisible by 8, e.g. [32, 64, 64]"),
    "guidance_scale": F(float, 2.0, "guidance of the sample grid", min=0),
    "sample_steps": F(int, 20, "denoising steps of the sample grid", min=1),
    "checkpoint_every": F(int, 200, "steps between checkpoints", min=1),
    "log_every": F(int, 10, "steps between train_step events", min=1),
    "class_dropout": F(float, 0.1, "share of unconditional steps (classifier-free guidance)", min=0, max=1),
    "ema_decay": F(float, 0.995, "decay of the weight average that is saved", min=0, max=1),
    "warmup_steps": F(int, 100, "linear warm-up steps", min=0),
}

KIND = Kind(
    name="train-generator",
    runner="runners.train_generator",
    help="train the demo's class-conditional diffusion model on an ImageFolder",
    fields=FIELDS,
    artifacts={"generator": "the generator folder, checkpoints/generator/",
               "samples": "a grid of samples, samples.png"},
    metrics=(Metric("final_loss", "Final Loss", 4), Metric("steps", "Steps", 0)),
    charts=(Chart("diffusion loss", protocol.TRAIN_STEP, "step", (("loss", "loss"),)),
            Chart("learning rate", protocol.TRAIN_STEP, "step", (("lr", "lr"),)),
            Chart("images/s", protocol.TRAIN_STEP, "step", (("images_per_s", "img/s"),))),
)
