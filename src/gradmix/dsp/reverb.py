"""Time effects: filtered-noise reverb and feedback delay, both applied by FFT convolution."""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from gradmix.dsp._params import Param, bcast, check_audio, check_range, check_sample_rate, inference, param
from gradmix.dsp.delay_line import delay_line
from gradmix.errors import ParameterError

REVERB_CROSSOVERS_HZ = (250.0, 1000.0, 4000.0)
"""Band edges of the reverb's decay bands: low, low-mid, high-mid, high (4 bands)."""

REVERB_BANDS = len(REVERB_CROSSOVERS_HZ) + 1
MAX_DECAY_S = 20.0
_LN1000 = math.log(1000.0)


def fft_convolve(x: Tensor, h: Tensor) -> Tensor:
    """Linear convolution ``y = x * h`` by FFT, truncated to the length of ``x``.

    Signals much longer than ``h`` are convolved block by block (overlap-add, blocks a power of two at
    least as long as ``h``): cache-sized FFTs instead of one whole-song FFT, the same result to float
    rounding, and differentiable either way.

    Args:
        x: ``(batch, channels, samples)``.
        h: ``(batch, channels, taps)`` or ``(batch, 1, taps)``.

    Returns:
        ``(batch, channels, samples)``.
    """
    n, taps = x.shape[-1], h.shape[-1]
    block = 1 << max(12, (taps - 1).bit_length())
    if n <= 4 * block:
        size = _fast_len(n + taps)
        return torch.fft.irfft(torch.fft.rfft(x, size) * torch.fft.rfft(h, size), size)[..., :n]
    blocks = -(-n // block)
    size = 2 * block
    segments = F.pad(x, (0, blocks * block - n)).unflatten(-1, (blocks, block))
    spectra, response = torch.fft.rfft(segments, size), torch.fft.rfft(h, size).unsqueeze(-2)
    if inference(x, h):  # the same values, in place: two song-long temporaries fewer
        y = torch.fft.irfft(spectra.mul_(response), size)
        y[..., 1:, :block] += y[..., :-1, block:]  # each block's tail spills into the next block
        return y[..., :block].flatten(-2)[..., :n]
    y = torch.fft.irfft(spectra * response, size)
    tails = F.pad(y[..., :-1, block:], (0, 0, 1, 0))
    return (y[..., :block] + tails).flatten(-2)[..., :n]


def fractional_shift(h: Tensor, delay_samples: Tensor) -> Tensor:
    """Delay each item of ``h`` by a (fractional) number of samples, by linear interpolation.

    Args:
        h: ``(batch, channels, taps)``.
        delay_samples: ``(batch,)``, >= 0; differentiable.

    Returns:
        ``(batch, channels, taps + ceil(max delay) + 1)``.
    """
    lo = delay_samples.detach().floor()
    frac = (delay_samples - lo)[:, None, None]
    lo = lo.long()
    length = h.shape[-1] + int(lo.max()) + 1
    src = torch.arange(length, device=h.device)[None, :] - lo[:, None]  # (batch, length)
    padded = F.pad(h, (1, length - h.shape[-1]))  # index 0 is a zero, so src = -1 reads silence

    def take(index: Tensor) -> Tensor:
        index = (index + 1).clamp(0, padded.shape[-1] - 1)
        return padded.gather(-1, index[:, None, :].expand(h.shape[0], h.shape[1], length))

    return (1 - frac) * take(src.clamp(min=-1)) + frac * take((src - 1).clamp(min=-1))


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
def _band_noise_on(channels: int, sample_rate: float, seed: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """:func:`_band_noise` in ``dtype`` on ``device``, copied there once."""
    return _band_noise(channels, sample_rate, seed).to(device, dtype)


@functools.lru_cache(maxsize=8)
def _band_noise(channels: int, sample_rate: float, seed: int) -> Tensor:
    """Seeded white noise, :data:`MAX_DECAY_S` long, split into :data:`REVERB_BANDS` bands that sum back to it:
    ``(bands, ch, taps)``.

    The split is done in the frequency domain with raised-cosine crossfades one octave wide (in log
    frequency) around each crossover, amplitude-complementary so the bands sum to the original noise.
    """
    taps = int(math.ceil(MAX_DECAY_S * sample_rate))
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


def reverb_impulse_response(*, sample_rate: float, decay_s: Tensor, channels: int, seed: int = 0) -> Tensor:
    """Filtered-noise impulse response, normalised to unit energy per channel.

    ``h[c, t] = sum_b n_b[c, t] exp(-ln(1000) t / decay_s[b])``: band ``b`` of seeded white noise decays by
    60 dB in ``decay_s[b]`` seconds (RT60). Each item's IR is :func:`ir_seconds` long, the start of one
    noise drawn :data:`MAX_DECAY_S` long, so that an item gets the same IR in any batch and the IR moves
    smoothly with the decay times (no new room when the length steps); shorter IRs are zero-padded.

    Args:
        sample_rate: Hz.
        decay_s: RT60 per band in seconds, ``(batch, bands)``.
        channels: 1 or 2 (stereo channels get decorrelated noise).
        seed: noise seed.

    Returns:
        ``(batch, channels, taps)`` with ``taps`` the longest IR of the batch.
    """
    lengths = [int(math.ceil(s * sample_rate)) for s in ir_seconds(decay_s).tolist()]
    taps = max(lengths)
    out = decay_s.new_zeros(decay_s.shape[0], channels, taps)
    for length in sorted(set(lengths)):
        idx = torch.tensor([i for i, n in enumerate(lengths) if n == length]).to(decay_s.device, non_blocking=True)
        noise = _band_noise_on(channels, float(sample_rate), seed, decay_s.device, decay_s.dtype)[..., :length]
        t = torch.arange(length, device=decay_s.device, dtype=decay_s.dtype) / sample_rate
        env = torch.exp(-_LN1000 * t / decay_s[idx].unsqueeze(-1))  # (items, bands, length)
        h = torch.einsum("bkt,kct->bct", env, noise)
        h = h / torch.sqrt(h.square().sum(-1, keepdim=True) + 1e-12)
        out = out.index_copy(0, idx, F.pad(h, (0, taps - length)))
    return out


def ir_seconds(decay_s: Tensor) -> Tensor:
    """IR length per item: the longest RT60 rounded up to 1/8 s, so that it stays put while decay
    times are optimised (``(batch, bands)`` -> ``(batch,)``, not differentiable)."""
    return torch.ceil(decay_s.detach().amax(-1) * 8) / 8


def reverb(
    x: Tensor, *, sample_rate: float, decay_s: Param, predelay_ms: Param = 0.0, mix: Param = 0.3, seed: int = 0
) -> Tensor:
    """Reverb by FFT convolution with a filtered-noise impulse response (see
    :func:`reverb_impulse_response`), delayed by ``predelay_ms``
    (fractional delays by linear interpolation).

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
    h = reverb_impulse_response(sample_rate=sample_rate, decay_s=d, channels=x.shape[1], seed=seed)
    wet = fft_convolve(x, fractional_shift(h, p * (sample_rate / 1000.0)))
    if inference(x, wet, m):
        return wet.mul_(bcast(m)).add_((1 - bcast(m)) * x)
    return (1 - bcast(m)) * x + bcast(m) * wet


def delay(x: Tensor, *, sample_rate: float, time_ms: Param, feedback: Param = 0.3, mix: Param = 0.3) -> Tensor:
    """Feedback delay: a delay line of ``time_ms`` whose output is fed back to its input with gain
    ``feedback``; for a whole number of samples ``D``, ``wet[n] = sum_{k >= 1} feedback^(k-1) x[n - k D]``.

    Fractional delays read the line by linear interpolation (as tape-style delay units do, so each pass
    through the loop is gently low-passed), which gives ``time_ms`` a gradient. The recursion runs as a
    compiled loop with an exact hand-derived backward (:mod:`gradmix.dsp.delay_line`). Output
    ``(1 - mix) x + mix wet``, with the input's length.

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
    wet = delay_line(x, (t * (sample_rate / 1000.0)).clamp_min(1.0), f)
    return (1 - bcast(m)) * x + bcast(m) * wet
