"""Audio file output (atomic writes)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from gradmix.errors import GradmixError

SUBTYPES = {"float": "FLOAT", "24": "PCM_24", "16": "PCM_16"}


def write_audio(path: str | os.PathLike, audio: torch.Tensor | np.ndarray, sample_rate: int,
                subtype: str = "float") -> Path:
    """Write ``(channels, samples)`` audio to a WAV/FLAC file atomically (temp file + rename).

    Args:
        path: output file; its folder must exist and be writable.
        audio: ``(channels, samples)``, full scale = 1.
        sample_rate: Hz.
        subtype: ``"float"`` (32-bit float), ``"24"`` or ``"16"`` (PCM).
    """
    import soundfile as sf

    path = Path(path)
    data = audio.detach().cpu().numpy() if isinstance(audio, torch.Tensor) else np.asarray(audio)
    if data.ndim != 2:
        raise GradmixError(f"{path}: expected audio of shape (channels, samples), got {data.shape}")
    if not np.isfinite(data).all():
        raise GradmixError(f"{path}: refusing to write audio that contains NaN or Inf")
    if not path.parent.is_dir():
        raise GradmixError(f"{path.parent}: output folder does not exist")
    fmt = "FLAC" if path.suffix.lower() == ".flac" else "WAV"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        sf.write(tmp, data.T.astype(np.float32), int(sample_rate), subtype=SUBTYPES[subtype], format=fmt)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
