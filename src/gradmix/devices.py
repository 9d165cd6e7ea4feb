"""The device the commands compute on (``--device``)."""

from __future__ import annotations

import torch

from gradmix.errors import GradmixError


def compute_device(name: str | torch.device | None) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (CUDA where torch sees it, else the CPU) as a device, checked.

    Raises:
        GradmixError: a CUDA device is asked for and torch sees none, or the name is not a device.
    """
    if name is None or str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as e:
        raise GradmixError(f"--device {name}: not a device (cpu, cuda, cuda:N or auto)") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise GradmixError(f"--device {name}: torch sees no CUDA device here (use --device cpu)")
    if device.type not in ("cpu", "cuda"):
        raise GradmixError(f"--device {name}: gradmix computes on cpu or cuda")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise GradmixError(f"--device {name}: torch sees {torch.cuda.device_count()} CUDA device(s)")
    return device
