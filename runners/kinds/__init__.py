"""The registry of run kinds (standard library only: the app, the CLI and the
runners all import it).

Each module of this package that defines ``KIND`` is a kind. More kinds come
from modules named in ``$SYNTHGAP_KINDS`` (comma-separated module names, for
a lab's own kinds or tests); the variable is inherited by the supervisor and
the runners, so every process sees the same registry.
"""

from __future__ import annotations

import importlib
import os
import pkgutil

from runners.kinds.base import COMMON, Chart, Field, Kind, Metric, Ref, mean_run_seconds

__all__ = ["Chart", "Field", "Kind", "Metric", "Ref", "COMMON", "ENV_KINDS", "UnknownKind", "all_kinds",
           "get", "mean_run_seconds"]

ENV_KINDS = "SYNTHGAP_KINDS"

_kinds: dict[str, Kind] | None = None
_loaded_from: str | None = None


class UnknownKind(KeyError):
    def __str__(self) -> str:
        return f"unknown run kind {self.args[0]!r}; known: {', '.join(all_kinds())}"


def _modules() -> list[str]:
    builtin = [f"{__name__}.{m.name}" for m in pkgutil.iter_modules(__path__)
               if not m.name.startswith("_") and m.name != "base"]
    extra = [m.strip() for m in os.environ.get(ENV_KINDS, "").split(",") if m.strip()]
    return builtin + extra


def all_kinds() -> dict[str, Kind]:
    """Every registered kind by name, built-in ones first."""
    global _kinds, _loaded_from
    env = os.environ.get(ENV_KINDS, "")
    if _kinds is None or env != _loaded_from:
        kinds = {}
        for module in _modules():
            kind = getattr(importlib.import_module(module), "KIND", None)
            if isinstance(kind, Kind):
                if kind.name in kinds:
                    raise RuntimeError(f"run kind {kind.name!r} is defined twice (again in {module})")
                kinds[kind.name] = kind
        _kinds, _loaded_from = kinds, env
    return _kinds


def get(name: str) -> Kind:
    try:
        return all_kinds()[name]
    except KeyError:
        raise UnknownKind(name) from None
