"""BS.1770-4 loudness against the standard's coefficients, EBU Tech 3341 test signals and pyloudnorm."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import require
from gradmix.dsp import integrated_loudness, soft_integrated_loudness
from gradmix.dsp.loudness import LOUDNESS_FLOOR_LUFS, k_weighting_coefficients


def test_k_weighting_at_48k_equals_bs1770_tables():
    b, a = k_weighting_coefficients(48000)
    np.testing.assert_allclose(b[0].numpy(), [1.53512485958697, -2.69169618940638, 1.19839281085285], rtol=1e-9)
    np.testing.assert_allclose(a[0].numpy(), [1.0, -1.69065929318241, 0.73248077421585], rtol=1e-9)
    np.testing.assert_allclose(b[1].numpy(), [1.0, -2.0, 1.0])
    np.testing.assert_allclose(a[1].numpy(), [1.0, -1.99004745483398, 0.99007225036621], rtol=1e-9)


def stereo_sine(level_dbfs: float, seconds: float, sr: int, freq: float = 997.0) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return np.stack([10 ** (level_dbfs / 20) * np.sin(2 * np.pi * freq * t)] * 2)


def ebu_3341(case: int, sr: int) -> np.ndarray:
    """EBU Tech 3341 minimum-requirement signals 1-4; each should read -23.0 LUFS (or -33.0 for case 2)."""
    if case == 1:
        return stereo_sine(-23, 20, sr)
    if case == 2:
        return stereo_sine(-33, 20, sr)
    if case == 3:
        return np.concatenate([stereo_sine(-36, 10, sr), stereo_sine(-23, 60, sr), stereo_sine(-36, 10, sr)], 1)
    return np.concatenate(
        [
            stereo_sine(-72, 10, sr),
            stereo_sine(-36, 10, sr),
            stereo_sine(-23, 60, sr),
            stereo_sine(-36, 10, sr),
            stereo_sine(-72, 10, sr),
        ],
        1,
    )


@pytest.mark.parametrize("sr", [44100, 48000])
@pytest.mark.parametrize("case,expected", [(1, -23.0), (2, -33.0), (3, -23.0), (4, -23.0)])
def test_ebu_3341_signals_within_0_1_lu(case, expected, sr):
    x = torch.tensor(ebu_3341(case, sr), dtype=torch.float32)[None]
    got = integrated_loudness(x, sample_rate=sr).item()
    assert abs(got - expected) < 0.1, got


def music(seed: int, sr: int, seconds: float = 12.0) -> np.ndarray:
    """A synthetic stereo 'song': bass, chords with vibrato, noisy drum hits, a quiet intro and a break."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    bass = 0.3 * np.sin(2 * np.pi * 55 * t * (1 + 0.01 * np.sin(2 * np.pi * 0.5 * t)))
    chords = sum(0.1 * np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) for f in (220, 277, 330, 440))
    hits = np.zeros(n)
    hits[:: sr // 2] = 1
    drums = np.convolve(hits, rng.standard_normal(2000) * np.exp(-np.arange(2000) / 300), "same") * 0.3
    env = np.clip(t / 3, 0.05, 1) * np.where((t > 7) & (t < 8), 0.02, 1)
    mid = (bass + chords + drums) * env
    return np.stack([mid + 0.05 * rng.standard_normal(n) * env, mid - 0.05 * rng.standard_normal(n) * env])


@pytest.mark.parametrize("sr", [44100, 48000])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_music_within_0_1_lu_of_pyloudnorm(sr, seed):
    pyloudnorm = require("pyloudnorm")
    x = music(seed, sr)
    for gain in (1.0, 0.05):
        expected = pyloudnorm.Meter(sr).integrated_loudness((gain * x).T)
        got = integrated_loudness(torch.tensor(gain * x, dtype=torch.float32)[None], sample_rate=sr).item()
        assert abs(got - expected) < 0.1, (got, expected)
        soft = soft_integrated_loudness(torch.tensor(gain * x)[None], sample_rate=sr).item()
        assert abs(soft - expected) < 0.5, (soft, expected)


def test_mono_and_batch():
    sr = 48000
    x = torch.tensor(stereo_sine(-20, 5, sr)[:1])[None]
    assert abs(integrated_loudness(x, sample_rate=sr).item() - (-23.0)) < 0.1  # one channel = half the power
    batch = torch.cat([x, x * 0.1])
    got = integrated_loudness(batch, sample_rate=sr)
    assert abs(got[0] - got[1] - 20.0) < 1e-6


def test_silence_is_safe_and_gradients_are_finite():
    x = torch.zeros(2, 2, 48000, requires_grad=True)
    hard = integrated_loudness(x, sample_rate=48000)
    assert torch.equal(hard, torch.full((2,), LOUDNESS_FLOOR_LUFS))
    soft = soft_integrated_loudness(x, sample_rate=48000)
    assert torch.isfinite(soft).all()
    soft.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_soft_loudness_gradient_is_finite_and_nonzero_on_music():
    x = torch.tensor(music(3, 16000, 4.0), dtype=torch.float32)[None].requires_grad_()
    soft_integrated_loudness(x, sample_rate=16000).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_gradcheck_loudness():
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(1, 2, 3000, generator=gen, dtype=torch.float64) * 0.1).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: integrated_loudness(x, sample_rate=4000), (x,), fast_mode=True)
    assert torch.autograd.gradcheck(lambda x: soft_integrated_loudness(x, sample_rate=4000), (x,), fast_mode=True)
