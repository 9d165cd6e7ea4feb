"""Waveshaping distortion with drive, shape, tone and dry/wet mix."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from gradmix.dsp._params import Param, bcast, check_audio, check_range, check_sample_rate, param
from gradmix.dsp.biquad import biquad_coefficients, sos_filter
from gradmix.errors import ParameterError

DISTORTION_SHAPES = ("tanh", "soft_clip", "hard_clip", "asymmetric")
"""Waveshaper curves of :func:`distortion`."""

TONE_PIVOT_HZ = 1000.0
"""Pivot frequency of the tone (tilt) control."""

_ASYM_BIAS = 0.5
_DC_BLOCK_HZ = 10.0


def waveshape(u: Tensor, shape: str) -> Tensor:
    """Memoryless curve ``f`` with ``f(0) = 0`` and ``f'(0) = 1``, saturating at +-1 (except asymmetric).

    - ``tanh``: ``tanh(u)``.
    - ``soft_clip``: cubic ``u - 4 u^3 / 27`` for ``|u| <= 1.5``, ``sign(u)`` beyond (C1-continuous).
    - ``hard_clip``: ``clamp(u, -1, 1)``.
    - ``asymmetric``: ``(tanh(u + b) - tanh(b)) / (1 - tanh(b)^2)`` with ``b = 0.5`` (even harmonics).
    """
    if shape == "tanh":
        return torch.tanh(u)
    if shape == "soft_clip":
        c = u.clamp(-1.5, 1.5)
        return c - (4.0 / 27.0) * c**3
    if shape == "hard_clip":
        return u.clamp(-1.0, 1.0)
    if shape == "asymmetric":
        tb = math.tanh(_ASYM_BIAS)
        return (torch.tanh(u + _ASYM_BIAS) - tb) / (1 - tb * tb)
    raise ParameterError(f"shape: {shape!r} is not one of {', '.join(DISTORTION_SHAPES)}")


def distortion(
    x: Tensor, *, sample_rate: float, drive_db: Param, tone_db: Param = 0.0, mix: Param = 1.0, shape: str = "tanh"
) -> Tensor:
    """Waveshaping distortion.

    ``wet = tilt(f(g x) / g)`` with ``g = 10 ** (drive_db / 20)``: dividing by the drive keeps the
    small-signal gain at unity, so drive adds harmonics rather than level. ``tilt`` is a low shelf of
    ``-tone_db / 2`` and a high shelf of ``+tone_db / 2`` at :data:`TONE_PIVOT_HZ` (positive = brighter);
    the asymmetric shape is followed by a 10 Hz DC-blocking high-pass. Output ``(1 - mix) x + mix wet``.

    Args:
        x: audio, shape ``(batch, channels, samples)``.
        sample_rate: Hz.
        drive_db: dB of gain into the shaper, >= 0.
        tone_db: tilt in dB, float or ``(batch,)``.
        mix: 0 (dry) .. 1 (wet).
        shape: one of :data:`DISTORTION_SHAPES` (static).
    """
    check_audio(x)
    sample_rate = check_sample_rate(sample_rate)
    if shape not in DISTORTION_SHAPES:
        raise ParameterError(f"shape: {shape!r} is not one of {', '.join(DISTORTION_SHAPES)}")
    d, t, m = param(drive_db, "drive_db", x), param(tone_db, "tone_db", x), param(mix, "mix", x)
    check_range(d, "drive_db", 0.0)
    check_range(m, "mix", 0.0, 1.0)
    g = bcast(torch.pow(10.0, d / 20.0))
    wet = waveshape(x * g, shape) / g
    wet = sos_filter(wet, *tone_filter(t, sample_rate=sample_rate, shape=shape))
    return (1 - bcast(m)) * x + bcast(m) * wet


def tone_filter(tone_db: Tensor, *, sample_rate: float, shape: str) -> tuple[Tensor, Tensor]:
    """The filter after the shaper, as ``(b, a)`` of shape ``(batch, sections, 3)``: a low shelf by ``-tone/2``
    and a high shelf by ``+tone/2`` dB at :data:`TONE_PIVOT_HZ`, and for the asymmetric shape a DC block.

    Args:
        tone_db: ``(batch,)`` dB.
        sample_rate: Hz.
        shape: the shaper's.
    """
    f = torch.full_like(tone_db, TONE_PIVOT_HZ)
    q = torch.full_like(tone_db, 1 / math.sqrt(2))
    coefs = [
        biquad_coefficients("low_shelf", sample_rate=sample_rate, freq_hz=f, gain_db=-tone_db / 2, q=q),
        biquad_coefficients("high_shelf", sample_rate=sample_rate, freq_hz=f, gain_db=tone_db / 2, q=q),
    ]
    if shape == "asymmetric":
        dc = torch.full_like(tone_db, _DC_BLOCK_HZ)
        coefs.append(biquad_coefficients("highpass", sample_rate=sample_rate, freq_hz=dc, gain_db=tone_db * 0, q=q))
    return torch.stack([c[0] for c in coefs], 1), torch.stack([c[1] for c in coefs], 1)
