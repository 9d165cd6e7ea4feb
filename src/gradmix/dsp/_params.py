"""Validation and broadcasting of audio tensors and parameters shared by every dsp function."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

import torch
from torch import Tensor

from gradmix.errors import ParameterError, ShapeError

Param = Union[float, int, Sequence[float], Tensor]


def check_audio(x: Tensor, name: str = "x", channels: int | None = None) -> Tensor:
    """Check that ``x`` is a floating tensor of shape ``(batch, channels, samples)``.

    Args:
        x: audio, shape ``(batch, channels, samples)``.
        name: the argument name used in error messages.
        channels: if given, the required number of channels.
    """
    if not isinstance(x, Tensor):
        raise ShapeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 3:
        raise ShapeError(f"{name}: expected shape (batch, channels, samples), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ShapeError(f"{name}: expected a floating-point tensor, got {x.dtype}")
    if channels is not None and x.shape[1] != channels:
        raise ShapeError(f"{name}: expected {channels} channel(s), got {x.shape[1]} (shape {tuple(x.shape)})")
    if x.shape[-1] == 0:
        raise ShapeError(f"{name}: has zero samples (shape {tuple(x.shape)})")
    return x


def check_sample_rate(sample_rate: float) -> float:
    if not isinstance(sample_rate, (int, float)) or not sample_rate > 0 or sample_rate != sample_rate:
        raise ParameterError(f"sample_rate: {sample_rate!r} is not a positive number of Hz")
    return float(sample_rate)


def param(value: Param, name: str, x: Tensor, bands: int | None = None) -> Tensor:
    """Turn a float, a sequence or a tensor into a tensor of shape ``(batch,)`` or ``(batch, bands)``.

    The result has the dtype and device of ``x`` and keeps the autograd graph of a tensor ``value``.
    A float (or a ``(bands,)`` sequence) is shared by the whole batch; a ``(batch,)`` / ``(batch, bands)``
    tensor gives one value per item. Non-finite values raise :class:`ParameterError` (where
    :func:`values_checked`).
    """
    batch = x.shape[0]
    if isinstance(value, Tensor):
        t = value.to(dtype=x.dtype, device=x.device)
        if values_checked(t) and not bool(torch.isfinite(t).all()):
            raise ParameterError(f"{name}: {_show(t)} is not finite")
    else:
        try:
            host = torch.as_tensor(value, dtype=x.dtype)
        except (TypeError, ValueError) as exc:
            raise ParameterError(f"{name}: {value!r} is not a number or a sequence of numbers") from exc
        if not bool(torch.isfinite(host).all()):
            raise ParameterError(f"{name}: {_show(host)} is not finite")
        if host.dim() == 0:  # filled on the device: nothing to copy
            t = torch.full((), host.item(), dtype=x.dtype, device=x.device)
        else:  # copied without waiting for the device's queue
            t = host.to(x.device, non_blocking=True)
    want = (batch,) if bands is None else (batch, bands)
    if bands is None:
        if t.dim() == 0:
            t = t.expand(batch)
        elif t.dim() == 2 and t.shape[1] == 1:
            t = t[:, 0]
    else:
        if t.dim() == 0:
            t = t.expand(batch, bands)
        elif t.dim() == 1 and t.shape[0] == bands:
            t = t.unsqueeze(0).expand(batch, bands)
    if t.shape == (1,) + want[1:] and batch != 1:
        t = t.expand(want)
    if tuple(t.shape) != want:
        raise ParameterError(f"{name}: expected a float or a tensor of shape {want}, got shape {tuple(t.shape)}")
    return t


def values_checked(t: Tensor) -> bool:
    """Whether the values of a parameter ``t`` are checked (finite, in range): where ``t`` is on the CPU. Off
    it the checks are left out, since reading their answer would stall the device at every call; parameters
    made there come from a network's sigmoid, and the commands check the console files they read."""
    return t.device.type == "cpu"


def check_range(
    t: Tensor,
    name: str,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """Raise :class:`ParameterError` unless every value of ``t`` lies in the stated interval (where
    :func:`values_checked`)."""
    if not values_checked(t):
        return
    d = t.detach()
    if low is not None:
        bad = d <= low if low_open else d < low
        if bool(bad.any()):
            op = ">" if low_open else ">="
            raise ParameterError(f"{name}: {_show(d[bad])} is not {op} {low:g}")
    if high is not None:
        bad = d >= high if high_open else d > high
        if bool(bad.any()):
            op = "<" if high_open else "<="
            raise ParameterError(f"{name}: {_show(d[bad])} is not {op} {high:g}")


def _show(t: Tensor) -> str:
    flat = t.detach().flatten()
    flat = flat[~torch.isfinite(flat)] if bool((~torch.isfinite(flat)).any()) else flat
    if bool((flat == flat[0]).all()) or bool(torch.isnan(flat).all()):
        return f"{flat[0].item():g}"
    return f"{flat[0].item():g} (first of {flat.numel()} bad values)"


def db_to_amplitude(db: Tensor) -> Tensor:
    return torch.pow(10.0, db / 20.0)


def inference(*tensors: Tensor) -> bool:
    """True when no gradient is wanted through ``tensors``: fused compiled paths may run and a
    function's own song-long temporaries may be reused in place."""
    return not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))


def bcast(t: Tensor) -> Tensor:
    """``(batch,)`` -> ``(batch, 1, 1)`` so that it multiplies ``(batch, channels, samples)``."""
    return t.reshape(-1, 1, 1)
