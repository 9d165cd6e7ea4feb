"""The console's structure.

A :class:`Layout` fixes the effect chains (per-track strip, named buses, master) shared by a batch of
songs; :class:`Params` holds physical values for them and :class:`Controls` the 0..1 values a network
emits. :meth:`Layout.render` runs a whole multitrack in one batched call per effect (tracks are folded into
the batch axis, so there is no Python loop over tracks), through :func:`gradmix.console.render.render_chunked`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import Tensor

from gradmix.console.render import StripGroup, render_chunked
from gradmix.effects import Effect, ParamSpec, create
from gradmix.errors import ParameterError, ShapeError

SEND_SPEC = ParamSpec("level_db", "dB", -60.0, 0.0, -30.0)
"""Range of a send level for networks; a console file may also omit a send (no send at all)."""


@dataclass(frozen=True)
class Slot:
    """One effect in a chain, with parameters held fixed (not controlled by a network).

    Attributes:
        effect: the effect instance (carries static settings such as EQ band shapes).
        fixed: physical values that controls never change, e.g. ``{"mix": 1.0}`` for a bus reverb.
    """

    effect: Effect
    fixed: Mapping[str, Any] = field(default_factory=dict)

    @property
    def specs(self) -> list[ParamSpec]:
        """The controlled specs (the effect's, minus the fixed ones), in order."""
        return [s for s in self.effect.specs if s.name not in self.fixed]

    def spec(self, name: str) -> ParamSpec:
        """The controlled spec called ``name``."""
        found = [s for s in self.specs if s.name == name]
        if not found:
            raise ParameterError(f"{self.effect.type_name}: no controlled parameter {name!r}")
        return found[0]

    def denormalize(self, u: Tensor) -> dict[str, Tensor]:
        """``(items, len(specs))`` controls -> physical ``{name: (items,) or (items, bands)}``, fixed included."""
        if not self.fixed:
            return self.effect.denormalize(u)
        full = torch.zeros(u.shape[0], self.effect.num_params, dtype=u.dtype, device=u.device)
        keep = [i for i, s in enumerate(self.effect.specs) if s.name not in self.fixed]
        if keep:  # host values go to the device without waiting for its queue (non_blocking)
            full = full.index_copy(1, torch.tensor(keep).to(u.device, non_blocking=True), u)
        params = self.effect.denormalize(full)
        for name, value in self.fixed.items():
            v = torch.as_tensor(value, dtype=u.dtype).to(u.device, non_blocking=True)
            params[name] = v.expand(u.shape[0], *v.shape)
        return params


def _slots(items: Sequence[Slot | Effect | str]) -> tuple[Slot, ...]:
    out = []
    for it in items:
        if isinstance(it, str):
            it = create(it)
        out.append(it if isinstance(it, Slot) else Slot(it))
    return tuple(out)


@dataclass(frozen=True)
class Layout:
    """Effect chains of a console: one strip chain for every track, named buses, the master chain."""

    strip: tuple[Slot, ...]
    buses: tuple[tuple[str, tuple[Slot, ...]], ...] = ()
    master: tuple[Slot, ...] = ()

    @classmethod
    def build(
        cls,
        strip: Sequence[Slot | Effect | str],
        buses: Mapping[str, Sequence[Slot | Effect | str]] = {},
        master: Sequence[Slot | Effect | str] = (),
    ) -> Layout:
        """Build from effect instances, slots or type names."""
        return cls(_slots(strip), tuple((name, _slots(chain)) for name, chain in buses.items()), _slots(master))

    @classmethod
    def default(cls) -> Layout:
        """gain -> 6-band EQ -> compressor -> pan; a reverb bus and a delay bus (100 % wet);
        master EQ -> compressor -> limiter."""
        return cls.build(
            ["gain", "eq", "compressor", "pan"],
            {"reverb": [Slot(create("reverb"), {"mix": 1.0})], "delay": [Slot(create("delay"), {"mix": 1.0})]},
            ["eq", "compressor", "limiter"],
        )

    @property
    def bus_names(self) -> list[str]:
        return [name for name, _ in self.buses]

    @property
    def num_strip_params(self) -> int:
        return sum(len(s.specs) for s in self.strip)

    @property
    def num_bus_params(self) -> int:
        return sum(len(s.specs) for _, chain in self.buses for s in chain)

    @property
    def num_master_params(self) -> int:
        return sum(len(s.specs) for s in self.master)

    def denormalize(self, controls: Controls) -> Params:
        """0..1 controls -> physical parameters."""
        c = controls
        batch, tracks = c.strip.shape[:2]
        _expect(c.strip, (batch, tracks, self.num_strip_params), "controls.strip")
        _expect(c.sends, (batch, tracks, len(self.buses)), "controls.sends")
        _expect(c.buses, (batch, self.num_bus_params), "controls.buses")
        _expect(c.master, (batch, self.num_master_params), "controls.master")
        strip = [
            {k: v.unflatten(0, (batch, tracks)) for k, v in s.denormalize(u).items()}
            for s, u in zip(self.strip, _split(c.strip.flatten(0, 1), self.strip))
        ]
        bus_slots = [s for _, chain in self.buses for s in chain]
        flat = [s.denormalize(u) for s, u in zip(bus_slots, _split(c.buses, bus_slots))]
        buses, i = [], 0
        for _, chain in self.buses:
            buses.append(flat[i : i + len(chain)])
            i += len(chain)
        master = [s.denormalize(u) for s, u in zip(self.master, _split(c.master, self.master))]
        return Params(strip, SEND_SPEC.denormalize(c.sends), buses, master)

    def strip_control_index(self, slot: int, name: str) -> int:
        """Column of parameter ``name`` of strip slot ``slot`` in ``Controls.strip``."""
        names = [s.name for s in self.strip[slot].specs]
        if name not in names:
            raise ParameterError(f"strip slot {slot}: no controlled parameter {name!r}")
        return sum(len(s.specs) for s in self.strip[:slot]) + names.index(name)

    def bus_control_index(self, bus: int, slot: int, name: str) -> int:
        """Column of parameter ``name`` of slot ``slot`` of bus ``bus`` in ``Controls.buses``."""
        chain = self.buses[bus][1]
        before = sum(len(s.specs) for _, c in self.buses[:bus] for s in c) + sum(len(s.specs) for s in chain[:slot])
        names = [s.name for s in chain[slot].specs]
        if name not in names:
            raise ParameterError(f"bus {self.buses[bus][0]!r} slot {slot}: no controlled parameter {name!r}")
        return before + names.index(name)

    def random_controls(
        self, batch: int, tracks: int, generator: torch.Generator | None = None, dtype=torch.float32
    ) -> Controls:
        """Uniform 0..1 controls (for tests and random-console baselines)."""

        def r(*shape):
            return torch.rand(*shape, generator=generator, dtype=dtype)

        return Controls(
            r(batch, tracks, self.num_strip_params),
            r(batch, tracks, len(self.buses)),
            r(batch, self.num_bus_params),
            r(batch, self.num_master_params),
        )

    def render(
        self,
        tracks: Tensor,
        params: Params,
        *,
        sample_rate: float,
        mask: Tensor | None = None,
        mono: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Render a batch of multitracks with physical parameters.

        Args:
            tracks: ``(batch, tracks, channels, samples)``; channels 1 (all mono) or 2.
            params: physical parameters (strip values ``(batch, tracks[, bands])``).
            sample_rate: Hz.
            mask: ``(batch, tracks)``, 1 for real tracks, 0 for padding (padding contributes nothing).
            mono: ``(batch, tracks)`` bool, for 2-channel input: tracks whose channels are a duplicated mono
                signal, panned with the mono law rather than balanced.

        Returns:
            ``(mix, strips)``: the master output ``(batch, 2, samples)`` and each track's strip output
            ``(batch, tracks, 2, samples)`` (post-fader, post-pan, masked).
        """
        if tracks.dim() != 4:
            raise ShapeError(f"tracks: expected (batch, tracks, 1 or 2 channels, samples), got {tuple(tracks.shape)}")
        group = StripGroup(self.strip, range(tracks.shape[1]), params.strip)
        return render_chunked(self, [group], tracks, params, sample_rate=sample_rate, mono=mono, mask=mask)

    def render_normalized(
        self,
        tracks: Tensor,
        controls: Controls,
        *,
        sample_rate: float,
        mask: Tensor | None = None,
        mono: Tensor | None = None,
    ) -> tuple[Tensor, Params]:
        """Render with 0..1 controls; returns the mix ``(batch, 2, samples)`` and the physical parameters."""
        params = self.denormalize(controls)
        mix, _ = self.render(tracks, params, sample_rate=sample_rate, mask=mask, mono=mono)
        return mix, params


class Logits(NamedTuple):
    """:class:`Controls` as logits, the blocks an optimiser moves: ``strip (B, N, Ps)``, ``sends (B, N, buses)``,
    ``buses (B, Pb)``, ``master (B, Pm)``. A column of one control is
    :meth:`Layout.strip_control_index` or :meth:`Layout.bus_control_index`."""

    strip: Tensor
    sends: Tensor
    buses: Tensor
    master: Tensor

    def copy(self) -> Logits:
        """Detached copies of the four blocks."""
        return Logits(*(v.detach().clone() for v in self))


@dataclass
class Controls:
    """0..1 controls: ``strip (B, N, Ps)``, ``sends (B, N, buses)``, ``buses (B, Pb)``, ``master (B, Pm)``."""

    strip: Tensor
    sends: Tensor
    buses: Tensor
    master: Tensor

    def logits(self) -> Logits:
        """The four blocks as logits (of controls kept 1e-4 inside 0..1): new leaf tensors that require grad,
        what an optimiser moves."""
        return Logits(
            *(
                torch.logit(u.detach().clamp(1e-4, 1 - 1e-4)).requires_grad_()
                for u in (self.strip, self.sends, self.buses, self.master)
            )
        )

    @classmethod
    def from_logits(cls, logits: Sequence[Tensor], batch: int = 1) -> Controls:
        """The inverse of :meth:`logits` (the sigmoid of each block), a batch of one repeated ``batch`` times."""
        return cls(*(torch.sigmoid(v) for v in logits)).expand(batch)

    def expand(self, batch: int) -> Controls:
        """Controls of a batch of one repeated ``batch`` times (a view)."""
        return Controls(*(v.expand(batch, *v.shape[1:]) for v in (self.strip, self.sends, self.buses, self.master)))


@dataclass
class Params:
    """Physical parameters of a :class:`Layout` for a batch.

    Attributes:
        strip: per strip slot ``{name: (B, N) or (B, N, bands)}``.
        sends_db: ``(B, N, buses)``; ``-inf`` is no send.
        buses: per bus, per slot ``{name: (B,) or (B, bands)}``.
        master: per master slot ``{name: (B,) or (B, bands)}``.
    """

    strip: list[dict[str, Tensor]]
    sends_db: Tensor
    buses: list[list[dict[str, Tensor]]]
    master: list[dict[str, Tensor]]


def _expect(t: Tensor, shape: tuple[int, ...], name: str) -> None:
    if tuple(t.shape) != shape:
        raise ParameterError(f"{name}: expected shape {shape}, got {tuple(t.shape)}")


def _split(u: Tensor, slots: Sequence[Slot]) -> list[Tensor]:
    sizes = [len(s.specs) for s in slots]
    return list(torch.split(u, sizes, dim=-1)) if slots else []
