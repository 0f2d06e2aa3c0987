"""The runs screen's filter language: words match anywhere (notes too), ``state:``,
``kind:``, ``experiment:`` and ``tag:`` narrow (comma = any of)."""

from __future__ import annotations

from dataclasses import dataclass, field

SEARCHED = ("id", "name", "experiment", "kind", "state", "note")


@dataclass(frozen=True)
class RunFilter:
    words: tuple[str, ...] = ()
    fields: dict[str, frozenset[str]] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> "RunFilter":
        words, fields = [], {}
        for token in text.lower().split():
            key, sep, value = token.partition(":")
            if sep and key in ("state", "kind", "experiment", "tag") and value:
                fields[key] = frozenset(value.split(","))
            else:
                words.append(token)
        return cls(tuple(words), fields)

    def matches(self, run: dict) -> bool:
        for key, allowed in self.fields.items():
            if key == "tag":
                if not allowed & {t.lower() for t in run.get("tags") or []}:
                    return False
            elif str(run.get(key, "")).lower() not in allowed:
                return False
        if self.words:
            hay = " ".join(str(run.get(k) or "") for k in SEARCHED).lower() + " " + " ".join(run.get("tags") or [])
            return all(w in hay for w in self.words)
        return True
