"""``kind = "style-inversion"``: Dataset Style Inversion (runner: ``runners/style_inversion.py``).

"Is Synthetic Image Useful for Transfer Learning?" learns one new token from
the target dataset's real training images by textual inversion on the
Stable Diffusion model, then generates with prompts that carry it. The seed
text gives no training values; these follow diffusers' textual-inversion
example for a style (its documented command: lr 5e-4 scaled by batch size x
gradient accumulation, 3,000 steps, its style templates, images resized to
512 x 512 bicubic and flipped at random). SynthGap's own choices are named as
such in the help.
"""

from __future__ import annotations

from runners import protocol
from runners.kinds.base import Chart, Field, Kind, Problem, Ref

# diffusers' imagenet_style_templates_small, as the example lists them (repeats included: they weight the draw).
TEMPLATES = [
    "a painting in the style of {style}", "a rendering in the style of {style}",
    "a cropped painting in the style of {style}", "the painting in the style of {style}",
    "a clean painting in the style of {style}", "a dirty painting in the style of {style}",
    "a dark painting in the style of {style}", "a picture in the style of {style}",
    "a cool painting in the style of {style}", "a close-up painting in the style of {style}",
    "a bright painting in the style of {style}", "a cropped painting in the style of {style}",
    "a good painting in the style of {style}", "a close-up painting in the style of {style}",
    "a rendition in the style of {style}", "a nice painting in the style of {style}",
    "a small painting in the style of {style}", "a weird painting in the style of {style}",
    "a large painting in the style of {style}"]


def _templates(value: list) -> str | None:
    if not value or not all(isinstance(t, str) and "{style}" in t for t in value):
        return "must be a non-empty list of prompts that each contain {style}"
    return None


F = Field
FIELDS = {
    "data": F(str, help="the images whose style is learned (a dataset's train split, or a run's dataset)",
              ref=Ref(to="train_dir", split="train", artifact="dataset")),
    "model": F(str, "CompVis/stable-diffusion-v1-4", "a hub id or a local diffusers Stable Diffusion folder",
               path="local"),
    "token": F(str, "<dataset-style>", "the new token; prompts use it through {style}"),
    "initializer": F(str, "painting", "word(s) whose embedding the token starts from (their mean; SynthGap's "
                     "choice: the example asks for one)"),
    "templates": F(list, TEMPLATES, "training prompts, each with {style} (the example's style templates)",
                   check=_templates),
    "images": F(int, 0, "a seeded sample of this many images (0: all)", min=0),
    "steps": F(int, 3000, "optimisation steps", min=1),
    "lr": F(float, 5e-4, "AdamW learning rate of the token's embedding, before scale_lr (the example's)", min=0,
            min_open=True),
    "scale_lr": F(bool, True, "multiply lr by batch_size x gradient_accumulation x GPUs, as the example's "
                  "--scale_lr (on in its documented command: 2e-3 effective)"),
    "batch_size": F(int, 4, "images per micro-batch (SynthGap's choice; the example: 1 x 4 accumulated)", min=1),
    "gradient_accumulation": F(int, 1, "micro-batches per optimisation step", min=1),
    "resolution": F(int, 512, "images are resized to this square (bicubic, aspect not kept), as the example",
                    min=8),
    "flip": F(float, 0.5, "probability of a horizontal flip per image (the example's)", min=0, max=1),
    "checkpoint_every": F(int, 500, "steps between checkpoints", min=1),
    "log_every": F(int, 10, "steps between train_step events", min=1),
    "samples": F(int, 4, "images generated with the learned token at the end (0: none)", min=0),
    "amp": F(bool, True, "the frozen VAE and UNet in half precision on CUDA"),
}


def check(p: dict) -> list[Problem]:
    return [] if "data" in p else [("data", "needs the images whose style is learned")]


KIND = Kind(
    name="style-inversion",
    runner="runners.style_inversion",
    help="learn a dataset's style as one new token (textual inversion on Stable Diffusion)",
    fields=FIELDS,
    artifacts={"embedding": "the learned token, learned_embeds.safetensors (diffusers' format)",
               "samples": "a grid of images generated with the token"},
    charts=(Chart("textual inversion loss", protocol.TRAIN_STEP, "step", (("loss", "loss"),)),),
    check=check,
)
