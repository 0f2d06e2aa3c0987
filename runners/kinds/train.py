"""``kind = "train"``: a ResNet student, or CLIP adaptation (runner: ``runners/train.py``).

Its defaults come from a recipe: ``fitymi`` is the FITYMI / t-ReX recipe of
Mind the Gap (DESIGN.md), ``plain`` a single-crop supervised recipe for
transfer experiments, ``finetune`` for pretrained weights, ``unmet-promise``
the CLIP adaptation of The Unmet Promise; the spec's values override the recipe's.
"""

from __future__ import annotations

import statistics

from runners import protocol
from runners.archs import ARCHS, num_layers
from runners.kinds.base import CLASS_LISTS, Chart, Field, Kind, Metric, Problem, Ref, check_class_source, \
    check_templates

AUGMENTS = ("none", "pytorch-example", "autoaugment", "augmix", "dino", "pixmix", "clip")

FITYMI = {
    "arch": "resnet50", "small_input": False, "width": 64, "epochs": 100, "batch_size": 256, "lr": 0.1,
    "warmup_epochs": 10, "min_lr": 1e-6, "weight_decay": 1e-4, "momentum": 0.9,
    "label_smoothing": 0.0, "tau": 0.1, "augment": "dino", "local_crops": 8, "image_size": 224,
    "local_size": 96, "normalization": "imagenet", "normalization_images": 2000, "bn_eval_mode": "eval", "report_last": 5,
    "amp": True, "channels_last": True, "compile": False, "deterministic": False, "workers": 8, "log_every": 20,
    "freeze_layers": 0, "frozen_bn": "frozen", "reinit": True, "fraction": 1.0, "mixup": 0.0,
    "optimizer": "sgd", "warmup_steps": 0,
}
PLAIN = {**FITYMI, "epochs": 90, "warmup_epochs": 0, "tau": 0.0, "augment": "pytorch-example"}
# Fine-tuning pretrained weights on a downstream dataset (bridged transfer): a
# tenth of the from-scratch lr, a short warm-up, a linear head.
FINETUNE = {**PLAIN, "epochs": 50, "lr": 0.01, "warmup_epochs": 1, "min_lr": 0.0}
# Adapting CLIP as The Unmet Promise's adapt/ code does (after WiSE-FT): the
# image tower and a linear head started from the zero-shot weights, trained
# whole with AdamW (betas 0.9/0.95, weight decay 0.1 on every parameter,
# lr not scaled with the batch), gradient norm clipped at 1.0, fp32, batch
# 512, 500 warm-up steps then cosine to 0; lr 1e-5 for 30 epochs on the
# fine-grained datasets, 1e-6 for 10 on ImageNet (their conf/*.yaml). The
# linear probe: AdamW lr 1e-2, wd 0.1, batch 256, 200 epochs, 200 warm-up
# steps (ImageNet: lr 1e-3, 40 epochs, no weight decay).
UNMET_PROMISE = {**PLAIN, "arch": "clip:ViT-B-16", "optimizer": "adamw", "lr": 1e-5, "weight_decay": 0.1,
                 "batch_size": 512, "epochs": 30, "warmup_epochs": 0, "warmup_steps": 500, "min_lr": 0.0,
                 "augment": "clip", "normalization": "model", "report_last": 1, "betas": [0.9, 0.95],
                 "grad_clip": 1.0, "decay_all": True, "amp": False}
UNMET_PROMISE_IMAGENET = {"lr": 1e-6, "epochs": 10, "probe_lr": 1e-3, "probe_epochs": 40, "probe_weight_decay": 0.0}
IMAGENET_LISTS = ("imagenet", "imagenet100")
RECIPES = {"fitymi": FITYMI, "plain": PLAIN, "finetune": FINETUNE, "unmet-promise": UNMET_PROMISE}
STAGE_KEYS = ("train", "epochs", "lr", "mixup", "reinit_classifier", "fraction", "augment")

DATA = Ref(to="train_dir", split="train", artifact="dataset")


def _stages(value: list) -> str | None:
    if not value or not all(isinstance(s, dict) for s in value):
        return "must be a non-empty list of tables like { train = \"gen\", epochs = 10 }"
    for i, stage in enumerate(value):
        unknown = set(stage) - set(STAGE_KEYS)
        if unknown:
            return f"stage {i + 1} has unknown key(s) {sorted(unknown)}; allowed: {sorted(STAGE_KEYS)}"
        if not isinstance(stage.get("train"), str):
            return f"stage {i + 1} needs 'train' (a dataset or a generate run)"
    return None


def _mix(value: list) -> str | None:
    if not value or not all(isinstance(m, dict) and isinstance(m.get("data"), str) for m in value):
        return "must be a non-empty list of tables like { data = \"real\", weight = 0.5 }"
    for m in value:
        weight = m.get("weight", 1.0)
        if set(m) - {"data", "weight"} or isinstance(weight, bool) or not isinstance(weight, (int, float)) \
                or weight <= 0:
            return "each entry takes 'data' and a positive 'weight', nothing else"
    return None


def _betas(value: list) -> str | None:
    ok = len(value) == 2 and all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1
                                 for b in value)
    return None if ok else "must be two numbers in [0, 1), such as [0.9, 0.999]"


def _arch(value: str) -> str | None:
    source, sep, name = value.partition(":")
    if value in ARCHS or (sep and source in ("torchvision", "timm", "clip") and name):
        return None
    return f"is {value!r}; allowed: {', '.join(ARCHS)}, 'torchvision:NAME', 'timm:NAME' or 'clip:NAME'"


def is_clip(arch: str) -> bool:
    return arch.startswith("clip:")


F = Field
FIELDS = {
    "recipe": F(str, "fitymi", "the defaults this run starts from", choices=tuple(RECIPES)),
    "arch": F(str, FITYMI["arch"], "student: resnet18/34/50 (the paper's layer numbering), 'torchvision:NAME' "
              "or 'timm:NAME' (any classification model, trained whole), 'clip:NAME' (an open_clip image tower "
              "under the zero-shot head)", check=_arch),
    "pretrained": F(str, help="open_clip weights of a 'clip:' arch: a local file, a folder with "
                    "open_clip_config.json, or a tag such as 'laion2b_s34b_b88k' (downloaded: online boxes only)",
                    path="local"),
    "classes": F(str, help="class names of the zero-shot head ('clip:' arch): " + ", ".join(CLASS_LISTS)
                 + " (the authors' names and templates; imagenet* also selects the recipe's ImageNet values) or "
                 "a JSON/CSV with id,name (ids = class folders); default: the folder names", path="file",
                 check=check_class_source),
    "templates": F(list, help="prompt templates of the zero-shot head, averaged per class; default: the class "
                   "list's, else 'a photo of a {name}.'", check=check_templates),
    "probe": F(str, help="real data whose train split fits a linear probe on the final features, scored on "
                    "eval ('clip:' arch)", ref=Ref(to="probe_dir", split="train", artifact="dataset")),
    "probe_lr": F(float, 1e-2, "linear probe: AdamW learning rate (cosine after probe_warmup_steps)", min=0,
                  min_open=True),
    "probe_epochs": F(int, 200, "linear probe: epochs over the probe's features", min=1),
    "probe_batch_size": F(int, 256, "linear probe: batch size", min=1),
    "probe_weight_decay": F(float, 0.1, "linear probe: AdamW weight decay (weights and bias)", min=0),
    "probe_warmup_steps": F(int, 200, "linear probe: linear warm-up steps", min=0),
    "holdout": F(float, 0.0, "hold out this class-balanced share of the training data (seeded) as a validation "
                 "split, scored every epoch (holdout_top1); 0 = none", min=0, max=0.9),
    "select": F(str, "last", "which epochs the reported top-1 comes from: the last report_last, or the one with "
                "the best holdout top-1 (never the evaluation split)", choices=("last", "holdout")),
    "small_input": F(bool, False, "3x3 stem without max-pool, for 32x32 images"),
    "width": F(int, 64, "base channels (64 = torchvision's ResNets)", min=4, max=256),
    "weights": F(str, help="weights to start from: a local file, or a torchvision weights enum such as "
                 "'ResNet50_Weights.IMAGENET1K_V2' (downloaded: online boxes only)", path="file"),
    "train": F(str, help="the training data", ref=DATA),
    "eval": F(str, help="the real data evaluated every epoch",
              ref=Ref(to="eval_dir", split="val", artifact="dataset")),
    "mix": F(list, help="train on several sets at once: their union, each image once per epoch (the bridged "
             "transfer paper's mixing), or sampled by weight (mix_sampling = \"weighted\")", check=_mix,
             item_refs={"data": Ref(to="dir", split="train", artifact="dataset")}),
    "mix_sampling": F(str, "union", "mix: the union of the sets, each image once per epoch, or each set drawn "
                      "by its weight", choices=("union", "weighted")),
    "stages": F(list, help="bridged transfer: train on each set in turn", check=_stages,
                item_refs={"train": DATA}),
    "init_from": F(str, help="take layers 1..freeze_layers from this run's model or a checkpoint file",
                   ref=Ref(to="init_from_path", split=None, artifact="model", path="file")),
    "freeze_layers": F(int, 0, "layers taken from init_from and frozen (paper's numbering)", min=0),
    "frozen_bn": F(str, "frozen", "BatchNorm statistics of frozen layers", choices=("frozen", "train")),
    "reinit": F(bool, True, "re-initialise the layers above freeze_layers"),
    "fraction": F(float, 1.0, "class-balanced share of the training set", min=0, max=1, min_open=True),
    "epochs": F(int, 100, "epochs (per stage unless a stage says otherwise); 0 evaluates the starting "
                "weights (an off-the-shelf model)", min=0),
    "batch_size": F(int, 256, "global batch size", min=1),
    "lr": F(float, 0.1, "base learning rate; SGD's is at batch 256 and scaled by batch/256, AdamW's is used "
            "as is", min=0, min_open=True),
    "optimizer": F(str, "sgd", "SGD with momentum, or AdamW", choices=("sgd", "adamw")),
    "warmup_epochs": F(int, 10, "linear warm-up epochs before the cosine decay", min=0),
    "warmup_steps": F(int, 0, "linear warm-up steps instead (when > 0)", min=0),
    "min_lr": F(float, 1e-6, "learning rate at the end of the cosine", min=0),
    "weight_decay": F(float, 1e-4, "on weights only, not biases or norm parameters", min=0),
    "momentum": F(float, 0.9, "SGD momentum", min=0, max=1),
    "betas": F(list, [0.9, 0.999], "AdamW's betas", check=_betas),
    "grad_clip": F(float, 0.0, "clip the gradient's global norm at this (0 = off)", min=0),
    "decay_all": F(bool, False, "weight decay on every parameter (the Unmet Promise's AdamW), not weights only"),
    "label_smoothing": F(float, 0.0, "cross-entropy label smoothing", min=0, max=1),
    "tau": F(float, 0.1, "cosine classifier temperature; 0 = plain linear layer", min=0),
    "augment": F(str, "dino", "training augmentation", choices=AUGMENTS),
    "pixmix_dir": F(str, help="the mixing images of augment = 'pixmix'", path="dir"),
    "local_crops": F(int, 8, "local crops of the dino multi-crop", min=0, max=32),
    "image_size": F(int, 224, "training and evaluation crop size", min=8),
    "local_size": F(int, 96, "local crop size of the dino multi-crop", min=8),
    "normalization": F(str, "imagenet", "input statistics: ImageNet's; 'exact': each dataset its own (train "
                       "and eval, Mind the Gap Table 1); 'exact-train': the training set's for both; 'model': "
                       "the pretrained model's own ('clip:' arch)",
                       choices=("imagenet", "exact", "exact-train", "model")),
    "normalization_images": F(int, 2000, "images (a seeded sample) the exact statistics are computed over", min=1),
    "bn_eval_mode": F(str, "eval", "BatchNorm at evaluation: running or batch statistics",
                      choices=("eval", "train")),
    "mixup": F(float, 0.0, "mixup alpha; 0 = off", min=0),
    "eval_skip_limit": F(float, 0.01, "share of the evaluation images that may be unreadable (not scored, named "
                         "in the log, counted as eval_skipped) before the run fails", min=0, max=1),
    "report_last": F(int, 5, "epochs averaged for the reported mean ± std", min=1),
    "workers": F(int, 8, "data loader processes", min=0),
    "amp": F(bool, True, "mixed precision on CUDA (bf16 where supported)"),
    "channels_last": F(bool, True, "channels-last memory format on CUDA"),
    "compile": F(bool, False, "torch.compile the model"),
    "deterministic": F(bool, False, "bit-reproducible on GPUs: cudnn.benchmark and TF32 off, deterministic "
                       "algorithms (slower)"),
    "log_every": F(int, 20, "steps between train_step events", min=1),
    "save_every": F(int, 0, "also keep the weights every N epochs as checkpoints/epoch_NNN.pt (0: only the "
                    "last checkpoint and the final model; `synthgap gc` prunes them)", min=0),
    "max_steps_per_epoch": F(int, help="cap steps per epoch (smoke tests)", min=1),
}


def check(p: dict) -> list[Problem]:
    out: list[Problem] = []
    arch = p.get("arch", _recipe(p)["arch"])
    n = p.get("freeze_layers", 0)
    if not is_clip(arch):
        out += [(k, "applies to a 'clip:' arch only") for k in ("pretrained", "probe") if k in p]
        if p.get("normalization") == "model":
            out.append(("normalization", "'model' takes a 'clip:' arch's own statistics; use 'imagenet' here"))
    if arch not in ARCHS:  # a torchvision or timm model: no layer numbering, its own head
        numbered = ", ".join(ARCHS)
        if n or "init_from" in p:
            out.append(("freeze_layers" if n else "init_from",
                        f"needs the paper's layer numbering, defined for {numbered}; {arch} has none"))
        if p.get("tau", _recipe(p)["tau"]) > 0 and not is_clip(arch):
            out.append(("tau", f"the cosine classifier (tau > 0) is built for {numbered}; set tau = 0 "
                               f"(or recipe = \"plain\") for {arch}"))
        out += [(k, f"applies to {numbered} only") for k in ("small_input", "width") if k in p]
        return out + _sources(p)
    top = num_layers(arch) - 1
    if n > top:
        out.append(("freeze_layers", f"is {n}; a {arch} has {top + 1} layers, so 0..{top} "
                                     f"({top} = linear probe)"))
    if n > 0 and "init_from" not in p:
        out.append(("freeze_layers", "needs init_from (the run or checkpoint to take the frozen layers from)"))
    return out + _sources(p)


def _sources(p: dict) -> list[Problem]:
    out: list[Problem] = []
    if p.get("mix_sampling", "union") == "union" and any(m.get("weight", 1.0) != 1.0 for m in p.get("mix") or []
                                                          if isinstance(m, dict)):
        out.append(("mix", "weights apply to mix_sampling = \"weighted\"; the union takes each image once"))
    if p.get("select") == "holdout" and not p.get("holdout"):
        out.append(("select", "'holdout' picks by the held-out split: set holdout (e.g. 0.1)"))
    sources = [k for k in ("train", "mix", "stages") if k in p]
    if len(sources) > 1:
        out.append((None, f"needs exactly one of train, mix or stages (has {', '.join(sources)})"))
    elif not sources and p.get("epochs", _recipe(p)["epochs"]) > 0:
        out.append((None, "needs one of train, mix or stages (or epochs = 0 to evaluate the starting weights)"))
    if "eval" not in p:
        out.append((None, "needs eval (the real dataset to evaluate on)"))
    if p.get("augment") == "pixmix" and "pixmix_dir" not in p:
        out.append(("augment", "'pixmix' needs pixmix_dir (a folder of mixing images)"))
    return out


def estimate(params: dict, finished: list[dict]) -> float | None:
    """Seconds per epoch of finished runs of the same architecture, times epochs."""
    cfg = KIND.resolve(params)
    rates = []
    for r in finished:
        summary = r.get("summary") or {}
        if r.get("started") and r.get("ended") and summary.get("epochs") \
                and (summary.get("config") or {}).get("arch") == cfg["arch"]:
            rates.append((r["ended"] - r["started"]) / summary["epochs"])
    epochs = sum(s.get("epochs", cfg["epochs"]) for s in params["stages"]) if params.get("stages") \
        else cfg["epochs"]
    return statistics.fmean(rates) * epochs if rates else None


def _recipe(params: dict) -> dict:
    recipe = params.get("recipe", "fitymi")
    values = RECIPES.get(recipe, FITYMI) if isinstance(recipe, str) else FITYMI
    if values is UNMET_PROMISE and params.get("classes") in IMAGENET_LISTS:
        values = {**values, **UNMET_PROMISE_IMAGENET}
    return values


KIND = Kind(
    name="train",
    runner="runners.train",
    help="train a ResNet student (layers 1..N from another run, frozen) or adapt CLIP",
    fields=FIELDS,
    artifacts={"model": "the final weights, checkpoints/model.pt"},
    metrics=(Metric("top1", "Top-1 Acc. (%)"), Metric("top5", "Top-5 Acc. (%)"),
             Metric("train_loss", "Train Loss", 3), Metric("linear_probe_top1", "Linear Probe (%)"),
             Metric("eval_images", "Eval Images", 0)),
    charts=(Chart("train loss", protocol.TRAIN_STEP, "step", (("loss", "loss"),)),
            Chart("top-1 / top-5 per epoch", protocol.EPOCH, "epoch", (("top1", "top-1"), ("top5", "top-5")),
                  unit="%"),
            Chart("learning rate", protocol.TRAIN_STEP, "step", (("lr", "lr"),)),
            Chart("images/s  ·  GPU memory (GiB)", protocol.TRAIN_STEP, "step", (("images_per_s", "img/s"),),
                  gpu_memory=True)),
    check=check,
    defaults_for=_recipe,
    estimate=estimate,
)
