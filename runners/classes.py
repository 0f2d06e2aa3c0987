"""Class lists and the prompt templates built from them.

A class has an ``id`` (its folder name in an ImageFolder), a ``name``, a
``definition``, a ``hypernym`` and an optional ``query``: the SQLite FTS5
query that retrieves it instead of the name (the authors' ``class_map``). A
user file is JSON (a list, or ``{"classes": [...]}``) or CSV with the columns
id, name[, definition, hypernym, query]. Templates name a class with
``{name}``, ``{a_name}`` (with its article, as the Unmet Promise templates
write it), ``{definition}`` and ``{hypernym}``.

Built-in lists. For generation (``load_classes``), ``imagenet100`` is WordNet
3.0's names, definitions and hypernyms (assets/imagenet100.json, as FITYMI and
Mind the Gap prompt). For The Unmet Promise's kinds (``load_class_list``: the
retrieval, curation and the CLIP zero-shot head) every built-in list carries
the authors' names, queries and templates: ``imagenet`` (open_clip's 1,000
names and 80 OpenAI templates, WordNet ids from timm), ``imagenet100`` (its
subset by WordNet id), ``aircraft``, ``cars``, ``dtd`` and ``flowers102``
(assets/class-lists/, written by assets/make_class_lists.py).
"""

from __future__ import annotations

import csv
import importlib.util
import json
import re
import string
from dataclasses import dataclass
from pathlib import Path

import synthgap_assets
from runners.kinds.base import CLASS_LISTS
from runners.runtime import RunnerError


BUILTIN = {"imagenet100": "imagenet100.json"}  # shipped in synthgap_assets
CLASS_FIELDS = ("name", "definition", "hypernym")
PLACEHOLDERS = (*CLASS_FIELDS, "a_name", "style")  # {style}: the token a style-inversion run learned (style_from)
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


@dataclass
class ClassList:
    """A dataset's classes with the templates The Unmet Promise uses for it (None:
    the run's own ``templates`` field decides)."""

    classes: list[dict]
    retrieval_templates: list[str] | None = None  # clip-knn queries, one search each
    filtering_templates: list[str] | None = None  # curation's CLIP score, averaged per class
    zeroshot_templates: list[str] | None = None  # the zero-shot head, averaged per class


def load_class_list(source: str) -> ClassList:
    """A built-in list by name (CLASS_LISTS), or a user's file (its classes only)."""
    if source not in CLASS_LISTS:
        return ClassList(load_classes(source))
    doc = json.loads(synthgap_assets.path(f"class-lists/{'imagenet' if source == 'imagenet100' else source}.json")
                     .read_text())
    if source.startswith("imagenet"):
        from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES, OPENAI_IMAGENET_TEMPLATES

        templates = [t("{name}") for t in OPENAI_IMAGENET_TEMPLATES]
        rows = [{"id": wnid, "name": name, "query": doc["queries"].get(name)}
                for wnid, name in zip(imagenet_wnids(), IMAGENET_CLASSNAMES)]
        if source == "imagenet100":
            wordnet = {c["id"]: c for c in load_classes("imagenet100")}
            rows = [{**wordnet[r["id"]], **r} for r in rows if r["id"] in wordnet]
        doc["classes"], doc["retrieval_templates"], doc["zeroshot_templates"] = rows, templates, templates
    return ClassList(_checked(doc["classes"], source), doc["retrieval_templates"], doc["filtering_templates"],
                     doc["zeroshot_templates"])


def imagenet_wnids() -> list[str]:
    """ImageNet-1k's WordNet ids in class-index order, as timm ships them (read as a
    file: importing timm costs seconds)."""
    spec = importlib.util.find_spec("timm")
    path = Path(spec.submodule_search_locations[0]) / "data" / "_info" / "imagenet_synsets.txt"
    return path.read_text().split()


def load_classes(source: str) -> list[dict]:
    if source in CLASS_LISTS and source not in BUILTIN:
        return load_class_list(source).classes
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
    return _checked(classes, path)


def _checked(classes: list[dict], path) -> list[dict]:
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
        out.append({"id": cid, "name": name, "definition": str(c.get("definition") or ""),
                    "hypernym": str(c.get("hypernym") or ""), "query": str(c["query"]) if c.get("query") else None})
    if not out:
        raise RunnerError(f"{path}: no classes")
    return out


def with_article(name: str) -> str:
    """'an ' before a lower-case vowel, else 'a ' (the Unmet Promise adapt code's rule)."""
    return ("an " if name[:1] in "aeiou" else "a ") + name


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
    return template.format(**{k: cls.get(k, "") for k in CLASS_FIELDS}, a_name=with_article(cls["name"]), style=style)
