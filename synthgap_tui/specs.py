"""Experiment specs: TOML parsed, validated and expanded into runs.

A spec has ``[experiment]``, ``[datasets]`` and ``[runs.NAME]`` tables (see
README). Lists under ``[runs.NAME.sweep]`` expand into one run per
combination. The fields of each kind, their defaults and which of them name
a dataset or another run come from the registry (``runners/kinds/``); this
module only parses, expands sweeps and links references into dependency
edges. Every error names the file, the run and the field and says what is
allowed.
"""

from __future__ import annotations

import itertools
import re
import tomllib
from dataclasses import dataclass, field
from graphlib import CycleError, TopologicalSorter
from pathlib import Path
from typing import Any

from runners import kinds
from runners.kinds import COMMON, Field, Kind, Ref
from synthgap_tui.errors import SpecError

RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
DATASET_FIELDS = {"path": Field(str), "train": Field(str), "val": Field(str), "notes": Field(str)}


def fields_of(kind: Kind) -> dict[str, Field]:
    """Every field a run of this kind may set."""
    return {**COMMON, **kind.fields}


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


def override_value(raw: str):
    """A ``--set`` value read as TOML (0.05, true, [1, 2], "text"); a bare word is text."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def apply_overrides(text: str, sets: list[str], source: str = "<spec>") -> str:
    """The spec with each ``PATH=VALUE`` of ``sets`` written in (``runs.base.lr=0.05``,
    ``defaults.epochs=10``), comments and layout kept (tomlkit), as Hydra overrides a config."""
    import tomlkit

    doc = tomlkit.parse(text)
    for item in sets:
        path, sep, raw = item.partition("=")
        keys = [k for k in path.strip().split(".") if k]
        if not sep or not keys:
            raise SpecError([f"{source}: --set {item!r}: write PATH=VALUE, e.g. runs.base.lr=0.05"])
        table = doc
        for key in keys[:-1]:
            if key not in table:
                table[key] = tomlkit.table()
            table = table[key]
            if not isinstance(table, dict):
                raise SpecError([f"{source}: --set {item!r}: {key} is a value, not a table"])
        table[keys[-1]] = override_value(raw.strip())
    return tomlkit.dumps(doc)


def parse_spec(text: str, source: str = "<spec>", base_dir: Path | None = None) -> Experiment:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SpecError([f"{source}: not valid TOML: {e}"]) from None
    return validate(data, source, base_dir or Path.cwd(), text)


_WHERE = re.compile(r"\[(?P<table>[A-Za-z0-9_.-]+?)(?:@[^\]]*)?\](?P<sweep>\.sweep)?(?: field '(?P<key>[^'\[]+))?")


def line_of(text: str, where: str) -> int | None:
    """The line of the TOML ``text`` a problem's ``where`` ("[runs.a] field 'lr'",
    "[runs.a@seed=1].sweep field 'lr'", "[defaults] field 'x'") points at: the key
    in its table (or the run's sweep table, or [defaults]), else the table's header."""
    m = _WHERE.match(where)
    if not m:
        return None
    table, key = m["table"], m["key"]
    tables = [table + ".sweep", table] if m["sweep"] else [table, table + ".sweep", "defaults"]
    lines = text.splitlines()
    current, found = "", {}
    for n, line in enumerate(lines, start=1):
        header = re.match(r"\s*\[\s*([^\]\s]+)\s*\]\s*(#.*)?$", line)
        if header:
            current = header[1]
            found.setdefault((current, None), n)
            continue
        entry = re.match(r"\s*([A-Za-z0-9_\"'.-]+)\s*=", line)
        if entry:
            name = entry[1].strip("\"'")
            found.setdefault((current, name), n)
            if "." in name:  # a dotted key: [runs] a.kind = ...
                head, _, last = name.rpartition(".")
                found.setdefault((f"{current}.{head}".strip("."), last), n)
    for t in tables:
        if key and (t, key) in found:
            return found[t, key]
    return found.get((table, None))


def validate(data: dict, source: str, base_dir: Path, text: str = "") -> Experiment:
    problems: list[str] = []

    def bad(where: str, msg: str) -> None:
        line = line_of(text, where) if text else None
        problem = f"{source}{f':{line}' if line else ''}: {where}: {msg}"
        if problem not in problems:  # once per problem, not once per sweep member
            problems.append(problem)

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
    all_fields = {name: f for k in reversed(list(kinds.all_kinds().values())) for name, f in fields_of(k).items()}
    for key in list(defaults):
        if key not in all_fields:
            hint = _close(key, all_fields)
            bad(f"[defaults] field '{key}'", "is not a field of any run kind" + (f" (did you mean '{hint}'?)"
                                                                                   if hint else ""))
            defaults.pop(key)
        elif (p := all_fields[key].problem(defaults[key])):
            bad(f"[defaults] field '{key}'", p)  # said once here, not again for every run it reaches
            defaults.pop(key)
    raw_runs = data.get("runs", {})
    if not isinstance(raw_runs, dict) or not raw_runs:
        bad("[runs]", "needs at least one [runs.NAME] table with a kind, e.g. kind = \"train\"")
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

    expanded = _fan_out(expanded)
    _link(expanded, datasets, bad, declared=set(raw_runs))
    if problems:
        raise SpecError(problems)
    _resolve_paths(expanded, base_dir)
    ordered = _dependency_order(expanded, bad)
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
    known = ", ".join(map(repr, kinds.all_kinds()))
    name = table.get("kind")
    kind = kinds.all_kinds().get(name) if isinstance(name, str) else None
    if kind is None:
        hint = _close(name, kinds.all_kinds()) if isinstance(name, str) else None
        bad(f"{where} field 'kind'", f"is missing; allowed: {known}" if name is None else
            f"is {name!r}" + (f" (did you mean {hint!r}?)" if hint else "") + f"; allowed: {known}")
        return []
    allowed = fields_of(kind)
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
        if key in ("sweep", "kind"):
            continue
        if key not in allowed:
            hint = _close(key, allowed)
            bad(f"{where} field '{key}'", f"is not a field of a {kind.name} run"
                + (f" (did you mean '{hint}'?)" if hint else f"; allowed: {', '.join(sorted(allowed))}"))
            ok = False
            continue
        if (p := allowed[key].problem(value)):
            bad(f"{where} field '{key}'", p)
            ok = False
        params[key] = value
    for key, values in sweep.items():
        if key not in allowed:
            bad(f"{where}.sweep field '{key}'", f"is not a field of a {kind.name} run that can be swept")
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
    if not ok:  # the spec fails; the run is still linked so that its references are checked too
        return [ExpandedRun(name=base, base=base, kind=kind.name, params=params, sweep_values={})]
    keys = list(sweep)
    runs = []
    for combo in itertools.product(*(sweep[k] for k in keys)) if keys else [()]:
        values = dict(zip(keys, combo))
        name = _sweep_name(base, values)
        merged = {**params, **values}
        problems = kind.problems(merged)
        for field_name, msg in problems:  # the same problem in every member: named once, by the sweep
            shared = all((field_name, msg) in kind.problems({**params, **dict(zip(keys, c))})
                         for c in itertools.product(*(sweep[k] for k in keys)))
            bad(f"[runs.{base if shared else name}]" + (f" field '{field_name}'" if field_name else ""), msg)
        if not problems:
            runs.append(ExpandedRun(name=name, base=base, kind=kind.name, params=merged, sweep_values=values))
    return runs


def _close(key: str, allowed) -> str | None:
    import difflib

    hits = difflib.get_close_matches(key, list(allowed), n=1, cutoff=0.75)
    return hits[0] if hits else None


def ref_values(run: ExpandedRun) -> list[tuple[str, str, Ref | None]]:
    """(field path, referenced name, what it may name) of a run's parameters;
    ``depends_on`` entries have no Ref: they only order runs."""
    fields = kinds.get(run.kind).fields
    out: list[tuple[str, str, Ref | None]] = []
    for key, f in fields.items():
        value = run.params.get(key)
        if f.ref and isinstance(value, str):
            out.append((key, value, f.ref))
        for item_key, ref in f.item_refs.items():
            out += [(f"{key}[{i}].{item_key}", item[item_key], ref) for i, item in enumerate(value or [])]
    out += [(f"depends_on[{i}]", d, None) for i, d in enumerate(run.params.get("depends_on", []))]
    return out


def looks_like_path(value: str) -> bool:
    return "/" in value or value.startswith(("~", ".")) or value.endswith((".pt", ".pth", ".safetensors"))


def names_a_path(f: Field, value: str) -> bool:
    if f.path == "local":  # a hub id ("org/model") unless it is written as a path
        return value.startswith(("/", "./", "../", "~"))
    return bool(f.path) and looks_like_path(value)


def path_fields(run: ExpandedRun) -> list[str]:
    """The run's fields whose value is a file or folder path (not a run or dataset name)."""
    return [key for key, f in kinds.get(run.kind).fields.items() if isinstance(run.params.get(key), str)
            and (names_a_path(f, run.params[key]) or run.refs.get(key, ("",))[0] == "path")]


def _resolve_paths(runs: list[ExpandedRun], base_dir: Path) -> None:
    """Relative paths are relative to the spec file, as dataset paths are: a runner
    works in its run directory, where they would mean something else."""
    for run in runs:
        for key in path_fields(run):
            run.params[key] = str((base_dir / Path(run.params[key]).expanduser()).resolve())
            if key in run.refs:
                run.refs[key] = ("path", run.params[key])


def _link(runs: list[ExpandedRun], datasets: dict, bad, declared: set[str] = frozenset()) -> None:
    """Resolve references; one to a run that failed validation (in ``declared`` but
    not in ``runs``) is left unsaid: that run's own problems are."""
    by_base: dict[str, list[ExpandedRun]] = {}
    for r in runs:
        by_base.setdefault(r.base, []).append(r)
    for run in runs:
        for path, value, ref in ref_values(run):
            where = f"[runs.{run.name}] field '{path.split('[')[0]}'"
            if value in by_base:
                target = _match_sweep(run, by_base[value])
                if target is None:
                    n = len(by_base[value])
                    bad(where, f"refers to '{value}', a sweep of {n} runs, and none or several share "
                        f"this run's sweep values; refer to a run that is not swept")
                    continue
                if target.name == run.name:
                    bad(where, "refers to the run itself")
                    continue
                if ref is not None:
                    produced = kinds.get(target.kind).artifacts
                    if ref.artifact not in produced:
                        bad(where, f"names run '{value}', a {target.kind} run, which produces "
                            f"{', '.join(produced) or 'nothing'}; allowed here: {ref.accepts()}")
                        continue
                    run.refs[path] = ("run", target.name)
                run.deps.append(target.name)
            elif value in declared:
                continue
            elif ref is None:
                hint = _close(value, by_base)
                bad(where, f"names '{value}', which is not a run of this spec"
                    + (f" (did you mean '{hint}'?)" if hint else "") + f"; runs: {', '.join(by_base)}")
            elif value in datasets and ref.split:
                run.refs[path] = ("dataset", value)
            elif ref.path and looks_like_path(value):
                run.refs[path] = ("path", value)
            else:
                options = ", ".join(list(datasets) + list(by_base)) or "none defined"
                hint = _close(value, list(datasets) + list(by_base))
                bad(where, f"names '{value}', which is neither a dataset nor a run of this spec"
                    + (f" (did you mean '{hint}'?)" if hint else "") + f" (allowed: {ref.accepts()}); known: {options}")
        run.deps = list(dict.fromkeys(run.deps))


def _sweep_name(base: str, values: dict) -> str:
    """``base@key=value,key=value``: no [ ] * ? for a shell to glob, so names are typed as they are."""
    return base + (SWEEP_SEP + ",".join(f"{k}={v}" for k, v in values.items()) if values else "")


SWEEP_SEP = "@"
_OLD_SWEEP_NAME = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_.-]*)\[(.+)\]$")


def current_name(name: str) -> str:
    """A sweep member's name as this version writes it: an older workspace's
    ``base[k=v]`` becomes ``base@k=v`` (``db rebuild`` migrates them)."""
    m = _OLD_SWEEP_NAME.match(name)
    return f"{m[1]}{SWEEP_SEP}{m[2]}" if m else name


def _fan_out(runs: list[ExpandedRun]) -> list[ExpandedRun]:
    """A run that names a swept run becomes one run per member of that sweep
    that agrees with its own sweep values (``train = "gen-guidance"``: one
    training run per guidance scale, named after it). The member's values join
    the run's sweep values, so results group by them and runs that name this
    one in turn match member by member."""
    while True:
        by_base: dict[str, list[ExpandedRun]] = {}
        for r in runs:
            by_base.setdefault(r.base, []).append(r)
        out, changed = [], False
        for run in runs:
            copies = [run]
            for _, value, _ in ref_values(run):
                if value == run.base:
                    continue
                grown = []
                for c in copies:
                    members = [m for m in by_base.get(value, []) if _agrees(c.sweep_values, m.sweep_values)]
                    if len(members) < 2:
                        grown.append(c)
                        continue
                    changed = True
                    grown += [ExpandedRun(name=_sweep_name(c.base, values), base=c.base, kind=c.kind,
                                          params=c.params, sweep_values=values)
                              for m in members for values in [{**c.sweep_values, **m.sweep_values}]]
                copies = grown
            out += copies
        if not changed:
            return out
        runs = out


def _agrees(a: dict, b: dict) -> bool:
    return all(a[k] == b[k] for k in a.keys() & b.keys())


def _match_sweep(run: ExpandedRun, candidates: list[ExpandedRun]) -> ExpandedRun | None:
    if len(candidates) == 1:
        return candidates[0]
    hits = [c for c in candidates if c.sweep_values and all(
        run.sweep_values.get(k) == v for k, v in c.sweep_values.items())]
    return hits[0] if len(hits) == 1 else None


def _dependency_order(runs: list[ExpandedRun], bad) -> list[ExpandedRun]:
    """Runs after the runs they depend on, otherwise in the spec's order."""
    by_name = {r.name: r for r in runs}
    position = {r.name: i for i, r in enumerate(runs)}
    sorter = TopologicalSorter({r.name: r.deps for r in runs})
    try:
        sorter.prepare()
    except CycleError as e:
        cycle = list(reversed(e.args[1]))
        bad("[runs]", f"dependency cycle: {' -> '.join(cycle)}")
        return []
    order = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready(), key=position.__getitem__)
        order += ready
        sorter.done(*ready)
    return [by_name[n] for n in order]
