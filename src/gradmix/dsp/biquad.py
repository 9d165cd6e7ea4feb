"""Biquad filters designed as in the RBJ Audio EQ Cookbook, and an exact differentiable IIR cascade.

Every RBJ biquad is the bilinear transform, pre-warped at ``freq_hz``, of an analog prototype
(``s`` normalised to the centre/corner frequency, ``A = 10 ** (gain_db / 40)``):

=============  ===============================================
shape          H(s)
=============  ===============================================
lowpass        1 / (s^2 + s/Q + 1)
highpass       s^2 / (s^2 + s/Q + 1)
bandpass       (s/Q) / (s^2 + s/Q + 1)          (0 dB peak)
notch          (s^2 + 1) / (s^2 + s/Q + 1)
peak           (s^2 + s A/Q + 1) / (s^2 + s/(A Q) + 1)
low_shelf      A (s^2 + s sqrt(A)/Q + A) / (A s^2 + s sqrt(A)/Q + 1)
high_shelf     A (A s^2 + s sqrt(A)/Q + 1) / (s^2 + s sqrt(A)/Q + A)
=============  ===============================================

so a peak gives ``gain_db`` at its centre and a shelf ``gain_db / 2`` at its corner.

:func:`sos_filter` runs a cascade of second-order sections as the true recursive filter (transposed
direct form II in float64, the recursion and rounding of scipy's ``sosfilt``, compiled by numba; any
per-item coefficients) and has a hand-derived backward: for a section
``y = B(z)/A(z) x`` with zero initial state, the adjoint of the all-pole part is the time-reversed
all-pole filter, so with ``g_A = reverse(1/A)(reverse(dL/dy))``

    dL/db_j = sum_n g_A[n] x[n - j],   dL/da_j = -sum_n g_A[n] y[n - j],
    dL/dx[n] = sum_j b_j g_A[n + j].

The sections' adjoints are anti-causal filters, so the backward runs them all in one pass backwards in
time (as the forward runs the sections in one pass forwards), with the dot products accumulated on the
way: exact to float64 rounding and about twice the cost of the forward.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import Tensor

from gradmix.dsp import linear_scan
from gradmix.dsp._params import Param, check_audio, check_range, check_sample_rate, param
from gradmix.errors import ParameterError

SHAPES = ("peak", "low_shelf", "high_shelf", "lowpass", "highpass", "bandpass", "notch")
"""Every biquad shape :func:`biquad_coefficients` designs."""

GAIN_SHAPES = ("peak", "low_shelf", "high_shelf")
"""Shapes whose response depends on ``gain_db``; the others ignore it."""


def biquad_coefficients(
    shape: str, *, sample_rate: float, freq_hz: Tensor, gain_db: Tensor, q: Tensor
) -> tuple[Tensor, Tensor]:
    """RBJ cookbook coefficients, normalised so that ``a0 = 1``.

    Args:
        shape: one of :data:`SHAPES`.
        sample_rate: Hz.
        freq_hz: centre or corner frequency in Hz, any shape ``S``, in ``(0, sample_rate / 2)``.
        gain_db: gain in dB, shape ``S`` (ignored by lowpass/highpass/bandpass/notch).
        q: quality factor, shape ``S``, > 0.

    Returns:
        ``(b, a)``, each of shape ``S + (3,)``: ``b = (b0, b1, b2)``, ``a = (1, a1, a2)``, always float64
        (float32 coefficients would move low-frequency poles audibly); gradients flow to the inputs.
    """
    if shape not in SHAPES:
        raise ParameterError(f"shape: {shape!r} is not one of {', '.join(SHAPES)}")
    freq_hz, gain_db, q = freq_hz.double(), gain_db.double(), q.double()
    w0 = 2.0 * math.pi * freq_hz / sample_rate
    cos_w0 = torch.cos(w0)
    alpha = torch.sin(w0) / (2.0 * q)
    one = torch.ones_like(cos_w0)
    if shape in GAIN_SHAPES:
        A = torch.pow(10.0, gain_db / 40.0)
    if shape == "peak":
        b = (1 + alpha * A, -2 * cos_w0, 1 - alpha * A)
        a = (1 + alpha / A, -2 * cos_w0, 1 - alpha / A)
    elif shape == "low_shelf":
        sq = 2 * torch.sqrt(A) * alpha
        b = (
            A * ((A + 1) - (A - 1) * cos_w0 + sq),
            2 * A * ((A - 1) - (A + 1) * cos_w0),
            A * ((A + 1) - (A - 1) * cos_w0 - sq),
        )
        a = ((A + 1) + (A - 1) * cos_w0 + sq, -2 * ((A - 1) + (A + 1) * cos_w0), (A + 1) + (A - 1) * cos_w0 - sq)
    elif shape == "high_shelf":
        sq = 2 * torch.sqrt(A) * alpha
        b = (
            A * ((A + 1) + (A - 1) * cos_w0 + sq),
            -2 * A * ((A - 1) + (A + 1) * cos_w0),
            A * ((A + 1) + (A - 1) * cos_w0 - sq),
        )
        a = ((A + 1) - (A - 1) * cos_w0 + sq, 2 * ((A - 1) - (A + 1) * cos_w0), (A + 1) - (A - 1) * cos_w0 - sq)
    elif shape == "lowpass":
        b = ((1 - cos_w0) / 2, 1 - cos_w0, (1 - cos_w0) / 2)
        a = (1 + alpha, -2 * cos_w0, 1 - alpha)
    elif shape == "highpass":
        b = ((1 + cos_w0) / 2, -(1 + cos_w0), (1 + cos_w0) / 2)
        a = (1 + alpha, -2 * cos_w0, 1 - alpha)
    elif shape == "bandpass":
        b = (alpha, 0 * alpha, -alpha)
        a = (1 + alpha, -2 * cos_w0, 1 - alpha)
    else:  # notch
        b = (one, -2 * cos_w0, one)
        a = (1 + alpha, -2 * cos_w0, 1 - alpha)
    a0 = a[0]
    return torch.stack([c / a0 for c in b], -1), torch.stack([one, a[1] / a0, a[2] / a0], -1)


def check_filter_params(freq_hz: Tensor, q: Tensor, sample_rate: float, prefix: str = "") -> None:
    """Raise unless ``0 < freq_hz < sample_rate / 2`` and ``q > 0``."""
    check_range(freq_hz, prefix + "freq_hz", 0.0, sample_rate / 2, low_open=True, high_open=True)
    check_range(q, prefix + "q", 0.0, low_open=True)


def biquad(
    x: Tensor, *, sample_rate: float, shape: str, freq_hz: Param, q: Param = 0.7071, gain_db: Param = 0.0
) -> Tensor:
    """Filter ``x`` by one RBJ biquad.

    Args:
        x: audio, shape ``(batch, channels, samples)``.
        sample_rate: Hz.
        shape: one of :data:`SHAPES`.
        freq_hz: centre/corner frequency in Hz, float or ``(batch,)``.
        q: quality factor, float or ``(batch,)``.
        gain_db: gain in dB for peak and shelves, float or ``(batch,)``.

    Returns:
        filtered audio, same shape and dtype as ``x``.
    """
    check_audio(x)
    sample_rate = check_sample_rate(sample_rate)
    f, g, qq = param(freq_hz, "freq_hz", x), param(gain_db, "gain_db", x), param(q, "q", x)
    check_filter_params(f, qq, sample_rate)
    b, a = biquad_coefficients(shape, sample_rate=sample_rate, freq_hz=f, gain_db=g, q=qq)
    return sos_filter(x, b.unsqueeze(1), a.unsqueeze(1))


def frequency_response_db(b: Tensor, a: Tensor, freqs_hz: Tensor | Sequence[float], sample_rate: float) -> Tensor:
    """Magnitude response in dB of a cascade of sections, evaluated analytically on the unit circle.

    Args:
        b, a: coefficients of shape ``(..., sections, 3)``.
        freqs_hz: frequencies in Hz, shape ``(F,)``.
        sample_rate: Hz.

    Returns:
        dB, shape ``(..., F)``.
    """
    f = torch.as_tensor(freqs_hz, dtype=b.dtype, device=b.device)
    w = 2 * math.pi * f / sample_rate
    k = torch.arange(3, dtype=b.dtype, device=b.device)
    z_re, z_im = torch.cos(w[:, None] * k), -torch.sin(w[:, None] * k)  # e^{-jwk}, shape (F, 3)

    def mag2(c: Tensor) -> Tensor:
        re = (c.unsqueeze(-2) * z_re).sum(-1)
        im = (c.unsqueeze(-2) * z_im).sum(-1)
        return re * re + im * im

    ratio = mag2(b) / mag2(a).clamp_min(1e-300)
    return (10 * torch.log10(ratio.clamp_min(1e-30))).sum(-2)


_POOL: ThreadPoolExecutor | None = None
_KERNELS = None
TINY, FLUSH_EVERY = 1e-290, 64
"""Every 64 samples, recursion states below 1e-290 in magnitude are set to 0: a decaying state (silence
after sound, a gradient before its window) would otherwise reach subnormal numbers, whose arithmetic is
10-35x slower. A float32 signal cannot hold such values anyway (its smallest is 1.4e-45)."""


def _map(fn, items):
    """Run ``fn`` over items on a small thread pool: the compiled filter releases the GIL."""
    global _POOL
    items = list(items)
    threads = max(1, min(torch.get_num_threads(), len(items)))
    if threads == 1:
        return [fn(i) for i in items]
    if _POOL is None or _POOL._max_workers != threads:
        _POOL = ThreadPoolExecutor(threads)
    return list(_POOL.map(fn, items))


def _kernels():
    """``(cascade, adjoint)``, compiled by numba (no scipy.signal import, 0.6 s), releasing the GIL and cached
    on disk after the first compilation. Neither calls another compiled function defined here: numba's cache
    misses on such a closure, and every process would compile again (1.5-3 s) and add to the cache.

    ``cascade(sos, x, out, stages, keep)`` filters each row of ``x (rows, samples)`` (any float dtype; read
    directly, no float64 copy) from zero state through ``sos (sections, 6)`` (rows ``b0 b1 b2 1 a1 a2``) into
    ``out``: transposed direct form II in float64 with scipy's ``sosfilt`` arithmetic in its order, so the
    output is the same to the last bit (but for states below :data:`TINY`, set to 0); with ``keep`` it also
    writes every section's input and the output into ``stages (sections + 1, rows, samples)``.
    ``adjoint(sos, grad_y, stages, grad_x, grad_sos, coefficients)`` runs the backward of the module
    docstring, every section in one pass backwards in time (the sections' adjoints are anti-causal, so they
    chain sample by sample as the forward does), accumulating ``dL/d sos`` into ``grad_sos (sections, 6)``
    when ``coefficients``.
    """
    global _KERNELS
    if _KERNELS is None:
        from numba import njit

        @njit(nogil=True, cache=True)
        def cascade(sos, x, out, stages, keep):  # pragma: no cover - compiled
            sections = sos.shape[0]
            z = np.zeros((sections, 2))
            for r in range(x.shape[0]):
                z[:] = 0.0
                for n in range(x.shape[1]):
                    cur = np.float64(x[r, n])
                    if keep:
                        stages[0, r, n] = cur
                    for s in range(sections):
                        new = sos[s, 0] * cur + z[s, 0]
                        z[s, 0] = sos[s, 1] * cur - sos[s, 4] * new + z[s, 1]
                        z[s, 1] = sos[s, 2] * cur - sos[s, 5] * new
                        cur = new
                        if keep:
                            stages[s + 1, r, n] = cur
                    out[r, n] = cur
                    if n % FLUSH_EVERY == 0:
                        for s in range(sections):
                            for j in range(2):
                                if abs(z[s, j]) < TINY:
                                    z[s, j] = 0.0

        @njit(nogil=True, cache=True)
        def adjoint(sos, grad_y, stages, grad_x, grad_sos, coefficients):  # pragma: no cover - compiled
            sections, samples = sos.shape[0], grad_y.shape[1]
            later = np.zeros((sections, 2))  # g_A[n + 1], g_A[n + 2] of each section
            for r in range(grad_y.shape[0]):
                later[:] = 0.0
                for n in range(samples - 1, -1, -1):
                    g = np.float64(grad_y[r, n])
                    for k in range(sections - 1, -1, -1):
                        g1, g2 = later[k, 0], later[k, 1]
                        g_a = g - sos[k, 4] * g1 - sos[k, 5] * g2
                        if coefficients:  # sum_n g_A[n] x[n - j] = sum_n g_A[n + j] x[n], and so for y
                            xin, yout = np.float64(stages[k, r, n]), np.float64(stages[k + 1, r, n])
                            grad_sos[k, 0] += g_a * xin
                            grad_sos[k, 1] += g1 * xin
                            grad_sos[k, 2] += g2 * xin
                            grad_sos[k, 4] -= g1 * yout
                            grad_sos[k, 5] -= g2 * yout
                        g = sos[k, 0] * g_a + sos[k, 1] * g1 + sos[k, 2] * g2
                        later[k, 0], later[k, 1] = g_a, g1
                    grad_x[r, n] = g
                    if n % FLUSH_EVERY == 0:
                        for k in range(sections):
                            for j in range(2):
                                if abs(later[k, j]) < TINY:
                                    later[k, j] = 0.0

        _KERNELS = (cascade, adjoint)
    return _KERNELS


class _SOSFilter(torch.autograd.Function):
    """Cascade of biquads with per-item coefficients; see the module docstring for the backward."""

    @staticmethod
    def forward(ctx, x: Tensor, b: Tensor, a: Tensor) -> Tensor:
        cascade = _kernels()[0]
        xn = x.detach().to("cpu").numpy()
        sos = torch.cat([b, a], -1).detach().to("cpu", torch.float64).numpy()
        batch, sections = sos.shape[:2]
        keep = ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
        # stages[i, k] is the input of item i's section k (stages[i, sections] its output), in x's dtype
        stages = np.empty((batch, sections + 1) + xn.shape[1:], dtype=xn.dtype) if keep else None
        dummy = np.zeros((1, 1, 1), dtype=xn.dtype)
        out = np.empty(xn.shape, dtype=xn.dtype)

        def run(i: int) -> None:
            if keep:
                cascade(sos[i], xn[i], out[i], stages[i], True)
            else:  # without the sections whose numerator is their denominator (0 dB peaks and shelves):
                # their recursion returns its input exactly (its state stays 0), so no sample changes
                cascade(sos[i][(sos[i, :, :3] != sos[i, :, 3:]).any(1)], xn[i], out[i], dummy, False)

        _map(run, range(batch))  # sos_filter gives each channel of each item its own row here
        ctx.stages, ctx.sos = stages, sos
        ctx.save_for_backward(b, a)
        return torch.from_numpy(out).to(x.device)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y: Tensor):
        b, a = ctx.saved_tensors
        adjoint = _kernels()[1]
        sos, stages = ctx.sos, ctx.stages
        gy = grad_y.detach().to("cpu").contiguous().numpy()
        coefficients = stages is not None
        grad_sos = np.zeros(sos.shape)
        gx = np.empty(gy.shape, dtype=gy.dtype)
        dummy = np.zeros((1, 1, 1), dtype=gy.dtype)

        def run(i: int) -> None:
            adjoint(sos[i], gy[i], stages[i] if coefficients else dummy, gx[i], grad_sos[i], coefficients)

        _map(run, range(sos.shape[0]))
        dev = grad_y.device
        grad_x = torch.from_numpy(gx).to(dev, grad_y.dtype) if ctx.needs_input_grad[0] else None
        grad_b = torch.from_numpy(grad_sos[..., :3]).to(dev, b.dtype) if ctx.needs_input_grad[1] else None
        grad_a = torch.from_numpy(grad_sos[..., 3:]).to(dev, a.dtype) if ctx.needs_input_grad[2] else None
        return grad_x, grad_b, grad_a


def sos_filter(x: Tensor, b: Tensor, a: Tensor) -> Tensor:
    """Filter ``x`` through a cascade of biquads, exactly and with exact gradients.

    The recursion runs in float64: on the CPU as a compiled kernel with the arithmetic of scipy's
    ``sosfilt`` (one thread per batch item and channel up to ``torch.get_num_threads()``), on any other
    device block-parallel in torch (:func:`gradmix.dsp.linear_scan.sos_filter_blocks`, no host copies).
    Initial state is zero; the output has the input's length (no tail).

    Args:
        x: audio, shape ``(batch, channels, samples)``.
        b: numerators, shape ``(batch, sections, 3)``.
        a: denominators ``(a0, a1, a2)``, shape ``(batch, sections, 3)`` (normalised by ``a0`` here).

    Returns:
        filtered audio, same shape, dtype and device as ``x``.
    """
    check_audio(x)
    if b.dim() != 3 or b.shape[-1] != 3 or a.shape != b.shape or b.shape[0] != x.shape[0]:
        raise ParameterError(
            f"b, a: expected shape (batch={x.shape[0]}, sections, 3), got {tuple(b.shape)} and {tuple(a.shape)}"
        )
    if b.shape[1] == 0:
        return x.clone()
    if linear_scan.wanted(x):
        return linear_scan.sos_filter_blocks(x, b, a)
    a0 = a[..., :1]
    b, a = b / a0, a / a0
    batch, channels, samples = x.shape
    if channels > 1:  # one contiguous signal per item is much faster for the backward's dot products
        b, a = b.repeat_interleave(channels, 0), a.repeat_interleave(channels, 0)
    return _SOSFilter.apply(x.reshape(batch * channels, 1, samples), b, a).reshape(batch, channels, samples)
