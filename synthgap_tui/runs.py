"""Run lifecycle shared by the CLI and the app: submit, cancel, resume, retry."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import psutil

from runners import protocol
from synthgap_tui.specs import Experiment, SpecError
from synthgap_tui.store import RunStore, StoreError
from synthgap_tui.workspace import Workspace, new_run_id

GENERATED_DATA = "data"  # a generate run writes its ImageFolder under runs/<id>/data/
MODEL_FILE = "model.pt"  # a train run's final weights, under checkpoints/


def dataset_dir(datasets: dict, name: str, split: str) -> str:
    ds = datasets[name]
    return str(Path(ds["path"]) / ds.get(split, split))


def _resolve(exp: Experiment, ids: dict[str, str], ws: Workspace) -> dict[str, dict]:
    """Each run's spec.json: its parameters plus the folders its references name."""

    def folder(ref: tuple, split: str) -> str:
        what, name = ref
        if what == "dataset":
            return dataset_dir(exp.datasets, name, split)
        if what == "path":
            return str(Path(name).expanduser().resolve())
        return str(ws.run_dir(ids[name]) / GENERATED_DATA / "train")

    specs = {}
    now = time.time()
    for run in exp.runs:
        spec = {
            "id": ids[run.name], "name": run.name, "experiment": exp.name, "kind": run.kind,
            "created": now, "depends_on": [ids[d] for d in run.deps],
            "gpus_requested": run.params.get("gpus", 1), "sweep": run.sweep_values,
            "spec_file": exp.source, **run.params,
        }
        refs = run.refs
        if "train" in refs:
            spec["train_dir"] = folder(refs["train"], "train")
        if "eval" in refs:
            spec["eval_dir"] = folder(refs["eval"], "val")
        if "source" in refs:
            spec["source_dir"] = folder(refs["source"], "train")
        if "data" in refs:
            spec["data_dir"] = folder(refs["data"], "train")
        if "init_from" in refs:
            what, name = refs["init_from"]
            spec["init_from_path"] = (str(ws.run_dir(ids[name]) / protocol.CHECKPOINT_DIR / MODEL_FILE)
                                      if what == "run" else folder(refs["init_from"], ""))
        if "mix" in run.params:
            spec["mix_dirs"] = [{"dir": folder(refs[f"mix[{i}].data"], "train"),
                                 "weight": m.get("weight", 1.0)} for i, m in enumerate(run.params["mix"])]
        if "stages" in run.params:
            spec["stages"] = [{**s, "train_dir": folder(refs[f"stages[{i}].train"], "train")}
                              for i, s in enumerate(run.params["stages"])]
        specs[run.name] = spec
    return specs


def missing_folders(specs: dict[str, dict], ws: Workspace) -> list[str]:
    """One line per input folder or file that does not exist and that no run of
    this submission will create, naming the runs that need it."""
    produced = str(ws.runs_dir)
    needed: dict[str, list[str]] = {}
    for name, spec in specs.items():
        dirs = [spec.get(k) for k in ("train_dir", "eval_dir", "source_dir", "data_dir", "pixmix_dir")]
        dirs += [m["dir"] for m in spec.get("mix_dirs", [])] + [s["train_dir"] for s in spec.get("stages", [])]
        for d in filter(None, dirs):
            if not d.startswith(produced) and not Path(d).is_dir():
                needed.setdefault(f"folder {d}", []).append(name)
        for key in ("init_from_path", "weights"):
            p = spec.get(key)
            if p and not p.startswith(produced) and not Path(p).expanduser().is_file():
                needed.setdefault(f"file {p}", []).append(name)
    out = []
    for what, names in needed.items():
        shown = ", ".join(names[:2]) + (f" and {len(names) - 2} more" if len(names) > 2 else "")
        out.append(f"{what} does not exist (needed by {shown})")
    return out


def plan(exp: Experiment, ws: Workspace) -> tuple[dict[str, dict], list[str]]:
    ids = {r.name: new_run_id() for r in exp.runs}
    specs = _resolve(exp, ids, ws)
    return specs, missing_folders(specs, ws)


def submit(exp: Experiment, store: RunStore, spec_text: str | None = None) -> list[str]:
    """Record the experiment's runs as queued. Refuses input folders that do not exist."""
    ws = store.workspace
    specs, missing = plan(exp, ws)
    if missing:
        raise SpecError([f"{exp.source}: {m}" for m in missing])
    if spec_text is not None:
        copy = _keep_spec(ws, exp, spec_text)
        for spec in specs.values():
            spec["spec_file"] = str(copy)  # what "clone into composer" opens
    # Directories first: a crash before the index write leaves runs that
    # `synthgap db rebuild` recovers, never index entries without a folder.
    for spec in specs.values():
        d = ws.run_dir(spec["id"])
        d.mkdir(parents=True)
        protocol.write_json_atomic(d / protocol.SPEC_FILE, spec)
        protocol.write_json_atomic(d / protocol.STATUS_FILE, {"state": protocol.QUEUED})
    from synthgap_tui.summaries import INDEX_SPEC_KEYS

    store.create_many([{**{k: s[k] for k in INDEX_SPEC_KEYS if k in s}, "state": protocol.QUEUED,
                        "attempt": 1} for s in specs.values()])
    return [s["id"] for s in specs.values()]


def _keep_spec(ws: Workspace, exp: Experiment, spec_text: str) -> Path:
    """Copy the submitted spec into specs/, with dataset paths made absolute so
    the copy means the same wherever it is opened from."""
    import tomllib

    import tomli_w

    data = tomllib.loads(spec_text)
    for name, ds in exp.datasets.items():
        entry = data["datasets"][name]
        data["datasets"][name] = {**entry, "path": ds["path"]} if isinstance(entry, dict) else ds["path"]
    ws.specs_dir.mkdir(parents=True, exist_ok=True)
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in exp.name)[:60]
    path = ws.specs_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{safe}.toml"
    protocol.write_atomic(path, lambda f: f.write(tomli_w.dumps(data).encode()))
    return path


def set_state(store: RunStore, run_id: str, state: str, **fields) -> None:
    """Index and status.json together (status.json is what `db rebuild` trusts)."""
    status_path = store.workspace.run_file(run_id, protocol.STATUS_FILE)
    status = protocol.read_json(status_path, {}) or {}
    status.update({"state": state, **{k: v for k, v in fields.items() if k in STATUS_KEYS}})
    protocol.write_json_atomic(status_path, status)
    store.update(run_id, state=state, **fields)


STATUS_KEYS = {"pid", "pgid", "create_time", "host", "gpus", "exit_code", "started", "ended",
               "error", "attempt", "resume", "cancel_requested", "cmd"}


def process_alive(status: dict) -> bool:
    """Is the process of status.json still the runner (not a reused pid)?"""
    pid, created = status.get("pid"), status.get("create_time")
    if not pid:
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return created is None or abs(proc.create_time() - created) < 0.01
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def signal_group(status: dict, sig: int) -> bool:
    if not process_alive(status):
        return False
    try:
        os.killpg(status.get("pgid") or status["pid"], sig)
        return True
    except ProcessLookupError:
        return False


def cancel(store: RunStore, run_id: str) -> str:
    """Queued runs are cancelled at once; running ones get SIGTERM (the supervisor
    sends SIGKILL after the grace period). Returns what happened."""
    with store.locked():
        run = store.get(run_id)
        state = run["state"]
        if state == protocol.QUEUED:
            set_state(store, run_id, protocol.CANCELLED_STATE, ended=time.time())
            return "cancelled (it had not started)"
        if state not in protocol.ACTIVE_STATES:
            raise StoreError(f"Run {run_id} is {state}; only queued or running runs can be cancelled.")
        set_state(store, run_id, state, cancel_requested=time.time())
    status = protocol.read_json(store.workspace.run_file(run_id, protocol.STATUS_FILE), {}) or {}
    if signal_group(status, signal.SIGTERM):
        return "SIGTERM sent; the runner saves a checkpoint and stops"
    return "cancel requested; the supervisor will settle it"


def requeue(store: RunStore, run_id: str, resume: bool) -> int:
    """Put an ended run back in the queue. ``resume`` keeps its files and continues
    from the last checkpoint; otherwise the old attempt's files move to attempts/N/."""
    with store.locked():
        run = store.get(run_id)
        if run["state"] not in protocol.ENDED_STATES:
            raise StoreError(f"Run {run_id} is {run['state']}; only ended runs can be "
                             f"{'resumed' if resume else 'retried'}.")
        if resume and run["state"] == protocol.FINISHED:
            raise StoreError(f"Run {run_id} finished; use `synthgap retry` to run it again.")
        attempt = run.get("attempt", 1) + 1
        run_dir = store.workspace.run_dir(run_id)
        if not resume:
            keep = run_dir / "attempts" / str(attempt - 1)
            keep.mkdir(parents=True, exist_ok=True)
            for name in (protocol.EVENTS_FILE, protocol.STDOUT_FILE, protocol.RESULTS_FILE,
                         protocol.CHECKPOINT_DIR, GENERATED_DATA):
                if (run_dir / name).exists():
                    shutil.move(str(run_dir / name), str(keep / name))
        protocol.write_json_atomic(run_dir / protocol.STATUS_FILE,
                                   {"state": protocol.QUEUED, "attempt": attempt, "resume": resume})
        cleared = {} if resume else {"summary": None, "progress": None, "top1": None, "epoch": None}
        store.update(run_id, state=protocol.QUEUED, attempt=attempt, resume=resume, error=None,
                     final=None, ended=None, cancel_requested=None, exit_code=None, **cleared)
    return attempt
