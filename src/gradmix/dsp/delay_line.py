"""A fed-back delay line with linear interpolation, as numba kernels with an exact backward.

Per channel, with ``D = m + f`` samples (``m`` whole, ``0 <= f < 1``) and feedback ``g``:

    wet[n] = (1 - f) v[n - m] + f v[n - m - 1],    v[n] = x[n] + g wet[n]    (v[n < 0] = 0)

The adjoint runs the same recursion backwards in time (``lam_w = dL/dwet`` in total):

    lam_v[n] = (1 - f) lam_w[n + m] + f lam_w[n + m + 1],   lam_w[n] = dL/dwet[n] + g lam_v[n],
    dL/dx[n] = lam_v[n],   dL/dg = sum_n lam_v[n] wet[n],   dL/df = sum_n lam_w[n] (v[n - m - 1] - v[n - m]).

Both passes are one O(samples) loop per channel, parallel over the batch; kernels are cached on disk.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from gradmix.dsp import linear_scan

_KERNELS = None


def _kernels():
    global _KERNELS
    if _KERNELS is None:
        from numba import njit, prange

        @njit(parallel=True, cache=True)
        def forward(x, whole, frac, gain, wet):  # pragma: no cover - compiled
            batch, channels, samples = x.shape
            for bc in prange(batch * channels):
                b, c = bc // channels, bc % channels
                m, f, g = whole[b], frac[b], gain[b]
                v = np.zeros(samples, dtype=x.dtype)
                for n in range(samples):
                    w = 0.0
                    if n - m >= 0:
                        w += (1.0 - f) * v[n - m]
                    if n - m - 1 >= 0:
                        w += f * v[n - m - 1]
                    wet[b, c, n] = w
                    v[n] = x[b, c, n] + g * w

        @njit(parallel=True, cache=True)
        def backward(grad_wet, x, wet, whole, frac, gain, grad_x, grad_f, grad_g):  # pragma: no cover - compiled
            batch, channels, samples = x.shape
            for bc in prange(batch * channels):
                b, c = bc // channels, bc % channels
                m, f, g = whole[b], frac[b], gain[b]
                lam_w = np.zeros(samples, dtype=x.dtype)
                gf = 0.0
                gg = 0.0
                for n in range(samples - 1, -1, -1):
                    lv = 0.0
                    if n + m < samples:
                        lv += (1.0 - f) * lam_w[n + m]
                    if n + m + 1 < samples:
                        lv += f * lam_w[n + m + 1]
                    lw = grad_wet[b, c, n] + g * lv
                    lam_w[n] = lw
                    grad_x[b, c, n] = lv
                    gg += lv * wet[b, c, n]
                    va = x[b, c, n - m] + g * wet[b, c, n - m] if n - m >= 0 else 0.0
                    vb = x[b, c, n - m - 1] + g * wet[b, c, n - m - 1] if n - m - 1 >= 0 else 0.0
                    gf += lw * (vb - va)
                grad_f[b, c] = gf
                grad_g[b, c] = gg

        _KERNELS = (forward, backward)
    return _KERNELS


def _np(t: Tensor, dtype=None) -> np.ndarray:
    a = t.detach().to("cpu").contiguous().numpy()
    return a if dtype is None else a.astype(dtype)


class _DelayLine(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, whole: Tensor, frac: Tensor, gain: Tensor) -> Tensor:
        fwd, _ = _kernels()
        xn = _np(x)
        wet = np.empty_like(xn)
        fwd(xn, _np(whole, np.int64), _np(frac, xn.dtype), _np(gain, xn.dtype), wet)
        out = torch.from_numpy(wet).to(x.device)
        ctx.save_for_backward(x, out, whole, frac, gain)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        x, wet, whole, frac, gain = ctx.saved_tensors
        _, bwd = _kernels()
        xn = _np(x)
        gx = np.empty_like(xn)
        gf = np.empty(xn.shape[:2], dtype=xn.dtype)
        gg = np.empty(xn.shape[:2], dtype=xn.dtype)
        bwd(
            _np(grad, xn.dtype),
            xn,
            _np(wet),
            _np(whole, np.int64),
            _np(frac, xn.dtype),
            _np(gain, xn.dtype),
            gx,
            gf,
            gg,
        )
        dev = grad.device
        return (
            torch.from_numpy(gx).to(dev, x.dtype),
            None,
            torch.from_numpy(gf.sum(1)).to(dev, frac.dtype),
            torch.from_numpy(gg.sum(1)).to(dev, gain.dtype),
        )


def delay_line(x: Tensor, delay_samples: Tensor, feedback: Tensor) -> Tensor:
    """The wet output of a fed-back, linearly interpolated delay line (see the module docstring).

    Args:
        x: ``(batch, channels, samples)``.
        delay_samples: ``(batch,)``, >= 1; differentiable through its fractional part.
        feedback: ``(batch,)``, ``|feedback| < 1``.

    Returns:
        ``(batch, channels, samples)``. Off the CPU (or under :func:`gradmix.dsp.linear_scan.forced`) it is
        computed by :func:`gradmix.dsp.linear_scan.delay_line_fft`.
    """
    whole = delay_samples.detach().floor()
    if linear_scan.wanted(x):
        return linear_scan.delay_line_fft(x, whole, delay_samples - whole, feedback)
    return _DelayLine.apply(x, whole.long(), delay_samples - whole, feedback.to(x.dtype))
