"""Index fields derived from a run's files: events folded into a summary."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from runners import kinds, protocol
from synthgap_tui.specs import current_name

# Spec keys copied into the index so the runs table needs no run directory.
INDEX_SPEC_KEYS = ("id", "name", "experiment", "kind", "created", "depends_on", "gpus_requested", "code")


def index_fields(spec: dict) -> dict:
    """What the index keeps of a spec: the keys above, and the run's parameters
    that a filter compares (``freeze_layers>=8``): scalars, defaults included."""
    record = {k: spec[k] for k in INDEX_SPEC_KEYS if k in spec}
    kind = kinds.all_kinds().get(spec.get("kind"))
    if kind is not None:
        declared = {**kinds.COMMON, **kind.fields}
        record["params"] = {k: v for k, v in kind.resolve(spec).items()
                            if k in declared and isinstance(v, (str, int, float, bool))}
    return record


def fold_events(events: Iterable[dict], out: dict | None = None) -> dict:
    """Index fields implied by events, later events winning; folds into ``out``."""
    out = {} if out is None else out
    for ev in events:
        kind = ev.get("type")
        if kind == protocol.START:
            # A resumed attempt appends to the same file: an earlier attempt's
            # ending no longer holds.
            for key in ("final", "ended", "error"):
                out.pop(key, None)
            out["started"] = ev.get("t")
        elif kind == protocol.PROGRESS:
            total = ev.get("total") or 0
            if total:
                out["progress"] = round(min(1.0, (ev.get("done") or 0) / total), 4)
            out["rate"] = ev.get("rate")
            out["unit"] = ev.get("unit")
            out["eta"] = ev.get("eta")
        elif kind == protocol.GPU:
            # What the runner's own process holds: the GPU panel shows it for runs on other nodes.
            out["gpu_memory"] = sum(d.get("memory_reserved") or d.get("memory_allocated") or 0
                                    for d in ev.get("devices") or [])
        elif kind == protocol.EPOCH:
            out["epoch"] = ev.get("epoch")
            out["top1"] = ev.get("top1")
        elif kind in protocol.FINAL_EVENTS:
            out["final"] = kind
            out["ended"] = ev.get("t")
            if kind == protocol.DONE:
                out["summary"] = ev.get("summary") or {}
                out["progress"] = 1.0
            elif kind == protocol.FAILED:
                out["error"] = ev.get("error")
    return out


def record_from_run_dir(run_dir: Path) -> dict | None:
    """An index record rebuilt from a run directory, or None if it is not one."""
    spec = protocol.read_json(run_dir / protocol.SPEC_FILE)
    if not isinstance(spec, dict) or spec.get("id") != run_dir.name:
        return None
    if isinstance(spec.get("name"), str) and current_name(spec["name"]) != spec["name"]:
        # A workspace from before sweep names could be typed unquoted: its names migrate once.
        spec["name"] = current_name(spec["name"])
        protocol.write_json_atomic(run_dir / protocol.SPEC_FILE, spec)
    record = index_fields(spec)
    status = protocol.read_json(run_dir / protocol.STATUS_FILE, {}) or {}
    record["state"] = status.get("state", protocol.QUEUED)
    for key in ("gpus", "started", "ended", "exit_code", "error", "attempt", "resume", "where"):
        if key in status:
            record[key] = status[key]
    record.update(fold_events(protocol.read_events(run_dir / protocol.EVENTS_FILE)))
    annotations = protocol.read_json(run_dir / "annotations.json", {}) or {}  # synthgap_tui/annotations.py
    record.update({k: annotations[k] for k in ("tags", "note", "archived") if annotations.get(k)})
    results = protocol.read_json(run_dir / protocol.RESULTS_FILE)
    if isinstance(results, dict):
        record["summary"] = results
    return record
