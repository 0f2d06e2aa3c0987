"""What a run kind declares (standard library only).

A kind is one ``Kind`` value in one module of this package: its runner, its
fields, what its references resolve to, what it produces, its checks, the
metrics its tables and charts show and how long it is expected to take.
Spec validation, the composer, the result tables, the run screen, README's
field reference and the runners' own defaults all read it from here.
"""

from __future__ import annotations

import difflib
import json
import statistics
from dataclasses import dataclass, field
from typing import Any, Callable

# One problem of a run's parameters: (field name or None for the run, message).
Problem = tuple[str | None, str]


@dataclass(frozen=True)
class Ref:
    """A field whose string names a dataset, another run's artifact or a path.

    The resolved folder or file is written to spec.json under ``to``: a
    dataset resolves to its ``split`` folder, a run to the path its runner
    reported in an ``artifact`` event named ``artifact`` (read when the run
    starts), a path to itself made absolute.
    """

    to: str
    split: str | None = "train"  # None: a dataset is not accepted here
    artifact: str | None = None  # None: a run is not accepted here
    path: str | None = None  # "file" or "dir": a path is accepted (must exist at submit)

    def accepts(self) -> str:
        parts = ([f"a dataset (its {self.split} split)"] if self.split else []) \
            + ([f"a run that produces a {self.artifact}"] if self.artifact else []) \
            + ([f"a {'file' if self.path == 'file' else 'folder'} path"] if self.path else [])
        return " or ".join(parts)


@dataclass(frozen=True)
class Field:
    """One field of a run: its type, default, allowed values and one line of help."""

    type: type | tuple[type, ...]
    default: Any = None
    help: str = ""
    choices: tuple | None = None
    min: float | None = None
    max: float | None = None
    min_open: bool = False  # min is exclusive
    check: Callable[[Any], str | None] | None = None  # returns a problem or None
    ref: Ref | None = None  # the value names a dataset, a run or a path
    item_refs: dict[str, Ref] = field(default_factory=dict)  # list of tables: key -> Ref
    # "file" or "dir": must exist when the run is submitted; "local": a hub id or tag, or
    # (starting with /, ./, ../ or ~) a local file or folder that must exist
    path: str | None = None

    def problem(self, value: Any) -> str | None:
        types = self.type if isinstance(self.type, tuple) else (self.type,)
        if float in types and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and bool not in types:
            return f"must be {_type_names(types)}, not a boolean"
        if not isinstance(value, types):
            return f"must be {_type_names(types)}, not {type(value).__name__} {value!r}"
        if self.choices is not None and value not in self.choices:
            close = difflib.get_close_matches(str(value), [str(c) for c in self.choices], n=1, cutoff=0.75)
            return f"is {value!r}" + (f" (did you mean {close[0]!r}?)" if close else "") \
                + f"; allowed: {', '.join(map(repr, self.choices))}"
        too_low = self.min is not None and (value <= self.min if self.min_open else value < self.min)
        if too_low or (self.max is not None and value > self.max):
            return f"is {value}; must be {self.range()}"
        return self.check(value) if self.check else None

    def range(self) -> str:
        parts = []
        if self.min is not None:
            parts.append(f"> {self.min}" if self.min_open else f">= {self.min}")
        if self.max is not None:
            parts.append(f"<= {self.max}")
        return " and ".join(parts)

    def allowed(self) -> str:
        """What the field takes, in words (README's field reference, tooltips)."""
        if self.choices:
            return ", ".join(map(repr, self.choices))
        text = _type_names(self.type if isinstance(self.type, tuple) else (self.type,))
        if self.ref:
            text = self.ref.accepts()
        elif self.item_refs:
            text += " of tables"
        if self.range():
            text += f", {self.range()}"
        return text


def _type_names(types: tuple) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
             list: "a list", dict: "a table"}
    return " or ".join(names.get(t, t.__name__) for t in types)


@dataclass(frozen=True)
class Metric:
    """A summary value for result tables: ``KEY_mean`` ± ``KEY_std`` if the summary
    has them, else ``KEY`` itself."""

    key: str
    label: str
    digits: int = 1

    def value(self, summary: dict) -> tuple[float | None, float | None]:
        if summary.get(f"{self.key}_mean") is not None:
            return summary[f"{self.key}_mean"], summary.get(f"{self.key}_std")
        value = summary.get(self.key)
        return (value, None) if isinstance(value, (int, float)) and not isinstance(value, bool) else (None, None)


@dataclass(frozen=True)
class Chart:
    """A live chart of the run screen: ``series`` (event field, label) against ``x``
    of the events of type ``event``; ``gpu_memory`` adds the GPU memory samples."""

    title: str
    event: str
    x: str
    series: tuple[tuple[str, str], ...]
    unit: str = ""
    gpu_memory: bool = False


def check_templates(value: list) -> str | None:
    """Prompt templates of a class: each names it with {name} (or {a_name}: with its article)."""
    if not value or not all(isinstance(t, str) and ("{name}" in t or "{a_name}" in t) for t in value):
        return "must be a non-empty list of strings, each with {name} or {a_name}"
    return None


# Built-in class lists by name and their sizes (runners/classes.py); any other value is a class file.
CLASS_LISTS = {"imagenet": 1000, "imagenet100": 100, "aircraft": 100, "cars": 196, "dtd": 47, "flowers102": 102}


def class_count(source: str) -> int | None:
    """How many classes a built-in list or a class file holds, read cheaply (None: unknown)."""
    if source in CLASS_LISTS:
        return CLASS_LISTS[source]
    try:
        text = open(source, encoding="utf-8").read()
        if source.lower().endswith(".csv"):
            return max(0, len([line for line in text.splitlines() if line.strip()]) - 1)
        data = json.loads(text)
        return len(data.get("classes", []) if isinstance(data, dict) else data)
    except (OSError, ValueError, AttributeError, TypeError):
        return None


def check_class_source(value: str) -> str | None:
    """A built-in list's name, or a path (checked at submit as a file)."""
    if value in CLASS_LISTS or "/" in value or "." in value:
        return None
    return f"is {value!r}: not a built-in class list ({', '.join(CLASS_LISTS)}) nor a file path"


# A run's `slurm` table (over config.toml's [slurm]): what the Slurm launcher
# passes to sbatch through submitit. Named here so specs are checked at submit.
SLURM_OPTIONS = ("partition", "account", "qos", "time", "gpus_per_node", "cpus_per_task", "mem", "constraint",
                 "exclude", "signal_delay_s", "max_requeues", "setup", "sbatch", "array_parallelism")


def _slurm_options(value: dict) -> str | None:
    unknown = sorted(set(value) - set(SLURM_OPTIONS))
    return f"has unknown option(s) {', '.join(unknown)}; known: {', '.join(SLURM_OPTIONS)}" if unknown else None


# Fields every run has, whatever its kind.
COMMON = {
    "gpus": Field(int, 1, "GPUs per run (per node); 0 runs on the CPU; >1 uses torchrun", min=0, max=64),
    "nodes": Field(int, 1, "nodes per run (launcher = \"slurm\"): one torchrun per node", min=1, max=1024),
    "slurm": Field(dict, help="this run's Slurm options over config.toml's [slurm]: " + ", ".join(SLURM_OPTIONS),
                   check=_slurm_options),
    "depends_on": Field(list, help="names of runs that must finish first"),
    "seed": Field(int, 0, "base seed of every random choice of the run", min=0),
    "notes": Field(str, help="free text kept with the run"),
}


def mean_run_seconds(params: dict, finished: list[dict]) -> float | None:
    """The default estimate: the mean wall time of this kind's finished runs."""
    times = [r["ended"] - r["started"] for r in finished if r.get("started") and r.get("ended")]
    return statistics.fmean(times) if times else None


@dataclass(frozen=True)
class Kind:
    name: str
    runner: str  # the module run as ``python -m RUNNER --run-dir DIR``
    help: str
    fields: dict[str, Field]
    artifacts: dict[str, str] = field(default_factory=dict)  # artifact name -> what it is
    metrics: tuple[Metric, ...] = ()
    charts: tuple[Chart, ...] = ()
    check: Callable[[dict], list[Problem]] | None = None  # cross-field checks of a run's params
    defaults_for: Callable[[dict], dict] | None = None  # defaults that depend on the params (recipes)
    # Expected seconds of one run on one device from this kind's finished runs.
    estimate: Callable[[dict, list[dict]], float | None] = mean_run_seconds
    # Expected bytes the run writes (None: unknown); the supervisor holds a run the disk cannot take.
    artifact_bytes: Callable[[dict], int | None] | None = None

    def defaults(self, params: dict | None = None) -> dict:
        out = {k: f.default for k, f in {**COMMON, **self.fields}.items() if f.default is not None}
        if self.defaults_for:
            out.update(self.defaults_for(params or {}))
        return out

    def resolve(self, spec: dict) -> dict:
        """A run's full configuration: the defaults, then what the spec sets."""
        return {**self.defaults(spec), **{k: v for k, v in spec.items() if v is not None}}

    def problems(self, params: dict) -> list[Problem]:
        return self.check(params) if self.check else []
