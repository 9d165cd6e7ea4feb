"""The effect class, its registry, and the conversion between 0..1 control vectors and physical values."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor

from gradmix.effects.spec import ParamSpec
from gradmix.errors import ParameterError, UnknownEffectError

REGISTRY: dict[str, type[Effect]] = {}
"""Effect classes by type name (the ``"type"`` of a console file's chain entry)."""


def register(cls: type[Effect]) -> type[Effect]:
    """Class decorator that adds an effect class to :data:`REGISTRY` under ``cls.type_name``."""
    if cls.type_name in REGISTRY:
        raise ValueError(f"effect type {cls.type_name!r} is registered twice")
    REGISTRY[cls.type_name] = cls
    return cls


def get_effect(type_name: str) -> type[Effect]:
    """The effect class registered as ``type_name``."""
    try:
        return REGISTRY[type_name]
    except KeyError:
        raise UnknownEffectError(f"effect type {type_name!r} is not one of {', '.join(sorted(REGISTRY))}") from None


def create(type_name: str, **config: Any) -> Effect:
    """An effect instance by type name, with its static configuration (e.g. EQ band shapes)."""
    return get_effect(type_name)(**config)


@functools.lru_cache(maxsize=None)
def _takes_sample_rate(function: Callable[..., Tensor]) -> bool:
    """Whether a dsp function has a ``sample_rate`` keyword (looked up once, not on every call)."""
    return "sample_rate" in inspect.signature(function).parameters


def plain_json_value(value: Any) -> Any:
    """Tensors and numpy values -> floats / lists of floats (JSON-friendly, lossless)."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [plain_json_value(v) for v in value]
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


class Effect:
    """One effect: its ordered :class:`ParamSpec` list, the dsp function it calls and static settings.

    Subclasses set ``type_name``, ``function`` (a :mod:`gradmix.dsp` function) and build ``self.specs``.
    Parameters travel as dicts of physical values keyed by the function's keywords; banded keywords
    hold ``(batch, bands)`` tensors (or ``(bands,)`` sequences).
    """

    type_name: ClassVar[str]
    function: ClassVar[Callable[..., Tensor]]
    static: ClassVar[tuple[str, ...]] = ()
    """Keywords of ``function`` that are fixed settings rather than controls."""
    mono_in: ClassVar[bool] = False
    """True when the effect takes a mono track (pan)."""
    linear: ClassVar[bool] = False
    """True when, for fixed parameters, the output is a linear function of the input (filters, gains, delays,
    reverbs): a bus of linear effects processes a sum of sends as the sum of each send processed alone."""
    envelope: ClassVar[bool] = False
    """True when the output is the input times one gain envelope shared by all channels (the dynamics): linear in
    the input once the envelope is held."""

    specs: list[ParamSpec]

    def config(self) -> dict[str, Any]:
        """The static settings, as JSON-friendly values."""
        return {}

    @property
    def num_params(self) -> int:
        return len(self.specs)

    def names(self) -> list[str]:
        """Distinct parameter names in spec order."""
        return list(dict.fromkeys(s.name for s in self.specs))

    def _grouped(self) -> dict[str, list[int]]:
        groups: dict[str, list[int]] = {}
        for i, s in enumerate(self.specs):
            groups.setdefault(s.name, []).append(i)
        return groups

    def _banded(self, name: str) -> bool:
        return self.specs[self._grouped()[name][0]].band is not None

    def defaults(self) -> dict[str, float | list[float]]:
        """Default physical values."""
        out: dict[str, float | list[float]] = {}
        for name, idx in self._grouped().items():
            vals = [self.specs[i].default for i in idx]
            out[name] = vals if self._banded(name) else vals[0]
        return out

    def denormalize(self, u: Tensor) -> dict[str, Tensor]:
        """0..1 controls ``(batch, num_params)`` -> physical values ``{name: (batch,) or (batch, bands)}``."""
        if u.dim() != 2 or u.shape[1] != self.num_params:
            raise ParameterError(
                f"{self.type_name}: expected controls of shape (batch, {self.num_params}), got {tuple(u.shape)}"
            )
        cols = [s.denormalize(u[:, i]) for i, s in enumerate(self.specs)]
        out = {}
        for name, idx in self._grouped().items():
            out[name] = torch.stack([cols[i] for i in idx], 1) if self._banded(name) else cols[idx[0]]
        return out

    def normalize(self, params: Mapping[str, Any], batch: int = 1, dtype=torch.float32) -> Tensor:
        """Physical values (missing ones take defaults) -> 0..1 controls ``(batch, num_params)``."""
        full = self.complete(params)
        cols = []
        for name, idx in self._grouped().items():
            v = torch.as_tensor(full[name], dtype=dtype)
            if self._banded(name):
                v = v.expand(batch, len(idx)) if v.dim() < 2 else v
                cols.extend(self.specs[i].normalize(v[:, k]) for k, i in enumerate(idx))
            else:
                cols.append(self.specs[idx[0]].normalize(v.expand(batch) if v.dim() == 0 else v))
        return torch.stack(cols, 1)

    def complete(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """``params`` with defaults for missing names; unknown names raise :class:`ParameterError`."""
        unknown = set(params) - set(self.names())
        if unknown:
            raise ParameterError(
                f"{self.type_name}: unknown parameter(s) {', '.join(sorted(unknown))}; "
                f"expected {', '.join(self.names())}"
            )
        return {**self.defaults(), **params}

    def __call__(self, x: Tensor, params: Mapping[str, Any] | None = None, *, sample_rate: float) -> Tensor:
        """Apply the effect with physical parameters (missing ones take their defaults)."""
        kwargs = self.complete(params or {})
        if _takes_sample_rate(type(self).function):
            kwargs["sample_rate"] = sample_rate
        return type(self).function(x, **kwargs, **self.config())

    def apply_normalized(self, x: Tensor, u: Tensor, *, sample_rate: float) -> tuple[Tensor, dict[str, Tensor]]:
        """Apply with 0..1 controls ``(batch, num_params)``; returns the audio and the physical values."""
        params = self.denormalize(u)
        return self(x, params, sample_rate=sample_rate), params

    def to_json(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """A console-file chain entry: ``{"type": ..., static settings..., parameters...}`` (physical)."""
        full = self.complete(params)
        return {"type": self.type_name, **self.config(), **{k: plain_json_value(v) for k, v in full.items()}}

    @classmethod
    def from_json(cls, entry: Mapping[str, Any]) -> tuple[Effect, dict[str, Any]]:
        """Inverse of :meth:`to_json`: the effect (with its static settings) and its parameters."""
        static = {k: entry[k] for k in cls.static if k in entry}
        effect = cls(**static)
        params = {k: v for k, v in entry.items() if k != "type" and k not in cls.static}
        return effect, effect.complete(params)

    def sample_rate_problem(self, params: Mapping[str, Any], sample_rate: float) -> tuple[list[Any], str] | None:
        """What makes these physical parameters impossible at ``sample_rate`` (Hz), as the place in the effect's
        console-file entry (a JSON path, ``[]`` for the entry) and a message; ``None`` when they are possible."""
        return None

    def latency_samples(self, sample_rate: float) -> int:
        """Latency a causal real-time version would add (the dsp functions return aligned audio)."""
        return 0

    def __repr__(self) -> str:
        cfg = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({cfg})"
