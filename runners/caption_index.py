"""Substring retrieval as The Unmet Promise's authors ran it: SQLite full-text search.

Their ``filter_laion_metadata_substring.py`` asks each LAION metadata database
``SELECT * FROM samples WHERE TEXT MATCH '<query>' COLLATE NOCASE`` once per
class, where the query is the class's ``class_map`` entry or its name, quoted
as one phrase when it holds ``-`` or ``/`` and no quote. FTS5 reads an unquoted
query as its tokens all appearing anywhere in the caption, in any order, and a
quoted one as those tokens adjacent. A caption that matches several classes is
returned for each. This module asks SQLite's FTS5 (standard library) the same
questions, so the answers are SQLite's own, and keeps the pool's index as one
SQLite file in the workspace cache, built once per pool.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path

from runners import protocol

MATCH = "SELECT rowid FROM samples WHERE TEXT MATCH ? COLLATE NOCASE"


class QueryError(ValueError):
    """A class's query that FTS5 cannot parse (the message names the class)."""


def fts_query(cls: dict) -> str:
    """The authors' query for a class: its ``query`` (their class_map) or its name,
    made one phrase when it contains '-' or '/' and no double quote."""
    q = cls.get("query") or cls["name"]
    if ("-" in q or "/" in q) and '"' not in q:
        q = f'"{q}"'
    return q


def build(path: Path, captions: Iterable[str]) -> None:
    """The FTS5 index of ``captions`` (rowid = position, from 0), written whole or not at all."""
    tmp = protocol.temp_path(path)
    tmp.unlink(missing_ok=True)
    try:
        with sqlite3.connect(tmp) as db:
            db.execute("PRAGMA journal_mode = OFF")
            db.execute("CREATE VIRTUAL TABLE samples USING fts5(TEXT)")
            db.executemany("INSERT INTO samples (rowid, TEXT) VALUES (?, ?)", enumerate(captions))
        db.close()
        protocol.publish(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class CaptionIndex:
    def __init__(self, path: Path):
        # Read-only: several retrievals may share one cached index.
        self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)

    def match(self, query: str) -> list[int]:
        """Positions of the captions ``query`` matches, in pool order."""
        try:
            return sorted(r for (r,) in self.db.execute(MATCH, (query,)))
        except sqlite3.OperationalError as e:
            raise QueryError(f"FTS5 cannot parse {query!r}: {e}") from None

    def close(self) -> None:
        self.db.close()


def search_database(path: Path, query: str) -> list[tuple[str, str]]:
    """(URL, caption) of the rows one of the authors' metadata databases returns for
    ``query``: their ``samples`` table, asked as they ask it."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return [(str(url or ""), str(text or "")) for url, text in
                db.execute("SELECT URL, TEXT FROM samples WHERE TEXT MATCH ? COLLATE NOCASE", (query,))]
    except sqlite3.DatabaseError as e:
        raise QueryError(f"{path}: {e} (expected the authors' layout: a full-text table samples with URL and "
                         "TEXT columns)") from None
    finally:
        db.close()


def check_queries(classes: list[dict]) -> list[str]:
    """Every class whose query FTS5 refuses, named with the reason (asked of an empty
    index, before any pool is read)."""
    db = sqlite3.connect(":memory:")
    db.execute("CREATE VIRTUAL TABLE samples USING fts5(TEXT)")
    bad = []
    for c in classes:
        try:
            db.execute(MATCH, (fts_query(c),)).fetchall()
        except sqlite3.OperationalError as e:
            bad.append(f"class {c['id']} ({fts_query(c)!r}): {e}")
    db.close()
    return bad
