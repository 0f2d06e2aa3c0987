"""Experiment specs: TOML parsed, validated and expanded into runs.

A spec has ``[experiment]``, ``[datasets]`` and ``[runs.NAME]`` tables (see
README). Lists under ``[runs.NAME.sweep]`` expand into one run per
combination. A run refers to another run by name in ``init_from``, ``train``,
``eval``, ``source``, ``mix`` and ``stages``; those references become
dependency edges. Every error names the file, the run and the field and says
what is allowed. Defaults of kind-specific fields live in the runners, which
record the full configuration they used.
"""

from __future__ import annotations

import itertools
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from runners.archs import ARCHS, num_layers

KINDS = ("train", "generate", "train-generator")
RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class SpecError(Exception):
    """A spec problem; ``str()`` is the message to show, one problem per line."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class F:
    """One allowed field: its type, and optionally choices or a numeric range."""

    type: type | tuple[type, ...]
    choices: tuple | None = None
    min: float | None = None
    max: float | None = None
    min_open: bool = False  # min is exclusive
    check: Callable[[Any], str | None] | None = None  # returns a problem or None
    help: str = ""

    def problem(self, value: Any) -> str | None:
        types = self.type if isinstance(self.type, tuple) else (self.type,)
        if float in types and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and bool not in types:
            return f"must be {_type_names(types)}, not a boolean"
        if not isinstance(value, types):
            return f"must be {_type_names(types)}, not {type(value).__name__} {value!r}"
        if self.choices is not None and value not in self.choices:
            return f"is {value!r}; allowed: {', '.join(map(repr, self.choices))}"
        too_low = self.min is not None and (value <= self.min if self.min_open else value < self.min)
        if too_low or (self.max is not None and value > self.max):
            return f"is {value}; must be {self._range()}"
        return self.check(value) if self.check else None

    def _range(self) -> str:
        parts = []
        if self.min is not None:
            parts.append(f"> {self.min}" if self.min_open else f">= {self.min}")
        if self.max is not None:
            parts.append(f"<= {self.max}")
        return " and ".join(parts)


def _type_names(types: tuple) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
             list: "a list", dict: "a table"}
    return " or ".join(names.get(t, t.__name__) for t in types)


def _shard(value: str) -> str | None:
    m = re.fullmatch(r"(\d+)/(\d+)", value)
    if not m or not int(m.group(1)) < int(m.group(2)):
        return "must look like 'i/n' with 0 <= i < n, e.g. '0/4'"
    return None


def _stages(value: list) -> str | None:
    if not value or not all(isinstance(s, dict) for s in value):
        return "must be a non-empty list of tables like { train = \"gen\", epochs = 10 }"
    allowed = {"train", "epochs", "lr", "mixup", "reinit_classifier", "fraction", "augment"}
    for i, stage in enumerate(value):
        unknown = set(stage) - allowed
        if unknown:
            return f"stage {i + 1} has unknown key(s) {sorted(unknown)}; allowed: {sorted(allowed)}"
        if "train" not in stage:
            return f"stage {i + 1} needs 'train' (a dataset or a generate run)"
    return None


def _mix(value: list) -> str | None:
    if not value or not all(isinstance(m, dict) and isinstance(m.get("data"), str) for m in value):
        return "must be a non-empty list of tables like { data = \"real\", weight = 0.5 }"
    for m in value:
        if set(m) - {"data", "weight"} or not isinstance(m.get("weight", 1.0), (int, float)) \
                or m.get("weight", 1.0) <= 0:
            return "each entry takes 'data' and a positive 'weight', nothing else"
    return None


AUGMENTS = ("none", "pytorch-example", "autoaugment", "augmix", "dino", "pixmix")
SCHEDULERS = ("default", "ddim", "dpm-solver++", "euler")

COMMON = {
    "kind": F(str, choices=KINDS),
    "gpus": F(int, min=0, max=64, help="GPUs per run; 0 runs on the CPU; >1 uses torchrun"),
    "depends_on": F(list, help="names of runs that must finish first"),
    "seed": F(int, min=0),
    "notes": F(str),
}
TRAIN = {
    "arch": F(str, choices=ARCHS),
    "small_input": F(bool, help="3x3 stem without max-pool, for 32x32 images"),
    "width": F(int, min=4, max=256, help="base channels (64 = torchvision's ResNets)"),
    "weights": F(str, help="a local file of torchvision ResNet weights to start from"),
    "recipe": F(str, choices=("fitymi", "plain")),
    "train": F(str, help="a dataset or a generate run"),
    "eval": F(str, help="a dataset with a val split"),
    "mix": F(list, check=_mix),
    "stages": F(list, check=_stages),
    "init_from": F(str, help="a run name or a checkpoint path"),
    "freeze_layers": F(int, min=0),
    "frozen_bn": F(str, choices=("frozen", "train")),
    "reinit": F(bool),
    "fraction": F(float, min=0, max=1, min_open=True),
    "epochs": F(int, min=1),
    "batch_size": F(int, min=1),
    "lr": F(float, min=0, min_open=True),
    "warmup_epochs": F(int, min=0),
    "min_lr": F(float, min=0),
    "weight_decay": F(float, min=0),
    "momentum": F(float, min=0, max=1),
    "label_smoothing": F(float, min=0, max=1),
    "tau": F(float, min=0, help="cosine classifier temperature; 0 = plain linear layer"),
    "augment": F(str, choices=AUGMENTS),
    "pixmix_dir": F(str),
    "local_crops": F(int, min=0, max=32),
    "image_size": F(int, min=8),
    "local_size": F(int, min=8),
    "normalization": F(str, choices=("imagenet", "exact")),
    "bn_eval_mode": F(str, choices=("eval", "train")),
    "mixup": F(float, min=0),
    "report_last": F(int, min=1),
    "workers": F(int, min=0),
    "amp": F(bool),
    "channels_last": F(bool),
    "compile": F(bool),
    "log_every": F(int, min=1),
    "max_steps_per_epoch": F(int, min=1, help="cap steps per epoch (smoke tests)"),
}
GENERATE = {
    "model": F(str, help="a hub id or a local model folder"),
    "mode": F(str, choices=("txt2img", "img2img", "variation")),
    "classes": F(str, help="'imagenet100' or a JSON/CSV class file"),
    "prompt": F(str),
    "negative_prompt": F(str),
    "guidance_scale": F(float, min=0),
    "steps": F(int, min=1, max=1000),
    "width": F(int, min=8),
    "height": F(int, min=8),
    "images_per_class": F(int, min=1),
    "scheduler": F(str, choices=SCHEDULERS),
    "batch_size": F(int, min=1),
    "format": F(str, choices=("jpg", "png")),
    "source": F(str, help="the real dataset img2img/variation start from"),
    "strength": F(float, min=0, max=1, min_open=True),
    "shard": F(str, check=_shard),
    "compile": F(bool),
}
TRAIN_GENERATOR = {
    "data": F(str, help="a dataset with a train split"),
    "steps": F(int, min=1),
    "batch_size": F(int, min=1),
    "lr": F(float, min=0, min_open=True),
    "image_size": F(int, min=8),
    "channels": F(list, check=lambda v: None if v and all(isinstance(c, int) and c % 8 == 0 for c in v)
                  else "must be a list of widths divisible by 8, e.g. [32, 64, 64]"),
    "guidance_scale": F(float, min=0),
    "sample_steps": F(int, min=1),
    "checkpoint_every": F(int, min=1),
}
KIND_FIELDS = {"train": TRAIN, "generate": GENERATE, "train-generator": TRAIN_GENERATOR}
# Fields whose string values may name another run (and then are dependencies).
REF_FIELDS = ("init_from", "train", "eval", "source", "data")
DATASET_FIELDS = {"path": F(str), "train": F(str), "val": F(str), "notes": F(str)}


@dataclass
class ExpandedRun:
    name: str  # unique within the experiment: base name plus sweep values
    base: str  # the [runs.NAME] it came from
    kind: str
    params: dict
    sweep_values: dict = field(default_factory=dict)
    deps: list[str] = field(default_factory=list)  # expanded names
    refs: dict = field(default_factory=dict)  # field path -> ("run", name) | ("dataset", name)


@dataclass
class Experiment:
    name: str
    source: str  # file name, for messages
    datasets: dict[str, dict]
    runs: list[ExpandedRun]  # dependency order
    description: str = ""

    def run(self, name: str) -> ExpandedRun:
        return next(r for r in self.runs if r.name == name)


def load_spec(path: str | Path) -> Experiment:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise SpecError([f"{path}: cannot read: {e.strerror}"]) from None
    return parse_spec(text, source=str(path), base_dir=path.parent)


def parse_spec(text: str, source: str = "<spec>", base_dir: Path | None = None) -> Experiment:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SpecError([f"{source}: not valid TOML: {e}"]) from None
    return validate(data, source, base_dir or Path.cwd())


def validate(data: dict, source: str, base_dir: Path) -> Experiment:
    problems: list[str] = []

    def bad(where: str, msg: str) -> None:
        problems.append(f"{source}: {where}: {msg}")

    unknown = set(data) - {"experiment", "datasets", "runs", "defaults"}
    if unknown:
        bad("top level", f"unknown table(s) {sorted(unknown)}; allowed: experiment, datasets, runs, defaults")
    exp = data.get("experiment", {})
    if not isinstance(exp, dict) or not isinstance(exp.get("name"), str) or not exp.get("name").strip():
        bad("[experiment]", "needs name = \"…\"")
        exp = exp if isinstance(exp, dict) else {}
    elif set(exp) - {"name", "description"}:
        bad("[experiment]", f"unknown key(s) {sorted(set(exp) - {'name', 'description'})}; "
            "allowed: name, description")

    datasets = _validate_datasets(data.get("datasets", {}), base_dir, bad)
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        bad("[defaults]", "must be a table of run fields applied to every run that accepts them")
        defaults = {}
    all_fields = set(COMMON).union(*KIND_FIELDS.values()) - {"kind"}
    for key in set(defaults) - all_fields:
        bad(f"[defaults] field '{key}'", "is not a field of any run kind")
    raw_runs = data.get("runs", {})
    if not isinstance(raw_runs, dict) or not raw_runs:
        bad("[runs]", "needs at least one [runs.NAME] table with kind = \"train\" or \"generate\"")
        raw_runs = {}

    expanded: list[ExpandedRun] = []
    for base, table in raw_runs.items():
        where = f"[runs.{base}]"
        if not RUN_NAME.match(base):
            bad(where, "run names use letters, digits, '-', '_' and '.'")
            continue
        if not isinstance(table, dict):
            bad(where, "must be a table")
            continue
        if base in datasets:
            bad(where, f"'{base}' is also a dataset name; references would be ambiguous, rename one")
            continue
        expanded.extend(_validate_run(base, table, defaults, bad))
    if problems:
        raise SpecError(problems)

    _link(expanded, datasets, bad)
    if problems:
        raise SpecError(problems)
    ordered = _toposort(expanded, bad)
    if problems:
        raise SpecError(problems)
    return Experiment(name=exp["name"].strip(), source=source, datasets=datasets, runs=ordered,
                      description=exp.get("description", ""))


def _validate_datasets(raw: Any, base_dir: Path, bad) -> dict[str, dict]:
    out = {}
    if not isinstance(raw, dict):
        bad("[datasets]", "must be a table of name = { path = \"…\" }")
        return out
    for name, ds in raw.items():
        where = f"[datasets.{name}]"
        if isinstance(ds, str):
            ds = {"path": ds}
        if not isinstance(ds, dict) or not isinstance(ds.get("path"), str):
            bad(where, "needs path = \"/folder/with/train/and/val\"")
            continue
        for key, value in ds.items():
            spec = DATASET_FIELDS.get(key)
            if spec is None:
                bad(where, f"unknown key {key!r}; allowed: {', '.join(DATASET_FIELDS)}")
            elif (p := spec.problem(value)):
                bad(f"{where} field '{key}'", p)
        path = Path(ds["path"]).expanduser()
        out[name] = {**ds, "path": str(path if path.is_absolute() else (base_dir / path).resolve())}
    return out


def _validate_run(base: str, table: dict, defaults: dict, bad) -> list[ExpandedRun]:
    where = f"[runs.{base}]"
    kind = table.get("kind")
    if kind not in KINDS:
        bad(f"{where} field 'kind'", f"is {kind!r}; allowed: {', '.join(map(repr, KINDS))}"
            if kind is not None else f"is missing; allowed: {', '.join(map(repr, KINDS))}")
        return []
    allowed = {**COMMON, **KIND_FIELDS[kind]}
    # [defaults] apply to every run that has the field; the run's own value wins.
    swept = table["sweep"] if isinstance(table.get("sweep"), dict) else {}
    table = {**{k: v for k, v in defaults.items() if k in allowed and k not in swept}, **table}
    params = {}
    sweep = table.get("sweep", {})
    if not isinstance(sweep, dict):
        bad(f"{where}.sweep", "must be a table of field = [values]")
        sweep = {}
    ok = True
    for key, value in table.items():
        if key == "sweep":
            continue
        if key not in allowed:
            hint = _close(key, allowed)
            bad(f"{where} field '{key}'", f"is not a field of a {kind} run"
                + (f" (did you mean '{hint}'?)" if hint else f"; allowed: {', '.join(sorted(allowed))}"))
            ok = False
            continue
        if (p := allowed[key].problem(value)):
            bad(f"{where} field '{key}'", p)
            ok = False
        params[key] = value
    for key, values in sweep.items():
        if key not in allowed or key == "kind":
            bad(f"{where}.sweep field '{key}'", f"is not a field of a {kind} run that can be swept")
            ok = False
        elif not isinstance(values, list) or not values:
            bad(f"{where}.sweep field '{key}'", "must be a non-empty list of values")
            ok = False
        elif key in table:
            bad(f"{where}.sweep field '{key}'", "is also set as a plain field; keep one of them")
            ok = False
        else:
            for v in values:
                if (p := allowed[key].problem(v)):
                    bad(f"{where}.sweep field '{key}'", f"value {v!r} {p}")
                    ok = False
                    break
    if not ok:
        return []
    keys = list(sweep)
    runs = []
    for combo in itertools.product(*(sweep[k] for k in keys)) if keys else [()]:
        values = dict(zip(keys, combo))
        name = base + ("[" + ",".join(f"{k}={v}" for k, v in values.items()) + "]" if keys else "")
        merged = {**params, **values}
        if kind == "train" and not _train_ok(name, merged, bad):
            continue
        runs.append(ExpandedRun(name=name, base=base, kind=kind, params=merged, sweep_values=values))
    return runs


def _train_ok(name: str, p: dict, bad) -> bool:
    where = f"[runs.{name}]"
    arch = p.get("arch", "resnet50")
    n = p.get("freeze_layers", 0)
    top = num_layers(arch) - 1
    ok = True
    if n > top:
        bad(f"{where} field 'freeze_layers'", f"is {n}; a {arch} has {top + 1} layers, so 0..{top} "
            f"({top} = linear probe)")
        ok = False
    if n > 0 and "init_from" not in p:
        bad(f"{where} field 'freeze_layers'", "needs init_from (the run or checkpoint to take the "
            "frozen layers from)")
        ok = False
    sources = [k for k in ("train", "mix", "stages") if k in p]
    if len(sources) != 1:
        bad(where, "needs exactly one of train, mix or stages" + (f" (has {', '.join(sources)})" if sources else ""))
        ok = False
    if "eval" not in p:
        bad(where, "needs eval (the real dataset to evaluate on)")
        ok = False
    if p.get("augment") == "pixmix" and "pixmix_dir" not in p:
        bad(f"{where} field 'augment'", "'pixmix' needs pixmix_dir (a folder of mixing images)")
        ok = False
    return ok


def _close(key: str, allowed) -> str | None:
    import difflib

    hits = difflib.get_close_matches(key, list(allowed), n=1, cutoff=0.75)
    return hits[0] if hits else None


def _ref_values(run: ExpandedRun) -> list[tuple[str, str]]:
    """(field path, referenced name) pairs of a run's parameters."""
    p = run.params
    out = [(k, p[k]) for k in REF_FIELDS if isinstance(p.get(k), str)]
    out += [(f"mix[{i}].data", m["data"]) for i, m in enumerate(p.get("mix", []))]
    out += [(f"stages[{i}].train", s["train"]) for i, s in enumerate(p.get("stages", []))]
    out += [(f"depends_on[{i}]", d) for i, d in enumerate(p.get("depends_on", []))]
    return out


def _link(runs: list[ExpandedRun], datasets: dict, bad) -> None:
    by_base: dict[str, list[ExpandedRun]] = {}
    for r in runs:
        by_base.setdefault(r.base, []).append(r)
    for run in runs:
        for path, ref in _ref_values(run):
            where = f"[runs.{run.name}] field '{path.split('[')[0]}'"
            is_path = path.startswith("init_from") and ("/" in ref or ref.endswith(".pt"))
            if ref in by_base:
                target = _match_sweep(run, by_base[ref])
                if target is None:
                    n = len(by_base[ref])
                    bad(where, f"refers to '{ref}', a sweep of {n} runs, and none or several share "
                        f"this run's sweep values; refer to a run that is not swept")
                    continue
                if target.name == run.name:
                    bad(where, "refers to the run itself")
                    continue
                run.deps.append(target.name)
                run.refs[path] = ("run", target.name)
            elif path.startswith("depends_on"):
                bad(where, f"names '{ref}', which is not a run of this spec; runs: {', '.join(by_base)}")
            elif is_path:
                run.refs[path] = ("path", ref)
            elif ref in datasets and not path.startswith("init_from"):
                run.refs[path] = ("dataset", ref)
            else:
                options = ", ".join(list(datasets) + list(by_base)) or "none defined"
                bad(where, f"names '{ref}', which is neither a dataset nor a run of this spec; "
                    f"known: {options}")
        run.deps = list(dict.fromkeys(run.deps))


def _match_sweep(run: ExpandedRun, candidates: list[ExpandedRun]) -> ExpandedRun | None:
    if len(candidates) == 1:
        return candidates[0]
    hits = [c for c in candidates if c.sweep_values and all(
        run.sweep_values.get(k) == v for k, v in c.sweep_values.items())]
    return hits[0] if len(hits) == 1 else None


def _toposort(runs: list[ExpandedRun], bad) -> list[ExpandedRun]:
    by_name = {r.name: r for r in runs}
    order, state = [], {}

    def visit(name: str, trail: list[str]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "active":
            cycle = trail[trail.index(name):] + [name]
            bad("[runs]", f"dependency cycle: {' -> '.join(cycle)}")
            raise _Cycle
        state[name] = "active"
        for dep in by_name[name].deps:
            visit(dep, trail + [name])
        state[name] = "done"
        order.append(by_name[name])

    try:
        for r in runs:
            visit(r.name, [])
    except _Cycle:
        return []
    return order


class _Cycle(Exception):
    pass
