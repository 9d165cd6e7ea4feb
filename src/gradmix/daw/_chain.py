"""What a gradmix chain becomes on a DAW channel: fader, pan knob, and the effects between them.

A DAW channel runs its inserts first, then the fader, then the pan. A gradmix strip runs its chain in
order, and its ``gain`` effect usually comes first. Every ``gain`` of a chain is summed into the fader
(``gain`` is linear, so where it sits does not change what a linear effect does), and every level-dependent
threshold that came *after* a gain is moved by the gain before it, so that the DAW's insert sees the same
signal relative to its threshold as gradmix's effect did: ``threshold_daw = threshold - gain_before``. This
is exact for gradmix's compressor, expander and gate (their curves depend on ``level - threshold`` only)
and for the limiter's ceiling (``limit(g x, c) = g limit(x, c / g)``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from gradmix.console.setting import Entry

THRESHOLDS = {"compressor": "threshold_db", "expander": "threshold_db", "gate": "threshold_db", "limiter": "ceiling_db"}
"""The level-dependent parameter of each effect whose reference moves when the gain goes to the fader."""


@dataclass
class Step:
    """One chain entry with the sum of the gains (dB) that came before it in the chain."""

    index: int
    entry: Entry
    gain_before_db: float

    @property
    def type(self) -> str:
        return self.entry.effect.type_name

    def param(self, name: str) -> Any:
        return self.entry.params[name]

    def threshold_on_fader(self) -> float | None:
        """The threshold (or ceiling) in dB for an insert that comes before the fader, or None."""
        name = THRESHOLDS.get(self.type)
        return None if name is None else float(self.param(name)) - self.gain_before_db


@dataclass
class Strip:
    """A chain as a DAW channel sees it."""

    fader_db: float
    """Sum of every ``gain`` effect's ``gain_db``: the fader (0 dB where there is none)."""
    pan: float | None
    """The first ``pan`` effect's value (-1 .. 1), or None where the chain has none (gradmix centres it)."""
    steps: list[Step]
    """Every entry in order, gains and pans included."""

    @property
    def inserts(self) -> list[Step]:
        """The entries that are neither the fader's gain nor the pan knob's pan."""
        first_pan = next((s.index for s in self.steps if s.type == "pan"), None)
        return [s for s in self.steps if s.type != "gain" and s.index != first_pan]


def analyse(chain: Sequence[Entry]) -> Strip:
    """Split a chain into fader, pan and the entries in between (see the module docstring)."""
    steps, before, pan = [], 0.0, None
    for i, entry in enumerate(chain):
        steps.append(Step(i, entry, before))
        if entry.effect.type_name == "gain":
            before += float(entry.params["gain_db"])
        elif entry.effect.type_name == "pan" and pan is None:
            pan = float(entry.params["pan"])
    return Strip(before, pan, steps)


def db_to_linear(db: float) -> float:
    """``10 ** (dB / 20)``."""
    return 10.0 ** (db / 20.0)


def fmt(value: float) -> str:
    """A number for people: 6 significant digits, no trailing zeros."""
    return f"{float(value):.6g}"


def _values(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(fmt(v) for v in value) + "]"
    return fmt(value)


def describe(entry: Entry) -> str:
    """``type(static settings): name=value unit, ...`` with every parameter of the entry.

    EQ bands are listed one by one (``low_shelf 100 Hz +2 dB Q 0.707``).
    """
    effect = entry.effect
    name = effect.type_name
    if name == "eq":
        bands = [
            f"{shape} {fmt(f)} Hz {float(g):+.6g} dB Q {fmt(q)}"
            for shape, f, g, q in zip(
                effect.shapes, entry.params["freq_hz"], entry.params["gain_db"], entry.params["q"]
            )
        ]
        return "eq: " + "; ".join(bands)
    config = effect.config()
    head = name + ("(" + ", ".join(f"{k}={v}" for k, v in config.items()) + ")" if config else "")
    units = {s.name: s.unit for s in effect.specs}
    parts = []
    for key in effect.names():
        unit = units[key]
        unit = "" if unit in ("", "ratio") else f" {unit}"
        parts.append(f"{key}={_values(entry.params[key])}{unit}")
    return f"{head}: " + ", ".join(parts)


def notes_lines(lines: Iterable[str]) -> list[str]:
    """Lines with no line breaks inside (text written into a project file line by line)."""
    out = []
    for line in lines:
        out.extend(line.splitlines() or [""])
    return out
