"""Training recipes: the defaults a train run starts from before its spec's values.

``fitymi`` is the FITYMI / t-ReX recipe of Mind the Gap (DESIGN.md); ``plain``
is a single-crop supervised recipe for transfer experiments.
"""

from __future__ import annotations

FITYMI = {
    "arch": "resnet50", "small_input": False, "width": 64, "epochs": 100, "batch_size": 256, "lr": 0.1,
    "warmup_epochs": 10, "min_lr": 1e-6, "weight_decay": 1e-4, "momentum": 0.9,
    "label_smoothing": 0.0, "tau": 0.1, "augment": "dino", "local_crops": 8, "image_size": 224,
    "local_size": 96, "normalization": "imagenet", "bn_eval_mode": "eval", "report_last": 5,
    "amp": True, "channels_last": True, "compile": False, "workers": 8, "log_every": 20,
    "freeze_layers": 0, "frozen_bn": "frozen", "reinit": True, "fraction": 1.0, "seed": 0,
    "mixup": 0.0,
}
PLAIN = {**FITYMI, "epochs": 90, "warmup_epochs": 0, "tau": 0.0, "augment": "pytorch-example"}
RECIPES = {"fitymi": FITYMI, "plain": PLAIN}


def resolve(spec: dict) -> dict:
    """The full configuration of a train run: recipe defaults, then the spec."""
    recipe = spec.get("recipe", "fitymi")
    return {**RECIPES[recipe], **{k: v for k, v in spec.items() if v is not None}, "recipe": recipe}
