"""Exact linear recurrences on any device, block-parallel in plain torch: the path of the recursive filters
for tensors that are not on the CPU (where the numba kernels of :mod:`gradmix.dsp.biquad` run).

A cascade of biquads is one linear system ``s[n] = M s[n-1] + v x[n]`` whose state holds two values per
section (:func:`cascade_matrices`). With the signal cut into blocks of ``L`` samples:

- within a block, from zero state, every section's signal is a lower-triangular Toeplitz product of the block
  with the impulse response from the input to that signal (one batched matrix product for all sections);
- a block's end state from zero state is the same kind of product, ``z_k``;
- the true end states follow ``S_k = M^L S_{k-1} + z_k``: a recurrence of the same kind, ``K = N / L``
  long, solved by the same blocking, recursively, until it fits in one block (:func:`vector_scan`);
- the state carried into block ``k`` adds ``M^(i+1) S_{k-1}`` to its ``i``-th sample.

Nothing runs sample by sample: the powers of ``M`` come from ``log2(L)`` matrix squarings, the rest are
batched products, each exact up to rounding (no FFT, no truncated impulse response), in float64 whatever the
audio's dtype. The adjoint of a cascade is the reversed cascade run backwards in time, so the backward is the
same algorithm on the reversed gradient, plus lagged dot products for the coefficients.

The smoother of the dynamics processors is a first-order recurrence with a time-varying coefficient
(:func:`first_order_scan`, :func:`branching_smooth_scan`), and the fed-back delay line one FFT convolution
with its impulse response (:func:`delay_line_fft`).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import Tensor

BLOCK = 64
"""Samples per block (``L``) of a cascade's signals: the Toeplitz products cost ``N * L`` multiply-adds per
row and section and hold an ``L x L`` matrix per item and section."""

STATE_BLOCK = 16
"""Blocks per block of the scan over the block-end states (:func:`vector_scan`), whose Toeplitz products
hold ``L x L`` matrices of ``2 sections x 2 sections``."""

SCAN_BLOCK = 16
"""Samples per block of :func:`first_order_scan`."""

SECTIONS_PER_PASS = 8
"""Biquads filtered in one pass of :func:`cascade_states` (the state has two values per section; a longer
cascade, such as a 31-band graphic EQ, runs in several passes)."""

_forced = False


@contextlib.contextmanager
def forced():
    """Within this context the recursive effects take the block-parallel path for CPU tensors too (the tests
    compare it with the CPU kernels there)."""
    global _forced
    before, _forced = _forced, True
    try:
        yield
    finally:
        _forced = before


def wanted(x: Tensor) -> bool:
    """Whether a recursive effect on ``x`` takes the block-parallel path: ``x`` is not on the CPU, or
    :func:`forced`."""
    return _forced or x.device.type != "cpu"


def matrix_powers(m: Tensor, count: int) -> Tensor:
    """``m^0 .. m^(count - 1)`` of square matrices ``m (items, d, d)``: ``(items, count, d, d)``, by doubling."""
    items, d, _ = m.shape
    side = torch.eye(d, dtype=m.dtype, device=m.device).expand(items, d, d)  # [m^0 m^1 ...] side by side
    step = m
    while side.shape[2] < count * d:
        side = torch.cat([side, torch.bmm(step, side)], 2)
        step = torch.bmm(step, step)
    return side[:, :, : count * d].unflatten(2, (count, d)).transpose(1, 2)


def _lower_toeplitz(values: Tensor, size: int) -> Tensor:
    """``t[..., i, j] = values[:, i - j]`` for ``i >= j``, else 0: ``values (items, >= size, ...)`` ->
    ``(items, size, size, ...)``."""
    index = torch.arange(size, device=values.device)
    lag = index[:, None] - index[None, :]
    t = values[:, lag.clamp_min(0)]
    return t * (lag >= 0).view(size, size, *[1] * (t.dim() - 3)).to(t.dtype)


def vector_scan(m: Tensor, v: Tensor, block: int = BLOCK) -> Tensor:
    """``s[k] = m s[k-1] + v[k]`` from ``s[-1] = 0``: ``m (items, d, d)``, ``v (items, rows, K, d)`` ->
    ``s`` of ``v``'s shape and dtype."""
    items, rows, count, d = v.shape
    size = min(block, count)
    p = matrix_powers(m.double(), size + 1)
    local = torch.einsum("bijxy,brkjy->brkix", _lower_toeplitz(p, size).to(v.dtype), _blocks(v, size, 2))
    if local.shape[2] > 1:
        carried = vector_scan(p[:, size], local[:, :, :, -1], block)
        previous = F.pad(carried[:, :, :-1], (0, 0, 1, 0))
        local = local + torch.einsum("bixy,brky->brkix", p[:, 1:].to(v.dtype), previous)
    return local.flatten(2, 3)[:, :, :count]


def _blocks(t: Tensor, size: int, dim: int) -> Tensor:
    """``t`` zero-padded along ``dim`` to a multiple of ``size`` and split there into ``(blocks, size)``."""
    pad = (-t.shape[dim]) % size
    if pad:
        widths = [0, 0] * (t.dim() - 1 - dim) + [0, pad]
        t = F.pad(t, widths)
    return t.unflatten(dim, (t.shape[dim] // size, size))


def cascade_matrices(b: Tensor, a: Tensor) -> tuple[Tensor, Tensor]:
    """The state-space form ``s[n] = M s[n-1] + v x[n]`` of a cascade of direct-form-II biquads.

    Section ``k`` runs ``p_k[n] = w_k[n] - a1 p_k[n-1] - a2 p_k[n-2]`` on its input ``w_k`` (``x`` for the
    first, the previous section's output ``b0 p[n] + b1 p[n-1] + b2 p[n-2]`` for the others), and the state
    is ``s[n] = (p_1[n], p_1[n-1], p_2[n], p_2[n-1], ...)``.

    Args:
        b: numerators ``(items, sections, 3)``; a: ``(a1, a2)`` per section ``(items, sections, 2)``, both
            normalised by ``a0``.

    Returns:
        ``M (items, 2 sections, 2 sections)`` and ``v (items, 2 sections)``, in ``b``'s dtype.
    """
    items, sections, _ = b.shape
    # p_k[n] = own_k . s[n-1] + b0_(k-1) p_(k-1)[n]: row k of M's even rows is sum_j chain[k, j] own_j, with
    # chain[k, j] the product of b0 over the sections j .. k-1 (a running product down the columns)
    index = torch.arange(sections, device=b.device)
    eye = torch.eye(sections, dtype=b.dtype, device=b.device)
    b0_before = F.pad(b[:, :-1, 0], (1, 0))[:, :, None]
    after = index[:, None] > index[None, :]
    chain = torch.where(after, b0_before, 1.0).cumprod(1) * (after | (eye > 0))
    own = torch.diag_embed(-a.transpose(1, 2)) + torch.diag_embed(b[:, :-1, 1:].transpose(1, 2), offset=-1)
    rows = chain @ own.permute(0, 2, 3, 1).flatten(2)  # (items, sections, 2 sections)
    delayed = torch.stack([eye, torch.zeros_like(eye)], 2).flatten(1)  # p_k[n-1] from s[n-1]
    m = torch.stack([rows, delayed.expand(items, -1, -1)], 2).flatten(1, 2)
    v = torch.stack([chain[:, :, 0], torch.zeros_like(chain[:, :, 0])], 2).flatten(1)
    return m, v


def cascade_states(x: Tensor, b: Tensor, a: Tensor, block: int = BLOCK) -> Tensor:
    """Every section's all-pole signal ``p_k`` of the cascade of :func:`cascade_matrices` from zero state,
    block-parallel, without autograd support of its own.

    Within a block, each ``p_k`` is a lower-triangular Toeplitz product of the block with the impulse response
    from ``x`` to ``p_k`` (one batched product for all sections); the states at the block ends follow
    ``S_j = M^L S_{j-1} + z_j`` (:func:`vector_scan`), and the state carried into a block adds ``(M^(i+1)
    S_{j-1})`` to its ``i``-th sample.

    Args:
        x: input ``(items, rows, samples)``; b, a: as :func:`cascade_matrices`, ``x``'s dtype.
        block: samples per block, at least 2.

    Returns:
        ``p (items, rows, samples, sections)``.
    """
    samples = x.shape[-1]
    size = max(2, min(block, samples))
    m, v = cascade_matrices(b, a)
    p = matrix_powers(m, size + 1)
    response = (p @ v[:, None, :, None])[..., 0]  # (items, size + 1, states): M^k v
    chunks = _blocks(x, size, 2)
    local = torch.einsum("bijs,brkj->brkis", _lower_toeplitz(response[:, :size, 0::2], size), chunks)
    if local.shape[2] > 1:
        ends = torch.einsum("bjd,brkj->brkd", response[:, :size].flip(1), chunks)
        carried = vector_scan(p[:, size], ends, STATE_BLOCK)
        previous = F.pad(carried[:, :, :-1], (0, 0, 1, 0))
        local = local + torch.einsum("bisd,brkd->brkis", p[:, 1:, 0::2], previous)
    return local.flatten(2, 3)[:, :, :samples]


def _numerators(p: Tensor, b: Tensor) -> Tensor:
    """``b0 p[n] + b1 p[n-1] + b2 p[n-2]`` per section: ``p (items, rows, samples, sections)``, ``b (items,
    sections, 3)``."""
    padded = F.pad(p, (0, 0, 2, 0))
    taps = b[:, None, None]
    return taps[..., 0] * p + taps[..., 1] * padded[:, :, 1:-1] + taps[..., 2] * padded[:, :, :-2]


def _lagged(u: Tensor, w: Tensor, lag: int) -> Tensor:
    """``sum over rows and n of u[n] w[n - lag]`` per item and section: ``(items, rows, samples, sections)``
    -> ``(items, sections)``."""
    samples = u.shape[2]
    return (u[:, :, lag:] * w[:, :, : samples - lag]).sum((1, 2))


class _Cascade(torch.autograd.Function):
    """A cascade of biquads (``b``, ``a`` as :func:`cascade_matrices`) with its exact backward.

    The gradient reaching the input of section ``k``, ``g_k``, is the reversed cascade (last section first)
    run on the time-reversed output gradient, read after each section. With ``g_(k+1)`` the gradient at section
    ``k``'s output: ``dL/db_kj = sum_n g_(k+1)[n] p_k[n - j]`` and ``dL/da_kj = -sum_n g_k[n] p_k[n - j]``."""

    @staticmethod
    def forward(ctx, x: Tensor, b: Tensor, a: Tensor) -> Tensor:
        p = cascade_states(x, b, a)
        ctx.save_for_backward(p, b, a)
        return _numerators(p[..., -1:], b[:, -1:])[..., 0]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y: Tensor):
        p, b, a = ctx.saved_tensors
        reversed_b = b.flip(1)
        reversed_p = cascade_states(grad_y.flip(-1), reversed_b, a.flip(1))
        at_inputs = _numerators(reversed_p, reversed_b).flip(2).flip(3)
        at_outputs = torch.cat([at_inputs[..., 1:], grad_y[..., None]], -1)
        grad_b = torch.stack([_lagged(at_outputs, p, j) for j in range(3)], -1) if ctx.needs_input_grad[1] else None
        grad_a = -torch.stack([_lagged(at_inputs, p, j) for j in (1, 2)], -1) if ctx.needs_input_grad[2] else None
        return at_inputs[..., 0], grad_b, grad_a


def sos_filter_blocks(x: Tensor, b: Tensor, a: Tensor) -> Tensor:
    """A cascade of biquads on any device, :data:`SECTIONS_PER_PASS` sections at a time by
    :func:`cascade_states`, with the exact backward. Same arguments and result as
    :func:`gradmix.dsp.biquad.sos_filter` (``x (batch, channels, samples)``, ``b`` and ``a (batch, sections,
    3)``).

    The sections run in float64 whatever ``x``'s dtype, as the CPU kernels do: a low shelf's or a narrow low
    peak's all-pole part has a gain of thousands that its numerator cancels, which float32 cannot carry."""
    a0 = a[..., :1]
    b, a = (b / a0).double(), (a[..., 1:] / a0).double()
    y = x.double()
    for start in range(0, b.shape[1], SECTIONS_PER_PASS):
        part = slice(start, start + SECTIONS_PER_PASS)
        y = _Cascade.apply(y, b[:, part], a[:, part])
    return y.to(x.dtype)


def first_order_scan(a: Tensor, b: Tensor, initial: Tensor, block: int = SCAN_BLOCK) -> Tensor:
    """``y[n] = a[n] y[n-1] + b[n]`` from ``y[-1] = initial``, for ``a`` in ``[0, 1]``: ``a``, ``b (rows,
    samples)``, ``initial (rows,)``, float64.

    Within blocks of ``block`` samples, from zero state, ``y = P cumsum(b / P)`` with ``P`` the running product
    of ``a`` (each term ``b[k] P[n] / P[k]`` is at most ``|b[k]|``, so the rounding error stays below
    ``block`` ulps of ``max |b|``; an ``a`` below 1e-16 counts as 1e-16 so that ``P`` stays above 1e-256).
    The values at the block ends are a recurrence of the same kind, solved recursively; each block then adds
    ``P`` times the value before it. ``y[n]`` depends on ``a``, ``b`` up to ``n`` only, in an order of
    operations that does not depend on their values."""
    samples = a.shape[1]
    size = min(block, samples)
    pad = (-samples) % size

    def columns(t: Tensor, value: float) -> Tensor:  # (rows, size, blocks): scans run down the columns
        return F.pad(t, (0, pad), value=value).unflatten(1, (-1, size)).transpose(1, 2).contiguous()

    gain = columns(a, 1.0).clamp_min(1e-16).cumprod(1)
    local = gain * (columns(b, 0.0) / gain).cumsum(1)
    previous = initial[:, None]
    if local.shape[2] > 1:
        ends = first_order_scan(gain[:, -1], local[:, -1], initial, block)
        previous = torch.cat([previous, ends[:, :-1]], 1)
    return (local + gain * previous[:, None]).transpose(1, 2).flatten(1)[:, :samples]


def min_affine_scan(a: Tensor, b: Tensor, c: Tensor, initial: Tensor) -> Tensor:
    """``y[n] = min(c[n], a[n] y[n-1] + b[n])`` with ``a >= 0``, from ``y[-1] = initial``: ``a``, ``b``, ``c
    (rows, samples)``. The maps ``y -> min(c, a y + b)`` are closed under composition (a later one after an
    earlier: ``min(min(c2, a2 c1 + b2), a2 a1 y + a2 b1 + b2)``), so this is an inclusive scan like
    :func:`first_order_scan`."""
    scale, offset, cap = a.clone(), b.clone(), c.clone()
    start = torch.minimum(cap[:, 0], scale[:, 0] * initial + offset[:, 0])
    offset[:, 0], cap[:, 0], scale[:, 0] = start, start, 0.0
    huge = torch.finfo(a.dtype).max
    shift = 1
    while shift < a.shape[1]:
        before = [F.pad(t[:, :-shift], (shift, 0), value=v) for t, v in ((scale, 1.0), (offset, 0.0), (cap, huge))]
        capped = torch.where(scale > 0, scale * before[2] + offset, offset)
        cap = torch.minimum(cap, capped)
        offset = scale * before[1] + offset
        scale = scale * before[0]
        shift *= 2
    return torch.minimum(cap, offset)


def branching_smooth_scan(u: Tensor, attack: Tensor, release: Tensor, initial: Tensor) -> tuple[Tensor, Tensor]:
    """The smoother of :mod:`gradmix.dsp.ballistics` (``y[n] = y[n-1] + c[n] (u[n] - y[n-1])``, ``c[n]`` the
    ``attack`` weight where ``u[n] < y[n-1]``, else ``release``), exactly, by scans.

    With an instant attack (``attack`` 1, the limiter's) it is ``y[n] = min(u[n], y[n-1] + release (u[n] -
    y[n-1]))``: :func:`min_affine_scan`. Otherwise it is a linear time-varying recurrence whose branch mask is
    iterated to its fixed point: solve with a guessed mask, decide every branch again from that solution,
    repeat until no decision changes; the solution then is the recursion's own. Decision ``n`` depends only
    on the decisions before it, so each round fixes at least the first wrong one; on music it takes 4 .. 17
    rounds.

    Args:
        u: ``(rows, samples)``; ``attack``, ``release``, ``initial``: ``(rows,)``.

    Returns:
        ``(y, falling)``: ``y`` in float64 and the branch mask (``True`` where the attack weight was used).
    """
    u64, at, rt, y0 = u.double(), attack.double()[:, None], release.double()[:, None], initial.double()
    instant = attack == 1
    y = torch.empty_like(u64)
    if instant.any():
        ui, ri = u64[instant], rt[instant]
        y[instant] = min_affine_scan((1.0 - ri).expand_as(ui), ri * ui, ui, y0[instant])
    gradual = ~instant
    if gradual.any():
        ug, ag, rg, yg = u64[gradual], at[gradual], rt[gradual], y0[gradual]
        falling = ug < F.pad(ug[:, :-1], (1, 0))
        while True:
            c = torch.where(falling, ag, rg)
            solved = first_order_scan(1.0 - c, c * ug, yg)
            decided = ug < torch.cat([yg[:, None], solved[:, :-1]], 1)
            if torch.equal(decided, falling):
                break
            falling = decided
        y[gradual] = solved
    return y, u64 < torch.cat([y0[:, None], y[:, :-1]], 1)


class _BranchingSmooth(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u: Tensor, attack: Tensor, release: Tensor, initial: Tensor) -> Tensor:
        y, falling = branching_smooth_scan(u, attack, release, initial)
        ctx.save_for_backward(u, y, attack, release, initial, falling)
        return y.to(u.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        u, y, attack, release, initial, falling = ctx.saved_tensors
        c = torch.where(falling, attack.double()[:, None], release.double()[:, None])
        # lam[n] = grad[n] + (1 - c[n + 1]) lam[n + 1], backwards in time
        after = F.pad(1.0 - c[:, 1:], (0, 1))
        lam = first_order_scan(after.flip(-1), grad.double().flip(-1), torch.zeros_like(y[:, 0])).flip(-1)
        step = lam * (u.double() - torch.cat([initial.double()[:, None], y[:, :-1]], 1))
        grad_attack = torch.where(falling, step, 0.0).sum(-1)
        grad_release = step.sum(-1) - grad_attack
        grad_initial = (1.0 - c[:, 0]) * lam[:, 0]
        return (
            (c * lam).to(u.dtype),
            grad_attack.to(attack.dtype),
            grad_release.to(release.dtype),
            grad_initial.to(initial.dtype),
        )


def branching_smooth(u: Tensor, attack: Tensor, release: Tensor, initial: Tensor) -> Tensor:
    """:func:`branching_smooth_scan`'s ``y`` in ``u``'s dtype, with the exact backward of
    :mod:`gradmix.dsp.ballistics` (the mask fixed, the adjoint recursion as a scan backwards in time)."""
    return _BranchingSmooth.apply(u, attack, release, initial)


def _truncated_product(a: Tensor, b: Tensor, length: int) -> Tensor:
    """The first ``length`` terms of the product of the series ``a`` and ``b`` ``(..., terms)`` (a linear
    convolution by FFT, in their dtype)."""
    size = a.shape[-1] + b.shape[-1] - 1
    spectrum = torch.fft.rfft(a, size) * torch.fft.rfft(b, size)
    return torch.fft.irfft(spectrum, size)[..., :length]


def series_inverse(d: Tensor, length: int, gap: int = 1) -> Tensor:
    """``h`` with ``d h = 1`` up to ``z^-length``: ``d (items, terms)`` with ``d[:, 0] != 0`` -> ``(items,
    length)``. Newton's iteration ``h <- h (2 - d h)`` doubles the number of exact terms each round
    (``log2(length / gap)`` rounds of FFT products); as a function of ``d`` it is the truncated inverse, so
    autograd through it gives that inverse's exact derivative.

    ``gap``: when the terms ``1 .. gap - 1`` of every item's ``d`` are zero, the first ``gap`` terms of ``h``
    are ``1 / d[0]`` and zeros, and the iteration starts from them."""
    h = F.pad(1.0 / d[:, :1], (0, min(gap, length) - 1))
    done = h.shape[1]
    while done < length:
        done = min(2 * done, length)
        error = _truncated_product(d[:, :done], h, done)
        h = 2 * F.pad(h, (0, done - h.shape[1])) - _truncated_product(h, error, done)
    return h


def delay_line_fft(x: Tensor, whole: Tensor, frac: Tensor, gain: Tensor) -> Tensor:
    """The fed-back, linearly interpolated delay line of :mod:`gradmix.dsp.delay_line` as one FFT
    convolution per channel: with ``P(z) = (1 - f) z^-m + f z^-(m+1)`` and feedback ``g``, the wet output is
    ``x`` filtered by ``P / (1 - g P)``, whose impulse response up to the signal's length comes from
    :func:`series_inverse`. In float64 whatever ``x``'s dtype; autograd gives the gradients (not through
    ``whole``).

    Args:
        x: ``(batch, channels, samples)``; ``whole``: integer delays ``(batch,)``, >= 1; ``frac``: their
            fractional parts ``(batch,)`` in [0, 1); ``gain``: feedback ``(batch,)``.
    """
    batch, _, samples = x.shape
    terms = samples + 2
    taps = torch.stack([1.0 - frac.double(), frac.double()], 1)
    index = torch.stack([whole, whole + 1], 1).long().to(x.device).clamp_max(terms - 1)
    path = torch.zeros(batch, terms, dtype=torch.float64, device=x.device).scatter_add(1, index, taps)
    denominator = -gain.double()[:, None] * path
    denominator[:, 0] += 1.0
    gap = int(whole.min())  # no echo comes sooner: the inverse's first terms are known
    response = _truncated_product(path[:, :samples], series_inverse(denominator[:, :samples], samples, gap), samples)
    return _truncated_product(x.double(), response[:, None], samples).to(x.dtype)
