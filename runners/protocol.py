"""The event protocol shared by runners and the app (standard library only).

A runner appends one JSON object per line to ``events.jsonl`` in its run
directory; the supervisor, the TUI and the CLI follow that file by byte offset.
This module is the only one imported on both sides, so it must stay free of
torch, textual and tinydb.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

EVENTS_FILE = "events.jsonl"
SPEC_FILE = "spec.json"
STATUS_FILE = "status.json"
RESULTS_FILE = "results.json"
STDOUT_FILE = "stdout.log"
CHECKPOINT_DIR = "checkpoints"
DATA_DIR = "data"  # where a runner that makes a dataset writes it
CACHE_DIR = "cache"  # in the workspace: what runs share (e.g. a pool's CLIP embeddings)

# Event types. Final events end a runner's attempt; the supervisor uses them
# to tell "finished", "failed" and "cancelled" apart from "lost".
START = "start"
PROGRESS = "progress"  # done, total, unit, rate, eta
TRAIN_STEP = "train_step"  # step, epoch, loss, lr, images_per_s
EPOCH = "epoch"  # epoch, train_loss, top1, top5, val_loss
GPU = "gpu"  # devices: [{index, memory_used, memory_reserved, utilization}]
LOG = "log"  # level, message
CHECKPOINT = "checkpoint"  # path, epoch
ARTIFACT = "artifact"  # path, kind (the artifact name a run kind declares)
DONE = "done"  # summary
FAILED = "failed"  # error, traceback
CANCELLED = "cancelled"  # reason

EVENT_TYPES = frozenset(
    {START, PROGRESS, TRAIN_STEP, EPOCH, GPU, LOG, CHECKPOINT, ARTIFACT, DONE, FAILED, CANCELLED}
)
FINAL_EVENTS = frozenset({DONE, FAILED, CANCELLED})

# Run states (DESIGN.md). "lost" is a run whose process vanished without a
# final event; "blocked" a queued run whose dependency ended without
# finishing (it moves again when that one is resumed or retried).
QUEUED, BLOCKED, STARTING, RUNNING = "queued", "blocked", "starting", "running"
FINISHED, FAILED_STATE, CANCELLED_STATE, LOST = "finished", "failed", "cancelled", "lost"
STATES = (QUEUED, BLOCKED, STARTING, RUNNING, FINISHED, FAILED_STATE, CANCELLED_STATE, LOST)
WAITING_STATES = frozenset({QUEUED, BLOCKED})
ACTIVE_STATES = frozenset({STARTING, RUNNING})
ENDED_STATES = frozenset({FINISHED, FAILED_STATE, CANCELLED_STATE, LOST})
STATE_OF_FINAL_EVENT = {DONE: FINISHED, FAILED: FAILED_STATE, CANCELLED: CANCELLED_STATE}


class EventWriter:
    """Appends events to ``events.jsonl``, one flushed line per event."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "ab", buffering=0)
        # A writer killed mid-line leaves a fragment without newline; start on
        # a fresh line so the fragment cannot swallow our first event.
        if self._file.tell() > 0:
            with open(self.path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    self._file.write(b"\n")

    def emit(self, type: str, **fields: Any) -> dict:
        if type not in EVENT_TYPES:
            raise ValueError(f"unknown event type {type!r}; allowed: {sorted(EVENT_TYPES)}")
        event = {"t": round(time.time(), 3), "type": type, **fields}
        line = json.dumps(event, separators=(",", ":"), default=_jsonable) + "\n"
        # One write call per line: with O_APPEND the line lands whole.
        try:
            self._file.write(line.encode())
        except OSError as e:
            e.filename = e.filename or str(self.path)  # a full disk names the file it could not grow
            raise
        return event

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "EventWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _jsonable(value: Any) -> Any:
    # numpy / torch scalars and paths show up in fields; keep them readable.
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value)


@dataclass
class EventReader:
    """Follows a growing ``events.jsonl`` by byte offset.

    Only complete lines (ending in a newline) are consumed, so a line that a
    runner is still writing is read on a later call. A complete line that is
    not valid JSON (a fragment from a killed writer) is skipped and counted.
    """

    path: Path
    offset: int = 0
    skipped: int = 0
    _partial: bytes = field(default=b"", repr=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path)

    def read_new(self, max_bytes: int | None = None) -> list[dict]:
        try:
            with open(self.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < self.offset:  # file was replaced (retry): start over
                    self.offset, self._partial = 0, b""
                f.seek(self.offset)
                chunk = f.read(max_bytes if max_bytes else -1)
        except FileNotFoundError:
            return []
        if not chunk:
            return []
        data = self._partial + chunk
        end = data.rfind(b"\n")
        if end < 0:
            self._partial = data
            self.offset += len(chunk)
            return []
        self._partial = data[end + 1:]
        self.offset += len(chunk)
        events = []
        for line in data[: end + 1].splitlines():
            events.extend(self._parse(line))
        return events

    def _parse(self, line: bytes) -> Iterator[dict]:
        line = line.strip()
        if not line:
            return
        try:
            event = json.loads(line)
        except ValueError:
            self.skipped += 1
            # A fragment glued to a whole event by a writer that did not
            # start a fresh line: keep the event that follows the fragment.
            start = line.find(b'{"t":', 1)
            if start > 0:
                yield from self._parse(line[start:])
            return
        if isinstance(event, dict) and "type" in event:
            yield event
        else:
            self.skipped += 1


def read_events(path: str | os.PathLike) -> list[dict]:
    """All complete events of a file (skipping malformed lines)."""
    return EventReader(Path(path)).read_new()


def write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], Any]) -> None:
    """Call ``write(file)`` on a temp file beside ``path``, fsync, rename over
    ``path``: readers see the old or the new file, never a torn one."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
        publish(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and not e.filename:
            e.filename = str(path)  # what could not be written, for the one-line message
        raise


def temp_path(path: Path) -> Path:
    """A temp name beside ``path`` that ``remove_temp_files`` clears after a kill;
    pid and thread: writers of one file in several processes or threads never share one."""
    return path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")


def publish(tmp: Path, path: Path) -> None:
    """fsync the finished ``tmp`` and rename it over ``path`` (for files written by
    a library that wants a file name, such as SQLite)."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    fault_point(f"publish:{path.name}")
    os.replace(tmp, path)
    # The rename itself survives a power cut only once the folder is synced.
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


FAULT_ENV = "SYNTHGAP_FAULT_AT"  # tests: SIGKILL the process at this named step
NO_SPACE_EXIT = 28  # a runner's exit code when the disk filled up (errno ENOSPC), its events maybe unwritten


def fault_point(name: str) -> None:
    """Where the fault-injection tests kill a process (``SYNTHGAP_FAULT_AT=name``), to
    show that every step of a multi-step write leaves a state the next command reads."""
    if os.environ.get(FAULT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def free_bytes(path: str | os.PathLike) -> int | None:
    """Free space of the filesystem holding ``path`` (its nearest existing parent)."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


def is_no_space(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)


def os_error_message(e: OSError, path: str | os.PathLike | None = None) -> str:
    """One line for a failed file operation: what, where (the error's file, else
    ``path``) and, when the disk is full, how much space is left there."""
    where = e.filename or path
    if is_no_space(e):
        folder = Path(where).parent if where else Path.cwd()
        return f"no space left on device in {folder} ({fmt_bytes(free_bytes(folder))} free)"
    return f"could not write {where}: {e.strerror or e}" if where else f"{e.strerror or e}"


def workspace_cache(run_dir: str | os.PathLike) -> Path:
    """The workspace's cache folder, seen from one of its run directories (WS/runs/ID)."""
    return Path(run_dir).resolve().parent.parent / CACHE_DIR


def remove_temp_files(folder: str | os.PathLike) -> int:
    """Delete the temp files write_atomic leaves under ``folder`` when its writer is
    killed mid-write. Only while nothing writes there (a runner's own folders, at start)."""
    removed = 0
    for tmp in Path(folder).rglob(".*.tmp"):
        tmp.unlink(missing_ok=True)
        removed += 1
    return removed


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_atomic(path, lambda f: f.write(text.encode()))


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    payload = json.dumps(data, indent=2, default=_jsonable).encode()
    write_atomic(path, lambda f: f.write(payload))


def read_json(path: str | os.PathLike, default: Any = None) -> Any:
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())
    except (FileNotFoundError, ValueError):
        return default
