"""Time effects: filtered-noise reverb and feedback delay, both applied by FFT convolution."""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

from gradmix.dsp._params import Param, bcast, check_audio, check_range, check_sample_rate, param
from gradmix.errors import ParameterError

REVERB_CROSSOVERS_HZ = (250.0, 1000.0, 4000.0)
"""Band edges of the reverb's decay bands: low, low-mid, high-mid, high (4 bands)."""

REVERB_BANDS = len(REVERB_CROSSOVERS_HZ) + 1
MAX_DECAY_S = 20.0
_LN1000 = math.log(1000.0)


def fft_convolve(x: Tensor, h: Tensor, delay_samples: Tensor | None = None) -> Tensor:
    """Linear convolution ``y = x * h`` by FFT, truncated to the length of ``x``.

    Args:
        x: ``(batch, channels, samples)``.
        h: ``(batch, channels, taps)`` or ``(batch, 1, taps)``.
        delay_samples: optional ``(batch,)`` extra (fractional, band-limited) delay of ``h`` in samples.

    Returns:
        ``(batch, channels, samples)``.
    """
    n = x.shape[-1]
    extra = 0 if delay_samples is None else int(math.ceil(float(delay_samples.detach().max()))) + 1
    size = _fast_len(n + h.shape[-1] + extra)
    spec = torch.fft.rfft(x, size) * torch.fft.rfft(h, size)
    if delay_samples is not None:
        w = torch.arange(spec.shape[-1], device=x.device, dtype=x.dtype) * (2 * math.pi / size)
        phase = -bcast(delay_samples) * w
        spec = spec * torch.polar(torch.ones_like(phase), phase)
    return torch.fft.irfft(spec, size)[..., :n]


def _fast_len(n: int) -> int:
    """Smallest 2^a 3^b 5^c >= n (fast sizes for pocketfft)."""
    best = 1 << (n - 1).bit_length()
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            p = p35
            while p < n:
                p *= 2
            best = min(best, p)
            p35 *= 3
        p5 *= 5
    return best


@functools.lru_cache(maxsize=8)
def _band_noise(channels: int, taps: int, sample_rate: float, seed: int) -> Tensor:
    """Seeded white noise split into :data:`REVERB_BANDS` bands that sum back to it: ``(bands, ch, taps)``.

    The split is done in the frequency domain with raised-cosine crossfades one octave wide (in log
    frequency) around each crossover, amplitude-complementary so the bands sum to the original noise.
    """
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(channels, taps, generator=gen, dtype=torch.float64)
    spec = torch.fft.rfft(noise)
    freqs = torch.fft.rfftfreq(taps, 1 / sample_rate).to(torch.float64).clamp_min(1.0)
    logf = torch.log2(freqs)
    edges = []  # fraction of each bin that belongs above each crossover
    for fc in REVERB_CROSSOVERS_HZ:
        t = ((logf - math.log2(fc)) + 0.5).clamp(0, 1)
        edges.append(torch.sin(t * math.pi / 2) ** 2)
    masks, below = [], torch.ones_like(logf)
    for e in edges:
        masks.append(below * (1 - e))
        below = below * e
    masks.append(below)
    bands = torch.stack([torch.fft.irfft(spec * m, taps) for m in masks])
    return bands.to(torch.float32)


def reverb_impulse_response(*, sample_rate: float, decay_s: Tensor, channels: int, taps: int, seed: int = 0
                            ) -> Tensor:
    """Filtered-noise impulse response, normalised to unit energy per channel.

    ``h[c, t] = sum_b n_b[c, t] exp(-ln(1000) t / decay_s[b])``: band ``b`` of seeded white noise decays by
    60 dB in ``decay_s[b]`` seconds (RT60).

    Args:
        sample_rate: Hz.
        decay_s: RT60 per band in seconds, ``(batch, bands)``.
        channels: 1 or 2 (stereo channels get decorrelated noise).
        taps: IR length in samples.
        seed: noise seed.

    Returns:
        ``(batch, channels, taps)``.
    """
    noise = _band_noise(channels, taps, float(sample_rate), seed).to(decay_s)
    t = torch.arange(taps, device=decay_s.device, dtype=decay_s.dtype) / sample_rate
    env = torch.exp(-_LN1000 * t / decay_s.unsqueeze(-1))  # (batch, bands, taps)
    h = torch.einsum("bkt,kct->bct", env, noise)
    return h / torch.sqrt(h.square().sum(-1, keepdim=True) + 1e-12)


def reverb(x: Tensor, *, sample_rate: float, decay_s: Param, predelay_ms: Param = 0.0, mix: Param = 0.3,
           seed: int = 0) -> Tensor:
    """Reverb by FFT convolution with a filtered-noise impulse response (see
    :func:`reverb_impulse_response`), delayed by ``predelay_ms``
    (fractional delays are band-limited, applied as a phase shift).

    The wet signal has the same energy as the dry one for noise-like input; output
    ``(1 - mix) x + mix wet``, with the input's length (pad the input to keep the tail).

    Args:
        x: audio, shape ``(batch, channels, samples)``; each channel has its own decorrelated IR.
        sample_rate: Hz.
        decay_s: RT60 in seconds per band (:data:`REVERB_BANDS` bands split at
            :data:`REVERB_CROSSOVERS_HZ`), a float, a ``(bands,)`` sequence or a ``(batch, bands)`` tensor;
            each in ``(0, 20]``.
        predelay_ms: ms before the reverberation starts, >= 0.
        mix: 0 (dry) .. 1 (wet).
        seed: seed of the noise (static; the same seed gives the same room).
    """
    check_audio(x)
    sample_rate = check_sample_rate(sample_rate)
    d = param(decay_s, "decay_s", x, bands=REVERB_BANDS)
    check_range(d, "decay_s", 0.0, MAX_DECAY_S, low_open=True)
    p, m = param(predelay_ms, "predelay_ms", x), param(mix, "mix", x)
    check_range(p, "predelay_ms", 0.0, 1000.0)
    check_range(m, "mix", 0.0, 1.0)
    if not isinstance(seed, int):
        raise ParameterError(f"seed: {seed!r} is not an integer")
    # the IR length is rounded up to 1/8 s so that it stays put while the decay times are optimised
    taps = int(math.ceil(float(d.detach().max()) * 8) / 8 * sample_rate)
    h = reverb_impulse_response(sample_rate=sample_rate, decay_s=d, channels=x.shape[1], taps=taps, seed=seed)
    wet = fft_convolve(x, h, p * (sample_rate / 1000.0))
    return (1 - bcast(m)) * x + bcast(m) * wet


def delay(x: Tensor, *, sample_rate: float, time_ms: Param, feedback: Param = 0.3, mix: Param = 0.3) -> Tensor:
    """Feedback delay: ``wet[n] = sum_{k >= 1} feedback^(k-1) x[n - k D]``, ``D = time_ms`` in samples.

    This is the output of a delay line whose output is fed back with gain ``feedback``; it is computed
    exactly (every echo that falls inside the signal) in the frequency domain with the closed form
    ``z (1 - (f z)^K) / (1 - f z)``, ``z = exp(-j w D)``, so ``time_ms`` may be fractional and gets a
    gradient. Output ``(1 - mix) x + mix wet``, with the input's length.

    Args:
        x: audio, shape ``(batch, channels, samples)``.
        sample_rate: Hz.
        time_ms: delay time in ms, in ``[1, 5000]``.
        feedback: gain of each repeat, ``-0.99 .. 0.99``.
        mix: 0 (dry) .. 1 (wet).
    """
    check_audio(x)
    sample_rate = check_sample_rate(sample_rate)
    t, f, m = param(time_ms, "time_ms", x), param(feedback, "feedback", x), param(mix, "mix", x)
    check_range(t, "time_ms", 1.0, 5000.0)
    check_range(f, "feedback", -0.99, 0.99)
    check_range(m, "mix", 0.0, 1.0)
    n = x.shape[-1]
    d = t * (sample_rate / 1000.0)
    echoes = torch.ceil(n / d.detach()) + 1  # (batch,): every echo that can land inside the signal
    size = _fast_len(2 * n + 2 * int(math.ceil(float(d.detach().max()))) + 16)
    w = torch.arange(size // 2 + 1, device=x.device, dtype=x.dtype) * (2 * math.pi / size)
    z = torch.polar(torch.ones_like(w), -w * d[:, None])  # (batch, bins)
    fz = f[:, None] * z
    fzk = torch.polar(f[:, None].abs() ** echoes[:, None], -w * (d * echoes)[:, None]) \
        * torch.where(f < 0, (-1.0) ** echoes, torch.ones_like(f))[:, None]
    response = z * (1 - fzk) / (1 - fz)
    wet = torch.fft.irfft(torch.fft.rfft(x, size) * response.unsqueeze(1), size)[..., :n]
    return (1 - bcast(m)) * x + bcast(m) * wet
