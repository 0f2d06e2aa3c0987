"""The copy-detection descriptor The Unmet Promise de-duplicates with: ISC21's
winning model (``isc_ft_v107``, lyakaap/ISC21-Descriptor-Track-1st), loaded
from its published checkpoint file, never downloaded.

The network as that package builds it: a timm backbone (``features_only``,
the checkpoint's ``arch``) whose last feature map is GeM-pooled (power 1 at
evaluation, i.e. the mean), a linear layer without bias to 256 dimensions,
BatchNorm1d and L2 normalisation. Preprocessing: resize to the checkpoint's
square input size, the backbone's mean and standard deviation.
"""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from runners.runtime import RunnerError


class Descriptor(nn.Module):
    def __init__(self, backbone: nn.Module, dim: int = 256, p: float = 1.0):
        super().__init__()
        self.backbone = backbone
        self.fc = nn.Linear(backbone.feature_info.info[-1]["num_chs"], dim, bias=False)
        self.bn = nn.BatchNorm1d(dim)
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.backbone(x)[-1]
        x = F.avg_pool2d(x.clamp(min=1e-6).pow(self.p), x.shape[-2:]).pow(1.0 / self.p).flatten(1)
        return F.normalize(self.bn(self.fc(x)), dim=-1)


def load_descriptor(path: str | Path) -> tuple[Descriptor, object]:
    """The model (eval mode) and its preprocessing from a checkpoint with ``arch``,
    ``args.input_size`` (an argparse namespace, as published) and ``state_dict``."""
    import timm
    from torchvision import transforms as T

    path = Path(path)
    if not path.is_file():
        raise RunnerError(f"dedup_weights: no file at {path} (the ISC21 descriptor checkpoint, isc_ft_v107.pth.tar)")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        arch, size = ckpt["arch"], int(ckpt["args"].input_size)
        backbone = timm.create_model(arch, features_only=True, pretrained=False)
        model = Descriptor(backbone)
        model.load_state_dict({k.removeprefix("module."): v for k, v in ckpt["state_dict"].items()})
    except (KeyError, AttributeError, TypeError, RuntimeError, OSError, EOFError, pickle.UnpicklingError) as e:
        raise RunnerError(f"dedup_weights: {path} is not an ISC21 descriptor checkpoint ({type(e).__name__}: {e})"
                          ) from None
    cfg = backbone.pretrained_cfg
    transform = T.Compose([T.Resize((size, size)), T.ToTensor(), T.Normalize(cfg["mean"], cfg["std"])])
    return model.eval(), transform
