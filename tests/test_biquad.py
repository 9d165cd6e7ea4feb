"""RBJ biquads and the exact IIR cascade against scipy.signal, pedalboard and filter theory."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.signal
import torch

from conftest import error_db, require, response_db_from_impulse
from gradmix.dsp import SHAPES, biquad, biquad_coefficients, frequency_response_db, sos_filter
from gradmix.dsp.eq import eq_coefficients
from gradmix.errors import ParameterError, ShapeError

SAMPLE_RATES = (22050.0, 44100.0, 48000.0, 96000.0)


def analog_prototype(shape: str, gain_db: float, q: float):
    """Cookbook analog prototypes, s normalised to the centre frequency: (b, a) highest power first."""
    A = 10 ** (gain_db / 40)
    return {
        "lowpass": ([0, 0, 1], [1, 1 / q, 1]),
        "highpass": ([1, 0, 0], [1, 1 / q, 1]),
        "bandpass": ([0, 1 / q, 0], [1, 1 / q, 1]),
        "notch": ([1, 0, 1], [1, 1 / q, 1]),
        "peak": ([1, A / q, 1], [1, 1 / (A * q), 1]),
        "low_shelf": ([A, A * math.sqrt(A) / q, A * A], [A, math.sqrt(A) / q, 1]),
        "high_shelf": ([A * A, A * math.sqrt(A) / q, A], [1, math.sqrt(A) / q, A]),
    }[shape]


def reference_coefficients(shape, sample_rate, freq_hz, gain_db, q):
    """Bilinear transform (scipy) of the analog prototype pre-warped to ``freq_hz``: an independent design."""
    b, a = analog_prototype(shape, gain_db, q)
    w_analog = 2 * sample_rate * math.tan(math.pi * freq_hz / sample_rate)
    scale = np.array([1 / w_analog**2, 1 / w_analog, 1.0])
    bz, az = scipy.signal.bilinear(np.array(b) * scale, np.array(a) * scale, fs=sample_rate)
    return bz / az[0], az / az[0]


CASES = [
    (shape, sr, f, g, q)
    for shape in SHAPES
    for sr in SAMPLE_RATES
    for f, g, q in ((50.0, 6.0, 0.707), (1000.0, -9.0, 2.0), (0.4 * sr, 12.0, 0.5))
]


@pytest.mark.parametrize("shape,sr,f,g,q", CASES)
def test_coefficients_match_bilinear_transform_of_analog_prototype(shape, sr, f, g, q):
    b, a = biquad_coefficients(
        shape,
        sample_rate=sr,
        freq_hz=torch.tensor(f, dtype=torch.float64),
        gain_db=torch.tensor(g, dtype=torch.float64),
        q=torch.tensor(q, dtype=torch.float64),
    )
    rb, ra = reference_coefficients(shape, sr, f, g, q)
    np.testing.assert_allclose(b.numpy(), rb, rtol=1e-9, atol=1e-12, err_msg=f"{shape} {sr} {f} {g} {q}")
    np.testing.assert_allclose(a.numpy(), ra, rtol=1e-9, atol=1e-12, err_msg=f"{shape} {sr} {f} {g} {q}")


@pytest.mark.parametrize("sr", SAMPLE_RATES)
@pytest.mark.parametrize("shape", ["lowpass", "highpass"])
def test_pass_filters_at_butterworth_q_equal_scipy_butter(shape, sr):
    b, a = biquad_coefficients(
        shape,
        sample_rate=sr,
        freq_hz=torch.tensor(1234.0, dtype=torch.float64),
        gain_db=torch.tensor(0.0, dtype=torch.float64),
        q=torch.tensor(1 / math.sqrt(2), dtype=torch.float64),
    )
    rb, ra = scipy.signal.butter(2, 1234.0, btype=shape[:-4] if shape == "lowpass" else "highpass", fs=sr)
    np.testing.assert_allclose(b.numpy(), rb, rtol=1e-9)
    np.testing.assert_allclose(a.numpy(), ra, rtol=1e-9)


@pytest.mark.parametrize("shape", SHAPES)
def test_biquad_output_matches_scipy_sosfilt(shape, rng):
    sr = 44100.0
    x = rng.standard_normal((3, 2, 4000))
    f, g, q = np.array([80.0, 1500.0, 12000.0]), np.array([-8.0, 3.0, 11.0]), np.array([0.5, 1.0, 4.0])
    for dtype, floor_db in ((torch.float64, -220), (torch.float32, -130)):
        y = biquad(
            torch.tensor(x, dtype=dtype),
            sample_rate=sr,
            shape=shape,
            freq_hz=torch.tensor(f),
            gain_db=torch.tensor(g),
            q=torch.tensor(q),
        )
        assert y.dtype == dtype
        for i in range(3):
            rb, ra = reference_coefficients(shape, sr, f[i], g[i], q[i])
            ref = scipy.signal.sosfilt(np.concatenate([rb, ra])[None], x[i], axis=-1)
            assert error_db(y[i].numpy(), ref) < floor_db, (shape, dtype, i)


@pytest.mark.parametrize("sr", SAMPLE_RATES)
@pytest.mark.parametrize("gain_db", [-18.0, -6.0, 0.5, 12.0])
def test_peak_gives_gain_at_centre_and_shelves_half_gain_at_corner(sr, gain_db):
    for shape, expect in (("peak", gain_db), ("low_shelf", gain_db / 2), ("high_shelf", gain_db / 2)):
        for f0 in (100.0, 1000.0, 0.3 * sr):
            for q in (0.5, 0.707, 3.0):
                b, a = biquad_coefficients(
                    shape,
                    sample_rate=sr,
                    freq_hz=torch.tensor(f0, dtype=torch.float64),
                    gain_db=torch.tensor(gain_db, dtype=torch.float64),
                    q=torch.tensor(q, dtype=torch.float64),
                )
                got = frequency_response_db(b[None], a[None], [f0], sr).item()
                assert abs(got - expect) < 1e-6, (shape, f0, q, got, expect)


def test_zero_db_peak_and_shelf_are_identity(rng):
    x = torch.tensor(rng.standard_normal((2, 2, 1000)))
    for shape in ("peak", "low_shelf", "high_shelf"):
        y = biquad(x, sample_rate=44100, shape=shape, freq_hz=1000.0, gain_db=0.0, q=1.0)
        assert error_db(y.numpy(), x.numpy()) < -280


def test_notch_nulls_and_bandpass_peaks_at_centre():
    sr = 48000.0
    args = dict(
        sample_rate=sr,
        freq_hz=torch.tensor(3000.0, dtype=torch.float64),
        gain_db=torch.tensor(0.0, dtype=torch.float64),
        q=torch.tensor(2.0, dtype=torch.float64),
    )
    b, a = biquad_coefficients("notch", **args)
    assert frequency_response_db(b[None], a[None], [3000.0], sr).item() < -200
    b, a = biquad_coefficients("bandpass", **args)
    assert abs(frequency_response_db(b[None], a[None], [3000.0], sr).item()) < 1e-9


def test_analytic_response_matches_filtered_impulse():
    sr = 44100.0
    x = torch.zeros(1, 1, 1 << 15, dtype=torch.float64)
    x[..., 0] = 1
    y = biquad(x, sample_rate=sr, shape="peak", freq_hz=500.0, gain_db=7.0, q=1.5)
    freqs = np.array([100.0, 500.0, 2000.0])
    b, a = biquad_coefficients(
        "peak",
        sample_rate=sr,
        freq_hz=torch.tensor(500.0, dtype=torch.float64),
        gain_db=torch.tensor(7.0, dtype=torch.float64),
        q=torch.tensor(1.5, dtype=torch.float64),
    )
    np.testing.assert_allclose(
        response_db_from_impulse(y[0, 0].numpy(), freqs, sr),
        frequency_response_db(b[None], a[None], freqs, sr).numpy(),
        atol=1e-6,
    )


@pytest.mark.parametrize(
    "shape,pb_name", [("peak", "PeakFilter"), ("low_shelf", "LowShelfFilter"), ("high_shelf", "HighShelfFilter")]
)
def test_peak_and_shelves_match_pedalboard(shape, pb_name, rng):
    pedalboard = require("pedalboard")
    sr = 44100
    x = np.zeros(1 << 14, dtype=np.float32)
    x[0] = 1.0
    freqs = np.geomspace(30, 18000, 40)
    for f0, g, q in ((200.0, 6.0, 0.707), (2500.0, -9.0, 2.0), (8000.0, 4.0, 1.0)):
        effect = getattr(pedalboard, pb_name)(cutoff_frequency_hz=f0, gain_db=g, q=q)
        ref = effect(x[None], sr)[0].astype(np.float64)
        y = biquad(
            torch.tensor(x[None, None], dtype=torch.float64), sample_rate=sr, shape=shape, freq_hz=f0, gain_db=g, q=q
        )[0, 0].numpy()
        diff = np.abs(response_db_from_impulse(y, freqs, sr) - response_db_from_impulse(ref, freqs, sr))
        assert diff.max() < 0.05, (shape, f0, g, q, diff.max())


@pytest.mark.parametrize("shape", SHAPES)
def test_biquad_gradcheck_every_parameter(shape):
    x = torch.randn(2, 2, 48, dtype=torch.float64, requires_grad=True)
    f = torch.tensor([300.0, 2500.0], dtype=torch.float64, requires_grad=True)
    g = torch.tensor([4.0, -7.0], dtype=torch.float64, requires_grad=True)
    q = torch.tensor([0.7, 2.5], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x, f, g, q: biquad(x, sample_rate=16000, shape=shape, freq_hz=f, gain_db=g, q=q), (x, f, g, q)
    )


def test_sos_filter_random_stable_sections_match_scipy_and_gradcheck(rng):
    batch, sections = 3, 4
    radius = rng.uniform(0.3, 0.98, (batch, sections))
    angle = rng.uniform(0.05, 3.0, (batch, sections))
    a = np.stack([np.ones_like(radius), -2 * radius * np.cos(angle), radius**2], -1)
    b = rng.standard_normal((batch, sections, 3))
    x = rng.standard_normal((batch, 2, 300))
    y = sos_filter(torch.tensor(x), torch.tensor(b), torch.tensor(a)).numpy()
    for i in range(batch):
        ref = scipy.signal.sosfilt(np.concatenate([b[i], a[i]], -1), x[i], axis=-1)
        assert error_db(y[i], ref) < -250
    args = [torch.tensor(v[..., :60] if v is x else v, requires_grad=True) for v in (x, b, a)]
    assert torch.autograd.gradcheck(sos_filter, args)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sos_filter_is_scipy_sosfilt_to_the_last_bit(rng, dtype):
    """The compiled cascade has scipy's arithmetic in its order: not close, equal (with and without grad)."""
    batch, sections = 2, 6
    radius, angle = rng.uniform(0.3, 0.999, (batch, sections)), rng.uniform(0.001, 3.0, (batch, sections))
    a = np.stack([np.ones_like(radius), -2 * radius * np.cos(angle), radius**2], -1)
    b = rng.standard_normal((batch, sections, 3))
    x = torch.tensor(rng.standard_normal((batch, 2, 3000)), dtype=dtype)
    fast = sos_filter(x, torch.tensor(b), torch.tensor(a))
    kept = sos_filter(x, torch.tensor(b, requires_grad=True), torch.tensor(a)).detach()
    for i in range(batch):
        ref = scipy.signal.sosfilt(np.concatenate([b[i], a[i]], -1), x[i].double().numpy(), axis=-1)
        assert np.array_equal(fast[i].numpy(), ref.astype(fast.numpy().dtype))
        assert np.array_equal(kept[i].numpy(), ref.astype(fast.numpy().dtype))


def test_zero_db_sections_are_left_out_without_changing_a_sample(rng):
    """A 0 dB peak or shelf (numerator = denominator) returns its input exactly, so inference skips it."""
    x = torch.tensor(rng.standard_normal((2, 2, 3000)), dtype=torch.float32)
    f, g = torch.tensor([[100.0, 1000.0, 6000.0]] * 2), torch.tensor([[0.0, 4.0, 0.0], [0.0, 0.0, 0.0]])
    b, a = eq_coefficients(
        ["low_shelf", "peak", "high_shelf"], sample_rate=44100, freq_hz=f, gain_db=g, q=torch.full((2, 3), 0.8)
    )
    fast = sos_filter(x, b, a)
    assert torch.equal(fast, sos_filter(x, b.requires_grad_(), a).detach())
    assert torch.equal(fast[1], x[1])


def test_input_gradient_is_time_reversed_filter(rng):
    """The adjoint of a causal LTI filter is the same filter run backwards in time."""
    x = torch.tensor(rng.standard_normal((1, 1, 500)), requires_grad=True)
    g = torch.tensor(rng.standard_normal((1, 1, 500)))
    y = biquad(x, sample_rate=44100, shape="peak", freq_hz=700.0, gain_db=5.0, q=0.9)
    (y * g).sum().backward()
    expected = biquad(g.flip(-1), sample_rate=44100, shape="peak", freq_hz=700.0, gain_db=5.0, q=0.9).flip(-1)
    assert error_db(x.grad.numpy(), expected.numpy()) < -250


def test_batch_consistency(rng):
    x = torch.tensor(rng.standard_normal((4, 2, 700)), dtype=torch.float32)
    f = torch.tensor([60.0, 300.0, 3000.0, 15000.0])
    g = torch.tensor([3.0, -3.0, 10.0, -12.0])
    y = biquad(x, sample_rate=44100, shape="low_shelf", freq_hz=f, gain_db=g, q=0.8)
    for i in range(4):
        yi = biquad(x[i : i + 1], sample_rate=44100, shape="low_shelf", freq_hz=f[i].item(), gain_db=g[i].item(), q=0.8)
        assert torch.equal(y[i], yi[0])


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(freq_hz=30000.0), "freq_hz: 30000 is not < 22050"),
        (dict(freq_hz=0.0), "freq_hz: 0 is not > 0"),
        (dict(q=0.0), "q: 0 is not > 0"),
        (dict(q=float("nan")), "q: nan is not finite"),
        (dict(gain_db=torch.ones(3)), r"gain_db: expected a float or a tensor of shape \(2,\)"),
        (dict(shape="shelf"), "shape: 'shelf' is not one of"),
    ],
)
def test_bad_parameters_raise_naming_the_parameter(kwargs, match):
    args = dict(sample_rate=44100, shape="peak", freq_hz=1000.0, gain_db=0.0, q=1.0) | kwargs
    with pytest.raises(ParameterError, match=match):
        biquad(torch.zeros(2, 1, 10), **args)


def test_bad_audio_shapes_raise():
    with pytest.raises(ShapeError, match="expected shape"):
        biquad(torch.zeros(10), sample_rate=44100, shape="peak", freq_hz=1000.0)
    with pytest.raises(ShapeError, match="zero samples"):
        biquad(torch.zeros(1, 1, 0), sample_rate=44100, shape="peak", freq_hz=1000.0)


def test_decaying_states_reach_zero_not_subnormal_numbers(rng):
    """After the input falls silent the recursion's states are flushed to 0 below 1e-290 (subnormal arithmetic
    is 10-35x slower), forwards and in the gradient before its window; where scipy's values are normal, they
    are the same."""
    b, a = biquad_coefficients(
        "peak",
        sample_rate=44100,
        freq_hz=torch.tensor([[9000.0]]),
        gain_db=torch.tensor([[6.0]]),
        q=torch.tensor([[0.7]]),
    )
    sos = np.concatenate([b[0].numpy(), a[0].numpy()], -1)
    x = torch.zeros(1, 1, 3400, dtype=torch.float64)
    x[..., :2000] = torch.tensor(rng.standard_normal(2000))
    x.requires_grad_(True)
    b.requires_grad_(True)  # the forward that keeps every section's input, and the coefficients' gradient
    y = sos_filter(x, b, a)
    ref = scipy.signal.sosfilt(sos, x.detach()[0].numpy(), axis=-1)[0]
    normal = np.abs(ref) > 1e-250
    assert np.array_equal(y.detach()[0, 0].numpy()[normal], ref[normal])
    assert 0 < abs(ref[-1]) < 2.3e-308  # scipy's tail is subnormal
    assert torch.all(y.detach()[..., -100:] == 0)
    g = torch.zeros_like(y)
    g[..., -1000:] = torch.tensor(rng.standard_normal(1000))
    (y * g).sum().backward()
    expected = scipy.signal.sosfilt(sos, g[0].numpy()[..., ::-1], axis=-1)[0, ::-1]  # the adjoint
    assert np.count_nonzero((np.abs(expected[:1000]) < 2.3e-308) & (expected[:1000] != 0)) > 0
    assert torch.all(x.grad[..., :1000] == 0)
    normal = np.abs(expected) > 1e-250
    assert error_db(x.grad[0, 0].numpy()[normal], expected[normal]) < -250
    g_a = scipy.signal.lfilter([1.0], a[0, 0].numpy(), g[0, 0].numpy()[::-1])[::-1]  # dL/db_j = sum g_A[n] x[n-j]
    xs = x.detach()[0, 0].numpy()
    grad_b = [np.dot(g_a[j:], xs[: len(xs) - j]) for j in range(3)]
    assert error_db(b.grad[0, 0].numpy(), np.array(grad_b)) < -250
