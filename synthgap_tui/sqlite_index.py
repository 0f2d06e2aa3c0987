"""The run index on disk: one SQLite file, a row per run, behind TinyDB's ``Storage`` seam.

A JSON index is rewritten whole by every update and parsed whole by every
reader: 0.7 s per reader and a 37 MB rewrite per update at 100,000 runs. Here
an update writes one row, ``ls -n 50`` reads fifty, and a poller asks only for
the rows changed since the revision it last saw (``rev``: every write
transaction takes the next number; removals leave a row in ``removed``).

The rollback journal (``PERSIST``), not WAL: WAL keeps a shared-memory file
that fails on network filesystems, and on a full disk even readers could not
open it. ``synchronous=FULL``: a committed update survives a kill or a crash.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator

import orjson
from tinydb.storages import Storage

from runners import protocol
from synthgap_tui.errors import StoreCorrupt, StoreError
from synthgap_tui.workspace import doc_id_to_run_id

SCHEMA_VERSION = 2  # 1 was runs.json
TABLE = "runs"
LOCK_TIMEOUT_S = 60
# Fields kept in columns of their own (indexed): the filters every listing uses.
COLUMNS = ("state", "kind", "experiment", "name")
_SCHEMA = """
CREATE TABLE runs (doc_id INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, created REAL NOT NULL,
                   state TEXT, kind TEXT, experiment TEXT, name TEXT, rev INTEGER NOT NULL, doc TEXT NOT NULL);
CREATE INDEX runs_created ON runs(created, id);
CREATE INDEX runs_state ON runs(state);
CREATE INDEX runs_experiment ON runs(experiment, created);
CREATE INDEX runs_name ON runs(name);
CREATE INDEX runs_rev ON runs(rev);
CREATE TABLE removed (id TEXT NOT NULL, rev INTEGER NOT NULL);
CREATE INDEX removed_rev ON removed(rev);
CREATE TABLE meta (key TEXT PRIMARY KEY, value);
INSERT INTO meta VALUES ('rev', 0), ('reset', 0);
"""


def row(doc: dict, rev: int) -> tuple:
    return (int(doc["id"], 36), doc["id"], doc.get("created") or 0.0,
            *(_text(doc.get(c)) for c in COLUMNS), rev, orjson.dumps(doc).decode())


def _text(value) -> str | None:
    return value if value is None or isinstance(value, str) else str(value)


SHORT_IDS = "SELECT DISTINCT substr(id, 1, ?) FROM runs"  # with SHORT_ID: the short forms taken


def parse_docs(texts: Iterable[str]) -> list[dict]:
    return [orjson.loads(text) for text in texts]


def rebuild_hint(path: Path) -> str:
    """What a damaged index's message ends with (the index at ``path``, in its workspace)."""
    return f"Run `synthgap db rebuild` to recreate the index from {path.parent / 'runs'}/."


def storage_error(e: sqlite3.Error, path: Path) -> StoreError:
    """A SQLite error as the one-line message the CLI and the app show."""
    code = getattr(e, "sqlite_errorcode", 0) & 0xFF
    if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB) or "no such table" in str(e):
        return StoreCorrupt(f"The run index {path} is damaged ({e}). {rebuild_hint(path)}")
    if code == sqlite3.SQLITE_FULL or (code == sqlite3.SQLITE_IOERR and protocol.free_bytes(path.parent) < 1 << 20):
        message = protocol.os_error_message(OSError(errno.ENOSPC, "No space left on device", str(path)))
        return StoreError(f"Could not write the run index {path}: {message}. Nothing was changed.")
    if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return StoreError(f"The run index {path} stayed locked for {LOCK_TIMEOUT_S}s; "
                          "is another synthgap process stuck?")
    return StoreError(f"The run index {path} could not be used: {e}")


def create(path: Path, docs: Iterable[dict] = ()) -> None:
    """A new index file holding ``docs``, built beside ``path`` and renamed over it:
    an index file is never half made. The caller holds the writers' lock."""
    tmp = protocol.temp_path(path)
    tmp.unlink(missing_ok=True)
    try:
        conn = sqlite3.connect(tmp, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=OFF")  # a new file: a failure deletes it anyway
            conn.executescript(_SCHEMA)
            conn.execute("BEGIN")
            conn.executemany("INSERT INTO runs VALUES (?,?,?,?,?,?,?,?,?)", (row(d, 0) for d in docs))
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            conn.execute("COMMIT")
        finally:
            conn.close()
        # A journal left by the file this one replaces must not be replayed onto it.
        Path(f"{path}-journal").unlink(missing_ok=True)
        protocol.publish(tmp, path)
    except sqlite3.Error as e:
        tmp.unlink(missing_ok=True)
        raise storage_error(e, path) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class SQLiteStorage(Storage):
    """TinyDB storage over the index. ``read``/``write`` give TinyDB its whole-database
    view (a write stores only the documents that differ from what was read, so
    writers of other runs meanwhile are kept); ``RunStore`` uses the row methods."""

    def __init__(self, path: Path, lock, migrate: Callable[[], object]):
        self.path = Path(path)
        self.lock = lock  # the writers' file lock, held by every write
        self.migrate = migrate  # moves an older index into a missing file
        self._local = threading.local()  # a connection per thread, as sqlite3 wants
        self._seen: dict[str, str] = {}  # doc_id -> text, as TinyDB last read them

    # -- connections ---------------------------------------------------------
    def connection(self) -> sqlite3.Connection:
        """This thread's connection, reopened when the file was replaced (``db rebuild``
        of a damaged index) or created when it is missing."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self.migrate()
            with self.lock:
                if not self.path.exists():
                    create(self.path)
            st = os.stat(self.path)
        local = self._local
        if getattr(local, "key", None) != (st.st_dev, st.st_ino):
            if getattr(local, "conn", None) is not None:
                local.conn.close()
            local.conn = self._open()
            local.key = (st.st_dev, st.st_ino)
        return local.conn

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=LOCK_TIMEOUT_S, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=PERSIST")
            conn.execute("PRAGMA synchronous=FULL")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.Error as e:
            conn.close()
            raise storage_error(e, self.path) from None
        if version != SCHEMA_VERSION:
            conn.close()
            if version > SCHEMA_VERSION:
                raise StoreError(f"The run index {self.path} was written by a newer SynthGap "
                                 f"(schema {version}, this one knows {SCHEMA_VERSION}); upgrade synthgap.")
            raise StoreCorrupt(f"The run index {self.path} has no valid schema version. {rebuild_hint(self.path)}")
        return conn

    def query(self, sql: str, params: Iterable = ()) -> list[tuple]:
        try:
            return self.connection().execute(sql, tuple(params)).fetchall()
        except sqlite3.Error as e:
            raise storage_error(e, self.path) from None

    @contextmanager
    def transaction(self) -> Iterator[tuple[sqlite3.Connection, int]]:
        """Under the writers' lock: a write transaction and its revision number."""
        with self.lock:
            conn = self.connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
                rev = conn.execute("SELECT value FROM meta WHERE key='rev'").fetchone()[0] + 1
                yield conn, rev
                conn.execute("UPDATE meta SET value=? WHERE key='rev'", (rev,))
                conn.execute("COMMIT")
            except BaseException as e:
                if conn.in_transaction:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        self._local.key = None  # reopened on its next use
                if isinstance(e, sqlite3.Error):
                    raise storage_error(e, self.path) from None
                raise

    # -- TinyDB's view ---------------------------------------------------------
    def read(self) -> dict | None:
        rows = self.query("SELECT doc_id, doc FROM runs ORDER BY created, id")
        self._seen = {str(doc_id): text for doc_id, text in rows}
        docs = parse_docs(text for _, text in rows)
        return {TABLE: {str(doc_id): doc for (doc_id, _), doc in zip(rows, docs)}}

    def write(self, data: dict) -> None:
        table = data.get(TABLE, {})
        texts = {doc_id: orjson.dumps(doc).decode() for doc_id, doc in table.items()}
        changed = [{**table[k], "id": table[k].get("id") or _id_of(k)} for k, t in texts.items()
                   if self._seen.get(k) != t]
        gone = [_id_of(k) for k in self._seen if k not in texts]
        with self.transaction() as (conn, rev):
            put(conn, changed, rev)
            remove(conn, gone, rev)
        self._seen = texts

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = self._local.key = None


def _id_of(doc_id: str) -> str:
    return doc_id_to_run_id(int(doc_id))


def put(conn: sqlite3.Connection, docs: list[dict], rev: int) -> None:
    conn.executemany("INSERT OR REPLACE INTO runs VALUES (?,?,?,?,?,?,?,?,?)", (row(d, rev) for d in docs))


def remove(conn: sqlite3.Connection, run_ids: list[str], rev: int) -> None:
    conn.executemany("DELETE FROM runs WHERE id=?", ((i,) for i in run_ids))
    conn.executemany("INSERT INTO removed VALUES (?,?)", ((i, rev) for i in run_ids))
