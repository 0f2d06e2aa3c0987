"""Class lists for generation and the prompt templates built from them.

A class has an ``id`` (its folder name in the generated ImageFolder), a
``name``, a ``definition`` and a ``hypernym``. ``classes = "imagenet100"``
uses assets/imagenet100.json (WordNet 3.0); a user file is JSON (a list, or
``{"classes": [...]}``) or CSV with the columns id, name, definition[, hypernym,
names]. ``names`` are the synonyms retrieval matches (CSV: separated by ';').
"""

from __future__ import annotations

import csv
import json
import re
import string
from pathlib import Path

import synthgap_assets
from runners.runtime import RunnerError


BUILTIN = {"imagenet100": "imagenet100.json"}  # shipped in synthgap_assets
CLASS_FIELDS = ("name", "definition", "hypernym")
PLACEHOLDERS = (*CLASS_FIELDS, "style")  # {style}: the token a style-inversion run learned (style_from)
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


def load_classes(source: str) -> list[dict]:
    path = synthgap_assets.path(BUILTIN[source]) if source in BUILTIN else Path(source).expanduser()
    try:
        text = path.read_text()
    except OSError as e:
        raise RunnerError(f"cannot read the class file {path}: {e.strerror or e}") from None
    if path.suffix.lower() == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
        if not rows or not {"id", "name"} <= set(rows[0]):
            raise RunnerError(f"{path}: a class CSV needs a header with id,name,definition[,hypernym]")
        classes = rows
    else:
        try:
            data = json.loads(text)
        except ValueError as e:
            raise RunnerError(f"{path} is not valid JSON: {e}") from None
        classes = data.get("classes") if isinstance(data, dict) else data
        if not isinstance(classes, list) or not all(isinstance(c, dict) and "id" in c for c in classes):
            raise RunnerError(f"{path}: expected a list of classes with at least id and name")
    out, seen = [], set()
    for c in classes:
        cid = str(c["id"]).strip()
        if not _SAFE_ID.match(cid) or cid in (".", ".."):
            raise RunnerError(f"{path}: class id {cid!r} cannot be a folder name (use letters, digits, "
                              "'_', '-', '.', '+'; no '/' and not '..')")
        if cid in seen:
            raise RunnerError(f"{path}: class id {cid!r} appears twice")
        seen.add(cid)
        name = str(c.get("name") or cid)
        names = c.get("names") or [name]
        if isinstance(names, str):  # CSV: synonyms separated by ';'
            names = [n.strip() for n in names.split(";") if n.strip()]
        out.append({"id": cid, "name": name, "names": [str(n) for n in names], "definition":
                    str(c.get("definition") or ""), "hypernym": str(c.get("hypernym") or "")})
    if not out:
        raise RunnerError(f"{path}: no classes")
    return out


def check_template(template: str) -> None:
    """Refuse unknown placeholders before anything is generated."""
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as e:
        raise RunnerError(f"prompt template {template!r} is malformed: {e}") from None
    unknown = sorted({f for f in fields if f not in PLACEHOLDERS})
    if unknown:
        raise RunnerError(f"prompt template {template!r} has unknown placeholder(s) "
                          f"{', '.join('{' + u + '}' for u in unknown)}; allowed: "
                          f"{', '.join('{' + p + '}' for p in PLACEHOLDERS)}")


def prompt_for(template: str, cls: dict, style: str = "") -> str:
    return template.format(**{k: cls[k] for k in CLASS_FIELDS}, style=style)
