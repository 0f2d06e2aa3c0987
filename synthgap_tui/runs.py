"""Run lifecycle shared by the CLI and the app: submit, cancel, resume, retry."""

from __future__ import annotations

import copy
import os
import signal
import time
from pathlib import Path

from runners import kinds, protocol
from synthgap_tui import launchers
from synthgap_tui.errors import SpecError, StoreError, UserError
from synthgap_tui.specs import Experiment, path_fields, ref_values
from synthgap_tui.store import RunStore
from synthgap_tui.workspace import Workspace, new_run_id

# In spec.json, where a run's input is another run's artifact: replaced by the
# path that run reported in its `artifact` event when this run starts.
ARTIFACT_KEY = "$artifact"
ATTEMPTS_DIR = "attempts"  # a retried run's earlier attempts, attempts/N/


def dataset_dir(datasets: dict, name: str, split: str) -> str:
    ds = datasets[name]
    return str(Path(ds["path"]) / ds.get(split, split))


def _resolve(exp: Experiment, ids: dict[str, str]) -> tuple[dict[str, dict], list[tuple[str, str, str]]]:
    """Each run's spec.json (its parameters plus what its references name), and
    the local inputs they need as (run name, "file" or "dir", path)."""
    specs, inputs = {}, []
    now = time.time()
    for i, run in enumerate(exp.runs):
        spec = {
            "id": ids[run.name], "name": run.name, "experiment": exp.name, "kind": run.kind,
            # Distinct times in the spec's order: ids are random, and `db rebuild` keeps this order.
            "created": now + i * 1e-6, "gpus_requested": run.params.get("gpus", 1), "sweep": run.sweep_values,
            "spec_file": exp.source, **copy.deepcopy(run.params),
            # Run ids, whether the spec wrote depends_on or a reference implied it.
            "depends_on": [ids[d] for d in run.deps],
        }
        fields = kinds.get(run.kind).fields
        inputs += [(run.name, fields[key].path, spec[key]) for key in path_fields(run) if key not in run.refs]
        for path, _, ref in ref_values(run):
            if ref is None or path not in run.refs:
                continue
            what, name = run.refs[path]
            if what == "dataset":
                value = dataset_dir(exp.datasets, name, ref.split)
                inputs.append((run.name, "dir", value))
            elif what == "path":
                value = str(Path(name).expanduser().resolve())
                inputs.append((run.name, ref.path, value))
            else:
                value = {ARTIFACT_KEY: ref.artifact, "run": ids[name]}
            key, _, item = path.partition("[")
            if item:  # "mix[0].data": the item gets the resolved value
                spec[key][int(item.split("]")[0])][ref.to] = value
            else:
                spec[ref.to] = value
        specs[run.name] = spec
    return specs, inputs


def missing_inputs(inputs: list[tuple[str, str, str]]) -> list[str]:
    """One line per input folder or file that does not exist, naming the runs
    that need it (what runs of the same submission produce is not checked)."""
    needed: dict[str, list[str]] = {}
    for name, what, path in inputs:
        p = Path(path).expanduser()
        exists, noun = {"file": (p.is_file, "file"), "dir": (p.is_dir, "folder")}.get(what, (p.exists, "path"))
        if not exists():
            needed.setdefault(f"{noun} {path}", []).append(name)
    out = []
    for what, names in needed.items():
        shown = ", ".join(names[:2]) + (f" and {len(names) - 2} more" if len(names) > 2 else "")
        out.append(f"{what} does not exist (needed by {shown})")
    return out


def resolve_artifacts(ws: Workspace, spec: dict) -> dict:
    """The spec with each other-run placeholder replaced by the path that run
    reported in its last ``artifact`` event of that name. Raises UserError
    naming the run when there is none."""
    reported: dict[str, dict[str, str]] = {}

    def walk(value):
        if isinstance(value, dict) and ARTIFACT_KEY in value:
            run_id, name = value["run"], value[ARTIFACT_KEY]
            if run_id not in reported:
                reported[run_id] = {e.get("kind"): e.get("path") for e in protocol.read_events(
                    ws.events_path(run_id)) if e["type"] == protocol.ARTIFACT}
            path = reported[run_id].get(name)
            if not path:
                raise UserError(f"run {run_id} reported no '{name}' artifact (it reported "
                                f"{', '.join(map(str, reported[run_id])) or 'none'}); retry it")
            return path
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    return walk(spec)


def plan(exp: Experiment, ws: Workspace, store: RunStore | None = None) -> tuple[dict[str, dict], list[str]]:
    fresh = store.new_ids(len(exp.runs)) if store else [new_run_id() for _ in exp.runs]
    ids = {r.name: run_id for r, run_id in zip(exp.runs, fresh)}
    specs, inputs = _resolve(exp, ids)
    return specs, missing_inputs(inputs) + class_mismatches(specs.values())


def class_mismatches(specs) -> list[str]:
    """Training and evaluation folders (already on disk) whose class folders differ: the
    runner would refuse them after its queue wait; a dry run says so now. One line per pair."""
    out = {}
    for spec in specs:
        train, evaluate = spec.get("train_dir"), spec.get("eval_dir")
        if not (isinstance(train, str) and isinstance(evaluate, str) and os.path.isdir(train)
                and os.path.isdir(evaluate)):
            continue
        a, b = (sorted(d.name for d in Path(p).iterdir() if d.is_dir() and not d.name.startswith("."))
                for p in (train, evaluate))
        if a != b and (train, evaluate) not in out:
            only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
            out[train, evaluate] = (f"{spec['name']}: the class folders of {train} and {evaluate} differ"
                                    + (f"; only in training: {', '.join(only_a[:5])}" if only_a else "")
                                    + (f"; only in evaluation: {', '.join(only_b[:5])}" if only_b else ""))
    return list(out.values())


def experiment_name(store: RunStore, name: str, chosen: str | None = None) -> str:
    """The experiment's name here: numbered (NAME-2, NAME-3, …) when runs have it already,
    so that results tables never hold two indistinguishable rows; a name the user
    chose (``--as``) must be free."""
    taken = store.experiments()
    if name not in taken:
        return name
    if chosen:
        raise UserError(f"an experiment {chosen!r} has runs already; --as takes a new name")
    n = 2
    while f"{name}-{n}" in taken:
        n += 1
    return f"{name}-{n}"


def submit(exp: Experiment, store: RunStore, spec_text: str | None = None, as_name: str | None = None) -> list[str]:
    """Record the experiment's runs as queued, under a name no other runs have (``exp.name``
    says which). Refuses input folders that do not exist."""
    ws = store.workspace
    exp.name = experiment_name(store, as_name or exp.name, as_name)
    specs, missing = plan(exp, ws, store)
    if missing:
        raise SpecError([f"{exp.source}: {m}" for m in missing])
    from synthgap_tui.supervisor import Config

    if Config.load(ws).snapshot_code:
        from synthgap_tui import snapshots

        code = snapshots.snapshot(ws.root)
        for spec in specs.values():
            spec["code"] = code  # the runners it runs with, whatever is edited meanwhile
    if spec_text is not None:
        kept = _keep_spec(ws, exp, spec_text)
        for spec in specs.values():
            spec["spec_file"] = str(kept)  # what "clone into composer" opens
    # Directories first: a crash before the index write leaves runs that
    # `synthgap db rebuild` recovers, never index entries without a folder.
    for spec in specs.values():
        d = ws.run_dir(spec["id"])
        d.mkdir(parents=True)
        protocol.write_json_atomic(d / protocol.SPEC_FILE, spec)
        protocol.write_json_atomic(d / protocol.STATUS_FILE, {"state": protocol.QUEUED})
    from synthgap_tui.summaries import index_fields

    store.create_many([{**index_fields(s), "state": protocol.QUEUED, "attempt": 1} for s in specs.values()])
    return [s["id"] for s in sorted(specs.values(), key=lambda s: s["created"])]


def _keep_spec(ws: Workspace, exp: Experiment, spec_text: str) -> Path:
    """Copy the submitted spec into specs/, with dataset and other paths made absolute
    so the copy means the same wherever it is opened from (comments kept)."""
    import tomlkit

    doc = tomlkit.parse(spec_text)
    for name, ds in exp.datasets.items():
        if isinstance(doc["datasets"][name], dict):
            doc["datasets"][name]["path"] = ds["path"]
        else:
            doc["datasets"][name] = ds["path"]
    for run in exp.runs:  # the run's own table, or [defaults] when it came from there
        for key in path_fields(run):
            table = doc["runs"][run.base] if key in doc["runs"][run.base] else doc.get("defaults", {})
            if key in table:
                table[key] = run.params[key]
    ws.specs_dir.mkdir(parents=True, exist_ok=True)
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in exp.name)[:60]
    path = ws.specs_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{safe}.toml"
    protocol.write_text_atomic(path, tomlkit.dumps(doc))
    return path


def read_status(ws: Workspace, run_id: str) -> dict:
    return protocol.read_json(ws.run_file(run_id, protocol.STATUS_FILE), {}) or {}


def set_state(store: RunStore, run_id: str, state: str, **fields) -> None:
    """Index and status.json together (status.json is what `db rebuild` trusts)."""
    update_status(store, run_id, state=state, **fields)


def update_status(store: RunStore, run_id: str, **fields) -> None:
    """Fields of a run in status.json (those it keeps) and in the index."""
    status = read_status(store.workspace, run_id)
    status.update({k: v for k, v in fields.items() if k in STATUS_KEYS or k == "state"})
    protocol.write_json_atomic(store.workspace.run_file(run_id, protocol.STATUS_FILE), status)
    store.update(run_id, **fields)


def _refresh_code(store: RunStore, run_id: str) -> None:
    """A retried run whose code snapshot gc removed (it had finished) runs today's runners,
    snapshotted now and recorded; one whose snapshot is there keeps it."""
    from synthgap_tui import snapshots

    path = store.workspace.run_file(run_id, protocol.SPEC_FILE)
    spec = protocol.read_json(path, {}) or {}
    if not spec.get("code") or snapshots.folder(store.workspace.root, spec["code"]).is_dir():
        return
    spec["code"] = snapshots.snapshot(store.workspace.root)
    protocol.write_json_atomic(path, spec)
    store.update(run_id, code=spec["code"])


def _change_spec(store: RunStore, run_id: str, changes: dict) -> None:
    """Write a retry's changed fields into the run's spec.json, each checked as a spec's."""
    path = store.workspace.run_file(run_id, protocol.SPEC_FILE)
    spec = protocol.read_json(path, {}) or {}
    kind = kinds.get(spec.get("kind", "train"))
    problems = []
    for key, value in changes.items():
        f = kind.fields.get(key)
        problem = f"is not a field of a {kind.name} run" if f is None else f.problem(value)
        if problem:
            problems.append(f"--set {key}: {problem}")
    if problems:
        raise UserError("; ".join(problems))
    record = dict(spec.get("retried_with") or {})
    for key, value in changes.items():
        record[key] = [spec.get(key), value]
        spec[key] = value
    spec["retried_with"] = record
    protocol.write_json_atomic(path, spec)
    store.update(run_id, retried_with=record)


STATUS_KEYS = {"launcher", "handle", "gpus", "exit_code", "started", "ended", "error", "attempt", "resume",
               "cancel_requested", "where"}


def blocking(runs: list[dict]) -> dict[str, str | None]:
    """For each waiting run whose blocked-ness changes: the reason it is blocked
    now (a dependency ended without finishing, or is blocked itself), or None
    if it may run again."""
    by_id = {r["id"]: r for r in runs}
    reasons: dict[str, str | None] = {}

    def reason(run: dict, seen: frozenset) -> str | None:
        if run["id"] in reasons:
            return reasons[run["id"]]
        for dep_id in run.get("depends_on") or []:
            dep = by_id.get(dep_id)
            if dep is None or dep_id in seen:
                continue
            name = f"{dep.get('name', dep_id)} ({dep_id})"
            if dep["state"] in protocol.ENDED_STATES - {protocol.FINISHED}:
                ended = {protocol.FAILED_STATE: "failed"}.get(dep["state"], f"was {dep['state']}")
                return f"waits for {name}, which {ended}; resume or retry it"
            if dep["state"] in protocol.WAITING_STATES and reason(dep, seen | {run["id"]}):
                return f"waits for {name}, which is blocked"
        return None

    changes = {}
    for run in runs:
        if run["state"] in protocol.WAITING_STATES:
            reasons[run["id"]] = why = reason(run, frozenset())
            if (why is not None) != (run["state"] == protocol.BLOCKED) or (why and why != run.get("error")):
                changes[run["id"]] = why
    return changes


def cancel(store: RunStore, run_id: str) -> str:
    """Queued runs are cancelled at once; running ones get SIGTERM (the supervisor
    sends SIGKILL after the grace period). Returns what happened."""
    with store.locked():
        run = store.get(run_id)
        state = run["state"]
        if state in protocol.WAITING_STATES:
            set_state(store, run_id, protocol.CANCELLED_STATE, ended=time.time())
            return "cancelled (it had not started)"
        if state not in protocol.ACTIVE_STATES:
            raise StoreError(f"Run {run_id} is {state}; only queued or running runs can be cancelled.")
        set_state(store, run_id, state, cancel_requested=time.time())
    launcher, handle = launchers.of_status(read_status(store.workspace, run_id))
    if launcher.signal(handle, signal.SIGTERM):
        return "SIGTERM sent; the runner saves a checkpoint and stops"
    return "cancel requested; the supervisor will settle it"


def requeue(store: RunStore, run_id: str, resume: bool, changes: dict | None = None) -> int:
    """Put an ended run back in the queue. ``resume`` keeps its files and continues
    from the last checkpoint; otherwise the old attempt's files move to attempts/N/,
    and ``changes`` (field: value, checked as a spec's are) go into its spec, recorded
    under ``retried_with`` as {field: [before, after]}."""
    if changes and resume:
        raise UserError("resume continues the run as it was; retry --set runs it again with a field changed")
    with store.locked():
        run = store.get(run_id)
        if run["state"] == protocol.BLOCKED:
            raise StoreError(f"Run {run_id} is blocked: it {run.get('error') or 'waits for a failed run'}.")
        if run["state"] not in protocol.ENDED_STATES:
            raise StoreError(f"Run {run_id} is {run['state']}; only ended runs can be "
                             f"{'resumed' if resume else 'retried'}.")
        if resume and run["state"] == protocol.FINISHED:
            raise StoreError(f"Run {run_id} finished; use `synthgap retry` to run it again.")
        attempt = run.get("attempt", 1) + 1
        run_dir = store.workspace.run_dir(run_id)
        status_path = run_dir / protocol.STATUS_FILE
        old_status = status_path.read_bytes() if status_path.exists() else None
        moved: list[tuple[Path, Path]] = []
        # Each step undoes the ones before it when it fails (a full disk), so the run stays as it was;
        # a kill between steps leaves files in attempts/ and a status that `db rebuild` reads.
        try:
            if not resume:  # everything the runner wrote, whatever its kind (renames: no space needed)
                keep = run_dir / ATTEMPTS_DIR / str(attempt - 1)
                keep.mkdir(parents=True, exist_ok=True)
                for path in list(run_dir.iterdir()):
                    if path.name not in (protocol.SPEC_FILE, protocol.STATUS_FILE, ATTEMPTS_DIR):
                        os.replace(path, keep / path.name)
                        moved.append((path, keep / path.name))
            protocol.fault_point("retry:moved")
            if changes:
                _change_spec(store, run_id, changes)
            if not resume:
                _refresh_code(store, run_id)
            protocol.write_json_atomic(status_path, {"state": protocol.QUEUED, "attempt": attempt, "resume": resume})
            cleared = {} if resume else {"summary": None, "progress": None, "top1": None, "epoch": None}
            store.update(run_id, state=protocol.QUEUED, attempt=attempt, resume=resume, error=None,
                         final=None, ended=None, cancel_requested=None, exit_code=None, **cleared)
        except BaseException:
            for home, there in reversed(moved):
                os.replace(there, home)
            if old_status is not None:
                try:
                    protocol.write_atomic(status_path, lambda f: f.write(old_status))
                except OSError:
                    pass  # the index still says ended, and so does the run's folder
            raise
    return attempt
