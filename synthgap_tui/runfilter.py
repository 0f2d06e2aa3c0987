"""The run filter shared by the runs screen and ``synthgap ls``.

Words match anywhere (names, ids, notes, tags); ``state:``, ``kind:``,
``experiment:`` and ``tag:`` narrow (comma = any of); ``archived:yes`` shows
only archived runs, ``archived:all`` both. Field expressions compare a
hyperparameter or a result: ``freeze_layers>=8``, ``arch=resnet50``,
``top1>70``, ``experiment~mtg`` (``~`` = contains). All parts must hold.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from synthgap_tui.errors import UserError

SEARCHED = ("id", "name", "experiment", "kind", "state", "note")
NARROWING = ("state", "kind", "experiment", "tag", "archived")
OPERATORS = (">=", "<=", "!=", "=", ">", "<", "~")
_EXPRESSION = re.compile(r"^([A-Za-z_][\w.]*)(>=|<=|!=|=|>|<|~)(.*)$")
_OPERATOR_CHARS = set("<>=!~")
EXAMPLE = "freeze_layers>=8, arch=resnet50, top1>70, experiment~mtg"


class FilterError(UserError):
    pass


@dataclass(frozen=True)
class Expression:
    key: str
    op: str
    value: str

    def holds(self, run: dict) -> bool:
        found, actual = lookup(run, self.key)
        if not found or actual is None:
            return False
        if isinstance(actual, list):  # tags: any of them (none of them for !=)
            hits = [self._compare(a) for a in actual]
            return all(hits) if self.op == "!=" else any(hits)
        return self._compare(actual)

    def _compare(self, actual) -> bool:
        if self.op == "~":
            return self.value.lower() in str(actual).lower()
        wanted, have = _number(self.value), _number(actual)
        if self.op in ("=", "!="):
            same = wanted == have if wanted is not None and have is not None \
                else str(actual).lower() == self.value.lower()
            return same == (self.op == "=")
        if have is None:  # an ordering on a text field never holds
            return False
        return {">": have > wanted, ">=": have >= wanted, "<": have < wanted, "<=": have <= wanted}[self.op]


def _number(value) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(str(value))
    except ValueError:
        return None


def lookup(run: dict, key: str) -> tuple[bool, object]:
    """A field of an index record: its own keys, then its results, then the
    run's parameters; ``top1`` is the finished run's mean top-1 (the table's)."""
    if key == "top1":
        from synthgap_tui.formatting import top1_of

        value = top1_of(run)
        return value is not None, value
    if key == "tag":
        return True, run.get("tags") or []
    for where in (run, run.get("summary") or {}, run.get("params") or {}):
        if key in where and not isinstance(where[key], dict):
            return True, where[key]
    return False, None


def known_keys(runs: list[dict]) -> set[str]:
    keys = {"top1", "tag"}
    for run in runs:
        keys.update(run)
        keys.update(run.get("summary") or {})
        keys.update(run.get("params") or {})
    return keys


def haystack(run: dict) -> str:
    """What words are looked for in: a run's searched fields and tags, lower case."""
    return (" ".join(str(run.get(k) or "") for k in SEARCHED) + " " + " ".join(run.get("tags") or [])).lower()


@dataclass(frozen=True)
class RunFilter:
    words: tuple[str, ...] = ()
    fields: dict[str, frozenset[str]] = field(default_factory=dict)
    expressions: tuple[Expression, ...] = ()

    @classmethod
    def parse(cls, text: str) -> "RunFilter":
        """Raises FilterError naming the malformed part."""
        words, fields, expressions = [], {}, []
        for token in text.split():
            key, sep, value = token.partition(":")
            if sep and key.lower() in NARROWING and value and not _OPERATOR_CHARS & set(key):
                fields[key.lower()] = frozenset(value.lower().split(","))
                continue
            match = _EXPRESSION.match(token)
            if match:
                name, op, value = match.groups()
                if not value or value[0] in _OPERATOR_CHARS:
                    raise FilterError(f"{token!r}: no value after {op!r} (e.g. {EXAMPLE})")
                if op in (">", ">=", "<", "<=") and _number(value) is None:
                    raise FilterError(f"{token!r}: {op} compares numbers and {value!r} is not one")
                expressions.append(Expression(name, op, value))
            elif token[0] in _OPERATOR_CHARS or token[-1] in _OPERATOR_CHARS:
                raise FilterError(f"{token!r} is not FIELD OP VALUE with OP one of {' '.join(OPERATORS)} "
                                  f"(e.g. {EXAMPLE})")
            else:
                words.append(token.lower())
        archived = fields.get("archived", frozenset())
        if archived - {"yes", "no", "all"}:
            raise FilterError("archived: takes yes, no or all")
        return cls(tuple(words), fields, tuple(expressions))

    def unknown_keys(self, runs: list[dict]) -> list[str]:
        """Expression keys that no run has: most likely a typo."""
        known = known_keys(runs)
        return [e.key for e in self.expressions if e.key not in known]

    def matches(self, run: dict, hay: str | None = None) -> bool:
        """``hay``: the run's ``haystack``, when the caller keeps it between filters
        (the words are then the cheapest test, and go first)."""
        if hay is not None and not all(w in hay for w in self.words):
            return False
        archived = self.fields.get("archived")
        if archived is None:  # the default: archived runs are hidden
            if run.get("archived"):
                return False
        elif "all" not in archived and bool(run.get("archived")) != ("yes" in archived):
            return False
        for key, allowed in self.fields.items():
            if key == "archived":
                continue
            if key == "tag":
                if not allowed & {t.lower() for t in run.get("tags") or []}:
                    return False
            elif str(run.get(key, "")).lower() not in allowed:
                return False
        if not all(e.holds(run) for e in self.expressions):
            return False
        if self.words and hay is None:
            hay = haystack(run)
            return all(w in hay for w in self.words)
        return True
