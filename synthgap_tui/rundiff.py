"""What differs between runs: their specs and provenance, flattened to dotted keys."""

from __future__ import annotations

import json

from runners import protocol
from synthgap_tui.workspace import Workspace

PROVENANCE_FILE = "provenance.json"  # written by the runner (runners/provenance.py)
# Differ between any two runs: not worth a line.
ALWAYS_DIFFERENT = {"spec.id", "spec.created", "provenance.command", "provenance.spec"}


def flatten(data, prefix: str = "") -> dict[str, object]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists stay values."""
    out: dict[str, object] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def provenance(ws: Workspace, run_id: str) -> dict | None:
    return protocol.read_json(ws.run_file(run_id, PROVENANCE_FILE))


def view(ws: Workspace, run_id: str) -> dict[str, object]:
    """The values a run used (its spec over its kind's defaults and recipe) and its
    provenance, as one flat dict (reads two small files)."""
    from runners import kinds

    spec = protocol.read_json(ws.run_file(run_id, protocol.SPEC_FILE), {}) or {}
    kind = kinds.all_kinds().get(spec.get("kind"))
    prov = provenance(ws, run_id) or {}
    prov.pop("spec", None)  # the spec is in the values
    return {k: v for k, v in flatten({"spec": kind.resolve(spec) if kind else spec, "provenance": prov}).items()
            if not any(k == d or k.startswith(d + ".") for d in ALWAYS_DIFFERENT)}


def differences(views: list[dict[str, object]]) -> list[tuple[str, list]]:
    """(key, value per run) for every key whose value is not the same in all runs."""
    keys = sorted(set().union(*views)) if views else []
    rows = []
    for key in keys:
        values = [v.get(key) for v in views]
        if any(json.dumps(x, sort_keys=True, default=str) != json.dumps(values[0], sort_keys=True, default=str)
               for x in values[1:]):
            rows.append((key, values))
    return rows


def fmt(value) -> str:
    return "-" if value is None else json.dumps(value, ensure_ascii=False, default=str)


