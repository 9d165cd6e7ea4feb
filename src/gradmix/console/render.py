"""Rendering a console: the strip chains, the sends, the buses and the master.

:func:`render_chunked` is the one renderer. It runs groups of tracks that share a strip chain, in chunks of
tracks within a memory budget, and sums each chunk's strips and sends into a :class:`Mixdown` as they come,
the one place where sends are summed. :meth:`Layout.render <gradmix.console.Layout.render>` (a network's
batch, with gradients), :meth:`ConsoleSetting.render <gradmix.console.ConsoleSetting.render>` (a console
file, whose tracks may have different chains) and ``gradmix fit`` (a long song) all render through it.

Signal flow: ``track -> strip chain -> (mono tracks become stereo at the pan slot) -> x mask`` ; each
strip output feeds every bus post-fader at ``sends_db`` ; ``mix = sum(strips) + sum(bus chains(sends))``
-> master chain -> stereo mix. Every effect returns time-aligned audio (look-ahead latency is
compensated inside the limiter), so no further alignment is needed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from gradmix import dsp
from gradmix.errors import ParameterError, ShapeError

if TYPE_CHECKING:
    from gradmix.console.layout import Layout, Params, Slot


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


class Mixdown:
    """A song's strip sum and every bus's input, accumulated as strip outputs come, then the buses and the
    master chain: the one place where sends are summed.

    Args:
        layout: the console (its bus and master chains are used).
        params: physical parameters; ``sends_db (batch, tracks, buses)``, ``buses`` and ``master`` are used.
        like: a tensor of the dtype and device to compute in.
        samples: the song's length.
    """

    def __init__(self, layout: Layout, params: Params, like: Tensor, samples: int):
        self.layout, self.params = layout, params
        batch = params.sends_db.shape[0]
        self.strips = like.new_zeros(batch, 2, samples)
        self.buses = [like.new_zeros(batch, 2, samples) for _ in layout.buses]

    def add(self, strips: Tensor, tracks: Sequence[int] | slice = slice(None)) -> None:
        """Add the strip outputs ``(batch, len(tracks), 2, samples)`` of the tracks ``tracks`` (indices into
        ``params.sends_db``) to the strip sum and to every bus they send to; in place without gradients."""
        index = tracks if isinstance(tracks, slice) else torch.as_tensor(tracks, device=self.params.sends_db.device)
        sends = bus_inputs(strips, self.params.sends_db[:, index])
        in_place = not torch.is_grad_enabled()
        self.strips = self.strips.add_(strips.sum(1)) if in_place else self.strips + strips.sum(1)
        for k, acc in enumerate(self.buses):
            self.buses[k] = acc.add_(sends[:, k]) if in_place else acc + sends[:, k]

    def pre_master(self, sample_rate: float) -> Tensor:
        """What the master chain receives, ``(batch, 2, samples)``: the strip sum plus every bus's output."""
        return add_buses(self.layout, self.strips, self.buses, self.params, sample_rate=sample_rate)

    def finish(self, sample_rate: float) -> Tensor:
        """The mix ``(batch, 2, samples)``: :meth:`pre_master` through the master chain."""
        return finish(self.layout, self.strips, self.buses, self.params, sample_rate=sample_rate)


@dataclass(frozen=True)
class StripGroup:
    """Tracks that share one strip chain.

    Attributes:
        chain: the strip slots.
        members: the tracks' indices in the song.
        params: per slot ``{name: (batch, len(members)[, bands])}``.
    """

    chain: Sequence[Slot]
    members: Sequence[int]
    params: Sequence[Mapping[str, Tensor]]


def render_chunked(
    layout: Layout,
    groups: Sequence[StripGroup],
    tracks: Tensor | list[Tensor | None],
    params: Params,
    *,
    sample_rate: float,
    mono: Tensor | None = None,
    mask: Tensor | None = None,
    chunk_samples: int | None = None,
    keep_strips: bool = True,
    on_strip: Callable[[int, Tensor], None] | None = None,
    release: bool = False,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Render a song (or a batch of songs) group by group of tracks, in chunks of tracks.

    Args:
        layout: the console (its bus and master chains are used; the strips are the groups').
        groups: every track in exactly one group.
        tracks: ``(batch, tracks, channels, samples)``, or for one song a list of ``(channels, samples)``
            tensors (channels 1 or 2, one length; the channels of one group alike).
        params: ``sends_db (batch, tracks, buses)``, ``buses`` and ``master`` (``strip`` is the groups').
        sample_rate: Hz.
        mono: ``(batch, tracks)`` bool for 2-channel tracks whose channels are a duplicated mono signal.
        mask: ``(batch, tracks)``, 0 for padding (it contributes nothing).
        chunk_samples: at most this many samples (all channels of all tracks of a chunk) in one batched call;
            ``None``: each group in one call.
        keep_strips: also return every strip output (``tracks x 2 x samples`` of memory).
        on_strip: called with ``(track index, (2, samples) strip output)`` of batch item 0 as each is rendered.
        release: for a list of tracks, set each entry to ``None`` once rendered, so that its memory can be
            freed before the buses and the master run.
        device: where to compute (default: the tracks'); each chunk is copied there, and results stay there.

    Returns:
        ``(mix, strips)``: ``(batch, 2, samples)`` and ``(batch, tracks, 2, samples)`` (post-fader, post-pan,
        masked) or ``None``.
    """
    listed = not isinstance(tracks, Tensor)
    first = tracks[0] if listed else tracks
    like = first.new_zeros(0, device=device)  # dtype and device only: holds no track alive
    count, samples = (len(tracks) if listed else tracks.shape[1]), first.shape[-1]
    down = Mixdown(layout, params, like, samples)
    kept: Tensor | None = None
    for group in groups:
        members = list(group.members)
        per = len(members) if chunk_samples is None else max(1, chunk_samples // (2 * samples))
        for start in range(0, len(members), per):
            idx = members[start : start + per]
            at = slice(start, start + per)
            whole = idx == list(range(count))  # one chunk of every track in order: no copies
            if listed:
                x = tracks[idx[0]][None, None] if len(idx) == 1 else torch.stack([tracks[i] for i in idx])[None]
            else:
                x = tracks if whole else tracks[:, idx]
            out = render_strips(
                group.chain,
                x.to(like.device),
                [{k: v[:, at] for k, v in p.items()} for p in group.params],
                sample_rate=sample_rate,
                mono=None if mono is None else mono[:, idx],
            )
            if mask is not None:
                out = out * mask[:, idx].to(out)[:, :, None, None]
            down.add(out, idx)
            if keep_strips:
                if whole:
                    kept = out
                else:
                    if kept is None:
                        kept = like.new_zeros(out.shape[0], count, 2, samples)
                    kept[:, idx] = out
            if on_strip is not None:
                for j, i in enumerate(idx):
                    on_strip(i, out[0, j])
            del out, x
            if release and listed:
                for i in idx:
                    tracks[i] = None
    return down.finish(sample_rate), kept


def mix_down(layout: Layout, strips: Tensor, params: Params, *, sample_rate: float) -> Tensor:
    """The mix ``(batch, 2, samples)`` of strip outputs ``(batch, tracks, 2, samples)`` (already masked):
    summed, sent to the buses post-fader, the buses' outputs added, through the master chain."""
    down = Mixdown(layout, params, strips, strips.shape[-1])
    down.add(strips)
    return down.finish(sample_rate)


def pre_master(layout: Layout, strips: Tensor, params: Params, *, sample_rate: float) -> Tensor:
    """What the master chain receives: the strips summed plus every bus's output, ``(batch, 2, samples)``,
    from strips ``(batch, tracks, 2, samples)`` (zero a track's strip to leave it out)."""
    down = Mixdown(layout, params, strips, strips.shape[-1])
    down.add(strips)
    return down.pre_master(sample_rate)


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


def _per_track(v: Any, batch: int, n: int) -> Any:
    """A bus parameter ``(batch[, bands])`` repeated for each of ``n`` tracks: ``(batch * n[, bands])``."""
    if isinstance(v, Tensor) and v.dim() >= 1 and v.shape[0] == batch:
        return v.repeat_interleave(n, 0)
    return v
