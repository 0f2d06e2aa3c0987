"""Disk use, removing and archiving runs, pruning checkpoints (``synthgap rm``,
``archive``, ``gc``), shared by the CLI and the app.

A removed run's folder is first renamed into ``.trash/`` (atomic), then
dropped from the index, then deleted: a crash midway leaves either a run
``db rebuild`` still knows or a leftover in ``.trash/`` the next removal
clears, never an index entry that points at half a folder.
"""

from __future__ import annotations

import os
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from runners import protocol
from synthgap_tui import annotations
from synthgap_tui.errors import UserError
from synthgap_tui.runs import ATTEMPTS_DIR
from synthgap_tui.store import RunStore

TRASH = ".trash"


def _allocated(st: os.stat_result) -> int:
    return getattr(st, "st_blocks", 0) * 512 or st.st_size


def disk_use(path: Path) -> int:
    """Bytes a folder takes on disk (allocated blocks, as ``du`` counts them)."""
    total = 0
    stack = [path]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                else:
                    total += _allocated(entry.stat(follow_symlinks=False))
            except FileNotFoundError:  # removed while we looked
                continue
    return total


def run_disk_use(store: RunStore, run_ids: list[str]) -> dict[str, int]:
    return {run_id: disk_use(store.workspace.run_dir(run_id)) for run_id in run_ids}


def dependents(runs: list[dict], run_ids: set[str]) -> dict[str, list[dict]]:
    """For each of ``run_ids``: the other runs (outside the set) that depend on it."""
    out: dict[str, list[dict]] = {}
    for run in runs:
        if run["id"] in run_ids:
            continue
        for dep in run.get("depends_on") or []:
            if dep in run_ids:
                out.setdefault(dep, []).append(run)
    return out


def _names(runs: list[dict]) -> str:
    shown = ", ".join(f"{r.get('name', r['id'])} ({r['id']})" for r in runs[:4])
    return shown + (f" and {len(runs) - 4} more" if len(runs) > 4 else "")


@dataclass
class Removal:
    """What ``rm`` would do: the runs it may remove, and why it refuses others."""

    runs: list[dict]
    refused: dict[str, str] = field(default_factory=dict)  # run id -> reason
    bytes: int = 0


def plan_removal(store: RunStore, run_ids: list[str], force: bool = False) -> Removal:
    """Refuses runs that have not ended (cancel them first) and, unless ``force``,
    runs that others depend on (naming those, which may be removed with them)."""
    everything = store.list()
    by_id = {r["id"]: r for r in everything}
    wanted = set(run_ids)
    plan = Removal(runs=[])
    needed_by = dependents(everything, wanted)
    for run_id in dict.fromkeys(run_ids):
        run = by_id[run_id]
        if run["state"] not in protocol.ENDED_STATES:
            plan.refused[run_id] = f"is {run['state']}; cancel it first (`synthgap cancel {run_id}`)"
        elif run_id in needed_by and not force:
            plan.refused[run_id] = (f"is needed by {_names(needed_by[run_id])}; remove those too, "
                                    "or --force to remove it anyway")
        else:
            plan.runs.append(run)
    plan.bytes = sum(run_disk_use(store, [r["id"] for r in plan.runs]).values())
    return plan


def remove(store: RunStore, plan: Removal) -> int:
    """Remove the planned runs (folders and index entries); returns bytes freed."""
    ws = store.workspace
    trash = ws.root / TRASH
    trash.mkdir(exist_ok=True)
    for leftover in trash.iterdir():  # from a removal that was killed
        shutil.rmtree(leftover, ignore_errors=True)
    moved: list[tuple[Path, Path]] = []
    with store.locked():
        for run in plan.runs:
            current = store.get(run["id"])
            if current is None or current["state"] not in protocol.ENDED_STATES:
                continue  # resumed or removed since the plan was made
            target = trash / f"{run['id']}-{secrets.token_hex(4)}"
            if ws.run_dir(run["id"]).exists():
                os.replace(ws.run_dir(run["id"]), target)
                moved.append((ws.run_dir(run["id"]), target))
        protocol.fault_point("rm:moved")
        try:
            store.delete_many([run["id"] for run in plan.runs])
        except BaseException:
            for home, target in moved:  # the index still lists them: their folders go back (a rename)
                os.replace(target, home)
            raise
    moved = [target for _, target in moved]
    freed = sum(disk_use(path) for path in moved)
    for path in moved:
        shutil.rmtree(path, ignore_errors=True)
    return freed


def archive(store: RunStore, run_id: str, archived: bool = True) -> str:
    """Hide a run from the runs screen and ``ls`` (``archived:yes`` shows it)."""
    annotations.update(store, run_id, archived=archived or None)
    return "archived (hidden; `ls archived:yes` lists it)" if archived else "unarchived"


@dataclass
class Pruned:
    run_id: str
    files: list[Path]
    bytes: int


def prunable(store: RunStore, run_id: str, keep_last: bool = True) -> list[Path]:
    """Files ``gc`` deletes from a finished run: every checkpoint except what the
    run reported as an artifact (final weights) and, with ``keep_last``, its
    last checkpoint; and the checkpoints of earlier attempts."""
    run_dir = store.workspace.run_dir(run_id)
    events = protocol.read_events(run_dir / protocol.EVENTS_FILE)
    keep = {Path(e["path"]).resolve() for e in events if e["type"] == protocol.ARTIFACT and e.get("path")}
    checkpoints = [e for e in events if e["type"] == protocol.CHECKPOINT and e.get("path")]
    if keep_last and checkpoints:
        keep.add(Path(checkpoints[-1]["path"]).resolve())
    folders = [run_dir / protocol.CHECKPOINT_DIR, *(run_dir / ATTEMPTS_DIR).glob(f"*/{protocol.CHECKPOINT_DIR}")]
    out = []
    for folder in folders:
        for path in sorted(folder.rglob("*")) if folder.is_dir() else []:
            # Kept: an artifact file, or anything inside an artifact folder.
            if path.is_file() and not any(path.resolve().is_relative_to(k) for k in keep):
                out.append(path)
    return out


def gc(store: RunStore, run_ids: list[str] | None = None, keep_last: bool = True,
       dry_run: bool = False) -> list[Pruned]:
    """Prune the checkpoints of finished runs (all of them, or those named)."""
    if run_ids is None:
        run_ids = [r["id"] for r in store.list(state=protocol.FINISHED)]
    out = []
    for run_id in run_ids:
        run = store.get(run_id)
        if run["state"] != protocol.FINISHED:
            raise UserError(f"run {run_id} is {run['state']}; gc prunes finished runs only "
                            "(the others may still resume from their checkpoints)")
        files = prunable(store, run_id, keep_last)
        sizes = [_allocated(f.stat()) for f in files]
        if not dry_run:
            for f in files:
                f.unlink(missing_ok=True)
        out.append(Pruned(run_id, files, sum(sizes)))
    return out


@dataclass
class Collection:
    """What ``gc`` deletes: checkpoints of finished runs and, when no runs are named,
    index copies past ``[store] keep_backups``, code snapshots no unfinished run needs
    and Slurm job array folders whose runs were all removed."""
    pruned: list[Pruned]
    keep_last: bool
    keep_backups: int
    backups: list[Path] = field(default_factory=list)
    snapshots: list[Path] = field(default_factory=list)
    arrays: list[Path] = field(default_factory=list)
    bytes: int = 0

    @property
    def checkpoints(self) -> int:
        return sum(len(p.files) for p in self.pruned)

    @property
    def files(self) -> int:
        return self.checkpoints + len(self.backups) + len(self.snapshots) + len(self.arrays)

    def describe(self) -> str:
        runs = sum(bool(p.files) for p in self.pruned)
        parts = [f"{self.checkpoints} checkpoint file(s) of {runs} finished run(s)"] + \
            ([f"{len(self.backups)} old index copies"] if self.backups else []) + \
            ([f"{len(self.snapshots)} code snapshots no run needs"] if self.snapshots else []) + \
            ([f"{len(self.arrays)} job array folders of removed runs"] if self.arrays else [])
        return " and ".join(parts)


def plan_gc(store: RunStore, run_ids: list[str] | None = None, keep_last: bool | None = None) -> Collection:
    """What ``collect`` would delete; ``keep_last`` None: the workspace's ``[gc] keep_last``."""
    from synthgap_tui import snapshots
    from synthgap_tui.launchers.slurm import unused_arrays
    from synthgap_tui.supervisor import Config

    config = Config.load(store.workspace)
    keep_last = config.gc_keep_last if keep_last is None else keep_last
    plan = Collection(gc(store, run_ids, keep_last=keep_last, dry_run=True), keep_last, config.keep_backups)
    if run_ids is None:
        root = store.workspace.root
        plan.backups = store.prune_backups(config.keep_backups, dry_run=True)
        plan.snapshots = snapshots.unused(root, store.list())
        plan.arrays = unused_arrays(root, set(store.ids()))
    plan.bytes = sum(p.bytes for p in plan.pruned) + sum(_allocated(b.stat()) for b in plan.backups) + \
        sum(map(disk_use, plan.snapshots + plan.arrays))
    return plan


def collect(store: RunStore, plan: Collection) -> int:
    """Delete what ``plan_gc`` found; the bytes freed."""
    gc(store, [p.run_id for p in plan.pruned], keep_last=plan.keep_last)
    if plan.backups:
        store.prune_backups(plan.keep_backups)
    for folder in plan.snapshots + plan.arrays:
        shutil.rmtree(folder, ignore_errors=True)
    return plan.bytes
