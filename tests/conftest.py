"""Shared helpers for the test suite."""

from __future__ import annotations

import importlib
import os

import numpy as np
import pytest
import torch

torch.set_num_threads(2)


def require(module: str):
    """Import an optional test oracle: skip where it is missing, but fail under CI=true."""
    try:
        return importlib.import_module(module)
    except ImportError:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{module} is required under CI=true (pip install -e '.[dev]')")
        pytest.skip(f"{module} is not installed")


def db(x) -> float:
    return float(20 * np.log10(np.maximum(np.abs(x), 1e-30)))


def error_db(y, ref) -> float:
    """Peak error relative to the reference's peak, in dB (e.g. -120 means 1e-6 of full scale)."""
    y, ref = np.asarray(y, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    return db(np.max(np.abs(y - ref)) / max(np.max(np.abs(ref)), 1e-30))


def response_db_from_impulse(y: np.ndarray, freqs: np.ndarray, sample_rate: float) -> np.ndarray:
    """Magnitude (dB) of an impulse response at ``freqs`` (direct DFT evaluation)."""
    n = np.arange(y.shape[-1])
    w = 2 * np.pi * np.asarray(freqs)[:, None] / sample_rate
    h = (y[None, :] * np.exp(-1j * w * n[None, :])).sum(-1)
    return 20 * np.log10(np.abs(h))


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def require_tool(name: str) -> str:
    """Path of a command-line tool: skip where it is missing, but fail under CI=true."""
    import shutil

    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{name} is required under CI=true (make test installs it)")
        pytest.skip(f"{name} is not installed")
    return path
