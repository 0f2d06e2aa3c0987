"""Code that stays put: the runners a run executes, snapshotted when it is submitted.

A queued or requeued run must not pick up code edited after its submission. At
submit the ``runners`` package (the installed one, or an editable install's
source tree) is copied into ``WORKSPACE/code/<hash>/runners/``, named by the
hash of its files, so identical snapshots are stored once; the run's spec
records the hash and the supervisor starts it with that folder first on
``PYTHONPATH``. Runners record the hash in their provenance. ``gc`` removes the
snapshots no run still needs. ``[supervisor] snapshot_code = false`` turns it off.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
from pathlib import Path

from runners import protocol

CODE_DIR = "code"
ENV = "SYNTHGAP_CODE"  # the snapshot a runner runs from (its provenance records it)


def source_files() -> tuple[Path, list[Path]]:
    """The runners package's folder and its Python files (caches left out)."""
    root = Path(importlib.util.find_spec("runners").submodule_search_locations[0])
    return root, sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def snapshot(workspace_root: Path) -> str:
    """The hash of the runners as they are now, their copy made once under code/<hash>."""
    root, files = source_files()
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    key = digest.hexdigest()[:16]
    target = workspace_root / CODE_DIR / key
    if not target.is_dir():
        tmp = protocol.temp_path(target)
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            for path in files:
                dest = tmp / "runners" / path.relative_to(root)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, dest)
            os.replace(tmp, target)  # whole or not at all; a concurrent submit's identical copy wins
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not target.is_dir():
                raise
    return key


def folder(workspace_root: Path, key: str) -> Path:
    return workspace_root / CODE_DIR / key


def unused(workspace_root: Path, runs: list[dict]) -> list[Path]:
    """Snapshots no run still needs: every run that may start again (not finished) keeps its own."""
    wanted = {r.get("code") for r in runs if r.get("state") != protocol.FINISHED}
    base = workspace_root / CODE_DIR
    return sorted(p for p in base.iterdir() if p.is_dir() and p.name not in wanted) if base.is_dir() else []
