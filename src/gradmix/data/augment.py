"""Augmentation of dry tracks for training: random gain, spectral tilt and compression, drawn per track from
a generator first and then applied to the whole batch (so the same seed gives the same batch).

The net must not be able to read a track's target setting off its input: where the dry stems of a dataset
were all rendered the same way (level, brightness, dynamics), a net can learn "leave it as it is". Each
dry track is therefore changed before loudness normalisation, while its wet target stays the author's:

- gain: ``N(0, gain_db)`` dB, which the console's loudness normalisation must undo (it does, within its
  +-24 dB range);
- tilt: a low shelf at 250 Hz by ``+t/2`` and a high shelf at 4 kHz by ``-t/2``, ``t ~ U(-tilt_db, tilt_db)``;
- compression, with probability ``compress``: threshold ``U(-30, -10)`` dB below the track's peak level,
  ratio log-uniform in 1.5..6, attack 2..20 ms, release 50..300 ms, knee 6 dB, makeup none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from gradmix import dsp


@dataclass(frozen=True)
class Augmentation:
    """Sizes of the random changes (0 turns each off)."""

    gain_db: float = 0.0
    tilt_db: float = 0.0
    compress: float = 0.0
    """Probability that a track is compressed."""

    @property
    def enabled(self) -> bool:
        return bool(self.gain_db or self.tilt_db or self.compress)


def augment_tracks(tracks: Tensor, aug: Augmentation, generator: torch.Generator, *, sample_rate: float) -> Tensor:
    """A randomly changed copy of ``tracks (batch, tracks, channels, samples)`` (see the module docstring).

    The parameters are drawn on the CPU from ``generator`` (one draw per track, padding included, so the
    draws do not depend on the contents) and moved to the tracks' device.
    """
    if not aug.enabled:
        return tracks
    b, n, c, t = tracks.shape
    items = b * n

    def uniform(lo: float, hi: float) -> Tensor:
        return (lo + (hi - lo) * torch.rand(items, generator=generator, dtype=torch.float64)).to(tracks)

    gain = (aug.gain_db * torch.randn(items, generator=generator, dtype=torch.float64)).to(tracks)
    tilt = uniform(-aug.tilt_db, aug.tilt_db)
    squash = (torch.rand(items, generator=generator) < aug.compress).to(tracks.device)
    threshold, ratio = uniform(-30.0, -10.0), torch.exp(uniform(math.log(1.5), math.log(6.0)))
    attack, release = uniform(2.0, 20.0), uniform(50.0, 300.0)
    x = tracks.flatten(0, 1) * torch.pow(10.0, gain / 20)[:, None, None]
    if aug.tilt_db:
        x = dsp.parametric_eq(
            x,
            sample_rate=sample_rate,
            shapes=("low_shelf", "high_shelf"),
            freq_hz=x.new_tensor([250.0, 4000.0]).expand(items, 2),
            gain_db=torch.stack([tilt / 2, -tilt / 2], -1),
            q=0.7071,
        )
    if aug.compress:
        peak_db = 20 * torch.log10(x.abs().amax((-2, -1)).clamp_min(1e-6))
        squashed = dsp.compressor(
            x,
            sample_rate=sample_rate,
            threshold_db=peak_db + threshold,
            ratio=torch.where(squash, ratio, torch.ones_like(ratio)),
            attack_ms=attack,
            release_ms=release,
            knee_db=6.0,
        )
        x = torch.where(squash[:, None, None], squashed, x)
    return x.unflatten(0, (b, n))
