"""Mix features on analytic signals."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import require
from gradmix.dsp import pan
from gradmix.metrics import dynamics_features, loudness_features, mix_features, panning_features, spectral_features

SR = 44100


def sine(freq: float, seconds: float = 2.0, amp: float = 0.5) -> torch.Tensor:
    t = torch.arange(int(seconds * SR), dtype=torch.float64) / SR
    return amp * torch.sin(2 * math.pi * freq * t)


@pytest.mark.parametrize("freq", [220.0, 1000.0, 5000.0])
def test_centroid_of_a_sine_is_its_frequency(freq):
    x = sine(freq).expand(1, 2, -1)
    f = spectral_features(x, SR)
    assert abs(f["centroid_hz"].item() - freq) / freq < 0.02
    assert f["rolloff_hz"].item() == pytest.approx(freq, abs=1.5 * SR / 2048)  # within 1.5 STFT bins
    assert f["flatness"].item() < 0.01


def test_rolloff_is_its_bin_s_frequency_with_the_interpolated_crossing_s_gradient():
    from gradmix.metrics.features import spectral_frames

    mag = torch.rand(1, 1025, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    mag[:, 300:] *= 0.01  # most of the power below 6.5 kHz
    mag.requires_grad_()
    rolloff = spectral_frames(mag, SR)["rolloff_hz"]
    freqs = np.fft.rfftfreq(2048, 1 / SR)
    m = mag.detach()[0, :, 0].numpy()

    def crossing(m):  # where the cumulative power reaches 85 %, linear within the bin
        c = np.cumsum(m**2)
        k = int(np.argmax(c >= 0.85 * c[-1]))
        return k, freqs[k] - (c[k] - 0.85 * c[-1]) / m[k] ** 2 * (freqs[1] - freqs[0])

    k, _ = crossing(m)
    assert rolloff[0, 0].item() == freqs[k]  # the measure is unchanged: the bin's frequency
    rolloff[0, 0].backward()
    grad = mag.grad[0, :, 0].numpy()
    assert np.all(mag.grad[0, :, 1].numpy() == 0)  # frames are independent
    for j in (3, k - 5, k, k + 1, k + 40, 1000):
        h = 1e-6 * m[j]
        up, down = m.copy(), m.copy()
        up[j] += h
        down[j] -= h
        assert crossing(up)[0] == crossing(down)[0] == k  # the bin does not change within the step
        numeric = (crossing(up)[1] - crossing(down)[1]) / (2 * h)
        assert grad[j] == pytest.approx(numeric, rel=1e-4, abs=1e-6)
    assert grad[:k].max() < 0 < grad[k + 1 :].min()  # power below the crossing lowers it, above raises it


def test_white_noise_is_flat_and_wide():
    x = torch.randn(1, 2, 2 * SR, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    f = spectral_features(x, SR)
    assert f["flatness"].item() > 0.5
    assert abs(f["centroid_hz"].item() - SR / 4) / (SR / 4) < 0.05


def test_panning_hard_left_right_and_centre():
    mono = torch.randn(1, 1, SR, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for p, expected in ((-1.0, -1.0), (1.0, 1.0), (0.0, 0.0)):
        f = panning_features(pan(mono, pan=p), SR)
        assert f["panning_index"].item() == pytest.approx(expected, abs=1e-6)
        for band in ("low", "mid", "high"):
            assert f[f"panning_rms_{band}"].item() == pytest.approx(abs(expected), abs=1e-6)


def test_crest_factor_of_a_sine_is_3_01_db():
    x = sine(997.0).expand(1, 2, -1)
    d = dynamics_features(x, SR)
    assert d["crest_factor_db"].item() == pytest.approx(20 * math.log10(math.sqrt(2)), abs=0.01)
    assert d["dynamic_spread_db"].item() < 0.1
    assert d["rms_dbfs"].item() == pytest.approx(20 * math.log10(0.5 / math.sqrt(2)), abs=0.01)


def test_loudness_features_against_pyloudnorm_and_peaks():
    pyloudnorm = require("pyloudnorm")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5 * SR)) * np.repeat(rng.uniform(0.01, 0.3, 50), SR // 10)[: 5 * SR]
    f = loudness_features(torch.tensor(x)[None], SR)
    assert abs(f["loudness_lufs"].item() - pyloudnorm.Meter(SR).integrated_loudness(x.T)) < 0.1
    assert f["sample_peak_dbfs"].item() == pytest.approx(20 * np.log10(np.abs(x).max()), abs=1e-9)
    assert f["true_peak_dbtp"].item() >= f["sample_peak_dbfs"].item() - 1e-9


def test_loudness_range_of_a_two_level_signal():
    quiet, loud = sine(1000.0, 10.0, 0.05), sine(1000.0, 10.0, 0.5)
    x = torch.cat([quiet, loud]).expand(1, 2, -1)
    lra = loudness_features(x, SR)["loudness_range_lu"].item()
    assert 17.0 < lra < 20.5  # levels 20 dB apart, P95 - P10 of the short-term loudness


def test_every_feature_is_finite_on_silence_and_batches():
    x = torch.zeros(2, 2, SR)
    x[1] = torch.randn(2, SR, generator=torch.Generator().manual_seed(2)) * 0.1
    f = mix_features(x, SR)
    assert all(v.shape == (2,) and torch.isfinite(v).all() for v in f.values()), {k: v for k, v in f.items()}


def music(seed: int, seconds: float = 3.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    n = int(seconds * SR)
    env = torch.rand(1, 1, n // 2205 + 1, generator=gen, dtype=torch.float64).repeat_interleave(2205, -1)[..., :n]
    return torch.randn(1, 2, n, generator=gen, dtype=torch.float64) * env * 0.2


def test_identical_mixes_score_zero_and_a_louder_one_does_not():
    from gradmix.metrics import aggregate_score, feature_errors, mrstft_distance

    x = music(0)
    errors = feature_errors(x, x, SR)
    score, groups = aggregate_score(errors)
    assert score.item() == 0.0 and all(v.item() == 0.0 for v in groups.values())
    louder = feature_errors(x * 2, x, SR)
    assert louder["rms"].item() == pytest.approx(1.0, rel=1e-6)  # twice the RMS: 100 % error
    assert louder["centroid_hz"].item() < 1e-9  # level does not move the spectrum
    require("auraloss")
    d = mrstft_distance(x.float(), x.float(), SR)
    assert d["mrstft_mono"].item() < 1e-6 and d["mrstft_stereo"].item() < 1e-6
    assert mrstft_distance((x * 2).float(), x.float(), SR)["mrstft_mono"].item() > 0.1


def test_frechet_distance_and_diversity():
    from gradmix.metrics import diversity, frechet_distance

    rng = np.random.default_rng(0)
    a = rng.standard_normal((200, 3))
    assert frechet_distance(a, a) < 1e-6
    assert frechet_distance(a, a + 3.0) > frechet_distance(a, a + 0.5) > frechet_distance(a, a[::-1] + 0.0) - 1e-9
    # equal means, covariances I and 9 I (exactly: whitened samples): only the covariance term can tell them
    # apart. Standardised by the pooled deviation s (s^2 = 5 (n - 1) / n), the distance is d (1 - 3)^2 / s^2.
    n, d = 1000, 3
    x = rng.standard_normal((n, d))
    x -= x.mean(0)
    x = x @ np.linalg.inv(np.linalg.cholesky(np.cov(x, rowvar=False))).T
    assert frechet_distance(x, 3 * x) == pytest.approx(d * 4 / (5 * (n - 1) / n), rel=1e-9)
    songs = [rng.standard_normal(3) * 10 for _ in range(5)]
    same = [np.stack([s + 0.01 * rng.standard_normal(3) for _ in range(4)]) for s in songs]
    varied = [np.stack([s + 5.0 * rng.standard_normal(3) for _ in range(4)]) for s in songs]
    assert diversity(same) < 0.01 < diversity(varied)
