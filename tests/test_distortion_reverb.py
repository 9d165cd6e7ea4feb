"""Distortion, reverb, delay and FFT convolution."""

from __future__ import annotations


import numpy as np
import pytest
import scipy.signal
import torch

from conftest import error_db
from gradmix.dsp import DISTORTION_SHAPES, REVERB_CROSSOVERS_HZ, delay, distortion, fft_convolve, reverb
from gradmix.dsp.reverb import reverb_impulse_response
from gradmix.errors import ParameterError

SR = 44100.0


def sine(freq, n=8820, amp=1.0, sr=SR):
    return amp * np.sin(2 * np.pi * freq * np.arange(n) / sr)


def harmonic_db(y, freq, sr=SR):
    """Level (dB) of the component at ``freq`` from a windowed FFT."""
    w = np.hanning(y.size)
    spec = np.abs(np.fft.rfft(y * w)) / (w.sum() / 2)
    k = int(round(freq * y.size / sr))
    return 20 * np.log10(spec[k - 2 : k + 3].max() + 1e-30)


@pytest.mark.parametrize("shape", DISTORTION_SHAPES)
def test_small_signals_pass_at_unity_and_mix_zero_is_identity(shape):
    x = torch.tensor(sine(441.0, amp=1e-4))[None, None]
    y = distortion(x, sample_rate=SR, drive_db=12.0, shape=shape)
    if shape == "asymmetric":  # its 10 Hz DC blocker shifts the phase, so compare levels
        assert abs(harmonic_db(y[0, 0].numpy(), 441.0) - harmonic_db(x[0, 0].numpy(), 441.0)) < 0.01
    else:
        assert error_db(y.numpy(), x.numpy()) < -120  # only the harmonics differ: the cubic term, < -140 dB
    assert torch.equal(distortion(x, sample_rate=SR, drive_db=30.0, mix=0.0, shape=shape), x)


def _rbj_highpass(f0, q, sr):
    """RBJ cookbook high-pass ``(b, a)``, normalised by ``a0``."""
    w = 2 * np.pi * f0 / sr
    alpha, c = np.sin(w) / (2 * q), np.cos(w)
    b = np.array([(1 + c) / 2, -(1 + c), (1 + c) / 2])
    a = np.array([1 + alpha, -2 * c, 1 - alpha])
    return b / a[0], a / a[0]


CURVES = {
    "tanh": np.tanh,
    "soft_clip": lambda u: np.where(np.abs(u) <= 1.5, u - 4 * u**3 / 27, np.sign(u)),
    "hard_clip": lambda u: np.clip(u, -1, 1),
    "asymmetric": lambda u: (np.tanh(u + 0.5) - np.tanh(0.5)) / (1 - np.tanh(0.5) ** 2),
}


@pytest.mark.parametrize("shape", DISTORTION_SHAPES)
def test_shapes_match_their_closed_forms(shape):
    """``f(g x) / g`` with the curves the docstring states; the asymmetric one then through a 10 Hz RBJ
    high-pass (its DC blocker)."""
    x = np.random.default_rng(0).uniform(-1, 1, 2000)
    g = 10 ** (18 / 20)
    want = CURVES[shape](g * x) / g
    if shape == "asymmetric":
        want = scipy.signal.lfilter(*_rbj_highpass(10.0, 1 / np.sqrt(2), SR), want)
    y = distortion(torch.tensor(x)[None, None], sample_rate=SR, drive_db=18.0, shape=shape)[0, 0].numpy()
    assert error_db(y, want) < -200


def test_hard_clip_bounds_the_wet_signal():
    x = torch.tensor(sine(100.0))[None, None]
    y = distortion(x, sample_rate=SR, drive_db=20.0, shape="hard_clip")
    assert y.abs().max().item() <= 0.1 + 1e-12


def test_symmetric_shapes_make_odd_harmonics_and_asymmetric_even_ones():
    f = 441.0
    x = torch.tensor(sine(f, amp=0.5))[None, None]
    for shape in DISTORTION_SHAPES:
        y = distortion(x, sample_rate=SR, drive_db=12.0, shape=shape)[0, 0].numpy()
        second, third = harmonic_db(y, 2 * f), harmonic_db(y, 3 * f)
        assert third > -40, shape
        if shape == "asymmetric":
            assert second > -40
        else:
            assert second < -100, shape


@pytest.mark.parametrize("tone_db", [-12.0, 6.0])
def test_tone_tilts_around_the_pivot(tone_db):
    for freq, expect in ((60.0, -tone_db / 2), (15000.0, tone_db / 2), (1000.0, 0.0)):
        x = torch.tensor(sine(freq, n=44100, amp=1e-4))[None, None]
        y = distortion(x, sample_rate=SR, drive_db=0.0, tone_db=tone_db)[0, 0].numpy()
        got = harmonic_db(y, freq) - harmonic_db(x[0, 0].numpy(), freq)
        assert abs(got - expect) < 0.5, (freq, got, expect)


def test_fft_convolve_matches_scipy(rng):
    x = rng.standard_normal((2, 2, 3000))
    h = rng.standard_normal((2, 2, 700))
    y = fft_convolve(torch.tensor(x), torch.tensor(h)).numpy()
    ref = np.stack([[scipy.signal.fftconvolve(x[b, c], h[b, c])[:3000] for c in range(2)] for b in range(2)])
    assert error_db(y, ref) < -250


def test_reverb_impulse_response_decays_per_band():
    decay = torch.tensor([[2.0, 1.0, 0.5, 0.25]], dtype=torch.float64)
    sr = 16000.0
    h = reverb_impulse_response(sample_rate=sr, decay_s=decay, channels=1)[0, 0].numpy()
    assert abs((h**2).sum() - 1) < 1e-9
    edges = [20.0, *REVERB_CROSSOVERS_HZ, sr / 2]
    for k in range(4):
        lo, hi = edges[k] * (1.5 if k else 1), edges[k + 1] / 1.5
        sos = scipy.signal.butter(
            6, [lo, hi] if k < 3 else lo, "bandpass" if k < 3 else "highpass", fs=sr, output="sos"
        )
        band = scipy.signal.sosfiltfilt(sos, h)
        schroeder = np.cumsum((band**2)[::-1])[::-1]  # energy decay curve (ISO 3382)
        edc = 10 * np.log10(schroeder / schroeder[0])
        t = np.arange(h.size) / sr
        window = (edc < -5) & (edc > -25)  # T20
        rt60 = -60 / np.polyfit(t[window], edc[window], 1)[0]
        assert abs(rt60 - decay[0, k].item()) / decay[0, k].item() < 0.15, (k, rt60)


def test_reverb_impulse_response_moves_smoothly_with_the_decay():
    """Across a step of the IR's length (1/8 s) the room stays the same: a small change of the decay times
    is a small change of the response, so their gradients lead somewhere."""
    sr = 8000.0
    short, long = (
        reverb_impulse_response(sample_rate=sr, decay_s=torch.full((1, 4), d, dtype=torch.float64), channels=2)[0]
        for d in (1.24, 1.26)
    )  # 1.25 s and 1.375 s long
    assert short.shape[-1] < long.shape[-1]
    short = torch.nn.functional.pad(short, (0, long.shape[-1] - short.shape[-1]))
    assert ((short - long).square().sum() / long.square().sum()).item() < 1e-3


def test_reverb_predelay_mix_and_identity():
    sr = 8000.0
    x = torch.zeros(1, 2, 4000, dtype=torch.float64)
    x[..., 0] = 1.0
    wet = reverb(x, sample_rate=sr, decay_s=0.3, predelay_ms=50.0, mix=1.0)
    assert wet[..., :395].abs().max().item() < 1e-3 * wet.abs().max().item()
    assert torch.equal(reverb(x, sample_rate=sr, decay_s=0.3, mix=0.0), x)
    assert not torch.allclose(wet[:, 0], wet[:, 1])  # left and right rooms are decorrelated
    same = reverb(x, sample_rate=sr, decay_s=0.3, predelay_ms=50.0, mix=1.0)
    assert torch.equal(same, wet)  # seeded


@pytest.mark.parametrize("d", [123.0, 123.4])
def test_delay_matches_feedback_loop_reference(rng, d):
    """The loop ``v = x + fb * wet``, ``wet[n]`` read ``d`` samples back from ``v`` by linear interpolation
    (``d = m + f``: ``(1 - f) v[n - m] + f v[n - m - 1]``)."""
    x = rng.standard_normal(3000)
    fb, m = 0.6, int(d)
    f = d - m
    v, wet = np.zeros(3000), np.zeros(3000)
    for n in range(3000):
        wet[n] = (1 - f) * (v[n - m] if n >= m else 0.0) + f * (v[n - m - 1] if n > m else 0.0)
        v[n] = x[n] + fb * wet[n]
    y = delay(torch.tensor(x)[None, None], sample_rate=SR, time_ms=d / SR * 1000, feedback=fb, mix=1.0)[0, 0].numpy()
    assert error_db(y, wet) < -150


def test_time_effects_gradcheck():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 2, 48, generator=gen, dtype=torch.float64, requires_grad=True)

    def t(*v):
        return torch.tensor(v, dtype=torch.float64, requires_grad=True)

    assert torch.autograd.gradcheck(
        lambda x, d, p, m: reverb(x, sample_rate=4000, decay_s=d, predelay_ms=p, mix=m),
        (
            x,
            torch.tensor(
                [[0.02, 0.03, 0.01, 0.015], [0.01, 0.02, 0.03, 0.025]], dtype=torch.float64, requires_grad=True
            ),
            t(3.3, 1.2),
            t(0.5, 0.7),
        ),
    )
    assert torch.autograd.gradcheck(
        lambda x, d, f, m: delay(x, sample_rate=4000, time_ms=d, feedback=f, mix=m),
        (x, t(3.3, 5.2), t(0.5, -0.7), t(0.5, 0.7)),
    )
    for shape in DISTORTION_SHAPES:
        assert torch.autograd.gradcheck(
            lambda x, d, tone, m: distortion(x * 0.3, sample_rate=4000, drive_db=d, tone_db=tone, mix=m, shape=shape),
            (x, t(3.3, 5.2), t(2.0, -3.0), t(0.5, 0.7)),
        )


def test_time_effect_bad_parameters():
    x = torch.zeros(1, 1, 100)
    with pytest.raises(ParameterError, match="feedback: 1 is not <= 0.99"):
        delay(x, sample_rate=SR, time_ms=10.0, feedback=1.0)
    with pytest.raises(ParameterError, match="decay_s: 0 is not > 0"):
        reverb(x, sample_rate=SR, decay_s=0.0)
    with pytest.raises(ParameterError, match="shape: 'fuzz'"):
        distortion(x, sample_rate=SR, drive_db=1.0, shape="fuzz")


def test_fft_convolve_long_signals_by_overlap_add(rng):
    x = rng.standard_normal((1, 2, 50_000))
    h = rng.standard_normal((1, 1, 3_000)) * np.exp(-np.arange(3_000) / 500)
    y = fft_convolve(torch.tensor(x), torch.tensor(h)).numpy()
    ref = np.stack([scipy.signal.fftconvolve(x[0, c], h[0, 0])[:50_000] for c in range(2)])[None]
    assert error_db(y, ref) < -250
    xt = torch.tensor(x[..., :20_000], requires_grad=True)
    ht = torch.tensor(h[..., :700], requires_grad=True)
    assert torch.autograd.gradcheck(fft_convolve, (xt, ht), fast_mode=True)
    xt, ht = torch.tensor(x, dtype=torch.float32), torch.tensor(h, dtype=torch.float32)
    with torch.no_grad():  # the in-place inference path: the same values, the input untouched
        fast = fft_convolve(xt, ht)
        wet = reverb(xt, sample_rate=SR, decay_s=0.05, mix=0.7)
    assert torch.equal(xt, torch.tensor(x, dtype=torch.float32))
    assert torch.equal(fast, fft_convolve(xt, ht.requires_grad_()).detach())
    assert torch.equal(wet, reverb(xt.requires_grad_(), sample_rate=SR, decay_s=0.05, mix=0.7).detach())
