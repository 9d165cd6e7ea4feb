"""Inverses of effects given their settings: the dry signal back from the wet one (inference only).

- :func:`uncompress`: the compressor's exact inverse. Its gain at a sample depends on the input up to that
  sample, so the input is recovered sample by sample; each sample's gain is the root of a monotonic
  equation, in closed form (:func:`gradmix.dsp.ballistics.uncompress_gain`).
- :func:`undistort`: the waveshaper's exact inverse, also in one causal pass: each sample solves a
  monotonic equation ``(1 - mix) u + mix B f(u) = v`` (``B`` the tone filter's first coefficient, ``v``
  what the filter's past leaves; Newton steps, which converge monotonically on these concave curves).
  Where a fully wet shaper saturated, what was cut is lost.
- :func:`undelay`: the feedback delay is linear, ``H = (1 - mix) + mix P / (1 - feedback P)`` with ``P``
  the interpolated delay; where its inverse is causal and stable it runs as two passes of the delay line,
  otherwise as a division by ``H`` in the frequency domain (regularised where ``|H|`` is small).
- :func:`dereverberate`: a reverb's fine structure cannot be known from its settings (the room's noise is
  seeded), so its late energy is removed statistically: the reverb's power in each STFT bin is predicted
  from the dry power estimated in earlier frames, decaying at the band's RT60 (Lebart, Boucher & Denbigh,
  "A new method based on spectral subtraction for speech dereverberation", Acta Acustica 2001), and the bin
  is scaled to the dry power that remains.

An EQ is its own inverse with the gains negated (:func:`gradmix.dsp.parametric_eq`), exactly.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from gradmix.dsp._params import Param, bcast, check_audio, check_range, check_sample_rate, param
from gradmix.dsp.ballistics import linked_peak, uncompress_gain
from gradmix.dsp.delay_line import delay_line
from gradmix.dsp.distortion import tone_filter
from gradmix.dsp.dynamics import time_to_coefficient
from gradmix.dsp.reverb import REVERB_BANDS, REVERB_CROSSOVERS_HZ
from gradmix.errors import ParameterError

INVERTIBLE_SHAPES = ("tanh", "soft_clip")
"""Waveshaper curves :func:`undistort` inverts (strictly increasing until they saturate)."""

DEREVERB_FLOOR_DB = -20.0
""":func:`dereverberate` never lowers a bin's power by more than this (a floor against musical noise)."""


def uncompress(
    y: Tensor,
    *,
    sample_rate: float,
    threshold_db: Param,
    ratio: Param,
    attack_ms: Param,
    release_ms: Param,
    knee_db: Param = 6.0,
    makeup_db: Param = 0.0,
    max_expansion_db: float | None = None,
) -> Tensor:
    """The input of :func:`gradmix.dsp.compressor` whose output is ``y``, for the same settings (exact up to
    rounding: ``compressor(uncompress(y)) == y``).

    Args:
        y: compressed audio ``(batch, channels, samples)``.
        sample_rate, threshold_db, ratio, attack_ms, release_ms, knee_db, makeup_db: the compressor's.
        max_expansion_db: at most this much gain reduction is undone at any sample (``None``: all of it). A
            signal that was never compressed as the settings say would otherwise be expanded without bound
            (``(ratio - 1)`` dB for every dB its peaks stand above the threshold).
    """
    check_audio(y)
    sample_rate = check_sample_rate(sample_rate)
    t, r = param(threshold_db, "threshold_db", y), param(ratio, "ratio", y)
    w, m = param(knee_db, "knee_db", y), param(makeup_db, "makeup_db", y)
    at, rt = param(attack_ms, "attack_ms", y), param(release_ms, "release_ms", y)
    check_range(r, "ratio", 1.0)
    check_range(w, "knee_db", 0.0)
    level = torch.log10(linked_peak(y.detach().double(), 1e-12)) * 20.0
    gain_db = uncompress_gain(
        level,
        threshold_db=t,
        ratio=r,
        knee_db=w,
        makeup_db=m,
        attack=time_to_coefficient(at.double(), sample_rate),
        release=time_to_coefficient(rt.double(), sample_rate),
    )
    if max_expansion_db is not None:
        gain_db = gain_db.clamp_min(-max_expansion_db)
    return y * torch.pow(10.0, -(gain_db + m.double()[:, None]) / 20.0).to(y)[:, None]


_KERNELS = None


def _kernels():
    global _KERNELS
    if _KERNELS is None:
        from numba import njit, prange

        @njit(parallel=True, cache=True)
        def unshape(y, drive, mix, b, a, soft, x):  # pragma: no cover - compiled
            # y = (1 - m) x + m T[f(g x) / g], T a cascade of biquads (transposed direct form II). At each sample
            # T's output is B w + S (B the product of the sections' b0, S from their state), so
            # (1 - m) u + m B f(u) = g (y - m S) in u = g x: increasing and concave for u > 0, solved by Newton
            # from a point left of the root (which converges monotonically), then w = f(u) / g enters T
            items, samples = y.shape
            sections = b.shape[1]
            for i in prange(items):
                g, m = drive[i], mix[i]
                lead = 1.0
                for k in range(sections):
                    lead *= b[i, k, 0]
                mw = m * lead
                z1 = np.zeros(sections)
                z2 = np.zeros(sections)
                for n in range(samples):
                    carried = 0.0
                    for k in range(sections):
                        carried = b[i, k, 0] * carried + z1[k]
                    v = g * (y[i, n] - m * carried)
                    size = abs(v)
                    if 1.0 - m < 1e-9:
                        c = min(size / mw, 1.0 - 1e-12)
                        u = np.arctanh(c) if not soft else 3.0 * np.sin(np.arcsin(c) / 3.0)
                    else:
                        u = max(size / (1.0 - m + mw), (size - mw) / (1.0 - m))
                        for _ in range(60):
                            if soft:
                                cu = min(u, 1.5)
                                f, slope = cu - 4.0 / 27.0 * cu**3, 1.0 - 4.0 / 9.0 * cu * cu
                                if u >= 1.5:
                                    slope = 0.0
                            else:
                                f = np.tanh(u)
                                slope = 1.0 - f * f
                            step = ((1.0 - m) * u + mw * f - size) / ((1.0 - m) + mw * slope)
                            u -= step
                            if abs(step) <= 1e-11 * (1.0 + u):
                                break
                    if v < 0:
                        u = -u
                    x[i, n] = u / g
                    if soft:
                        cu = min(max(u, -1.5), 1.5)
                        w = (cu - 4.0 / 27.0 * cu**3) / g
                    else:
                        w = np.tanh(u) / g
                    for k in range(sections):
                        out = b[i, k, 0] * w + z1[k]
                        z1[k] = b[i, k, 1] * w - a[i, k, 1] * out + z2[k]
                        z2[k] = b[i, k, 2] * w - a[i, k, 2] * out
                        w = out

        @njit(parallel=True, cache=True)
        def late_reverb(power, decay, weight, direct, lag, floor, dry):  # pragma: no cover - compiled
            # per bin: tail R[t] = a R[t-1] + (1 - a) P[t - lag] (P the dry power found so far); the reverb's
            # power weight * R[t] (weight = mix^2 G(f)) is taken from the bin's, at most down to floor * power; a
            # zero predelay puts the frame's own onset (1 - a) weight P[t] beside the direct path (1 - mix)^2
            items, bins, frames = power.shape
            for i in prange(items):
                for f in range(bins):
                    a, w = decay[i, f], weight[i, f]
                    tail = 0.0
                    for t in range(frames):
                        tail *= a
                        if lag[i] > 0 and t >= lag[i]:
                            tail += (1.0 - a) * dry[i, f, t - lag[i]]
                        own = (1.0 - a) * w if lag[i] == 0 else 0.0
                        left = max(power[i, f, t] - w * tail, floor * power[i, f, t])
                        dry[i, f, t] = left / max(direct[i] + own, 0.01)  # a fully wet reverb has no direct path
                        if lag[i] == 0:
                            tail += (1.0 - a) * dry[i, f, t]

        _KERNELS = (unshape, late_reverb)
    return _KERNELS


def undistort(
    y: Tensor, *, sample_rate: float, drive_db: Param, tone_db: Param = 0.0, mix: Param = 1.0, shape: str = "tanh"
) -> Tensor:
    """The input of :func:`gradmix.dsp.distortion` whose output is ``y``, for the same settings: exact in one
    causal pass (the tone filter's output at a sample depends on the shaped signal before it and on the
    shaped sample itself through its first coefficient, so each sample solves one monotonic equation).
    Where a fully wet shaper saturated, what was cut is lost: the result is the least input that reaches the
    output, clipped below the curve's end (inference only, no autograd).

    Args:
        y: distorted audio ``(batch, channels, samples)``.
        sample_rate, drive_db, tone_db, mix: the distortion's.
        shape: one of :data:`INVERTIBLE_SHAPES`.
    """
    check_audio(y)
    sample_rate = check_sample_rate(sample_rate)
    if shape not in INVERTIBLE_SHAPES:
        raise ParameterError(f"shape: {shape!r} cannot be inverted (only {', '.join(INVERTIBLE_SHAPES)})")
    d, t, m = param(drive_db, "drive_db", y), param(tone_db, "tone_db", y), param(mix, "mix", y)
    check_range(d, "drive_db", 0.0)
    check_range(m, "mix", 0.0, 1.0)
    b, a = tone_filter(t.detach().double(), sample_rate=sample_rate, shape=shape)
    batch, channels, samples = y.shape
    flat = y.detach().double().reshape(batch * channels, samples).cpu().contiguous().numpy()
    x = np.empty_like(flat)

    def per_item(v: Tensor) -> np.ndarray:
        return v.detach().double().cpu().repeat_interleave(channels, 0).contiguous().numpy()

    _kernels()[0](
        flat,
        per_item(torch.pow(10.0, d / 20.0)),
        per_item(m),
        per_item(b / a[..., :1]),
        per_item(a / a[..., :1]),
        shape == "soft_clip",
        x,
    )
    return torch.from_numpy(x).reshape(batch, channels, samples).to(y.device, y.dtype)


def delay_response(
    frequencies: Tensor, *, sample_rate: float, time_ms: Tensor, feedback: Tensor, mix: Tensor
) -> Tensor:
    """Complex frequency response ``(batch, freqs)`` of :func:`gradmix.dsp.delay` at ``frequencies`` Hz."""
    delay = time_ms.double()[:, None] * (sample_rate / 1000.0)
    whole = delay.floor()
    frac = delay - whole
    omega = 2 * math.pi * frequencies.double()[None] / sample_rate
    p = torch.exp(-1j * omega * whole) * ((1 - frac) + frac * torch.exp(-1j * omega))
    m = mix.double()[:, None]
    return (1 - m) + m * p / (1 - feedback.double()[:, None] * p)


def undelay(
    y: Tensor, *, sample_rate: float, time_ms: Param, feedback: Param = 0.3, mix: Param = 0.3, floor_db: float = -40.0
) -> Tensor:
    """The input of :func:`gradmix.dsp.delay` whose output is ``y``. With ``H = ((1 - mix) + c P) / (1 - feedback
    P)``, ``c = mix - (1 - mix) feedback``, the inverse is causal and stable when ``|c| < 0.99 (1 - mix)``: then
    it runs as two passes of the delay line (exact, O(samples)). Otherwise (a mostly wet delay) it divides by
    ``H`` over twice the signal's length, regularised where ``|H|`` falls below ``floor_db``; that inverse runs
    backwards in time and misses the repeats cut off at the end.

    Args:
        y: delayed audio ``(batch, channels, samples)``.
        sample_rate, time_ms, feedback, mix: the delay's.
        floor_db: the regularisation, in dB of ``|H|``.
    """
    check_audio(y)
    sample_rate = check_sample_rate(sample_rate)
    t, fb, m = param(time_ms, "time_ms", y), param(feedback, "feedback", y), param(mix, "mix", y)
    check_range(t, "time_ms", 1.0, 5000.0)
    check_range(fb, "feedback", -0.99, 0.99)
    check_range(m, "mix", 0.0, 1.0)
    c, dry = m.double() - (1 - m.double()) * fb.double(), 1 - m.double()
    if bool((c.abs() < 0.99 * dry).all()):
        yd, samples = y.detach().double(), (t.double() * (sample_rate / 1000.0)).clamp_min(1.0)
        u = (yd - bcast(fb.double()) * delay_line(yd, samples, torch.zeros_like(samples))) / bcast(dry)
        g = -c / dry
        return (u + bcast(g) * delay_line(u, samples, g)).to(y.dtype)
    n = y.shape[-1]
    length = 2 * n
    freqs = torch.fft.rfftfreq(length, 1 / sample_rate).to(y.device)
    h = delay_response(freqs, sample_rate=sample_rate, time_ms=t, feedback=fb, mix=m)
    eps = 10 ** (floor_db / 10)
    inverse = h.conj() / (h.abs() ** 2 + eps)
    x = torch.fft.irfft(torch.fft.rfft(y.double(), length) * inverse[:, None], length)[..., :n]
    return x.to(y.dtype)


def band_decay_s(decay_s: Tensor, frequencies: Tensor) -> Tensor:
    """The RT60 ``(batch, freqs)`` at each frequency of a reverb with ``decay_s`` ``(batch, bands)`` per band:
    each band's, crossfaded over an octave around each crossover (in log frequency), as the reverb's bands are."""
    logf = torch.log2(frequencies.double().clamp_min(1.0))
    weights, below = [], torch.ones_like(logf)
    for fc in REVERB_CROSSOVERS_HZ:
        e = torch.sin(((logf - math.log2(fc)) + 0.5).clamp(0, 1) * math.pi / 2) ** 2
        weights.append(below * (1 - e))
        below = below * e
    weights.append(below)
    w = torch.stack(weights, -1)  # (freqs, bands)
    return decay_s.double() @ w.T


def dereverberate(
    y: Tensor,
    *,
    sample_rate: float,
    decay_s: Param,
    predelay_ms: Param = 0.0,
    mix: Param = 0.3,
    frame_ms: float = 46.0,
) -> Tensor:
    """The dry signal of :func:`gradmix.dsp.reverb`'s output ``y``, its late reverberation suppressed (see the
    module docstring): per bin, the reverb's power ``mix^2 G(f) R[t]`` with ``R[t] = a R[t-1] + (1 - a)
    P[t - p]`` (``P`` the dry power found so far, ``a`` the energy decay of one hop at the bin's RT60, ``p``
    the predelay in hops, ``G(f)`` the IR's energy at ``f``: its RT60 over the mean RT60) is taken from the
    bin's power, never by more than :data:`DEREVERB_FLOOR_DB`, and the rest divided by the direct path.

    Args:
        y: reverberant audio ``(batch, channels, samples)``.
        sample_rate, decay_s, predelay_ms, mix: the reverb's.
        frame_ms: the STFT's frame, rounded to a power of two of samples (2048 at 44.1 kHz); hops of a quarter.
    """
    check_audio(y)
    sample_rate = check_sample_rate(sample_rate)
    d = param(decay_s, "decay_s", y, bands=REVERB_BANDS)
    p, m = param(predelay_ms, "predelay_ms", y), param(mix, "mix", y)
    check_range(d, "decay_s", 0.0, low_open=True)
    check_range(m, "mix", 0.0, 1.0)
    b, c, n = y.shape
    n_fft = 2 ** round(math.log2(frame_ms * sample_rate / 1000.0))
    hop = n_fft // 4
    window = torch.hann_window(n_fft, device=y.device)  # float32: a statistical estimate needs no more
    spec = torch.stft(y.detach().float().reshape(b * c, n), n_fft, hop, window=window, return_complex=True)
    power = torch.view_as_real(spec).square().sum(-1)  # (b c, bins, frames)
    freqs = torch.fft.rfftfreq(n_fft, 1 / sample_rate).to(y.device)
    rt = band_decay_s(d, freqs).repeat_interleave(c, 0)  # (b c, bins)
    energy = rt / rt.mean(-1, keepdim=True)
    a = torch.exp(-2 * math.log(1000.0) * hop / (sample_rate * rt))
    weight = (m.double().repeat_interleave(c, 0)[:, None] ** 2 * energy).cpu().contiguous().numpy()
    lag = (p.double() * sample_rate / 1000.0 / hop).round().long().repeat_interleave(c, 0).cpu().numpy()
    direct = ((1 - m.double()) ** 2).repeat_interleave(c, 0).cpu().numpy()
    power_np = power.cpu().contiguous().numpy()
    dry_np = np.empty_like(power_np)
    _kernels()[1](
        power_np,
        a.float().cpu().contiguous().numpy(),
        weight.astype(np.float32),
        direct.astype(np.float32),
        lag,
        np.float32(10 ** (DEREVERB_FLOOR_DB / 10)),
        dry_np,
    )
    dry = torch.from_numpy(dry_np).to(power.device)
    scale = dry.div_(power.clamp_min_(1e-30)).sqrt_()
    out = torch.istft(spec.mul_(scale), n_fft, hop, window=window, length=n)
    return out.view(b, c, n).to(y.dtype)
