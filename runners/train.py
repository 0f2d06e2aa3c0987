"""Train a ResNet student or adapt CLIP: ``python -m runners.train --run-dir DIR [--resume]``.

Reads ``DIR/spec.json`` (written by ``synthgap submit``), writes events,
checkpoints and ``results.json`` into DIR. Layout after torchvision's
``references/classification/train.py``: ``train_one_epoch``, ``evaluate``,
``main(args)``. Under ``torchrun`` it trains with DistributedDataParallel.
"""

from __future__ import annotations

import math
import os
import re
import statistics
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from runners import protocol
from runners.archs import BLOCKS
from runners.augment import IMAGENET_MEAN, IMAGENET_STD, eval_transform, train_transform
from runners.data import (DataError, EpochSampler, ImageList, SeededImages, balanced_fraction, holdout_split,
                          channel_stats, check_same_classes, mix_seed, mix_weights, scan_folder)
from runners.kinds.train import KIND, is_clip
from runners.layers import (Student, build_named, build_resnet, classifier_of, layer_prefixes, load_prefix,
                            load_state_file, trainable_parameters)
from runners.runtime import (Cancelled, Device, RunContext, RunnerError, atomic_torch_save, run_main,
                             runner_args_parser)

WEIGHTS_ENUM = re.compile(r"\w+_Weights\.\w+")
LAST = "last.pt"
MODEL = "model.pt"
HOLDOUT_FILE = "holdout.txt"  # the held-out training images, one path a line


@dataclass
class Stage:
    """One training phase: bridged transfer has two (synthetic, then real)."""

    dirs: list[str]
    weights: list[float]
    epochs: int
    lr: float
    mixup: float
    reinit_classifier: bool
    fraction: float
    augment: str


def stages_of(cfg: dict) -> list[Stage]:
    """The training phases; none for epochs = 0 without training data (evaluate the starting weights)."""
    common = dict(lr=cfg["lr"], mixup=cfg["mixup"], fraction=cfg["fraction"], augment=cfg["augment"])
    if cfg.get("stages"):
        return [Stage(dirs=[s["train_dir"]], weights=[1.0], epochs=s.get("epochs", cfg["epochs"]),
                      reinit_classifier=s.get("reinit_classifier", False),
                      **{**common, **{k: s[k] for k in ("lr", "mixup", "fraction", "augment") if k in s}})
                for s in cfg["stages"]]
    if cfg.get("mix"):
        return [Stage(dirs=[m["dir"] for m in cfg["mix"]], weights=[m.get("weight", 1.0) for m in cfg["mix"]],
                      epochs=cfg["epochs"], reinit_classifier=False, **common)]
    if not cfg.get("train_dir"):
        if cfg["epochs"] == 0:
            return []
        raise RunnerError("the spec names no training data (train, mix or stages)")
    return [Stage(dirs=[cfg["train_dir"]], weights=[1.0], epochs=cfg["epochs"], reinit_classifier=False, **common)]


def accuracy(output: torch.Tensor, target: torch.Tensor, topk=(1, 5)) -> list[int]:
    """Number of samples whose target is among the top-k predictions, per k."""
    maxk = min(max(topk), output.shape[1])
    pred = output.topk(maxk, dim=1).indices
    hit = pred.eq(target.view(-1, 1))
    return [int(hit[:, : min(k, maxk)].any(dim=1).sum()) for k in topk]


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on weights only: no decay on biases and normalisation parameters."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, cfg: dict, lr: float) -> torch.optim.Optimizer:
    """SGD at ``lr`` x batch/256 (the linear scaling rule), or AdamW at ``lr`` as given
    with ``betas``; weight decay on weights only, or on everything (``decay_all``)."""
    groups = param_groups(model, cfg["weight_decay"])
    if cfg["decay_all"]:
        groups = [{"params": [p for g in groups for p in g["params"]], "weight_decay": cfg["weight_decay"]}]
    if cfg["optimizer"] == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(cfg["betas"]))
    return torch.optim.SGD(groups, lr=lr * cfg["batch_size"] / 256, momentum=cfg["momentum"])


def lr_lambda(base_lr: float, min_lr: float, warmup_steps: int, total_steps: int):
    """Linear warm-up, then cosine to ``min_lr``, as a factor of ``base_lr``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        lr = min_lr + 0.5 * (base_lr - min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))
        return lr / base_lr

    return factor


def crop_batches(inputs, labels: torch.Tensor):
    """(images, labels) groups: one for single-crop input, one per crop size for multi-crop."""
    if isinstance(inputs, torch.Tensor):
        return [(inputs, labels)]
    groups = []
    for crops in inputs:  # [B, n, 3, s, s]
        b, n = crops.shape[:2]
        if n:
            groups.append((crops.flatten(0, 1), labels.repeat_interleave(n)))
    return groups


def mixup(groups, alpha: float, g: torch.Generator):
    if alpha <= 0:
        return [(x, y, y, 1.0) for x, y in groups]
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    out = []
    for x, y in groups:
        perm = torch.randperm(x.shape[0], generator=g)
        out.append((lam * x + (1 - lam) * x[perm], y, y[perm], lam))
    return out


def train_one_epoch(model, loader, optimizer, scheduler, device: Device, ctx: RunContext, *, epoch: int,
                    stage: Stage, cfg: dict, start_step: int, steps: int, global_step: int, total_steps: int,
                    save_mid_epoch) -> dict:
    model.train()
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg["label_smoothing"])
    losses, bad_paths = [], []
    seen, t0, t_log, seen_log = 0, time.perf_counter(), time.perf_counter(), 0
    step = start_step
    for step, (inputs, labels, bad) in enumerate(loader, start=start_step):
        if step >= steps:
            break
        bad_paths += [b for b in bad if b]
        g = torch.Generator().manual_seed(mix_seed("mixup", cfg["seed"], epoch, step))
        torch.manual_seed(mix_seed("step", cfg["seed"], epoch, step))  # any op drawing from torch's RNG
        groups = mixup(crop_batches(inputs, labels), stage.mixup, g)
        total = sum(x.shape[0] for x, *_ in groups)
        loss = 0.0
        with device.autocast():
            for x, ya, yb, lam in groups:  # loss over all crops, weighted by their number
                out = model(device.to(x))
                crop_loss = criterion(out, device.to(ya))
                if lam < 1:
                    crop_loss = lam * crop_loss + (1 - lam) * criterion(out, device.to(yb))
                loss = loss + crop_loss * (x.shape[0] / total)
        optimizer.zero_grad(set_to_none=True)
        device.scaler.scale(loss).backward()
        if cfg["grad_clip"]:
            device.scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], cfg["grad_clip"])
        device.scaler.step(optimizer)
        device.scaler.update()
        scheduler.step()
        global_step += 1
        losses.append(float(loss.detach()))
        seen += labels.shape[0]
        if not math.isfinite(losses[-1]):
            raise RunnerError(f"loss is {losses[-1]} at epoch {epoch} step {step}: lower lr?")
        if (step + 1) % cfg["log_every"] == 0 or step + 1 == steps:
            now = time.perf_counter()
            rate = (seen - seen_log) / max(now - t_log, 1e-9) * _world()
            t_log, seen_log = now, seen
            ctx.emit(protocol.TRAIN_STEP, step=global_step, epoch=epoch, loss=losses[-1],
                     lr=optimizer.param_groups[0]["lr"], images_per_s=round(rate, 2))
            elapsed = now - t0
            done_rate = (step + 1 - start_step) / max(elapsed, 1e-9)
            ctx.emit(protocol.PROGRESS, done=global_step, total=total_steps, unit="step",
                     rate=round(done_rate, 3), eta=round((total_steps - global_step) / max(done_rate, 1e-9), 1))
            memory = device.memory()
            if memory:
                ctx.emit(protocol.GPU, devices=memory)
        if ctx.stop_requested:
            save_mid_epoch(step + 1, global_step)
            raise Cancelled("SIGTERM: saved a checkpoint mid-epoch")
    elapsed = time.perf_counter() - t0
    if bad_paths:
        ctx.log(f"skipped {len(bad_paths)} unreadable image(s) this epoch, e.g. {bad_paths[0]}", "warning")
    return {"train_loss": statistics.fmean(losses) if losses else float("nan"),
            "images_per_s": seen * _world() / max(elapsed, 1e-9), "skipped": len(bad_paths),
            "global_step": global_step}


@torch.no_grad()
def evaluate(model: nn.Module, loader, device: Device, bn_eval_mode: str = "eval") -> dict:
    model.eval()
    if bn_eval_mode == "train":  # Mind the Gap, Table 1: BN keeps batch statistics at test time
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.train()
    # loss sum, top1, top5, scored, skipped. An unreadable image is not scored: the loader stands the next
    # readable one in for it (flagged with the bad path), and that stand-in is left out of the totals.
    totals = torch.zeros(5, dtype=torch.float64)
    skipped: list[str] = []
    for images, labels, bad in loader:
        keep = torch.tensor([not b for b in bad])
        skipped += [b for b in bad if b]
        if not keep.any():
            totals[4] += len(bad)
            continue
        with device.autocast():
            out = model(device.to(images[keep])).float()
        labels = device.to(labels[keep])
        top1, top5 = accuracy(out, labels)
        totals += torch.tensor([float(F.cross_entropy(out, labels, reduction="sum")), top1, top5, len(labels),
                                len(bad) - len(labels)], dtype=torch.float64)
    if _world() > 1:
        totals = totals.to(device.device)
        dist.all_reduce(totals)
        totals = totals.cpu()
    n = max(totals[3].item(), 1)
    return {"val_loss": totals[0].item() / n, "top1": 100 * totals[1].item() / n, "top5": 100 * totals[2].item() / n,
            "scored": int(totals[3].item()), "eval_skipped": int(totals[4].item()), "skipped_paths": skipped}


def checked_eval(ctx: RunContext, metrics: dict, cfg: dict, history: list[dict]) -> dict:
    """An evaluation's metrics for the record: its unreadable images named in the log
    the first time, and the run failed when they are more than ``eval_skip_limit`` of
    the evaluation set (its accuracy would be over another set than the user's)."""
    paths = metrics.pop("skipped_paths")
    total = metrics["scored"] + metrics["eval_skipped"]
    if paths and not history:
        shown = ", ".join(paths[:10]) + (f" and {len(paths) - 10} more" if len(paths) > 10 else "")
        ctx.log(f"evaluation: {metrics['eval_skipped']} of {total} image(s) unreadable, not scored: {shown}",
                "warning")
    if total and metrics["eval_skipped"] / total > cfg["eval_skip_limit"]:
        raise RunnerError(f"evaluation: {metrics['eval_skipped']} of {total} images are unreadable, more than "
                          f"eval_skip_limit ({cfg['eval_skip_limit']:.1%}) of the set; the first: {paths[0]}")
    return metrics


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def pretrained_state(weights: str) -> dict:
    """A local weights file, or a torchvision weights enum ('ResNet50_Weights.IMAGENET1K_V2',
    downloaded once into torch's cache, so only where the box is online)."""
    if not WEIGHTS_ENUM.fullmatch(weights):
        return load_state_file(weights, "weights")
    from torchvision import models

    try:
        return models.get_weight(weights).get_state_dict(progress=False)
    except (ValueError, KeyError, AttributeError):
        raise RunnerError(f"weights {weights!r}: torchvision has no such weights enum") from None
    except OSError as e:
        raise RunnerError(f"weights {weights!r} must be downloaded and that failed ({e}); on an offline box "
                          "give a local weights file") from None


def build_clip_student(cfg: dict, classes: list[str], ctx: RunContext) -> tuple[Student, tuple | None]:
    """The image tower of an open_clip model under its zero-shot head, and the
    model's own input statistics."""
    from runners.classes import load_class_list, prompt_for
    from runners.clip import DEFAULT_TEMPLATES, ClipClassifier, class_names, load_clip, text_embeddings

    clip = load_clip(cfg["arch"].partition(":")[2], cfg.get("pretrained"))
    if clip.image_size != cfg["image_size"]:
        raise RunnerError(f"image_size is {cfg['image_size']}; {cfg['arch']} takes {clip.image_size} px images")
    class_list = load_class_list(cfg["classes"]) if cfg.get("classes") else None
    names = class_names(classes, class_list.classes if class_list else None)
    templates = cfg.get("templates") or (class_list and class_list.zeroshot_templates) or list(DEFAULT_TEMPLATES)
    text = text_embeddings(clip, names, templates, torch.device("cpu"))
    ctx.log(f"zero-shot head: {len(names)} classes x {len(templates)} template(s), e.g. "
            f"{prompt_for(templates[0], {'name': names[0]})!r}")
    return Student(ClipClassifier(clip, text)), (clip.mean, clip.std)


def build_student(cfg: dict, classes: list[str], ctx: RunContext) -> tuple[Student, tuple | None]:
    """The model, and its own input statistics where it has them (CLIP)."""
    torch.manual_seed(mix_seed("init", cfg["seed"]))
    num_classes = len(classes)
    if is_clip(cfg["arch"]):
        return build_clip_student(cfg, classes, ctx)
    if cfg["arch"] not in BLOCKS:
        try:
            net = build_named(cfg["arch"], num_classes)
        except ValueError as e:
            raise RunnerError(str(e)) from None
        if cfg.get("weights"):
            state = pretrained_state(cfg["weights"])
            head = {k for k, v in net.state_dict().items() if k not in state or state[k].shape != v.shape}
            net.load_state_dict({k: v for k, v in state.items() if k not in head}, strict=False)
            ctx.log(f"weights {cfg['weights']}: loaded all but {len(head)} tensors (the classifier)")
        return Student(net), None
    net = build_resnet(cfg["arch"], num_classes, small_input=cfg["small_input"], tau=cfg["tau"], width=cfg["width"])
    if cfg.get("weights"):
        # Every layer but the classifier must be in the file: a partial load would pass unnoticed.
        backbone = len(layer_prefixes(net)) - 1
        keys = load_prefix(net, pretrained_state(cfg["weights"]), backbone, reinit=False, source=cfg["weights"])
        ctx.log(f"weights {cfg['weights']}: loaded {len(keys)} tensors")
    n = cfg["freeze_layers"]
    if cfg.get("init_from_path") or cfg.get("init_from"):
        path = cfg.get("init_from_path") or cfg["init_from"]
        if not os.path.isfile(path):
            raise RunnerError(f"init_from: no checkpoint at {path} (did the run it names finish?)")
        keys = load_prefix(net, load_state_file(path), n, reinit=cfg["reinit"], source=path)
        ctx.log(f"init_from {path}: loaded layers 1..{n} ({len(keys)} tensors)"
                + ("" if cfg["reinit"] else ", later layers kept"))
    elif n:
        raise RunnerError("freeze_layers > 0 needs init_from")
    return Student(net, frozen=n, frozen_bn=cfg["frozen_bn"]), None


def make_loader(images: list[ImageList], stage: Stage, cfg: dict, transform, batch: int, device: Device,
                rank: int, world: int) -> tuple[DataLoader, EpochSampler]:
    samples, lengths = [], []
    for il in images:
        keep = balanced_fraction(il, stage.fraction, cfg["seed"]) if stage.fraction < 1 else range(len(il.samples))
        picked = [il.samples[i] for i in keep]
        samples += picked
        lengths.append(len(picked))
    weighted = len(images) > 1 and cfg["mix_sampling"] == "weighted"
    weights = mix_weights(lengths, stage.weights) if weighted else None  # else the union, once per epoch
    dataset = SeededImages(samples, transform, seed=mix_seed("aug", cfg["seed"]))
    sampler = EpochSampler(len(samples), seed=cfg["seed"], weights=weights, rank=rank, world=world)
    workers = min(cfg["workers"], os.cpu_count() or 1)
    loader = DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=workers,
                        pin_memory=device.cuda, persistent_workers=workers > 0, drop_last=True)
    return loader, sampler


def run_training(ctx: RunContext, args) -> dict:
    cfg = KIND.resolve(ctx.spec)
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    device = Device(amp=cfg["amp"], channels_last=cfg["channels_last"], local_rank=int(os.environ.get("LOCAL_RANK", 0)),
                    deterministic=cfg["deterministic"])
    stages = stages_of(cfg)
    if not cfg.get("eval_dir"):
        raise RunnerError("the spec names no evaluation data (eval)")
    try:
        eval_images = scan_folder(cfg["eval_dir"], "eval")
        train_sets = [[scan_folder(d, "train") for d in s.dirs] for s in stages]
        for stage_sets in train_sets:
            for il in stage_sets:
                check_same_classes(eval_images, il, "train vs eval")
        probe_images = scan_folder(cfg["probe_dir"], "probe") if cfg.get("probe_dir") else None
        if probe_images:
            check_same_classes(eval_images, probe_images, "probe vs eval")
    except DataError as e:
        raise RunnerError(str(e)) from None
    classes = eval_images.classes
    holdout_images = None
    if cfg["holdout"] and train_sets:  # model selection on training data, never on the evaluation split
        split = [holdout_split(il, cfg["holdout"], cfg["seed"]) for il in train_sets[-1]]
        train_sets[-1] = [t for t, _ in split]
        holdout_images = ImageList(eval_images.root, classes, [s for _, h in split for s in h.samples])
        protocol.write_text_atomic(ctx.run_dir / HOLDOUT_FILE, "".join(f + "\n" for f, _ in holdout_images.samples))
    student, own_stats = build_student(cfg, classes, ctx)
    try:
        norm = {"train": own_stats if cfg["normalization"] == "model" else (IMAGENET_MEAN, IMAGENET_STD)}
        if cfg["normalization"].startswith("exact"):  # each dataset its own statistics (Mind the Gap, Table 1)
            first = train_sets[-1][0] if train_sets else eval_images
            norm["train"] = channel_stats(first, ctx.run_dir, cfg["normalization_images"])
        norm["eval"] = channel_stats(eval_images, ctx.run_dir, cfg["normalization_images"]) \
            if cfg["normalization"] == "exact" else norm["train"]
    except DataError as e:
        raise RunnerError(str(e)) from None
    student.to(device.device, memory_format=device.memory_format)
    trainable = trainable_parameters(student)
    model: nn.Module = student
    if world > 1:
        model = nn.parallel.DistributedDataParallel(student, device_ids=[device.device.index] if device.cuda else None)
    if cfg["compile"]:
        model = torch.compile(model)

    batch = max(1, cfg["batch_size"] // world)
    clip_arch = is_clip(cfg["arch"])
    eval_loader = DataLoader(
        SeededImages(eval_images.samples[rank::world], eval_transform(*norm["eval"], cfg["image_size"], clip_arch),
                     seed=0),
        batch_size=batch, num_workers=min(cfg["workers"], os.cpu_count() or 1), pin_memory=device.cuda)

    holdout_loader = None if holdout_images is None else DataLoader(
        SeededImages(holdout_images.samples[rank::world],
                     eval_transform(*norm["train"], cfg["image_size"], clip_arch), seed=0),
        batch_size=batch, num_workers=min(cfg["workers"], os.cpu_count() or 1), pin_memory=device.cuda)

    start_stage, start_epoch, start_step, global_step, history = 0, 0, 0, 0, []
    resume_state = None
    last_path = ctx.checkpoints / LAST
    if args.resume and last_path.is_file():
        resume_state = torch.load(last_path, map_location="cpu", weights_only=True)
        student.net.load_state_dict(resume_state["model"])
        if resume_state.get("scaler"):
            device.scaler.load_state_dict(resume_state["scaler"])
        start_stage, start_epoch = resume_state["stage"], resume_state["epoch"]
        start_step, global_step = resume_state["step_in_epoch"], resume_state["global_step"]
        history = resume_state["history"]
        ctx.log(f"resumed from {last_path}: stage {start_stage + 1}, epoch {start_epoch}, step {start_step}")
    elif args.resume:
        ctx.log("--resume: no checkpoint yet, starting from scratch", "warning")

    loaders = []
    for s, stage in enumerate(stages):
        tf = train_transform(stage.augment, *norm["train"], size=cfg["image_size"], local_size=cfg["local_size"],
                             local_crops=cfg["local_crops"], pixmix_dir=cfg.get("pixmix_dir"),
                             small_input=cfg["small_input"])
        loaders.append(make_loader(train_sets[s], stage, cfg, tf, batch, device, rank, world))
    steps_per_epoch = [min(len(l), cfg.get("max_steps_per_epoch") or len(l)) for l, _ in loaders]
    if not all(steps_per_epoch):
        raise RunnerError(f"the training set is smaller than one batch of {batch}: lower batch_size")
    total_steps = sum(n * s.epochs for n, s in zip(steps_per_epoch, stages))
    ctx.emit(protocol.START, config=cfg, classes=len(classes), trainable_params=trainable, world_size=world,
             device=str(device.device), resumed=resume_state is not None,
             normalization={k: {"mean": list(m), "std": list(s)} for k, (m, s) in norm.items()},
             train_images=[len(l.dataset) for l, _ in loaders], eval_images=len(eval_images.samples),
             holdout_images=len(holdout_images.samples) if holdout_images else 0)

    epoch_offset = sum(s.epochs for s in stages[:start_stage])
    for s in range(start_stage, len(stages)):
        stage = stages[s]
        loader, sampler = loaders[s]
        if stage.reinit_classifier and s > 0 and resume_state is None:
            classifier_of(student.net).reset_parameters()
            ctx.log(f"stage {s + 1}: classifier re-initialised")
        optimizer = make_optimizer(student, cfg, stage.lr)
        stage_steps = steps_per_epoch[s] * stage.epochs
        warmup = cfg["warmup_steps"] or steps_per_epoch[s] * cfg["warmup_epochs"]
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(
            optimizer.param_groups[0]["lr"], cfg["min_lr"], warmup, stage_steps))
        first_epoch = 0
        if resume_state is not None and s == start_stage:
            optimizer.load_state_dict(resume_state["optimizer"])
            scheduler.load_state_dict(resume_state["scheduler"])
            first_epoch = start_epoch
        for epoch in range(first_epoch, stage.epochs):
            skip = start_step if (resume_state is not None and s == start_stage and epoch == start_epoch) else 0
            sampler.set_epoch(epoch_offset + epoch, skip * batch)

            def save_mid_epoch(step_in_epoch, g_step, _s=s, _e=epoch):
                _checkpoint(ctx, student, optimizer, scheduler, device.scaler, cfg, _s, _e, step_in_epoch, g_step, history)

            stats = train_one_epoch(model, loader, optimizer, scheduler, device, ctx, epoch=epoch_offset + epoch,
                                    stage=stage, cfg=cfg, start_step=skip, steps=steps_per_epoch[s],
                                    global_step=global_step, total_steps=total_steps,
                                    save_mid_epoch=save_mid_epoch)
            global_step = stats["global_step"]
            metrics = checked_eval(ctx, evaluate(model, eval_loader, device, cfg["bn_eval_mode"]), cfg, history)
            if holdout_loader is not None:
                held = evaluate(model, holdout_loader, device, cfg["bn_eval_mode"])
                metrics.update(holdout_top1=held["top1"], holdout_loss=held["val_loss"])
            record = {"epoch": epoch_offset + epoch, "stage": s, "train_loss": stats["train_loss"],
                      "images_per_s": round(stats["images_per_s"], 2), "skipped": stats["skipped"], **metrics}
            history.append(record)
            ctx.emit(protocol.EPOCH, **record)
            _checkpoint(ctx, student, optimizer, scheduler, device.scaler, cfg, s, epoch + 1, 0, global_step, history)
            done_epochs = epoch_offset + epoch + 1
            if ctx.main and cfg["save_every"] and done_epochs % cfg["save_every"] == 0:
                atomic_torch_save(student.net.state_dict(), ctx.checkpoints / f"epoch_{done_epochs:03d}.pt")
            if ctx.stop_requested:
                raise Cancelled("SIGTERM: stopped after an epoch")
        epoch_offset += stage.epochs
        resume_state = None

    if not stages:  # epochs = 0: the starting weights as they are
        history = [{"epoch": 0, "stage": 0, "skipped": 0,
                    **checked_eval(ctx, evaluate(model, eval_loader, device, cfg["bn_eval_mode"]), cfg, [])}]
        ctx.emit(protocol.EPOCH, **history[0])
    summary = summarize(history, cfg, trainable)
    summary["train_images"] = len(loaders[-1][0].dataset) if loaders else 0  # of the last stage
    if ctx.main:
        atomic_torch_save(student.net.state_dict(), ctx.checkpoints / MODEL)
        ctx.emit(protocol.ARTIFACT, path=str(ctx.checkpoints / MODEL), kind="model")
        if probe_images:
            tf = eval_transform(*norm["eval"], cfg["image_size"], clip_arch)
            summary["linear_probe_top1"] = probe_top1(student.net, probe_images, eval_images, tf, cfg, device)
            ctx.log(f"linear probe on {len(probe_images.samples)} real images: "
                    f"{summary['linear_probe_top1']:.2f}% top-1")
    return summary


@torch.no_grad()
def features_of(net: nn.Module, images: ImageList, transform, cfg: dict, device: Device) -> tuple:
    net.eval()
    loader = DataLoader(SeededImages(images.samples, transform, seed=0), batch_size=cfg["batch_size"],
                        num_workers=min(cfg["workers"], os.cpu_count() or 1), pin_memory=device.cuda)
    xs, ys = [], []
    for x, y, _ in loader:
        with device.autocast():
            xs.append(net.features(device.to(x)).float().cpu())
        ys.append(y)
    return torch.cat(xs), torch.cat(ys)


def probe_top1(net: nn.Module, probe: ImageList, eval_images: ImageList, transform, cfg: dict, device: Device) -> float:
    """Linear-probe accuracy: logistic regression on the final features of the real
    training split, scored on the evaluation split."""
    from runners.clip import linear_probe

    head = linear_probe(*features_of(net, probe, transform, cfg, device), len(probe.classes), cfg)
    x, y = features_of(net, eval_images, transform, cfg, device)
    with torch.no_grad():
        return 100 * float((head(x).argmax(1) == y).float().mean())


def _checkpoint(ctx, student, optimizer, scheduler, scaler, cfg, stage, epoch, step_in_epoch, global_step, history):
    if not ctx.main:
        return
    path = ctx.checkpoints / LAST
    # The loss scale of fp16 training (empty when it is off) resumes where it was.
    atomic_torch_save({"model": student.net.state_dict(), "optimizer": optimizer.state_dict(),
                       "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "stage": stage, "epoch": epoch,
                       "step_in_epoch": step_in_epoch, "global_step": global_step, "history": history,
                       "spec": ctx.spec}, path)
    ctx.emit(protocol.CHECKPOINT, path=str(path), epoch=epoch, step_in_epoch=step_in_epoch)


def summarize(history: list[dict], cfg: dict, trainable: int) -> dict:
    """Mean and std over the last ``report_last`` epochs (the papers' reporting), or
    the epoch with the best holdout top-1 (``select = "holdout"``)."""
    last = history[-cfg["report_last"]:]
    scored = [h for h in history if h.get("holdout_top1") is not None]
    if cfg.get("select") == "holdout" and scored:
        last = [max(scored, key=lambda h: h["holdout_top1"])]
    rates = [h["images_per_s"] for h in history if "images_per_s" in h]
    out = {"epochs": len(history), "last_n": len(last), "trainable_params": trainable,
           "skipped_images": sum(h["skipped"] for h in history),
           "images_per_s": round(statistics.fmean(rates), 2) if rates else None}
    out["eval_images"] = history[-1].get("scored") if history else None  # what top-1 is over
    out["eval_skipped"] = history[-1].get("eval_skipped") if history else None
    for key in ("top1", "top5", "val_loss", "train_loss"):
        values = [h[key] for h in last if h.get(key) is not None]
        out[f"{key}_mean"] = statistics.fmean(values) if values else None
        out[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else None  # one value has no spread
    out["best_top1"] = max((h["top1"] for h in history), default=None)
    if scored:
        out["holdout_top1"] = last[-1].get("holdout_top1")
        out["selected_epoch"] = last[-1]["epoch"] if cfg.get("select") == "holdout" else None
    out["config"] = cfg
    return out


def get_args_parser():
    return runner_args_parser("Train a ResNet student or adapt CLIP.")


def main(args) -> int:
    return run_main(args, run_training)


if __name__ == "__main__":
    raise SystemExit(main(get_args_parser().parse_args()))
