"""A tiny open_clip model built from a config (no download), saved the way open_clip
reads a local folder: open_clip_config.json beside the weights."""

import json
import logging
from pathlib import Path

import torch

CONFIG = {"embed_dim": 32,
          "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
          "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


def make_tiny_clip(folder: Path, seed: int = 0) -> Path:
    import open_clip

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": CONFIG, "preprocess_cfg": {}}))
    torch.manual_seed(seed)
    logging.disable(logging.WARNING)  # "no weights found": there are none yet
    try:
        model = open_clip.create_model(f"local-dir:{folder}")
    finally:
        logging.disable(logging.NOTSET)
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
    return folder
