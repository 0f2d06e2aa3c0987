"""The papers' experiments as TOML specs shipped with the package."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

PRESET_DIR = Path(str(files(__name__)))


@dataclass(frozen=True)
class Preset:
    name: str
    title: str  # the experiment's name
    path: Path


def list_presets() -> list[Preset]:
    out = []
    for path in sorted(PRESET_DIR.glob("*.toml")):
        exp = tomllib.loads(path.read_text())["experiment"]
        out.append(Preset(path.stem, exp["name"], path))
    return out


def preset_path(name: str) -> Path:
    path = PRESET_DIR / f"{Path(name).stem}.toml"
    if not path.is_file():
        from synthgap_tui.errors import UserError

        names = ", ".join(p.name for p in list_presets())
        raise UserError(f"no preset {name!r}; presets: {names}")
    return path
