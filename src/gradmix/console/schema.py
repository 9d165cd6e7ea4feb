"""The console file's JSON Schema (built from the effect registry) and validation with exact error places.

``python -m gradmix.console.schema`` prints the schema; the package ships it as ``console.schema.json``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from gradmix.dsp import DISTORTION_SHAPES, SHAPES
from gradmix.effects import REGISTRY
from gradmix.errors import ConsoleFileError

FORMAT = "gradmix.console"
VERSION = 1
SCHEMA_PATH = Path(__file__).with_name("console.schema.json")

NUMBER = {"type": "number"}
# Physical validity of each parameter name (not the mixing ranges: a person may go beyond those).
VALIDITY: dict[str, dict[str, Any]] = {
    "gain_db": NUMBER,
    "makeup_db": NUMBER,
    "threshold_db": NUMBER,
    "ceiling_db": NUMBER,
    "tone_db": NUMBER,
    "level_db": NUMBER,
    "pan": {"type": "number", "minimum": -1, "maximum": 1},
    "width": {"type": "number", "minimum": 0},
    "freq_hz": {"type": "number", "exclusiveMinimum": 0},
    "q": {"type": "number", "exclusiveMinimum": 0},
    "ratio": {"type": "number", "minimum": 1},
    "attack_ms": {"type": "number", "exclusiveMinimum": 0},
    "release_ms": {"type": "number", "exclusiveMinimum": 0},
    "knee_db": {"type": "number", "minimum": 0},
    "range_db": {"type": "number", "minimum": 0},
    "drive_db": {"type": "number", "minimum": 0},
    "mix": {"type": "number", "minimum": 0, "maximum": 1},
    "decay_s": {"type": "number", "exclusiveMinimum": 0, "maximum": 20},
    "predelay_ms": {"type": "number", "minimum": 0, "maximum": 1000},
    "time_ms": {"type": "number", "minimum": 1, "maximum": 5000},
    "feedback": {"type": "number", "minimum": -0.99, "maximum": 0.99},
    "lookahead_ms": {"type": "number", "minimum": 0, "maximum": 100},
    "seed": {"type": "integer", "minimum": 0},
    "shape": {"enum": list(DISTORTION_SHAPES)},
}


def _effect_schema(name: str) -> dict[str, Any]:
    cls = REGISTRY[name]
    effect = cls()
    props: dict[str, Any] = {"type": {"const": name}}
    if name == "eq":
        band = {
            "type": "object",
            "required": ["shape", "freq_hz"],
            "additionalProperties": False,
            "properties": {
                "shape": {"enum": list(SHAPES)},
                "freq_hz": VALIDITY["freq_hz"],
                "gain_db": VALIDITY["gain_db"],
                "q": VALIDITY["q"],
            },
        }
        props["bands"] = {"type": "array", "items": band}
    elif name == "graphic_eq":
        props["gain_db"] = {"type": "array", "items": NUMBER, "minItems": 10, "maxItems": 31}
    else:
        for key in cls.static:
            props[key] = VALIDITY[key]
        for pname in effect.names():
            count = sum(1 for s in effect.specs if s.name == pname)
            banded = effect.specs[[s.name for s in effect.specs].index(pname)].band is not None
            props[pname] = (
                {"type": "array", "items": VALIDITY[pname], "minItems": count, "maxItems": count}
                if banded
                else VALIDITY[pname]
            )
    return {"type": "object", "required": ["type"], "additionalProperties": False, "properties": props}


def console_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a console file."""
    names = sorted(REGISTRY)
    chain = {
        "type": "array",
        "items": {
            "type": "object",
            "required": ["type"],
            "properties": {"type": {"enum": names}},
            "allOf": [
                {"if": {"properties": {"type": {"const": n}}, "required": ["type"]}, "then": {"$ref": f"#/$defs/{n}"}}
                for n in names
            ],
        },
    }
    send = {
        "type": "object",
        "required": ["bus", "level_db"],
        "additionalProperties": False,
        "properties": {"bus": {"type": "string", "minLength": 1}, "level_db": VALIDITY["level_db"]},
    }
    track = {
        "type": "object",
        "required": ["name", "chain"],
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string", "minLength": 1},
            "file": {"type": ["string", "null"]},
            "chain": {"$ref": "#/$defs/chain"},
            "sends": {"type": "array", "items": send},
        },
    }
    bus = {
        "type": "object",
        "required": ["name", "chain"],
        "additionalProperties": False,
        "properties": {"name": {"type": "string", "minLength": 1}, "chain": {"$ref": "#/$defs/chain"}},
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://gradmix.invalid/console.schema.json",
        "title": "gradmix console",
        "description": "A mixing console setting in physical units: per-track strips, sends, buses, master.",
        "type": "object",
        "required": ["format", "version", "sample_rate", "tracks"],
        "additionalProperties": False,
        "properties": {
            "format": {"const": FORMAT},
            "version": {"const": VERSION},
            "sample_rate": {"type": "integer", "minimum": 8000, "maximum": 384000},
            "tracks": {"type": "array", "items": track, "minItems": 1},
            "buses": {"type": "array", "items": bus},
            "master": {
                "type": "object",
                "additionalProperties": False,
                "properties": {"chain": {"$ref": "#/$defs/chain"}},
            },
            "stems": {
                "type": "string",
                "minLength": 1,
                "description": "the folder of the tracks' files, relative to this file's folder (optional)",
            },
        },
        "$defs": {"chain": chain, **{n: _effect_schema(n) for n in names}},
    }


def place(path: Iterable[Any]) -> str:
    """``["tracks", 2, "chain", 1, "q"]`` -> ``tracks[2].chain[1].q``."""
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def _show(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else repr(v) if isinstance(v, str) else json.dumps(v)


def _message(error) -> str:
    v, limit = error.instance, error.validator_value
    ops = {"exclusiveMinimum": ">", "minimum": ">=", "maximum": "<=", "exclusiveMaximum": "<"}
    if error.validator in ops:
        return f"{_show(v)} is not {ops[error.validator]} {_show(limit)}"
    if error.validator == "type":
        return f"{_show(v)} is not of type {limit if isinstance(limit, str) else ' or '.join(limit)}"
    if error.validator == "const":
        return f"{_show(v)} is not {_show(limit)}"
    if error.validator == "enum":
        return f"{_show(v)} is not one of {', '.join(map(str, limit))}"
    if error.validator == "additionalProperties":
        extra = sorted(set(v) - set(error.schema.get("properties", {})))
        return f"unknown key(s) {', '.join(map(repr, extra))}"
    if error.validator == "required":
        missing = [k for k in limit if k not in v]
        return f"{', '.join(map(repr, missing))} is missing"
    if error.validator in ("minItems", "maxItems"):
        return f"has {len(v)} items, expected {'at least' if error.validator == 'minItems' else 'at most'} {limit}"
    return error.message


def validate(data: Any, source: str = "console") -> None:
    """Raise :class:`ConsoleFileError` ``"SOURCE: PLACE: problem"`` for the first schema violation."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(console_schema())
    errors = list(validator.iter_errors(data))
    if errors:
        err = jsonschema.exceptions.best_match(errors)
        raise ConsoleFileError(f"{source}: {place(err.absolute_path)}: {_message(err)}")


if __name__ == "__main__":
    print(json.dumps(console_schema(), indent=2))
