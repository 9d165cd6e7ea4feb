"""Dynamics: compressor, downward expander, noise gate and look-ahead limiter.

All four are feed-forward with a log-domain static curve and soft knee and a branching one-pole
smoother of the gain in dB (Giannoulis, Massberg & Reiss, "Digital dynamic range compressor design —
a tutorial and analysis", JAES 60(6), 2012):

- level: ``x_dB[n] = 20 log10 max_c |x[c, n]|`` (peak detector, channels linked);
- static gain ``g_c[n]`` in dB from the soft-knee curve (threshold ``T``, ratio ``R``, knee width ``W``);
- smoothing ``g_s[n] = a g_s[n-1] + (1 - a) g_c[n]`` with ``a = exp(-1000 / (t_ms * sample_rate))``, where
  ``t_ms`` is the attack time when the gain reduction grows and the release time when it shrinks (for
  expander and gate: attack when the gain opens, release when it closes); the time constant is the time
  to cover 1 - 1/e (63 %) of a step in dB;
- output ``x * 10 ** ((g_s + makeup_db) / 20)``.

The recursive smoother is :func:`gradmix.dsp.ballistics.smooth` (numba kernels cached on disk, with a
hand-derived backward), so gradients flow exactly to the input and to every parameter.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from gradmix.dsp import linear_scan
from gradmix.dsp.ballistics import curve_and_smooth, limiter_gain, linked_peak, smooth
from gradmix.dsp._params import Param, bcast, check_audio, check_range, check_sample_rate, inference, param

GATE_RATIO = 10.0
"""Expansion ratio of :func:`noise_gate` (a gate is a steep expander with a floor)."""


def time_to_coefficient(time_ms: Tensor, sample_rate: float) -> Tensor:
    """One-pole smoothing weight ``1 - exp(-1000 / (time_ms * sample_rate))`` of a time constant in ms."""
    return -torch.expm1(-1000.0 / (time_ms * sample_rate))


def _level_db(x: Tensor) -> Tensor:
    """Linked peak level in dB, ``(batch, samples)``; silence reads -240 dB, never -inf."""
    if _compiled(x):  # one compiled pass, then in place: no page faults on new whole-song buffers
        return linked_peak(x, 1e-12).log10_().mul_(20.0)
    peak = x[:, 0].abs()
    for c in range(1, x.shape[1]):
        peak = torch.maximum(peak, x[:, c].abs())
    return 20.0 * torch.log10(peak.clamp_min(1e-12))


def _compiled(x: Tensor, *params: Tensor) -> bool:
    """Whether the fused CPU kernels of :mod:`gradmix.dsp.ballistics` may run: no gradient is wanted and
    ``x`` takes the CPU path (:func:`gradmix.dsp.linear_scan.wanted`)."""
    return inference(x, *params) and not linear_scan.wanted(x)


def _db_to_gain(gain_db: Tensor, makeup_db: Tensor) -> Tensor:
    """``10 ** ((gain_db + makeup_db) / 20)`` as ``(batch, 1, samples)``, in one exp."""
    offset = (makeup_db * _DB_TO_NEPER)[:, None]
    if inference(gain_db, makeup_db):
        return gain_db.mul_(_DB_TO_NEPER).add_(offset).exp_().unsqueeze(1)
    return torch.exp(gain_db * _DB_TO_NEPER + offset).unsqueeze(1)


_DB_TO_NEPER = math.log(10.0) / 20.0


def _smooth(gain_db: Tensor, attack: Tensor, release: Tensor) -> Tensor:
    """Branching one-pole smoother: ``attack`` weight while the gain falls, ``release`` while it rises."""
    return smooth(gain_db, attack, release)


def compressor_gain_db(level_db: Tensor, *, threshold_db: Tensor, ratio: Tensor, knee_db: Tensor) -> Tensor:
    """Static compressor curve: gain in dB (<= 0) for a level in dB.

    ``0`` below ``T - W/2``; ``(1/R - 1)(x - T + W/2)^2 / (2W)`` inside the knee; ``(1/R - 1)(x - T)`` above.

    Args:
        level_db: ``(batch, samples)``.
        threshold_db, ratio, knee_db: ``(batch,)``.
    """
    t, w = threshold_db[:, None], knee_db[:, None]
    over = level_db - t
    knee = (over + w / 2).clamp_min(0).square() / (2 * w.clamp_min(1e-6))  # 0 below the knee
    return torch.where(over > w / 2, over, knee) * (1.0 / ratio - 1.0)[:, None]


def expander_gain_db(
    level_db: Tensor, *, threshold_db: Tensor, ratio: Tensor, knee_db: Tensor, range_db: Tensor
) -> Tensor:
    """Static downward-expander curve: gain in dB, ``max(-range_db, ...)``.

    ``(R - 1)(x - T)`` below ``T - W/2``; ``-(R - 1)(x - T - W/2)^2 / (2W)`` inside the knee; 0 above.
    """
    t, w = threshold_db[:, None], knee_db[:, None]
    under = level_db - t
    knee = (under - w / 2).clamp_max(0).square() / (-2 * w.clamp_min(1e-6))  # 0 above the knee
    g = torch.where(under < -w / 2, under, knee) * (ratio - 1.0)[:, None]
    return torch.maximum(g, -range_db[:, None])


def _times(x: Tensor, sample_rate: float, attack_ms: Param, release_ms: Param) -> tuple[Tensor, Tensor]:
    at, rt = param(attack_ms, "attack_ms", x), param(release_ms, "release_ms", x)
    check_range(at, "attack_ms", 0.0, low_open=True)
    check_range(rt, "release_ms", 0.0, low_open=True)
    return time_to_coefficient(at, sample_rate), time_to_coefficient(rt, sample_rate)


def compressor(
    x: Tensor,
    *,
    sample_rate: float,
    threshold_db: Param,
    ratio: Param,
    attack_ms: Param,
    release_ms: Param,
    knee_db: Param = 6.0,
    makeup_db: Param = 0.0,
) -> Tensor:
    """Feed-forward soft-knee compressor (see the module docstring).

    Args:
        x: audio, shape ``(batch, channels, samples)``.
        sample_rate: Hz.
        threshold_db: dBFS, float or ``(batch,)``.
        ratio: >= 1 (1 is no compression), float or ``(batch,)``.
        attack_ms, release_ms: time constants in ms, > 0.
        knee_db: knee width in dB, >= 0 (0 is a hard knee).
        makeup_db: gain in dB after compression.
    """
    check_audio(x)
    sample_rate = check_sample_rate(sample_rate)
    t, r = param(threshold_db, "threshold_db", x), param(ratio, "ratio", x)
    w, m = param(knee_db, "knee_db", x), param(makeup_db, "makeup_db", x)
    check_range(r, "ratio", 1.0)
    check_range(w, "knee_db", 0.0)
    at, rt = _times(x, sample_rate, attack_ms, release_ms)
    if _compiled(x, t, r, w, m, at, rt):
        g = curve_and_smooth(_level_db(x), threshold_db=t, ratio=r, knee_db=w, attack=at, release=rt)
    else:
        g = _smooth(compressor_gain_db(_level_db(x), threshold_db=t, ratio=r, knee_db=w), at, rt)
    return x * _db_to_gain(g, m)


def expander(
    x: Tensor,
    *,
    sample_rate: float,
    threshold_db: Param,
    ratio: Param,
    attack_ms: Param,
    release_ms: Param,
    knee_db: Param = 6.0,
    range_db: Param = 60.0,
    makeup_db: Param = 0.0,
) -> Tensor:
    """Feed-forward soft-knee downward expander: below threshold, level falls ``ratio`` dB per dB.

    Args:
        x: audio, shape ``(batch, channels, samples)``.
        sample_rate: Hz.
        threshold_db: dBFS.
        ratio: >= 1 (1 is no expansion).
        attack_ms: time for the gain to open (ms, > 0); release_ms: time for it to close.
        knee_db: knee width in dB, >= 0.
        range_db: largest attenuation in dB, >= 0.
        makeup_db: gain in dB after expansion.
    """
    check_audio(x)
    sample_rate = check_sample_rate(sample_rate)
    t, r = param(threshold_db, "threshold_db", x), param(ratio, "ratio", x)
    w, rg, m = param(knee_db, "knee_db", x), param(range_db, "range_db", x), param(makeup_db, "makeup_db", x)
    check_range(r, "ratio", 1.0)
    check_range(w, "knee_db", 0.0)
    check_range(rg, "range_db", 0.0)
    at, rt = _times(x, sample_rate, attack_ms, release_ms)
    if _compiled(x, t, r, w, rg, m, at, rt):
        g = curve_and_smooth(
            _level_db(x), threshold_db=t, ratio=r, knee_db=w, attack=rt, release=at, expander=True, range_db=rg
        )
    else:
        g = _smooth(expander_gain_db(_level_db(x), threshold_db=t, ratio=r, knee_db=w, range_db=rg), rt, at)
    return x * _db_to_gain(g, m)


def noise_gate(
    x: Tensor,
    *,
    sample_rate: float,
    threshold_db: Param,
    attack_ms: Param,
    release_ms: Param,
    range_db: Param = 60.0,
    knee_db: Param = 3.0,
) -> Tensor:
    """Noise gate: a downward expander of ratio :data:`GATE_RATIO` whose attenuation stops at ``range_db``.

    Args:
        x: audio, shape ``(batch, channels, samples)``.
        sample_rate: Hz.
        threshold_db: dBFS below which the gate closes.
        attack_ms: opening time (ms, > 0); release_ms: closing time (ms, > 0).
        range_db: attenuation of the closed gate in dB, >= 0.
        knee_db: knee width in dB, >= 0.
    """
    return expander(
        x,
        sample_rate=sample_rate,
        threshold_db=threshold_db,
        ratio=GATE_RATIO,
        attack_ms=attack_ms,
        release_ms=release_ms,
        knee_db=knee_db,
        range_db=range_db,
    )


def limiter_latency_samples(lookahead_ms: float, sample_rate: float) -> int:
    """Look-ahead of :func:`limiter` in samples: the latency a causal real-time version would have."""
    return int(round(lookahead_ms * sample_rate / 1000.0))


def limiter(
    x: Tensor,
    *,
    sample_rate: float,
    ceiling_db: Param = -1.0,
    release_ms: Param = 100.0,
    gain_db: Param = 0.0,
    lookahead_ms: float = 5.0,
) -> Tensor:
    """Look-ahead peak limiter whose output sample peak never exceeds ``ceiling_db``.

    With ``L`` = :func:`limiter_latency_samples` and ``r[n] = min(1, c / max_c |x[c, n]|)`` the gain each
    sample needs, the gain is ``h = release(mean_{j=0..L} min_{k=0..L} r[n - j + k])``: a look-ahead minimum
    then a moving average over the same window, so every average contains ``r[n]`` and ``h[n] <= r[n]``
    holds exactly (the fade-in spans the look-ahead); ``release`` is a one-pole smoother with instant
    attack, which keeps that bound. ``c`` is the ceiling less 1e-6 relative (-0.00001 dB) so that
    float rounding cannot cross it.

    The output is returned time-aligned with the input (latency already compensated); a causal
    implementation would delay it by :func:`limiter_latency_samples`.

    Args:
        x: audio, shape ``(batch, channels, samples)``.
        sample_rate: Hz.
        ceiling_db: dBFS, float or ``(batch,)``.
        release_ms: release time constant (ms, > 0).
        gain_db: input gain in dB before limiting (drive).
        lookahead_ms: look-ahead in ms (a static float, >= 0).
    """
    check_audio(x)
    sample_rate = check_sample_rate(sample_rate)
    c_db, g_db = param(ceiling_db, "ceiling_db", x), param(gain_db, "gain_db", x)
    rel = param(release_ms, "release_ms", x)
    check_range(rel, "release_ms", 0.0, low_open=True)
    if not (isinstance(lookahead_ms, (int, float)) and 0 <= lookahead_ms <= 100):
        from gradmix.errors import ParameterError

        raise ParameterError(f"lookahead_ms: {lookahead_ms!r} is not a number in 0..100 ms")
    L = limiter_latency_samples(lookahead_ms, sample_rate)
    x = x * bcast(torch.pow(10.0, g_db / 20.0))
    ceiling = torch.pow(10.0, c_db / 20.0) * (1 - 1e-6)
    if _compiled(x, ceiling, rel):
        gain = limiter_gain(
            linked_peak(x, 0.0), ceiling=ceiling, lookahead=L, release=time_to_coefficient(rel, sample_rate)
        )
        return x.mul_(gain.unsqueeze(1))  # x is already this function's own copy
    peak = x.abs().amax(dim=1)
    need = torch.clamp(ceiling[:, None] / peak.clamp_min(1e-30), max=1.0)
    gain = need
    if L > 0:
        held = running_min(F.pad(need, (L, L), value=1.0), L + 1)
        sums = F.pad(held.double().cumsum(-1), (1, 0))
        gain = ((sums[:, L + 1 :] - sums[:, : -L - 1]) / (L + 1)).to(x.dtype)
    rt = time_to_coefficient(rel, sample_rate)
    gain = smooth(gain, torch.ones_like(rt), rt, initial=torch.ones_like(rt))
    gain = torch.minimum(gain, need)  # only float rounding of the average/smoother can exceed the bound
    return x * gain.unsqueeze(1)


def running_min(x: Tensor, window: int) -> Tensor:
    """``out[..., n] = min(x[..., n : n + window])`` in O(samples) (van Herk / Gil-Werman).

    Args:
        x: ``(..., samples)``.
        window: window length in samples, >= 1.

    Returns:
        ``(..., samples - window + 1)``; differentiable (the gradient goes to the minimum).
    """
    n = x.shape[-1]
    blocks = -(-n // window)
    padded = F.pad(x, (0, blocks * window - n), value=float("inf")).unflatten(-1, (blocks, window))
    prefix = padded.cummin(-1).values.flatten(-2)
    suffix = padded.flip(-1).cummin(-1).values.flip(-1).flatten(-2)
    out_len = n - window + 1
    return torch.minimum(suffix[..., :out_len], prefix[..., window - 1 : window - 1 + out_len])


__all__ = [
    "compressor",
    "expander",
    "noise_gate",
    "limiter",
    "limiter_latency_samples",
    "compressor_gain_db",
    "expander_gain_db",
    "time_to_coefficient",
    "running_min",
    "GATE_RATIO",
]
