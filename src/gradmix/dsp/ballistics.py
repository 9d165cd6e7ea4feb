"""The branching one-pole smoother of dynamics processors, as numba kernels with an exact backward.

``y[n] = (1 - c[n]) y[n-1] + c[n] u[n]`` with ``c[n] = attack`` when ``u[n] < y[n-1]`` (the gain is
falling) and ``release`` otherwise, ``y[-1] = initial``. With the branch decisions fixed, the adjoint is
the same recursion run backwards: ``lam[n] = dL/dy[n] + (1 - c[n+1]) lam[n+1]``, and

    dL/du[n] = c[n] lam[n],   dL/dc[n] = lam[n] (u[n] - y[n-1]),   dL/dinitial = (1 - c[0]) lam[0],

the coefficient gradients summed over the samples that used each coefficient. Both passes are one
O(samples) loop per item, parallel over the batch; the kernels are cached on disk after the first
compilation, so a new process does not pay the JIT again.
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
        def forward(u, attack, release, initial, y, mask):  # pragma: no cover - compiled
            batch, samples = u.shape
            for b in prange(batch):
                prev = initial[b]
                at, rt = attack[b], release[b]
                for n in range(samples):  # branch-free: the branch is unpredictable on audio
                    v = u[b, n]
                    falling = v < prev
                    mask[b, n] = falling
                    c = at if falling else rt
                    prev = prev + c * (v - prev)
                    y[b, n] = prev

        @njit(parallel=True, cache=True)
        def backward(
            grad, u, y, attack, release, initial, mask, grad_u, grad_at, grad_rt, grad_init
        ):  # pragma: no cover
            batch, samples = u.shape
            for b in prange(batch):
                at, rt = attack[b], release[b]
                lam = 0.0
                g_at = 0.0
                g_rt = 0.0
                c_next = 0.0
                for n in range(samples - 1, -1, -1):
                    lam = grad[b, n] + (1.0 - c_next) * lam
                    falling = mask[b, n]
                    c = at if falling else rt
                    prev = y[b, n - 1] if n > 0 else initial[b]
                    d = lam * (u[b, n] - prev)
                    g_at += d if falling else 0.0
                    g_rt += 0.0 if falling else d
                    grad_u[b, n] = c * lam
                    c_next = c
                grad_at[b] = g_at
                grad_rt[b] = g_rt
                grad_init[b] = (1.0 - c_next) * lam

        @njit(parallel=True, cache=True)
        def curve_forward(level, threshold, ratio, knee, floor, expander, attack, release, y):  # pragma: no cover
            batch, samples = level.shape
            for b in prange(batch):
                t, w, lo = threshold[b], knee[b], -floor[b]
                inv = 1.0 / (2.0 * max(w, 1e-6))
                half = 0.5 * w
                slope = ratio[b] - 1.0 if expander else 1.0 / ratio[b] - 1.0
                # the static curve first, in a loop without a carried dependency (it vectorises) ...
                if expander:
                    for n in range(samples):
                        d = level[b, n] - t
                        k = min(d - half, 0.0)
                        y[b, n] = max(slope * (d if d < -half else -k * k * inv), lo)
                else:
                    for n in range(samples):
                        d = level[b, n] - t
                        k = max(d + half, 0.0)
                        y[b, n] = slope * (d if d > half else k * k * inv)
                # ... then the recursion, in place
                at, rt = attack[b], release[b]
                prev = 0.0
                for n in range(samples):
                    g = y[b, n]
                    c = at if g < prev else rt
                    prev = prev + c * (g - prev)
                    y[b, n] = prev

        @njit(parallel=True, cache=True)
        def limiter_gain(peak, ceiling, lookahead, release, out):  # pragma: no cover - compiled
            # one pass over need[n] = min(1, ceiling / peak[n - L]) (1 outside the signal): a running minimum
            # over windows of L + 1 (monotonic queue), then their moving average and the release; only the
            # last L + 2 values are kept (rings), and out[n] is written after every read of peak[<= n]
            batch, samples = peak.shape
            L = lookahead
            for b in prange(batch):
                queue = np.empty(L + 2, dtype=np.int64)  # indices of `need`, in a ring
                mins = np.empty(L + 2, dtype=np.float64)  # their values
                held = np.empty(L + 1, dtype=np.float64)  # the last L + 1 window minima, in a ring
                head, count = 0, 0
                total = 0.0
                prev = 1.0
                rt = release[b]
                for n in range(samples + 2 * L):
                    k = n - L
                    v = 1.0 if k < 0 or k >= samples else min(1.0, ceiling[b] / max(peak[b, k], 1e-30))
                    while count > 0 and mins[(head + count - 1) % (L + 2)] >= v:
                        count -= 1
                    queue[(head + count) % (L + 2)] = n
                    mins[(head + count) % (L + 2)] = v
                    count += 1
                    m = n - L  # the window [m, m + L] of `need` is complete: held[m] is its minimum
                    if queue[head] < m:
                        head = (head + 1) % (L + 2)
                        count -= 1
                    if m < 0:
                        continue
                    total += mins[head]
                    if m > L:
                        total -= held[(m - L - 1) % (L + 1)]
                    held[m % (L + 1)] = mins[head]
                    if m >= L:
                        i = m - L
                        g = total / (L + 1)
                        prev = g if g < prev else prev + rt * (g - prev)
                        out[b, i] = min(prev, min(1.0, ceiling[b] / max(peak[b, i], 1e-30)))

        @njit(parallel=True, cache=True)
        def linked_peak(x, floor, out):  # pragma: no cover - compiled
            batch, channels, samples = x.shape
            for b in prange(batch):
                for n in range(samples):
                    m = abs(x[b, 0, n])
                    for c in range(1, channels):
                        v = abs(x[b, c, n])
                        if v > m or v != v:  # NaN wins, as in torch.maximum
                            m = v
                    out[b, n] = m if m >= floor or m != m else floor

        @njit(parallel=True, cache=True)
        def uncompress_gain(level, threshold, ratio, knee, makeup, attack, release, out):  # pragma: no cover
            # per sample, the smoothed gain g (dB) with g = prev + c (curve(level - makeup - g) - prev): the
            # curve is 0, quadratic or linear in g, so each piece has a closed-form root; the piece and the
            # branch (attack or release) are the ones the root itself lands in
            batch, samples = level.shape
            for b in prange(batch):
                t, w, mk = threshold[b], knee[b], makeup[b]
                half = 0.5 * w
                s = 1.0 / ratio[b] - 1.0
                prev = 0.0
                for n in range(samples):
                    ly = level[b, n] - mk
                    g = prev
                    for branch in range(2):
                        c = attack[b] if branch == 0 else release[b]
                        p = prev * (1.0 - c)
                        g = p  # below the knee: the curve is 0
                        if ly - g - t > -half:
                            # above the knee: g = p + c s (ly - g - t)
                            g = (p + c * s * (ly - t)) / (1.0 + c * s)
                            if ly - g - t < half and w > 0.0:
                                # in the knee: g = p + k e^2 with e = ly - t + w/2 - g in [0, w], k = c s / 2w
                                k = c * s / (2.0 * w)
                                e0 = ly - t + half - p
                                e = 2.0 * e0 / (1.0 + np.sqrt(max(1.0 - 4.0 * k * (-e0), 0.0)))
                                g = ly - t + half - e
                        d = ly - g - t
                        u = s * d if d > half else (s * max(d + half, 0.0) ** 2 / (2.0 * max(w, 1e-6)))
                        if (u < prev) == (branch == 0):
                            break
                    out[b, n] = g
                    prev = g

        _KERNELS = (forward, backward, curve_forward, limiter_gain, linked_peak, uncompress_gain)
    return _KERNELS


def _np(t: Tensor) -> np.ndarray:
    return t.detach().to("cpu").contiguous().numpy()


class _Smooth(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u: Tensor, attack: Tensor, release: Tensor, initial: Tensor) -> Tensor:
        fwd = _kernels()[0]
        un = _np(u)
        y = np.empty_like(un)
        mask = np.zeros(un.shape, dtype=np.bool_)
        dt = un.dtype
        fwd(un, _np(attack).astype(dt), _np(release).astype(dt), _np(initial).astype(dt), y, mask)
        out = torch.from_numpy(y).to(u.device)
        ctx.save_for_backward(u, out, attack, release, initial)
        ctx.mask = mask
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        u, y, attack, release, initial = ctx.saved_tensors
        bwd = _kernels()[1]
        un = _np(u)
        dt = un.dtype
        grad_u = np.empty_like(un)
        g_at, g_rt, g_init = (np.empty(un.shape[0], dtype=dt) for _ in range(3))
        bwd(
            _np(grad).astype(dt),
            un,
            _np(y),
            _np(attack).astype(dt),
            _np(release).astype(dt),
            _np(initial).astype(dt),
            ctx.mask,
            grad_u,
            g_at,
            g_rt,
            g_init,
        )
        dev = grad.device

        def back(a: np.ndarray, like: Tensor) -> Tensor:
            return torch.from_numpy(a).to(dev, like.dtype)

        return back(grad_u, u), back(g_at, attack), back(g_rt, release), back(g_init, initial)


def smooth(u: Tensor, attack: Tensor, release: Tensor, initial: Tensor | None = None) -> Tensor:
    """Branching one-pole smoother (see the module docstring).

    Args:
        u: target, ``(batch, samples)`` (e.g. a gain in dB).
        attack: weight in (0, 1] used while ``u`` is below the output, ``(batch,)``.
        release: weight in (0, 1] used otherwise, ``(batch,)``.
        initial: ``y[-1]``, ``(batch,)``; default 0.

    Returns:
        ``(batch, samples)``, same dtype and device as ``u``. Off the CPU (or under
        :func:`gradmix.dsp.linear_scan.forced`) it runs as :func:`gradmix.dsp.linear_scan.branching_smooth`.
    """
    if initial is None:
        initial = u.new_zeros(u.shape[0])
    if linear_scan.wanted(u):
        return linear_scan.branching_smooth(u, attack.to(u.dtype), release.to(u.dtype), initial.to(u.dtype))
    return _Smooth.apply(u, attack.to(u.dtype), release.to(u.dtype), initial.to(u.dtype))


def curve_and_smooth(
    level_db: Tensor,
    *,
    threshold_db: Tensor,
    ratio: Tensor,
    knee_db: Tensor,
    attack: Tensor,
    release: Tensor,
    expander: bool = False,
    range_db: Tensor | None = None,
) -> Tensor:
    """Inference-only fusion of the static curve and :func:`smooth` in one compiled pass (no autograd).

    Computes exactly what ``smooth(compressor_gain_db(level_db, ...), attack, release)`` (or the expander
    curve, with ``attack``/``release`` already swapped by the caller) computes, without the whole-signal
    temporaries; used when no gradient is needed (rendering long songs). The result is written over
    ``level_db`` (when it is a contiguous CPU tensor) and returned.

    Args:
        level_db: ``(batch, samples)``.
        threshold_db, ratio, knee_db, attack, release, range_db: ``(batch,)``.
    """
    kernel = _kernels()[2]
    ln = _np(level_db)
    dt = ln.dtype
    floor = range_db if range_db is not None else torch.full_like(threshold_db, np.inf)
    kernel(
        ln,
        *(_np(v).astype(dt) for v in (threshold_db, ratio, knee_db, floor)),
        expander,
        _np(attack).astype(dt),
        _np(release).astype(dt),
        ln,
    )
    return torch.from_numpy(ln).to(level_db.device)


def linked_peak(x: Tensor, floor: float) -> Tensor:
    """``max(max_c |x[:, c]|, floor)``, ``(batch, samples)`` from ``(batch, channels, samples)``: what
    ``torch.maximum`` over the channels' ``abs`` then ``clamp_min`` give, in one compiled pass (no autograd)."""
    xn = _np(x)
    out = np.empty((xn.shape[0], xn.shape[2]), dtype=xn.dtype)
    _kernels()[4](xn, xn.dtype.type(floor), out)
    return torch.from_numpy(out).to(x.device)


def limiter_gain(peak: Tensor, *, ceiling: Tensor, lookahead: int, release: Tensor) -> Tensor:
    """Inference-only limiter gain in one compiled pass per item (no autograd): what
    :func:`gradmix.dsp.dynamics.limiter` computes from the linked peak ``(batch, samples)``, the linear
    ``ceiling`` and ``release`` weight ``(batch,)`` and the look-ahead in samples. The gain is written over
    ``peak`` (when it is a contiguous CPU tensor) and returned; memory beyond it is O(look-ahead)."""
    kernel = _kernels()[3]
    pn = _np(peak)
    kernel(pn, _np(ceiling).astype(np.float64), int(lookahead), _np(release).astype(np.float64), pn)
    return torch.from_numpy(pn).to(peak.device)


def uncompress_gain(
    level_db: Tensor,
    *,
    threshold_db: Tensor,
    ratio: Tensor,
    knee_db: Tensor,
    makeup_db: Tensor,
    attack: Tensor,
    release: Tensor,
) -> Tensor:
    """The smoothed gain in dB (before makeup) that a compressor applied to the signal whose *output* level is
    ``level_db`` ``(batch, samples)``: the exact inverse of ``curve_and_smooth`` run sample by sample, each
    sample's gain the root of a monotonic equation in closed form (inference only, no autograd).

    Args:
        level_db: the linked peak level of the compressed signal, ``(batch, samples)``.
        threshold_db, ratio, knee_db, makeup_db: ``(batch,)``.
        attack, release: smoothing weights ``(batch,)`` (:func:`gradmix.dsp.dynamics.time_to_coefficient`).
    """
    ln = _np(level_db).astype(np.float64)
    out = np.empty_like(ln)
    params = (threshold_db, ratio, knee_db, makeup_db, attack, release)
    _kernels()[5](ln, *(_np(v).astype(np.float64) for v in params), out)
    return torch.from_numpy(out).to(level_db.device, level_db.dtype)
