"""Tags, a note and the archived flag per run: what researchers write on their runs.

Kept in the run folder (``annotations.json``, so ``db rebuild`` keeps them)
and in the index (so the runs table filters by tag without opening folders).
"""

from __future__ import annotations

import re

from runners import protocol
from synthgap_tui.errors import UserError
from synthgap_tui.store import RunStore

FILE = "annotations.json"
TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")


def read(store: RunStore, run_id: str) -> dict:
    return protocol.read_json(store.workspace.run_file(run_id, FILE), {}) or {}


def _write(store: RunStore, run_id: str, annotations: dict) -> None:
    protocol.write_json_atomic(store.workspace.run_file(run_id, FILE), annotations)
    store.update(run_id, tags=annotations.get("tags", []), note=annotations.get("note"),
                 archived=annotations.get("archived"))


def update(store: RunStore, run_id: str, **fields) -> dict:
    """Set annotation fields (None removes one); returns the run's annotations."""
    with store.locked():
        annotations = {k: v for k, v in {**read(store, run_id), **fields}.items() if v is not None}
        _write(store, run_id, annotations)
    return annotations


def parse_ops(tokens: list[str]) -> tuple[list[str], list[str]]:
    """'+a -b c' -> (add [a, c], remove [b])."""
    add = [t[1:] if t.startswith("+") else t for t in tokens if not t.startswith("-")]
    return [t for t in add if t], [t[1:] for t in tokens if t.startswith("-") and t[1:]]


def tag(store: RunStore, run_id: str, add: list[str] = (), remove: list[str] = ()) -> list[str]:
    """Add and remove tags; returns the run's tags."""
    bad = [t for t in [*add, *remove] if not TAG.match(t)]
    if bad:
        raise UserError(f"tag {bad[0]!r}: tags use letters, digits and . _ : - (no spaces)")
    with store.locked():
        tags = [t for t in read(store, run_id).get("tags", []) if t not in remove]
        tags += [t for t in add if t not in tags]
        return update(store, run_id, tags=tags)["tags"]


def note(store: RunStore, run_id: str, text: str) -> None:
    """Set the run's note (empty text removes it)."""
    update(store, run_id, note=text.strip() or None)
