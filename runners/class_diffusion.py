"""A small class-conditional diffusion model that plays Stable Diffusion's role on a CPU.

diffusers' UNet2DModel with a class embedding (one extra "null" class for
classifier-free guidance), trained with the DDPM objective and sampled with
DDIM. A model folder holds ``config.json`` + ``diffusion_pytorch_model.safetensors``
(diffusers' own layout) and ``synthgap_generator.json`` (classes, image size,
scheduler), which is how the generation runner tells it from Stable Diffusion.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel

MARKER = "synthgap_generator.json"
SCHEDULE = {"num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2", "prediction_type": "epsilon"}


def build_unet(num_classes: int, image_size: int, in_channels: int, channels=(32, 64, 64)) -> UNet2DModel:
    return UNet2DModel(
        sample_size=image_size, in_channels=in_channels, out_channels=in_channels,
        block_out_channels=tuple(channels), down_block_types=("DownBlock2D",) * len(channels),
        up_block_types=("UpBlock2D",) * len(channels), layers_per_block=1, norm_num_groups=8,
        num_class_embeds=num_classes + 1,  # the last class id means "no class" (guidance)
    )


def train_scheduler() -> DDPMScheduler:
    return DDPMScheduler(**SCHEDULE)


def is_generator_folder(path: str | Path) -> bool:
    return (Path(path) / MARKER).is_file()


class ClassConditionalGenerator:
    def __init__(self, unet: UNet2DModel, classes: list[str], image_size: int):
        self.unet = unet.eval()
        self.classes = classes
        self.image_size = image_size
        self.null_class = len(classes)

    @classmethod
    def load(cls, folder: str | Path, dtype=torch.float32, device="cpu") -> "ClassConditionalGenerator":
        folder = Path(folder)
        meta = json.loads((folder / MARKER).read_text())
        unet = UNet2DModel.from_pretrained(folder, dtype=dtype).to(device)
        return cls(unet, meta["classes"], meta["image_size"])

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        self.unet.save_pretrained(folder, safe_serialization=True)
        (folder / MARKER).write_text(json.dumps(
            {"classes": self.classes, "image_size": self.image_size, "schedule": SCHEDULE}, indent=2))

    @torch.no_grad()
    def sample(self, labels: list[int], seeds: list[int], steps: int = 20, guidance_scale: float = 2.0,
               callback=None) -> torch.Tensor:
        """Images in [0, 1], [N, C, H, W]. Each image's noise comes from its own seed,
        and DDIM with eta = 0 is deterministic after that, so an image does not
        depend on which batch it was in."""
        unet = self.unet
        device, dtype = unet.device, unet.dtype
        c, s = unet.config.in_channels, self.image_size
        noise = torch.stack([torch.randn(c, s, s, generator=torch.Generator().manual_seed(seed))
                             for seed in seeds]).to(device, dtype)
        scheduler = DDIMScheduler(**SCHEDULE, clip_sample=True, set_alpha_to_one=False)
        scheduler.set_timesteps(steps)
        y = torch.tensor(labels, device=device)
        null = torch.full_like(y, self.null_class)
        x = noise * scheduler.init_noise_sigma
        for i, t in enumerate(scheduler.timesteps):
            if guidance_scale == 1.0:
                eps = unet(x, t, class_labels=y).sample
            else:
                both = unet(torch.cat([x, x]), t, class_labels=torch.cat([y, null])).sample
                cond, uncond = both.chunk(2)
                eps = uncond + guidance_scale * (cond - uncond)
            x = scheduler.step(eps, t, x).prev_sample
            if callback is not None and callback(i, steps) is False:
                raise InterruptedError("generation interrupted")
        return (x.float().clamp(-1, 1) + 1) / 2
