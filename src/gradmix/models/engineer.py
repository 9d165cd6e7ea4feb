"""Random, engineer-like console settings: the targets of self-supervised training.

Applied to loudness-normalised tracks (each at -28 LUFS), these settings give mixes that a mixing engineer
might make; the network learns to recover such a mix from the tracks. Physical distributions, per effect
parameter (``U`` uniform, ``logU`` log-uniform, ``N(mean, sd)`` clipped to the range given):

============================  ====================================================================
strip ``gain.gain_db``        N(0, 4) in [-12, 9] dB (relative to the -28 LUFS track)
strip ``pan.pan``             half of the tracks N(0, 0.1), the others U(-0.8, 0.8)
strip ``eq`` band gains       N(0, 3) in [-9, 9] dB; frequencies logU over each band's range;
                              Q logU(0.5, 3) (within the band's range)
strip ``compressor``          threshold U(-35, -10) dB, ratio logU(1, 6), attack logU(1, 50) ms,
                              release logU(30, 500) ms, knee U(0, 6) dB, makeup U(0, 6) dB
sends                         reverb: 60 % of the tracks U(-30, -12) dB; delay: 25 % U(-30, -15) dB;
                              otherwise -60 dB (off)
reverb bus                    decay per band logU(0.5, 3) s, predelay U(0, 40) ms
delay bus                     time logU(100, 600) ms, feedback U(0.1, 0.5)
master ``eq`` band gains      N(0, 1.5) in [-4, 4] dB (frequencies and Q as on the strips)
master ``compressor``         threshold U(-20, -6) dB, ratio logU(1, 3), attack logU(5, 50) ms,
                              release logU(50, 500) ms, knee U(0, 6) dB, makeup 0 dB
master ``limiter``            ceiling U(-1.5, -0.3) dB, drive (gain) U(0, 8) dB
anything else                 the effect's neutral default
============================  ====================================================================
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from gradmix.console import Controls, Layout
from gradmix.console.layout import SEND_SPEC
from gradmix.effects import ParamSpec


def _uniform(g, n, lo, hi):
    return lo + (hi - lo) * torch.rand(n, generator=g, dtype=torch.float64)


def _log_uniform(g, n, lo, hi):
    return torch.exp(_uniform(g, n, math.log(lo), math.log(hi)))


def _normal(g, n, mean, sd, lo, hi):
    return (mean + sd * torch.randn(n, generator=g, dtype=torch.float64)).clamp(lo, hi)


def _sample(kind: str, effect: str, spec: ParamSpec, n: int, g: torch.Generator) -> Tensor:
    """``n`` physical values of ``spec`` for an effect of type ``effect`` in a ``kind`` chain."""
    name, master = spec.name, kind == "master"
    if effect == "gain" and name == "gain_db":
        return _normal(g, n, 0.0, 4.0, -12.0, 9.0)
    if effect == "pan" and name == "pan":
        centred = torch.rand(n, generator=g) < 0.5
        return torch.where(centred, _normal(g, n, 0.0, 0.1, -1.0, 1.0), _uniform(g, n, -0.8, 0.8))
    if effect == "eq":
        if name == "gain_db":
            return _normal(g, n, 0.0, 1.5, -4.0, 4.0) if master else _normal(g, n, 0.0, 3.0, -9.0, 9.0)
        if name == "freq_hz":
            return _log_uniform(g, n, spec.min, spec.max)
        if name == "q":
            return _log_uniform(g, n, max(0.5, spec.min), min(3.0, spec.max))
    if effect == "compressor":
        table = ({"threshold_db": (_uniform, -20, -6), "ratio": (_log_uniform, 1, 3), "attack_ms": (_log_uniform, 5, 50),
                  "release_ms": (_log_uniform, 50, 500), "knee_db": (_uniform, 0, 6)} if master else
                 {"threshold_db": (_uniform, -35, -10), "ratio": (_log_uniform, 1, 6), "attack_ms": (_log_uniform, 1, 50),
                  "release_ms": (_log_uniform, 30, 500), "knee_db": (_uniform, 0, 6), "makeup_db": (_uniform, 0, 6)})
        if name in table:
            fn, lo, hi = table[name]
            return fn(g, n, lo, hi)
    if effect == "limiter":
        if name == "ceiling_db":
            return _uniform(g, n, -1.5, -0.3)
        if name == "gain_db":
            return _uniform(g, n, 0.0, 8.0)
    if effect == "reverb":
        if name == "decay_s":
            return _log_uniform(g, n, 0.5, 3.0)
        if name == "predelay_ms":
            return _uniform(g, n, 0.0, 40.0)
    if effect == "delay":
        if name == "time_ms":
            return _log_uniform(g, n, 100.0, 600.0)
        if name == "feedback":
            return _uniform(g, n, 0.1, 0.5)
    return torch.full((n,), float(spec.default), dtype=torch.float64)


def _chain_controls(kind: str, slots, n: int, g: torch.Generator) -> Tensor:
    cols = [spec.normalize(_sample(kind, slot.effect.type_name, spec, n, g).clamp(spec.min, spec.max))
            for slot in slots for spec in slot.specs]
    return torch.stack(cols, -1) if cols else torch.zeros(n, 0, dtype=torch.float64)


def engineer_controls(layout: Layout, batch: int, tracks: int, generator: torch.Generator | None = None,
                      dtype=torch.float32) -> Controls:
    """0..1 controls of ``layout`` drawn from the distributions above, for ``batch`` songs of ``tracks`` tracks."""
    g = generator or torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, ())))
    strip = _chain_controls("strip", layout.strip, batch * tracks, g).view(batch, tracks, -1)
    sends = []
    for bus in layout.bus_names:
        p, lo, hi = (0.6, -30.0, -12.0) if bus == "reverb" else (0.25, -30.0, -15.0)
        on = torch.rand(batch * tracks, generator=g) < p
        level = torch.where(on, _uniform(g, batch * tracks, lo, hi), torch.full((batch * tracks,), -60.0, dtype=torch.float64))
        sends.append(SEND_SPEC.normalize(level))
    sends_t = torch.stack(sends, -1).view(batch, tracks, -1) if sends else torch.zeros(batch, tracks, 0)
    buses = torch.cat([_chain_controls(name, chain, batch, g) for name, chain in layout.buses], -1) \
        if layout.buses else torch.zeros(batch, 0)
    master = _chain_controls("master", layout.master, batch, g)
    return Controls(strip.to(dtype), sends_t.to(dtype), buses.to(dtype), master.to(dtype))
