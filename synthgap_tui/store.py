"""The run index: TinyDB's API over one SQLite file (``sqlite_index``), one row per run.

Run directories are the source of truth; ``runs.sqlite`` indexes them so that
listing 100,000 runs does not open 100,000 folders. Writers hold a file lock
for the whole read-modify-write and commit one transaction, so the TUI, the
CLI and the supervisor can all write; readers never take the writers' lock,
and pollers read only what changed since they last looked (``changes``).
"""

from __future__ import annotations

import os
import secrets
import shutil
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import orjson
from filelock import FileLock, Timeout
from tinydb import TinyDB

from runners import protocol
from synthgap_tui import sqlite_index as index
from synthgap_tui.errors import RunNotFound, StoreCorrupt, StoreError
from synthgap_tui.workspace import SHORT_ID, Workspace, is_run_id, new_run_id, run_id_to_doc_id

TABLE = index.TABLE
LOCK_TIMEOUT_S = index.LOCK_TIMEOUT_S
KEEP_BACKUPS = 5  # copies of the index `db rebuild` keeps ([store] keep_backups)
LISTING_FILE = ".last-ls"  # the run ids of the last `synthgap ls`, by row
_BATCH = 512  # rows parsed at a time by iterate()


@dataclass
class Changes:
    """What a poller that had seen revision ``since`` needs: every run (``full``,
    after a rebuild or at first) or the changed runs and the removed ids."""
    rev: int
    full: bool
    runs: list[dict]
    removed: list[str]


class WriterLock:
    """The writers' file lock, re-entrant, with a clear message when it times out."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = FileLock(str(path) + ".lock", timeout=LOCK_TIMEOUT_S)
        self._cleaned = False

    def __enter__(self):
        try:
            self._lock.acquire()
        except Timeout:
            raise StoreError(f"The run index {self.path} stayed locked for {LOCK_TIMEOUT_S}s; "
                             "is another synthgap process stuck?") from None
        if not self._cleaned:
            # Under the lock no index is being built: temp files are leftovers of killed writers.
            for tmp in self.path.parent.glob(f".{self.path.name}.*.tmp"):
                tmp.unlink(missing_ok=True)
            self._cleaned = True
        return self

    def __exit__(self, *exc):
        self._lock.release()


class RunStore:
    """Index of runs. Records are plain dicts with at least ``id``, ``state`` and ``created``.

    ``db`` is the same index as a TinyDB database (table ``runs``) for ad-hoc
    queries; RunStore's own methods touch only the rows they need, which
    TinyDB's Table cannot (it rebuilds the whole table dict on every write).
    """

    def __init__(self, workspace: Workspace | str | os.PathLike):
        self.workspace = workspace if isinstance(workspace, Workspace) else Workspace(Path(workspace))
        self.workspace.ensure()
        self.path = self.workspace.index_path
        self._writers = WriterLock(self.path)
        self.db = TinyDB(self.path, self._writers, self.migrate_legacy, storage=index.SQLiteStorage)
        self.index: index.SQLiteStorage = self.db.storage
        self.migrated: int | None = None  # runs moved in from runs.json by this store, to say so once

    def locked(self):
        """Context manager: hold the writers' lock across several operations."""
        return self._writers

    def migrate_legacy(self) -> int | None:
        """Move a JSON index (``runs.json``, schema 1) into ``runs.sqlite`` once (the
        first read of a missing index does it too); the number of runs moved, or None
        when there was nothing to move. The JSON file stays as ``runs.json.migrated``."""
        legacy = self.workspace.legacy_index_path
        if self.path.exists() or not legacy.exists():
            return None
        with self.locked():
            if self.path.exists():
                return None
            docs = _legacy_docs(legacy)
            index.create(self.path, docs)
            legacy.rename(legacy.with_name(legacy.name + ".migrated"))
        self.migrated = len(docs)
        return self.migrated

    def migration_message(self) -> str | None:
        if self.migrated is None:
            return None
        return (f"Moved the run index ({self.migrated} runs) from runs.json into {self.path}; "
                "runs.json is kept as runs.json.migrated.")

    # -- writes ----------------------------------------------------------------
    def create(self, record: dict) -> str:
        return self.create_many([record])[0]

    def create_many(self, records: Iterable[dict]) -> list[str]:
        with self.index.transaction() as (conn, rev):
            short = {i for (i,) in conn.execute(index.SHORT_IDS, (SHORT_ID,))}
            docs, ids, now = [], set(), time.time()
            for i, record in enumerate(records):
                run_id = record.get("id")
                if run_id is None:
                    run_id = new_run_id(short)
                elif not is_run_id(run_id) or run_id in ids or \
                        conn.execute("SELECT 1 FROM runs WHERE id=?", (run_id,)).fetchone():
                    raise StoreError(f"Run id {run_id!r} is malformed or already in the index.")
                ids.add(run_id)
                short.add(run_id[:SHORT_ID])
                # created orders the runs (ids are random): one call's runs keep their order.
                docs.append({"state": protocol.QUEUED, "created": now + i * 1e-6, **record, "id": run_id})
            index.put(conn, docs, rev)
        return [d["id"] for d in docs]

    def new_ids(self, n: int) -> list[str]:
        """``n`` fresh ids whose short forms differ from every run's and each other's
        (submit writes run folders before the index knows them)."""
        short = {i for (i,) in self.index.query(index.SHORT_IDS, (SHORT_ID,))}
        ids = []
        for _ in range(n):
            ids.append(new_run_id(short))
            short.add(ids[-1][:SHORT_ID])
        return ids

    def update(self, run_id: str, **fields: Any) -> None:
        if not is_run_id(run_id) or not self._merge({run_id: fields}):
            raise RunNotFound(f"No run {run_id!r} in {self.workspace.root}.")

    def update_many(self, changes: dict[str, dict]) -> None:
        """Apply ``{run_id: fields}`` in one transaction (the supervisor's batched fold);
        a run removed meanwhile is skipped."""
        if changes:
            self._merge(changes)

    def _merge(self, changes: dict[str, dict]) -> int:
        with self.index.transaction() as (conn, rev):
            docs = []
            for run_id, fields in changes.items():
                found = conn.execute("SELECT doc FROM runs WHERE doc_id=?", (run_id_to_doc_id(run_id),)).fetchone()
                if found is not None:
                    docs.append({**orjson.loads(found[0]), **fields})
            index.put(conn, docs, rev)
        return len(docs)

    def delete_many(self, run_ids: Iterable[str]) -> None:
        with self.index.transaction() as (conn, rev):
            index.remove(conn, list(run_ids), rev)

    # -- reads -------------------------------------------------------------------
    def get(self, run_id: str) -> dict | None:
        if not is_run_id(run_id):
            return None
        rows = self.index.query("SELECT doc FROM runs WHERE doc_id=?", (run_id_to_doc_id(run_id),))
        return orjson.loads(rows[0][0]) if rows else None

    def get_many(self, run_ids: Iterable[str]) -> dict[str, dict]:
        wanted = [i for i in run_ids if is_run_id(i)]
        found = {}
        for start in range(0, len(wanted), 500):  # SQLite's bound-parameter limit
            chunk = wanted[start:start + 500]
            rows = self.index.query(f"SELECT doc FROM runs WHERE id IN ({','.join('?' * len(chunk))})", chunk)
            found.update((d["id"], d) for d in index.parse_docs(t for (t,) in rows))
        return found

    def list(self, **filters: Any) -> list[dict]:
        """Runs in creation order. A filter value may be a list: any of."""
        return list(self.iterate(**filters))

    def iterate(self, newest_first: bool = False, by_experiment: bool = False, **filters: Any) -> Iterator[dict]:
        """Runs in creation order (newest first, or grouped by experiment), parsed a batch
        at a time: a caller that stops after fifty reads about fifty."""
        where, params = _where(filters)
        order = "DESC" if newest_first else "ASC"
        group = "ifnull(experiment, ''), " if by_experiment else ""
        conn = self.index.connection()
        cursor = None
        try:
            cursor = conn.execute(f"SELECT doc FROM runs {where} ORDER BY {group}created {order}, id {order}", params)
            while rows := cursor.fetchmany(_BATCH):
                yield from index.parse_docs(t for (t,) in rows)
        except sqlite3.Error as e:
            raise index.storage_error(e, self.path) from None
        finally:
            if cursor is not None:  # a caller that stopped early: the read lock goes now
                cursor.close()

    def ids(self) -> list[str]:
        """Every run id, sorted (for short forms)."""
        return [i for (i,) in self.index.query("SELECT id FROM runs ORDER BY id")]

    def count(self) -> int:
        return self.index.query("SELECT count(*) FROM runs")[0][0]

    def state_counts(self) -> dict[str, int]:
        return dict(self.index.query("SELECT state, count(*) FROM runs GROUP BY state"))

    def experiments(self) -> set[str]:
        return {e for (e,) in self.index.query("SELECT DISTINCT experiment FROM runs") if e is not None}

    def names(self) -> set[str]:
        return {n for (n,) in self.index.query("SELECT DISTINCT name FROM runs") if n}

    def changes(self, since: int | None) -> Changes:
        """Everything changed after revision ``since`` (all runs when ``since`` is None or
        older than the last rebuild), read as one consistent snapshot."""
        conn = self.index.connection()
        try:
            conn.execute("BEGIN")
            meta = dict(conn.execute("SELECT key, value FROM meta"))
            full = since is None or since < meta["reset"]
            rows = conn.execute("SELECT doc FROM runs ORDER BY created, id" if full else
                                "SELECT doc FROM runs WHERE rev > ? ORDER BY created, id",
                                () if full else (since,)).fetchall()
            removed = [] if full else [i for (i,) in conn.execute("SELECT id FROM removed WHERE rev > ?", (since,))]
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise index.storage_error(e, self.path) from None
        return Changes(meta["rev"], full, index.parse_docs(t for (t,) in rows), removed)

    def resolve(self, ref: str) -> str:
        """A run reference -> run id: a whole id, ``@last`` (the newest run) or ``@last~N``
        (N before it), a row number of the last ``ls`` (up to four digits), a unique id
        prefix (four characters or more), ``EXPERIMENT/NAME``, or a unique run name."""
        if ref.startswith("@last"):
            back = ref[len("@last"):]
            n = int(back[1:]) if back.startswith("~") and back[1:].isdigit() else 0 if not back else None
            if n is None:
                raise StoreError(f"{ref!r}: write @last or @last~N (N runs before the newest)")
            hit = self.index.query("SELECT id FROM runs ORDER BY created DESC, id DESC LIMIT 1 OFFSET ?", (n,))
            if not hit:
                raise RunNotFound(f"{ref!r}: the workspace has {self.count()} run(s)")
            return hit[0][0]
        if ref.isdigit() and len(ref) <= 4:
            rows = self.last_listing()
            if not rows:
                raise RunNotFound(f"{ref!r} is a row number, and `synthgap ls` has not listed runs here yet")
            if not 1 <= int(ref) <= len(rows):
                raise RunNotFound(f"row {ref} is not among the {len(rows)} rows `synthgap ls` printed last")
            return rows[int(ref) - 1]
        experiment, _, name = ref.rpartition("/")
        # '{' sorts right after 'z': [ref, ref + '{') holds exactly the ids starting with ref.
        for sql, params in (("id=?", (ref,)), ("id >= ? AND id < ?", (ref, ref + "{") if len(ref) >= 4 else None),
                            ("experiment=? AND name=?", (experiment, name) if experiment else None),
                            ("name=?", (ref,))):
            if params is None:
                continue
            hits = [i for (i,) in self.index.query(f"SELECT id FROM runs WHERE {sql} ORDER BY created LIMIT 6", params)]
            if len(hits) == 1:
                return hits[0]
            if len(hits) > 1:
                n = self.index.query(f"SELECT count(*) FROM runs WHERE {sql}", params)[0][0]
                raise StoreError(f"{ref!r} matches {n} runs ({', '.join(hits[:5])}"
                                 f"{', …' if n > 5 else ''}); give more of the id, or EXPERIMENT/NAME.")
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
        first (a unique name; the newest ``keep_backups`` are kept); a readable index
        is then refilled in one transaction, a damaged one replaced by a new file
        built beside it: a kill or a full disk at any step leaves a whole index."""
        from synthgap_tui.summaries import record_from_run_dir

        with self.locked():
            records = []
            for run_dir in sorted(self.workspace.runs_dir.glob("*/")):
                record = record_from_run_dir(run_dir)
                if record is not None:
                    records.append(record)
            protocol.fault_point("rebuild:scanned")
            readable = self._back_up() if self.path.exists() else False
            protocol.fault_point("rebuild:backed-up")
            if readable:
                with self.index.transaction() as (conn, rev):
                    conn.execute("DELETE FROM runs")
                    conn.execute("DELETE FROM removed")
                    index.put(conn, records, rev)
                    conn.execute("UPDATE meta SET value=? WHERE key='reset'", (rev,))  # pollers reload
            else:
                index.create(self.path, records)
            protocol.fault_point("rebuild:written")
            legacy = self.workspace.legacy_index_path  # a damaged runs.json never migrated
            if legacy.exists():
                legacy.rename(legacy.with_name(legacy.name + ".migrated"))
            self.prune_backups(keep_backups)
        return len(records)

    def _back_up(self) -> bool:
        """Copy the index aside; whether it could be read (a damaged one is copied as bytes)."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        backup = self.path.with_name(f"{self.path.name}.bak-{stamp}-{secrets.token_hex(3)}")
        tmp = protocol.temp_path(backup)
        try:
            try:
                self.index.query("SELECT count(*) FROM runs")
                readable = True
            except StoreCorrupt:
                readable = False
            if readable:
                with sqlite3.connect(tmp) as copy:
                    self.index.connection().backup(copy)  # a consistent copy, journal applied
                copy.close()
            else:
                shutil.copyfile(self.path, tmp)
            protocol.publish(tmp, backup)
        except (OSError, sqlite3.Error) as e:
            tmp.unlink(missing_ok=True)
            error = e if isinstance(e, OSError) else OSError(28 if "full" in str(e) else 5, str(e))
            raise StoreError(f"Could not keep a copy of the run index: {protocol.os_error_message(error, backup)}. "
                             "Nothing was changed.") from None
        return readable

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


def _where(filters: dict[str, Any]) -> tuple[str, list]:
    """SQL for equality filters on indexed columns (a list value: any of)."""
    clauses, params = [], []
    for key, value in filters.items():
        if value is None:
            continue
        if key not in index.COLUMNS and key != "id":
            raise ValueError(f"cannot filter the index on {key!r}")
        values = list(value) if isinstance(value, (list, tuple, set, frozenset)) else [value]
        clauses.append(f"{key} IN ({','.join('?' * len(values))})")
        params += values
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", params


def _legacy_docs(path: Path) -> list[dict]:
    hint = index.rebuild_hint(path)
    try:
        data = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as e:
        raise StoreCorrupt(f"The run index {path} is damaged ({e}). {hint}") from None
    table = data.get(TABLE) if isinstance(data, dict) else None
    meta = data.get("meta") if isinstance(data, dict) else None
    if not isinstance(table, dict) or not isinstance(meta, dict) or meta.get("schema") != 1:
        raise StoreCorrupt(f"The run index {path} has an unexpected layout. {hint}")
    return [d for d in table.values() if isinstance(d, dict) and is_run_id(str(d.get("id")))]
