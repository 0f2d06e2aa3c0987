"""open_clip models for retrieval and adaptation ("The Unmet Promise of Synthetic Training Images").

``load_clip`` builds an open_clip architecture with its weights from a local
file, a local folder as open_clip saves one (``open_clip_config.json`` and a
weights file; also how tests build a tiny model from a config), or a
pretrained tag (downloaded: online boxes only). ``ClipClassifier`` is the
image tower under a trainable linear head started from the zero-shot weights
(the class text embeddings, the mean over the templates, times the logit
scale), as the authors' adapt/ code builds it. ``linear_probe`` is their
AdamW linear probe on frozen features.
"""

from __future__ import annotations

import difflib
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from runners.runtime import RunnerError

DEFAULT_TEMPLATES = ("a photo of a {name}.",)


@dataclass
class Clip:
    model: nn.Module  # open_clip's CLIP: encode_image / encode_text
    tokenizer: object
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    image_size: int


def load_clip(arch: str, pretrained: str | None) -> Clip:
    """``arch`` is an open_clip architecture name ('ViT-B-16'); ``pretrained`` a file,
    a folder with open_clip_config.json, a tag, or None (random weights)."""
    import open_clip

    name, kwargs = arch, {}
    if pretrained and Path(pretrained).is_dir():
        if not (Path(pretrained) / "open_clip_config.json").is_file():
            raise RunnerError(f"pretrained: {pretrained} is a folder without open_clip_config.json")
        name = f"local-dir:{pretrained}"
    else:
        if arch not in open_clip.list_models():
            close = difflib.get_close_matches(arch, open_clip.list_models(), n=3)
            raise RunnerError(f"clip:{arch}: open_clip has no such architecture"
                              + (f" (did you mean {', '.join(close)}?)" if close else ""))
        if pretrained and "/" in pretrained and not Path(pretrained).is_file():
            raise RunnerError(f"pretrained: no weights file at {pretrained}")
        kwargs["pretrained"] = pretrained
    logging.disable(logging.ERROR)  # open_clip reports every step on the root logger; failures raise
    try:
        model = open_clip.create_model(name, **kwargs)
        tokenizer = open_clip.get_tokenizer(name)
    except RuntimeError as e:
        hint = "; on an offline box give a local weights file or folder" if "download" in str(e).lower() else ""
        raise RunnerError(f"clip:{arch} with pretrained {pretrained!r}: {e}{hint}") from None
    finally:
        logging.disable(logging.NOTSET)
    cfg = open_clip.get_model_preprocess_cfg(model)
    size = cfg["size"][0] if isinstance(cfg["size"], (tuple, list)) else cfg["size"]
    return Clip(model, tokenizer, tuple(cfg["mean"]), tuple(cfg["std"]), int(size))


def class_names(folders: list[str], classes: list[dict] | None) -> list[str]:
    """The readable name of each class folder: from the class list by id, else the
    folder name with '_' as spaces."""
    by_id = {c["id"]: c["name"] for c in classes or []}
    return [by_id.get(f, f.replace("_", " ")) for f in folders]


@torch.no_grad()
def text_embeddings(clip: Clip, names: list[str], templates: list[str], device: torch.device,
                    normalize_each: bool = True) -> torch.Tensor:
    """[classes, dim]: per class the normalised mean of its template embeddings, each
    normalised first (the zero-shot head, as WiSE-FT) or not (the authors' curation)."""
    from runners.classes import with_article

    clip.model.eval()
    out = []
    for name in names:
        tokens = clip.tokenizer([t.format(name=name, a_name=with_article(name)) for t in templates]).to(device)
        emb = clip.model.encode_text(tokens).float()
        if normalize_each:
            emb = F.normalize(emb, dim=-1)
        out.append(F.normalize(emb.mean(0), dim=-1))
    return torch.stack(out)


class ClipClassifier(nn.Module):
    """The image tower under a linear head started from the zero-shot weights (the
    class text embeddings times the logit scale, bias zero) on normalised image
    features, both trained: the Unmet Promise's ImageClassifier with WiSE-FT's
    ClassificationHead. The text encoder is dropped after the head is built."""

    def __init__(self, clip: Clip, text: torch.Tensor):
        super().__init__()
        self.visual = clip.model.visual
        self.head = nn.Linear(text.shape[1], text.shape[0])
        with torch.no_grad():
            self.head.weight.copy_(text * clip.model.logit_scale.detach().exp().float())
            self.head.bias.zero_()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.visual(x), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, num_classes: int, cfg: dict) -> nn.Linear:
    """The Unmet Promise's linear probe on frozen features (``ClipClassifier.features``,
    already normalised, as their ClassificationHead normalises its input): a linear
    layer with bias (default init), AdamW (betas 0.9/0.95, weight decay on
    weight and bias), warm-up then cosine to 0 per step, gradient norm clipped at 1.0,
    shuffled batches (seeded)."""
    x = train_x.float()
    torch.manual_seed(cfg["seed"])
    head = nn.Linear(x.shape[1], num_classes)
    opt = torch.optim.AdamW(head.parameters(), lr=cfg["probe_lr"], weight_decay=cfg["probe_weight_decay"],
                            betas=(0.9, 0.95))
    batch = cfg["probe_batch_size"]
    steps = cfg["probe_epochs"] * math.ceil(len(x) / batch)
    warmup = cfg["probe_warmup_steps"]
    g = torch.Generator().manual_seed(cfg["seed"])
    step = 0
    for _ in range(cfg["probe_epochs"]):
        for idx in torch.randperm(len(x), generator=g).split(batch):
            lr = cfg["probe_lr"] * ((step + 1) / warmup if step < warmup else
                                    0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup))))
            for group in opt.param_groups:
                group["lr"] = lr
            loss = F.cross_entropy(head(x[idx]), train_y[idx])
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(head.parameters(), 1.0)
            opt.step()
            step += 1
    return head


def image_transform(clip: Clip):
    """open_clip's evaluation preprocessing: shorter side to the model's size (bicubic),
    centre crop, the model's statistics."""
    from torchvision import transforms as T

    return T.Compose([T.Resize(clip.image_size, interpolation=T.InterpolationMode.BICUBIC),
                      T.CenterCrop(clip.image_size), T.ToTensor(), T.Normalize(clip.mean, clip.std)])
