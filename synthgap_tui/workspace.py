"""Where a workspace lives and how its files are named."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from runners import protocol

ENV_HOME = "SYNTHGAP_HOME"
DEFAULT_HOME = "~/.synthgap"
_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
_ID_LEN = 10
SHORT_ID = 6  # characters of an id tables show and references need


def resolve_workspace(arg: str | os.PathLike | None = None) -> Path:
    """``--workspace DIR``, else ``$SYNTHGAP_HOME``, else ``~/.synthgap``."""
    raw = arg or os.environ.get(ENV_HOME) or DEFAULT_HOME
    return Path(raw).expanduser().resolve()


def new_run_id(taken: set[str] | frozenset = frozenset()) -> str:
    """Ten random base-36 characters whose first SHORT_ID (6) are not the first six of
    an id in ``taken`` (short ids): a run is named by its first six characters, as
    git names commits, even among the runs of one submission. Ids map one-to-one
    onto TinyDB document ids; creation order is the index's ``created`` field."""
    while True:
        run_id = doc_id_to_run_id(secrets.randbelow(len(_ALPHABET) ** _ID_LEN))  # one draw, not one per character
        if run_id[:SHORT_ID] not in taken:
            return run_id


def run_id_to_doc_id(run_id: str) -> int:
    return int(run_id, 36)


def doc_id_to_run_id(doc_id: int) -> str:
    digits = []
    while doc_id:
        doc_id, d = divmod(doc_id, 36)
        digits.append(_ALPHABET[d])
    return "".join(reversed(digits)).rjust(_ID_LEN, _ALPHABET[0])


def is_run_id(text: str) -> bool:
    return len(text) == _ID_LEN and all(c in _ALPHABET for c in text)


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def at(cls, arg: str | os.PathLike | None = None) -> "Workspace":
        return cls(resolve_workspace(arg))

    @property
    def index_path(self) -> Path:
        return self.root / "runs.sqlite"

    @property
    def legacy_index_path(self) -> Path:
        """The JSON index of earlier versions (schema 1), moved into index_path on first open."""
        return self.root / "runs.json"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def specs_dir(self) -> Path:
        return self.root / "specs"

    @property
    def config_path(self) -> Path:
        return self.root / "config.toml"

    @property
    def supervisor_lock(self) -> Path:
        return self.root / "supervisor.lock"

    @property
    def supervisor_log(self) -> Path:
        return self.root / "supervisor.log"

    def run_dir(self, run_id: str) -> Path:
        return self.runs_dir / run_id

    def run_file(self, run_id: str, name: str) -> Path:
        return self.run_dir(run_id) / name

    def events_path(self, run_id: str) -> Path:
        return self.run_file(run_id, protocol.EVENTS_FILE)

    def ensure(self) -> "Workspace":
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        return self
