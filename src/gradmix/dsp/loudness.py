"""ITU-R BS.1770-4 loudness: K-weighting, 400 ms blocks with 75 % overlap, absolute and relative gates.

:func:`integrated_loudness` is the standard measurement (hard gates) in torch, on any device, batched.
:func:`soft_integrated_loudness` replaces the gates by sigmoids so that a loss sees a smooth function
of every block. Neither returns -inf or NaN on silence.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from gradmix.dsp._params import check_audio, check_sample_rate, inference
from gradmix.dsp.biquad import sos_filter
from gradmix.errors import ShapeError

LOUDNESS_FLOOR_LUFS = -70.0
"""What :func:`integrated_loudness` returns when no block passes the absolute gate (e.g. silence)."""

BLOCK_S = 0.4
STEP_S = 0.1
ABSOLUTE_GATE_LUFS = -70.0
RELATIVE_GATE_LU = -10.0
CHANNEL_WEIGHTS = (1.0, 1.0, 1.0, 1.41, 1.41)

# Analog parameters of the two K-weighting stages that reproduce the 48 kHz coefficients of
# BS.1770-4 Table 1 and 2 at any sample rate (B. De Man's derivation, also used by pyloudnorm).
_SHELF = dict(gain_db=3.999843853973347, q=0.7071752369554196, freq_hz=1681.974450955533)
_HIGHPASS = dict(q=0.5003270373238773, freq_hz=38.13547087602444)


def k_weighting_coefficients(sample_rate: float, dtype=torch.float64) -> tuple[Tensor, Tensor]:
    """The two K-weighting sections (shelf, high-pass) as ``(b, a)``, each of shape ``(2, 3)``."""
    k = math.tan(math.pi * _SHELF["freq_hz"] / sample_rate)
    q = _SHELF["q"]
    vh = 10 ** (_SHELF["gain_db"] / 20)
    vb = vh**0.4996667741545416
    a0 = 1 + k / q + k * k
    shelf_b = [(vh + vb * k / q + k * k) / a0, 2 * (k * k - vh) / a0, (vh - vb * k / q + k * k) / a0]
    shelf_a = [1.0, 2 * (k * k - 1) / a0, (1 - k / q + k * k) / a0]
    k = math.tan(math.pi * _HIGHPASS["freq_hz"] / sample_rate)
    q = _HIGHPASS["q"]
    a0 = 1 + k / q + k * k
    hp_b = [1.0, -2.0, 1.0]
    hp_a = [1.0, 2 * (k * k - 1) / a0, (1 - k / q + k * k) / a0]
    return torch.tensor([shelf_b, hp_b], dtype=dtype), torch.tensor([shelf_a, hp_a], dtype=dtype)


@functools.lru_cache(maxsize=32)
def _meter_constants(sample_rate: float, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """The K-weighting sections in ``dtype`` and the channel weights in float64, made once per device: a meter
    call inside a training step on a GPU copies nothing from the host."""
    b, a = k_weighting_coefficients(sample_rate)
    w = torch.tensor(CHANNEL_WEIGHTS, dtype=torch.float64)
    return b.to(device, dtype), a.to(device, dtype), w.to(device)


def block_powers(x: Tensor, *, sample_rate: float, block_s: float = BLOCK_S, step_s: float = STEP_S) -> Tensor:
    """Channel-weighted mean square of the K-weighted signal in each block (default 400 ms, hop 100 ms, the
    gating blocks; EBU Tech 3342's short-term loudness uses 3 s blocks).

    Args:
        x: audio, shape ``(batch, channels <= 5, samples)``; channel order L, R, C, Ls, Rs.
        sample_rate: Hz.
        block_s, step_s: block length and hop in seconds.

    Returns:
        ``(batch, blocks)``; a signal shorter than one block is measured as one block.
    """
    check_audio(x)
    sample_rate = check_sample_rate(sample_rate)
    if x.shape[1] > len(CHANNEL_WEIGHTS):
        raise ShapeError(f"x: {x.shape[1]} channels, BS.1770 weights at most {len(CHANNEL_WEIGHTS)}")
    b, a, w = _meter_constants(sample_rate, x.dtype, x.device)
    batch = x.shape[0]
    y = sos_filter(x, b.expand(batch, 2, 3), a.expand(batch, 2, 3))
    w = w[: x.shape[1]]
    if inference(y):  # the same values without two more song-long float64 temporaries
        power = y.double().square_().mul_(w[:, None]).sum(1)  # (batch, samples)
    else:
        power = (y.double().square() * w[:, None]).sum(1)
    n = power.shape[-1]
    block, hop = round(block_s * sample_rate), round(step_s * sample_rate)
    if n < block:
        return power.mean(-1, keepdim=True).to(x.dtype)
    sums = F.pad(power.cumsum(-1), (1, 0))
    starts = torch.arange(0, n - block + 1, hop, device=x.device)
    return ((sums[:, starts + block] - sums[:, starts]) / block).to(x.dtype)


def lufs_from_power(power: Tensor) -> Tensor:
    return -0.691 + 10 * torch.log10(power.clamp_min(1e-30))


def integrated_loudness(x: Tensor, *, sample_rate: float) -> Tensor:
    """Integrated loudness in LUFS (BS.1770-4): absolute gate -70 LUFS, relative gate -10 LU.

    Args:
        x: audio, shape ``(batch, channels <= 5, samples)``, full scale = 1.
        sample_rate: Hz.

    Returns:
        ``(batch,)`` LUFS; :data:`LOUDNESS_FLOOR_LUFS` where no block passes the absolute gate.
        Differentiable almost everywhere (through the blocks that pass the gates).
    """
    z = block_powers(x, sample_rate=sample_rate)
    lj = lufs_from_power(z.detach())
    gate_abs = lj >= ABSOLUTE_GATE_LUFS
    zd = z.detach()
    mean_abs = (zd * gate_abs).sum(-1) / gate_abs.sum(-1).clamp_min(1)
    gate = gate_abs & (lj > (lufs_from_power(mean_abs) + RELATIVE_GATE_LU)[:, None])
    count = gate.sum(-1)
    mean = (z * gate).sum(-1) / count.clamp_min(1)
    return torch.where(count > 0, lufs_from_power(mean), torch.full_like(mean, LOUDNESS_FLOOR_LUFS))


def soft_integrated_loudness(x: Tensor, *, sample_rate: float, softness_lu: float = 1.0) -> Tensor:
    """Integrated loudness with sigmoid gates of width ``softness_lu``, for losses.

    Each block is weighted by ``sigmoid((l_j + 70) / s) * sigmoid((l_j - gamma_r) / s)`` where
    ``gamma_r`` is the relative gate computed the same way; gradients reach every block and the
    result is finite on silence (about -120 LUFS for digital silence, with finite gradients).

    Args:
        x: audio, shape ``(batch, channels <= 5, samples)``.
        sample_rate: Hz.
        softness_lu: gate transition width in LU (> 0).

    Returns:
        ``(batch,)`` LUFS.
    """
    z = block_powers(x, sample_rate=sample_rate)
    eps = 1e-12
    lj = -0.691 + 10 * torch.log10(z + eps)
    w_abs = torch.sigmoid((lj - ABSOLUTE_GATE_LUFS) / softness_lu)
    mean_abs = (w_abs * z).sum(-1) / (w_abs.sum(-1) + eps)
    gamma_r = -0.691 + 10 * torch.log10(mean_abs + eps) + RELATIVE_GATE_LU
    w = w_abs * torch.sigmoid((lj - gamma_r[:, None]) / softness_lu)
    return -0.691 + 10 * torch.log10((w * z).sum(-1) / (w.sum(-1) + eps) + eps)
