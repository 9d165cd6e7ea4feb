"""Gain, pan, balance, width; parametric and graphic EQ."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.signal
import torch

from conftest import error_db, response_db_from_impulse
from gradmix.dsp import (
    balance,
    biquad_coefficients,
    gain,
    graphic_eq,
    graphic_eq_centres_hz,
    pan,
    parametric_eq,
    stereo_width,
)
from gradmix.dsp.eq import graphic_eq_response_db
from gradmix.errors import ParameterError, ShapeError


def test_gain_db_is_exact(rng):
    x = torch.tensor(rng.standard_normal((2, 2, 100)))
    y = gain(x, gain_db=torch.tensor([6.0, -20.0], dtype=torch.float64))
    np.testing.assert_allclose((y / x)[0].numpy(), 10 ** (6 / 20), rtol=1e-12)
    np.testing.assert_allclose((y / x)[1].numpy(), 0.1, rtol=1e-12)
    assert torch.equal(gain(x, gain_db=0.0), x)


@pytest.mark.parametrize("p", np.linspace(-1, 1, 9))
def test_pan_is_constant_power(p):
    x = torch.ones(1, 1, 4, dtype=torch.float64)
    y = pan(x, pan=float(p))
    assert y.shape == (1, 2, 4)
    np.testing.assert_allclose((y[:, 0] ** 2 + y[:, 1] ** 2).numpy(), 1.0, rtol=1e-12)


def test_pan_centre_is_minus_3_db_and_extremes_are_hard():
    x = torch.ones(1, 1, 1, dtype=torch.float64)
    centre = pan(x, pan=0.0)
    assert abs(20 * math.log10(centre[0, 0, 0].item()) + 3.0103) < 1e-3
    assert torch.allclose(centre[0, 0], centre[0, 1])
    left, right = pan(x, pan=-1.0), pan(x, pan=1.0)
    assert left[0, 1, 0].abs() < 1e-15 and abs(left[0, 0, 0] - 1) < 1e-15
    assert right[0, 0, 0].abs() < 1e-15 and abs(right[0, 1, 0] - 1) < 1e-15


def test_balance_law():
    x = torch.ones(3, 2, 1, dtype=torch.float64)
    y = balance(x, pan=torch.tensor([0.0, 0.5, -1.0], dtype=torch.float64))
    np.testing.assert_allclose(y[0, :, 0].numpy(), [1, 1])
    np.testing.assert_allclose(y[1, :, 0].numpy(), [math.cos(math.pi / 4), 1])
    np.testing.assert_allclose(y[2, :, 0].numpy(), [1, 0], atol=1e-15)


def test_width_identity_mono_and_side_scaling(rng):
    x = torch.tensor(rng.standard_normal((1, 2, 50)))
    assert error_db(stereo_width(x, width=1.0).numpy(), x.numpy()) < -290
    mono = stereo_width(x, width=0.0)
    assert torch.allclose(mono[:, 0], mono[:, 1])
    wide = stereo_width(x, width=2.0)
    np.testing.assert_allclose((wide[:, 0] - wide[:, 1]).numpy(), 2 * (x[:, 0] - x[:, 1]).numpy(), rtol=1e-12)


def test_stereo_functions_refuse_mono_and_pan_refuses_stereo():
    with pytest.raises(ShapeError, match="expected 2 channel"):
        balance(torch.zeros(1, 1, 8), pan=0.0)
    with pytest.raises(ShapeError, match="expected 1 channel"):
        pan(torch.zeros(1, 2, 8), pan=0.0)
    with pytest.raises(ParameterError, match="pan: 1.5 is not <= 1"):
        pan(torch.zeros(1, 1, 8), pan=1.5)


SHAPES6 = ["low_shelf", "peak", "peak", "notch", "bandpass", "high_shelf"]


def test_parametric_eq_matches_scipy_sos_cascade(rng):
    sr = 48000.0
    f = rng.uniform([40, 200, 800, 2000, 4000, 8000], [200, 800, 2000, 4000, 8000, 16000], (2, 6))
    g = rng.uniform(-12, 12, (2, 6))
    q = rng.uniform(0.4, 4, (2, 6))
    x = rng.standard_normal((2, 2, 5000))
    y = parametric_eq(
        torch.tensor(x),
        sample_rate=sr,
        shapes=SHAPES6,
        freq_hz=torch.tensor(f),
        gain_db=torch.tensor(g),
        q=torch.tensor(q),
    ).numpy()
    for i in range(2):
        sos = []
        for k, s in enumerate(SHAPES6):
            b, a = biquad_coefficients(
                s, sample_rate=sr, freq_hz=torch.tensor(f[i, k]), gain_db=torch.tensor(g[i, k]), q=torch.tensor(q[i, k])
            )
            sos.append(np.concatenate([b.numpy(), a.numpy()]))
        assert error_db(y[i], scipy.signal.sosfilt(np.array(sos), x[i], axis=-1)) < -220


def test_parametric_eq_accepts_per_band_sequences_and_gradchecks():
    x = torch.randn(2, 1, 40, dtype=torch.float64, requires_grad=True)
    f = torch.tensor([[100.0, 1000.0, 5000.0], [300.0, 2000.0, 7000.0]], dtype=torch.float64, requires_grad=True)
    g = torch.tensor([[3.0, -4.0, 6.0], [-2.0, 5.0, -8.0]], dtype=torch.float64, requires_grad=True)
    q = torch.tensor([[0.7, 2.0, 0.9], [1.2, 0.5, 3.0]], dtype=torch.float64, requires_grad=True)
    shapes = ["low_shelf", "peak", "high_shelf"]
    assert torch.autograd.gradcheck(
        lambda x, f, g, q: parametric_eq(x, sample_rate=16000, shapes=shapes, freq_hz=f, gain_db=g, q=q), (x, f, g, q)
    )
    y = parametric_eq(
        x.detach(),
        sample_rate=16000,
        shapes=shapes,
        freq_hz=[100.0, 1000.0, 5000.0],
        gain_db=[3.0, -4.0, 6.0],
        q=[0.7, 2.0, 0.9],
    )
    ref = parametric_eq(
        x.detach(), sample_rate=16000, shapes=shapes, freq_hz=f.detach(), gain_db=g.detach(), q=q.detach()
    )
    assert torch.equal(y[0], ref[0])


def test_parametric_eq_bad_input():
    with pytest.raises(ParameterError, match="shapes\\[1\\]: 'bell'"):
        parametric_eq(
            torch.zeros(1, 1, 8), sample_rate=44100, shapes=["peak", "bell"], freq_hz=[1, 2], gain_db=[0, 0], q=[1, 1]
        )
    with pytest.raises(ParameterError, match="freq_hz: 25000 is not < 22050"):
        parametric_eq(
            torch.zeros(1, 1, 8), sample_rate=44100, shapes=["peak"], freq_hz=[25000.0], gain_db=[0.0], q=[1.0]
        )


@pytest.mark.parametrize("bands", [10, 31])
@pytest.mark.parametrize("sr", [44100.0, 48000.0])
def test_graphic_eq_within_a_third_of_a_db_of_requested_gains_at_centres(bands, sr):
    gen = torch.Generator().manual_seed(bands)
    gains = torch.rand(200, bands, generator=gen, dtype=torch.float64) * 24 - 12
    gains[0], gains[1] = 12.0, -12.0
    gains[2, ::2], gains[2, 1::2] = 12.0, -12.0
    centres = graphic_eq_centres_hz(bands)
    err = (graphic_eq_response_db(gains, sr, centres) - gains).abs()
    worst = err.max().item()
    assert worst < (0.2 if bands == 10 else 0.3), (
        f"worst error {worst:.2f} dB for gains {gains[err.max(1).values.argmax()].tolist()}"
    )


def test_graphic_eq_filtered_impulse_matches_design():
    sr = 44100.0
    gains = torch.tensor([[6.0, -3.0, 0.0, 9.0, -12.0, 4.0, 2.0, -6.0, 12.0, -1.0]], dtype=torch.float64)
    x = torch.zeros(1, 1, 1 << 16, dtype=torch.float64)
    x[..., 0] = 1
    y = graphic_eq(x, sample_rate=sr, gain_db=gains)[0, 0].numpy()
    measured = response_db_from_impulse(y, np.array(graphic_eq_centres_hz(10)), sr)
    assert np.abs(measured - gains[0].numpy()).max() < 0.2


def test_graphic_eq_zero_gains_is_identity_and_gradchecks():
    x = torch.randn(1, 2, 64, dtype=torch.float64)
    assert error_db(graphic_eq(x, sample_rate=44100, gain_db=[0.0] * 10).numpy(), x.numpy()) < -200
    g = torch.randn(2, 10, dtype=torch.float64, requires_grad=True)
    xx = torch.randn(2, 1, 32, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, g: graphic_eq(x, sample_rate=44100, gain_db=g), (xx, g))


def test_graphic_eq_bad_band_count():
    with pytest.raises(ParameterError, match="12 bands given"):
        graphic_eq(torch.zeros(1, 1, 8), sample_rate=44100, gain_db=[0.0] * 12)
