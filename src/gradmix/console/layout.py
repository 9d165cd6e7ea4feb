"""The console's structure and its batched renderer.

A :class:`Layout` fixes the effect chains (per-track strip, named buses, master) shared by a batch of
songs; :class:`Params` holds physical values for them and :class:`Controls` the 0..1 values a network
emits. :func:`render` runs a whole multitrack in one batched call per effect: tracks are folded into the
batch axis, so there is no Python loop over tracks.

Signal flow: ``track -> strip chain -> (mono tracks become stereo at the pan slot) -> x mask`` ; each
strip output feeds every bus post-fader at ``sends_db`` ; ``mix = sum(strips) + sum(bus chains(sends))``
-> master chain -> stereo mix. Every effect returns time-aligned audio (look-ahead latency is
compensated inside the limiter), so no further alignment is needed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from gradmix import dsp
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
        full = torch.zeros(u.shape[0], self.effect.num_params, dtype=u.dtype, device=u.device)
        keep = [i for i, s in enumerate(self.effect.specs) if s.name not in self.fixed]
        full = full.index_copy(1, torch.tensor(keep, dtype=torch.long, device=u.device), u) if keep else full
        params = self.effect.denormalize(full)
        for name, value in self.fixed.items():
            v = torch.as_tensor(value, dtype=u.dtype, device=u.device)
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
        strips = render_strips(self.strip, tracks, params.strip, sample_rate=sample_rate, mono=mono)
        if mask is not None:
            strips = strips * mask.to(strips)[:, :, None, None]
        return mix_down(self, strips, params, sample_rate=sample_rate), strips

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


@dataclass
class Controls:
    """0..1 controls: ``strip (B, N, Ps)``, ``sends (B, N, buses)``, ``buses (B, Pb)``, ``master (B, Pm)``."""

    strip: Tensor
    sends: Tensor
    buses: Tensor
    master: Tensor

    def logits(self) -> list[Tensor]:
        """The four blocks as logits (of controls kept 1e-4 inside 0..1): new leaf tensors that require grad,
        what an optimiser moves."""
        return [
            torch.logit(u.detach().clamp(1e-4, 1 - 1e-4)).requires_grad_()
            for u in (self.strip, self.sends, self.buses, self.master)
        ]

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


def render_strips(
    chain: Sequence[Slot],
    tracks: Tensor,
    params: Sequence[Mapping[str, Tensor]],
    *,
    sample_rate: float,
    mono: Tensor | None = None,
) -> Tensor:
    """Run every track through the strip chain in one batched call per effect.

    Args:
        chain: the strip slots.
        tracks: ``(batch, tracks, channels, samples)``, channels 1 or 2.
        params: per slot ``{name: (batch, tracks[, bands])}``; names not given take defaults.
        sample_rate: Hz.
        mono: ``(batch, tracks)`` bool for 2-channel input whose channels are a duplicated mono signal.

    Returns:
        ``(batch, tracks, 2, samples)``. A mono track without a pan slot is centred with the pan law.
    """
    if tracks.dim() != 4 or tracks.shape[2] not in (1, 2):
        raise ShapeError(f"tracks: expected (batch, tracks, 1 or 2 channels, samples), got {tuple(tracks.shape)}")
    batch, n = tracks.shape[:2]
    x = tracks.flatten(0, 1)
    flat_mono = None if mono is None else mono.reshape(-1).to(torch.bool)
    for slot, p in zip(chain, params):
        kw = {k: _fold(v, batch, n) for k, v in p.items()}
        if slot.effect.mono_in:
            x = place_stereo(x, kw["pan"], flat_mono)
        else:
            x = slot.effect(x, kw, sample_rate=sample_rate)
    if x.shape[1] == 1:
        x = dsp.pan(x, pan=0.0)
    return x.unflatten(0, (batch, n))


def _fold(v: Any, batch: int, n: int) -> Any:
    if isinstance(v, Tensor) and v.dim() >= 2 and v.shape[:2] == (batch, n):
        return v.flatten(0, 1)
    return v


def place_stereo(x: Tensor, pan: Tensor, mono: Tensor | None) -> Tensor:
    """The console's pan slot: mono tracks by the constant-power pan law, stereo tracks by balance."""
    if x.shape[1] == 1:
        return dsp.pan(x, pan=pan)
    balanced = dsp.balance(x, pan=pan)
    if mono is None or not bool(mono.any()):
        return balanced
    panned = dsp.pan(x[:, :1], pan=pan)
    return torch.where(mono[:, None, None], panned, balanced)


def mix_down(layout: Layout, strips: Tensor, params: Params, *, sample_rate: float) -> Tensor:
    """Sum strips, feed the buses post-fader, add their outputs, run the master chain.

    Args:
        layout: the console structure (bus and master chains).
        strips: ``(batch, tracks, 2, samples)`` strip outputs (already masked).
        params: physical parameters (``sends_db``, ``buses``, ``master`` are used).
        sample_rate: Hz.

    Returns:
        ``(batch, 2, samples)``.
    """
    return finish(layout, strips.sum(1), bus_inputs(strips, params.sends_db).unbind(1), params, sample_rate=sample_rate)


def track_outputs(layout: Layout, strips: Tensor, params: Params, *, sample_rate: float) -> Tensor:
    """Each track's own part of the mix before the master: its strip output plus what every bus makes of its
    send. Buses of linear effects (:attr:`Effect.linear`) only, so that the parts sum to what the master
    receives: ``sum_n track_outputs[:, n] = strips.sum(1) + buses``.

    Args:
        layout: the console structure (its buses must be linear).
        strips: ``(batch, tracks, 2, samples)`` strip outputs (already masked).
        params: physical parameters (``sends_db`` and ``buses`` are used).
        sample_rate: Hz.

    Returns:
        ``(batch, tracks, 2, samples)``. Each bus runs once on every track's send (batch x tracks items), so
        this costs as much as rendering the buses once per track.
    """
    for name, chain in layout.buses:
        for slot in chain:
            if not slot.effect.linear:
                raise ParameterError(
                    f"bus {name!r}: {slot.effect.type_name} is not linear, so a track's own part "
                    "of the bus output is not defined"
                )
    batch, n = strips.shape[:2]
    out = strips
    for k, (_, chain) in enumerate(layout.buses):
        gain = torch.pow(10.0, params.sends_db[..., k].to(strips) / 20.0)
        if not bool((gain > 0).any()):
            continue
        y = (strips * gain[..., None, None]).flatten(0, 1)
        for slot, p in zip(chain, params.buses[k]):
            y = slot.effect(y, {name: _per_track(v, batch, n) for name, v in p.items()}, sample_rate=sample_rate)
        out = out + y.unflatten(0, (batch, n))
    return out


def pre_master(layout: Layout, strips: Tensor, params: Params, *, sample_rate: float) -> Tensor:
    """What the master chain receives: the strips summed plus every bus's output, ``(batch, 2, samples)``,
    from strips ``(batch, tracks, 2, samples)`` (zero a track's strip to leave it out)."""
    return add_buses(
        layout, strips.sum(1), bus_inputs(strips, params.sends_db).unbind(1), params, sample_rate=sample_rate
    )


def _per_track(v: Any, batch: int, n: int) -> Any:
    """A bus parameter ``(batch[, bands])`` repeated for each of ``n`` tracks: ``(batch * n[, bands])``."""
    if isinstance(v, Tensor) and v.dim() >= 1 and v.shape[0] == batch:
        return v.repeat_interleave(n, 0)
    return v


def bus_inputs(strips: Tensor, sends_db: Tensor) -> Tensor:
    """Post-fader sends summed per bus: ``(batch, tracks, 2, samples)``, ``(batch, tracks, buses)`` dB ->
    ``(batch, buses, 2, samples)`` (``-inf`` dB sends nothing)."""
    gain = torch.pow(10.0, sends_db.to(strips) / 20.0)
    return torch.einsum("bnct,bnk->bkct", strips, gain)


def add_buses(
    layout: Layout, mix: Tensor, buses_in: Sequence[Tensor | None], params: Params, *, sample_rate: float
) -> Tensor:
    """Add each bus chain's output to the strip sum ``mix (batch, 2, samples)``.

    ``buses_in`` holds each bus's input ``(batch, 2, samples)``, or ``None`` for a bus nothing is sent to
    (its chain is skipped: every effect maps silence to silence).
    """
    for k, (_, chain) in enumerate(layout.buses):
        y = buses_in[k]
        if y is None:
            continue
        for slot, p in zip(chain, params.buses[k]):
            y = slot.effect(y, p, sample_rate=sample_rate)
        mix = mix + y
    return mix


def finish(
    layout: Layout, mix: Tensor, buses_in: Sequence[Tensor | None], params: Params, *, sample_rate: float
) -> Tensor:
    """Add each bus chain's output to the strip sum ``mix (batch, 2, samples)`` (:func:`add_buses`) and run
    the master chain."""
    mix = add_buses(layout, mix, buses_in, params, sample_rate=sample_rate)
    for slot, p in zip(layout.master, params.master):
        mix = slot.effect(mix, p, sample_rate=sample_rate)
    return mix
