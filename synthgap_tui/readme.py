"""README's generated sections (the field reference, the app's keys): found between
their markers, rewritten by ``python -m synthgap_tui.fieldref --write`` or
``python -m synthgap_tui.keyref --write``; tests keep them true."""

from __future__ import annotations

import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def section(text: str, begin: str, end: str) -> str | None:
    if begin not in text or end not in text:
        return None
    return text[text.index(begin):text.index(end) + len(end)]


def main(argv: list[str], begin: str, end: str, markdown) -> int:
    """Print the section, or with ``--write`` put it into README."""
    if "--write" not in argv:
        print(markdown())
        return 0
    text = README.read_text()
    old = section(text, begin, end)
    if old is None:
        print(f"{README} has no section between {begin!r} and {end!r}", file=sys.stderr)
        return 1
    README.write_text(text.replace(old, markdown()))
    return 0
