"""A JSON Schema of experiment specs, from the kinds registry (``synthgap kinds --schema``):
editors that check TOML against a schema (taplo, Even Better TOML) then complete fields,
show their help and mark wrong values as they are typed."""

from __future__ import annotations

from runners import kinds
from runners.kinds import Field
from synthgap_tui.specs import DATASET_FIELDS, fields_of

JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean", list: "array", dict: "object"}


def field_schema(f: Field) -> dict:
    types = f.type if isinstance(f.type, tuple) else (f.type,)
    names = sorted({JSON_TYPES[t] for t in types if t in JSON_TYPES} | ({"integer"} if float in types else set()))
    out: dict = {"type": names[0] if len(names) == 1 else names, "description": f.help}
    if f.default is not None:
        out["default"] = f.default
    if f.choices is not None:
        out["enum"] = list(f.choices)
    if f.min is not None:
        out["exclusiveMinimum" if f.min_open else "minimum"] = f.min
    if f.max is not None:
        out["maximum"] = f.max
    return out


def spec_schema() -> dict:
    registry = kinds.all_kinds()
    every: dict[str, dict] = {}
    runs = []
    for name, kind in registry.items():
        fields = {k: field_schema(f) for k, f in fields_of(kind).items()}
        every.update(fields)
        runs.append({"type": "object", "title": f'kind = "{name}"', "description": kind.help,
                     "properties": {"kind": {"const": name}, **fields,
                                    "sweep": {"type": "object", "description": "fields swept: one run per value",
                                              "properties": {k: {"type": "array", "items": v}
                                                             for k, v in fields.items()},
                                              "additionalProperties": False}},
                     "required": ["kind"], "additionalProperties": False})
    dataset = {"type": "object", "properties": {k: field_schema(f) for k, f in DATASET_FIELDS.items()},
               "required": ["path"], "additionalProperties": False}
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "SynthGap experiment spec",
        "type": "object",
        "properties": {
            "experiment": {"type": "object", "properties": {"name": {"type": "string"},
                                                            "description": {"type": "string"}},
                           "required": ["name"], "additionalProperties": False},
            "datasets": {"type": "object", "additionalProperties": {"anyOf": [{"type": "string"}, dataset]}},
            "defaults": {"type": "object", "properties": every, "additionalProperties": False},
            "runs": {"type": "object", "additionalProperties": {"anyOf": runs}},
        },
        "required": ["experiment", "runs"],
        "additionalProperties": False,
    }
