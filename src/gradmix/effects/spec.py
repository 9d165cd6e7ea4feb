"""Parameter specifications and the 0..1 <-> physical mapping."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from gradmix.dsp._params import values_checked
from gradmix.errors import ParameterError


@dataclass(frozen=True)
class ParamSpec:
    """One control of an effect.

    Attributes:
        name: keyword of the dsp function (``gain_db``); banded effects repeat it once per band.
        unit: physical unit, for people (``dB``, ``Hz``, ``ms``, ``s``, ``ratio``, ``""``).
        min, max: the range a network or a random console may use (documented mixing ranges).
        default: the value used when none is given.
        scale: ``"linear"`` or ``"log"`` (log: equal ratios per step of the 0..1 control; needs min > 0).
        band: band index for banded parameters (``(batch, bands)`` keywords), else ``None``.
    """

    name: str
    unit: str
    min: float
    max: float
    default: float
    scale: str = "linear"
    band: int | None = None

    def __post_init__(self) -> None:
        if self.scale not in ("linear", "log"):
            raise ParameterError(f"{self.label}: scale {self.scale!r} is not 'linear' or 'log'")
        if not self.min < self.max:
            raise ParameterError(f"{self.label}: min {self.min} is not < max {self.max}")
        if self.scale == "log" and self.min <= 0:
            raise ParameterError(f"{self.label}: a log scale needs min > 0, got {self.min}")
        if not self.min <= self.default <= self.max:
            raise ParameterError(f"{self.label}: default {self.default} is outside [{self.min}, {self.max}]")

    @property
    def label(self) -> str:
        """``name`` or ``name[band]``."""
        return self.name if self.band is None else f"{self.name}[{self.band}]"

    def denormalize(self, u: Tensor) -> Tensor:
        """0..1 -> physical (values outside 0..1 raise :class:`ParameterError` where
        :func:`gradmix.dsp._params.values_checked`)."""
        d = u.detach()
        if values_checked(d):
            outside = (d < -1e-6) | (d > 1 + 1e-6) | ~torch.isfinite(d)
            if bool(outside.any()):
                bad = d[outside].flatten()[0].item()
                raise ParameterError(f"{self.label}: normalised value {bad:g} is outside 0..1")
        if self.scale == "log":
            return self.min * torch.pow(self.max / self.min, u)
        return self.min + u * (self.max - self.min)

    def normalize(self, value: Tensor) -> Tensor:
        """physical -> 0..1 (values outside ``[min, max]`` raise :class:`ParameterError`)."""
        d = value.detach()
        tol = 1e-9 * max(abs(self.min), abs(self.max), 1.0)
        bad = (d < self.min - tol) | (d > self.max + tol) | ~torch.isfinite(d)
        if bool(bad.any()):
            raise ParameterError(
                f"{self.label}: {d[bad].flatten()[0].item():g} {self.unit} is outside [{self.min:g}, {self.max:g}]"
            )
        if self.scale == "log":
            return torch.log(value / self.min) / math.log(self.max / self.min)
        return (value - self.min) / (self.max - self.min)
