"""Where a workspace lives and how its files are named."""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from runners import protocol

ENV_HOME = "SYNTHGAP_HOME"
DEFAULT_HOME = "~/.synthgap"
_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
_ID_LEN = 10
_EPOCH_MS = 1_704_067_200_000  # 2024-01-01: keeps ids short
_last_id = 0


def resolve_workspace(arg: str | os.PathLike | None = None) -> Path:
    """``--workspace DIR``, else ``$SYNTHGAP_HOME``, else ``~/.synthgap``."""
    raw = arg or os.environ.get(ENV_HOME) or DEFAULT_HOME
    return Path(raw).expanduser().resolve()


def new_run_id() -> str:
    """Short, time-sortable, unique-enough id; the store checks uniqueness.

    Base 36 of (milliseconds since 2024 * 1296 + random): ten characters
    that sort by creation time and map one-to-one onto TinyDB document ids.
    """
    global _last_id
    n = (int(time.time() * 1000) - _EPOCH_MS) * 1296 + secrets.randbelow(1296)
    n = _last_id = max(n, _last_id + 1)  # ids made in one process sort in creation order
    digits = []
    while n:
        n, r = divmod(n, 36)
        digits.append(_ALPHABET[r])
    return "".join(reversed(digits)).rjust(_ID_LEN, "0")


def run_id_to_doc_id(run_id: str) -> int:
    return int(run_id, 36)


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
