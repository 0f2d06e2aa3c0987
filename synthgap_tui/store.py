"""The run index: TinyDB over a crash-safe, multi-process JSON file.

Run directories are the source of truth; ``runs.json`` indexes them so that
listing 10,000 runs does not open 10,000 folders. Every write goes to a temp
file in the same folder, is fsynced and renamed over the index, under a file
lock held for the whole read-modify-write, so the TUI, the CLI and the
supervisor can all write. Readers never lock: a rename is atomic.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path
from typing import Any, Iterable

import orjson
from filelock import FileLock, Timeout
from tinydb import TinyDB
from tinydb.storages import Storage
from tinydb.table import Document

from runners import protocol
from synthgap_tui.errors import RunNotFound, StoreCorrupt, StoreError
from synthgap_tui.workspace import SHORT_ID, Workspace, is_run_id, new_run_id, run_id_to_doc_id

SCHEMA_VERSION = 1
TABLE = "runs"
_META = "meta"
_HEAD_BYTES = 80  # covers '{"meta":{"schema":1,"token":"…"}' (see write)
LOCK_TIMEOUT_S = 60
KEEP_BACKUPS = 5  # copies of the index `db rebuild` keeps ([store] keep_backups)
LISTING_FILE = ".last-ls"  # the run ids of the last `synthgap ls`, by row


def creation_order(run: dict) -> tuple:
    return run.get("created") or 0.0, run["id"]


class AtomicJSONStorage(Storage):
    """TinyDB storage: atomic replace on write, parse only when the file changed.

    The cache is keyed by the file's identity and a random token written
    first in the file, so a rewrite by another process is always noticed even
    when size and mtime happen to match.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._cache: dict | None = None
        self._key: tuple | None = None

    def _file_key(self, f) -> tuple:
        st = os.fstat(f.fileno())
        head = f.read(_HEAD_BYTES)
        return (st.st_ino, st.st_size, st.st_mtime_ns, head)

    def read(self) -> dict | None:
        try:
            f = open(self.path, "rb")
        except FileNotFoundError:
            self._cache = self._key = None
            return None
        with f:
            key = self._file_key(f)
            if key == self._key:
                return self._cache
            f.seek(0)
            raw = f.read()
        self._cache, self._key = self._parse(raw), key
        return self._cache

    def _parse(self, raw: bytes) -> dict:
        hint = f"Run `synthgap db rebuild` to recreate it from {self.path.parent / 'runs'}/."
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise StoreCorrupt(f"The run index {self.path} is damaged ({e}). {hint}") from None
        if not isinstance(data, dict) or not isinstance(data.get(TABLE, {}), dict):
            raise StoreCorrupt(f"The run index {self.path} has an unexpected layout. {hint}")
        meta = data.pop(_META, {})
        schema = meta.get("schema") if isinstance(meta, dict) else None
        if schema != SCHEMA_VERSION:
            if isinstance(schema, int) and schema > SCHEMA_VERSION:
                raise StoreError(
                    f"The run index {self.path} was written by a newer SynthGap "
                    f"(schema {schema}, this one knows {SCHEMA_VERSION}); upgrade synthgap."
                )
            raise StoreCorrupt(f"The run index {self.path} has no valid schema version. {hint}")
        return data

    def write(self, data: dict) -> None:
        meta = {"schema": SCHEMA_VERSION, "token": secrets.token_hex(8)}
        payload = orjson.dumps({_META: meta, **data})
        try:
            protocol.write_atomic(self.path, lambda f: f.write(payload))
        except BaseException as e:
            # TinyDB changed the cached tables in place before calling write:
            # forget them so the next read shows what is really on disk.
            self._cache = self._key = None
            if isinstance(e, OSError):
                raise StoreError(f"Could not write the run index {self.path}: "
                                 f"{protocol.os_error_message(e, self.path)}. Nothing was changed.") from None
            raise
        with open(self.path, "rb") as f:
            self._key = self._file_key(f)
        self._cache = data

    def close(self) -> None:
        pass


class RunStore:
    """Index of runs. Records are plain dicts with at least ``id`` and ``state``."""

    def __init__(self, workspace: Workspace | str | os.PathLike):
        self.workspace = workspace if isinstance(workspace, Workspace) else Workspace(Path(workspace))
        self.workspace.ensure()
        self.path = self.workspace.index_path
        self._lock = FileLock(str(self.path) + ".lock", timeout=LOCK_TIMEOUT_S)
        self._storage = AtomicJSONStorage(self.path)
        self._db = TinyDB(self._storage, storage=_Shared)
        self._table = self._db.table(TABLE, cache_size=0)
        self._cleaned = False

    # -- locking -------------------------------------------------------------
    def locked(self):
        """Context manager: hold the index lock across several operations."""
        return _Locked(self)

    def _acquire(self):
        try:
            self._lock.acquire()
        except Timeout:
            raise StoreError(f"The run index {self.path} stayed locked for {LOCK_TIMEOUT_S}s; "
                             "is another synthgap process stuck?") from None
        if not self._cleaned:
            # Under the lock no write is in flight: temp files are leftovers
            # of writers that were killed.
            for tmp in self.path.parent.glob(f".{self.path.name}.*.tmp"):
                tmp.unlink(missing_ok=True)
            self._cleaned = True

    # -- API -----------------------------------------------------------------
    def create(self, record: dict) -> str:
        return self.create_many([record])[0]

    def create_many(self, records: Iterable[dict]) -> list[str]:
        with self.locked():
            existing = self._storage.read() or {}
            taken = existing.get(TABLE, {})
            short = {d["id"][:SHORT_ID] for d in taken.values()}
            docs, ids, now = [], [], time.time()
            for i, record in enumerate(records):
                run_id = record.get("id")
                if run_id is None:
                    run_id = new_run_id(short)
                elif not is_run_id(run_id) or str(run_id_to_doc_id(run_id)) in taken or run_id in ids:
                    raise StoreError(f"Run id {run_id!r} is malformed or already in the index.")
                ids.append(run_id)
                short.add(run_id[:SHORT_ID])
                # created orders the runs (ids are random): one call's runs keep their order.
                doc = {"state": protocol.QUEUED, "created": now + i * 1e-6, **record, "id": run_id}
                docs.append(Document(doc, doc_id=run_id_to_doc_id(run_id)))
            self._table.insert_multiple(docs)
        return ids

    def new_ids(self, n: int) -> list[str]:
        """``n`` fresh ids whose short forms differ from every run's and each other's
        (submit writes run folders before the index knows them)."""
        short = {r["id"][:SHORT_ID] for r in self.list()}
        ids = []
        for _ in range(n):
            ids.append(new_run_id(short))
            short.add(ids[-1][:SHORT_ID])
        return ids

    def get(self, run_id: str) -> dict | None:
        if not is_run_id(run_id):
            return None
        doc = self._table.get(doc_id=run_id_to_doc_id(run_id))
        return dict(doc) if doc is not None else None

    def update(self, run_id: str, **fields: Any) -> None:
        if not is_run_id(run_id):
            raise RunNotFound(f"No run {run_id!r} in {self.workspace.root}.")
        doc_id = run_id_to_doc_id(run_id)
        with self.locked():
            if str(doc_id) not in (self._storage.read() or {}).get(TABLE, {}):
                raise RunNotFound(f"No run {run_id!r} in {self.workspace.root}.")
            self._table.update(fields, doc_ids=[doc_id])

    def update_many(self, changes: dict[str, dict]) -> None:
        """Apply ``{run_id: fields}`` in one write (the supervisor's batched fold)."""
        if not changes:
            return
        with self.locked():
            data = self._storage.read() or {}
            table = data.get(TABLE, {})
            for run_id, fields in changes.items():
                doc = table.get(str(run_id_to_doc_id(run_id)))
                if doc is not None:  # a run removed meanwhile is skipped
                    doc.update(fields)
            self._storage.write(data)

    def delete_many(self, run_ids: Iterable[str]) -> None:
        with self.locked():
            data = self._storage.read() or {}
            table = data.get(TABLE, {})
            for run_id in run_ids:
                table.pop(str(run_id_to_doc_id(run_id)), None)
            self._storage.write(data)

    def list(self, **filters: Any) -> list[dict]:
        """Runs sorted by id (creation time). A filter value may be a list: any of."""
        tests = [(k, set(v) if isinstance(v, (list, tuple, set, frozenset)) else {v})
                 for k, v in filters.items() if v is not None]
        data = self._storage.read() or {}
        out = [dict(d) for d in data.get(TABLE, {}).values()
               if all(d.get(k) in allowed for k, allowed in tests)]
        out.sort(key=creation_order)
        return out

    def resolve(self, ref: str) -> str:
        """A run reference -> run id: a whole id, ``@last`` (the newest run) or ``@last~N``
        (N before it), a row number of the last ``ls`` (up to four digits), a unique id
        prefix (four characters or more), ``EXPERIMENT/NAME``, or a unique run name."""
        runs = self.list()
        if ref.startswith("@last"):
            back = ref[len("@last"):]
            n = int(back[1:]) if back.startswith("~") and back[1:].isdigit() else 0 if not back else None
            if n is None:
                raise StoreError(f"{ref!r}: write @last or @last~N (N runs before the newest)")
            if n >= len(runs):
                raise RunNotFound(f"{ref!r}: the workspace has {len(runs)} run(s)")
            return runs[-1 - n]["id"]
        if ref.isdigit() and len(ref) <= 4:
            rows = self.last_listing()
            if not rows:
                raise RunNotFound(f"{ref!r} is a row number, and `synthgap ls` has not listed runs here yet")
            if not 1 <= int(ref) <= len(rows):
                raise RunNotFound(f"row {ref} is not among the {len(rows)} rows `synthgap ls` printed last")
            return rows[int(ref) - 1]
        experiment, _, name = ref.rpartition("/")
        for pick in (lambda r: r["id"] == ref, lambda r: len(ref) >= 4 and r["id"].startswith(ref),
                     lambda r: bool(experiment) and r.get("experiment") == experiment and r.get("name") == name,
                     lambda r: r.get("name") == ref):
            hits = [r["id"] for r in runs if pick(r)]
            if len(hits) == 1:
                return hits[0]
            if len(hits) > 1:
                raise StoreError(f"{ref!r} matches {len(hits)} runs ({', '.join(hits[:5])}"
                                 f"{', …' if len(hits) > 5 else ''}); give more of the id, or EXPERIMENT/NAME.")
        raise RunNotFound(f"No run matches {ref!r} in {self.workspace.root} (try `synthgap ls`).")

    # -- the last listing, for row numbers ------------------------------------
    def remember_listing(self, run_ids: list[str]) -> None:
        """What ``ls`` printed, so that ``show 3`` names its third row."""
        protocol.write_text_atomic(self.workspace.root / LISTING_FILE, "\n".join(run_ids) + "\n")

    def last_listing(self) -> list[str]:
        try:
            return (self.workspace.root / LISTING_FILE).read_text().split()
        except OSError:
            return []

    # -- rebuild -------------------------------------------------------------
    def rebuild(self, keep_backups: int = KEEP_BACKUPS) -> int:
        """Recreate the index from ``runs/*/`` alone. The old index is copied aside
        first (a unique name; the newest ``keep_backups`` are kept), then the new one
        is written beside it and renamed over it: a kill or a full disk at any step
        leaves a whole index, old or new."""
        from synthgap_tui.summaries import record_from_run_dir

        with self.locked():
            records = []
            for run_dir in sorted(self.workspace.runs_dir.glob("*/")):
                record = record_from_run_dir(run_dir)
                if record is not None:
                    records.append(record)
            protocol.fault_point("rebuild:scanned")
            if self.path.exists():
                stamp = time.strftime("%Y%m%d-%H%M%S")
                backup = self.path.with_name(f"{self.path.name}.bak-{stamp}-{secrets.token_hex(3)}")
                old = self.path.read_bytes()
                try:
                    protocol.write_atomic(backup, lambda f: f.write(old))
                except OSError as e:
                    raise StoreError(f"Could not keep a copy of the run index: {protocol.os_error_message(e, backup)}. "
                                     "Nothing was changed.") from None
                protocol.fault_point("rebuild:backed-up")
            table = {str(run_id_to_doc_id(r["id"])): r for r in records}
            self._storage.write({TABLE: table})
            protocol.fault_point("rebuild:written")
            self.prune_backups(keep_backups)
        return len(records)

    def backups(self) -> list[Path]:
        """The index copies ``rebuild`` kept, oldest first."""
        return sorted(self.path.parent.glob(f"{self.path.name}.bak-*"), key=lambda p: p.stat().st_mtime_ns)

    def prune_backups(self, keep: int, dry_run: bool = False) -> list[Path]:
        """Delete all but the newest ``keep`` index copies (``rebuild``, ``gc``); the deleted."""
        stale = self.backups()[:-keep] if keep else self.backups()
        if not dry_run:
            for path in stale:
                path.unlink(missing_ok=True)
        return stale


class _Shared(Storage):
    """Lets TinyDB use a storage object that RunStore also reads directly."""

    def __init__(self, inner: AtomicJSONStorage):
        self.inner = inner

    def read(self):
        return self.inner.read()

    def write(self, data):
        self.inner.write(data)


class _Locked:
    def __init__(self, store: RunStore):
        self.store = store

    def __enter__(self):
        self.store._acquire()
        return self.store

    def __exit__(self, *exc):
        self.store._lock.release()
