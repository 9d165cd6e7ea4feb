"""Level and stereo placement: gain, pan (mono -> stereo), balance (stereo), stereo width."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from gradmix.dsp._params import Param, bcast, check_audio, check_range, db_to_amplitude, param


def gain(x: Tensor, *, gain_db: Param) -> Tensor:
    """Multiply by ``10 ** (gain_db / 20)``.

    Args:
        x: audio, shape ``(batch, channels, samples)``.
        gain_db: dB, float or ``(batch,)``.
    """
    check_audio(x)
    return x * bcast(db_to_amplitude(param(gain_db, "gain_db", x)))


def pan(x: Tensor, *, pan: Param) -> Tensor:
    """Place a mono track in the stereo field with the constant-power sin/cos law.

    ``theta = (pan + 1) * pi / 4``; left = ``cos(theta) x``, right = ``sin(theta) x``, so
    ``L^2 + R^2 = x^2`` everywhere and the centre is -3.01 dB in each channel.

    Args:
        x: mono audio, shape ``(batch, 1, samples)``.
        pan: -1 (hard left) .. 1 (hard right), float or ``(batch,)``.

    Returns:
        stereo audio, shape ``(batch, 2, samples)``.
    """
    check_audio(x, channels=1)
    p = param(pan, "pan", x)
    check_range(p, "pan", -1.0, 1.0)
    theta = (p + 1) * (math.pi / 4)
    return x * torch.stack([torch.cos(theta), torch.sin(theta)], 1)[:, :, None]  # one output, no concatenation


def balance(x: Tensor, *, pan: Param) -> Tensor:
    """Balance control for a stereo track.

    Law: the channel on the side the control points to stays at unity, the other is faded by
    ``cos(|pan| * pi / 2)``. At 0 both channels are untouched (0 dB, so a stereo track is not made
    quieter by sitting in the centre); at +-1 the far channel is silent. The law is smooth at 0
    (zero slope from both sides), so its gradient is continuous.

    Args:
        x: stereo audio, shape ``(batch, 2, samples)``.
        pan: -1 (left) .. 1 (right), float or ``(batch,)``.
    """
    check_audio(x, channels=2)
    p = param(pan, "pan", x)
    check_range(p, "pan", -1.0, 1.0)
    fade = torch.cos(p.abs() * (math.pi / 2))
    one = torch.ones_like(fade)
    left = torch.where(p > 0, fade, one)
    right = torch.where(p < 0, fade, one)
    return x * torch.stack([left, right], 1)[:, :, None]


def stereo_width(x: Tensor, *, width: Param) -> Tensor:
    """Mid/side width: ``M = (L + R) / 2``, ``S = (L - R) / 2``; ``S`` is scaled by ``width``.

    0 folds to mono, 1 is the identity, 2 doubles the side signal.

    Args:
        x: stereo audio, shape ``(batch, 2, samples)``.
        width: >= 0, float or ``(batch,)``.
    """
    check_audio(x, channels=2)
    w = param(width, "width", x)
    check_range(w, "width", 0.0)
    mid = (x[:, :1] + x[:, 1:]) / 2
    side = (x[:, :1] - x[:, 1:]) / 2 * bcast(w)
    return torch.cat([mid + side, mid - side], dim=1)
