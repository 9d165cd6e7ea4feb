"""The block-parallel recursions (the path of tensors off the CPU), run here on CPU tensors, against
scipy's recursions and the numba kernels, with gradient checks; on CUDA where there is one."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.signal
import torch
from conftest import error_db

from gradmix.dsp import linear_scan, sos_filter
from gradmix.dsp.biquad import biquad_coefficients
from gradmix.dsp.eq import graphic_eq, parametric_eq
from gradmix.dsp.loudness import integrated_loudness

SR = 44100
# hard cases for a block method: poles near z = 1 (a 30 Hz shelf, a narrow 60 Hz boost, a 20 Hz high-pass),
# whose all-pole parts have gains in the thousands that the numerators cancel
SECTIONS = (
    ("low_shelf", 30.0, -9.0, 0.707),
    ("peak", 440.0, 4.0, 1.0),
    ("peak", 60.0, 12.0, 8.0),
    ("highpass", 20.0, 0.0, 0.707),
    ("high_shelf", 8000.0, 3.0, 0.707),
)


def _cascade(items: int = 2, requires_grad: bool = False):
    """``(b, a, (freq, gain, q))`` of :data:`SECTIONS`, the frequencies spread over the items."""
    spread = torch.linspace(1.0, 1.5, items, dtype=torch.float64)[:, None]
    freq = (torch.tensor([s[1] for s in SECTIONS], dtype=torch.float64) * spread).requires_grad_(requires_grad)
    gain = torch.tensor([s[2] for s in SECTIONS], dtype=torch.float64).repeat(items, 1).requires_grad_(requires_grad)
    q = torch.tensor([s[3] for s in SECTIONS], dtype=torch.float64).repeat(items, 1).requires_grad_(requires_grad)
    designed = [
        biquad_coefficients(shape, sample_rate=SR, freq_hz=freq[:, k], gain_db=gain[:, k], q=q[:, k])
        for k, (shape, *_) in enumerate(SECTIONS)
    ]
    return torch.stack([d[0] for d in designed], 1), torch.stack([d[1] for d in designed], 1), (freq, gain, q)


@pytest.mark.parametrize("samples", [1, 2, 63, 64, 65, 64 * 64 + 3, 300_000])
def test_every_sections_all_pole_signal_equals_scipys_recursion(samples):
    rng = np.random.default_rng(samples)
    x = rng.standard_normal((2, 3, samples))
    b, a, _ = _cascade()
    b, a = b / a[..., :1], a / a[..., :1]
    p = linear_scan.cascade_states(torch.from_numpy(x), b, a[..., 1:])
    assert p.shape == (2, 3, samples, len(SECTIONS))
    for i in range(2):
        w = x[i]
        for k in range(len(SECTIONS)):
            ref = scipy.signal.lfilter([1.0], a[i, k].numpy(), w, axis=-1)
            assert error_db(p[i, ..., k].numpy(), ref) <= -130, k
            w = scipy.signal.lfilter(b[i, k].numpy(), a[i, k].numpy(), w, axis=-1)


def test_vector_scan_equals_the_sequential_recurrence():
    torch.manual_seed(0)
    m = torch.randn(3, 2, 2, dtype=torch.float64) * 0.6
    v = torch.randn(3, 4, 700, 2, dtype=torch.float64)
    s = linear_scan.vector_scan(m, v, block=16)  # three levels of blocks
    state, ref = torch.zeros(3, 4, 2, dtype=torch.float64), []
    for k in range(v.shape[2]):
        state = torch.einsum("bxy,bry->brx", m, state) + v[:, :, k]
        ref.append(state)
    assert error_db(s.numpy(), torch.stack(ref, 2).numpy()) <= -250


def test_matrix_powers_by_doubling():
    m = torch.tensor([[[0.9, -0.2], [0.3, 0.5]]], dtype=torch.float64)
    p = linear_scan.matrix_powers(m, 11)
    assert p.shape == (1, 11, 2, 2)
    for k in range(11):
        assert torch.allclose(p[0, k], torch.linalg.matrix_power(m[0], k), rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_the_block_path_equals_the_cpu_kernels_in_output_and_every_gradient(dtype):
    """Bounds: output and the gradients of the audio and the coefficients <= -120 dB of their peak (measured
    about -145 dB); of the filters' frequency, gain and Q <= -100 dB (their chain rule cancels the large terms
    of the coefficients' gradients; measured -115 dB)."""
    torch.manual_seed(1)
    x = torch.randn(2, 2, 30_000, dtype=dtype, requires_grad=True)
    weight = torch.randn(2, 2, 30_000, dtype=dtype)
    results = []
    for forced in (False, True):
        b, a, params = _cascade(requires_grad=True)
        b.retain_grad(), a.retain_grad()
        with linear_scan.forced() if forced else torch.enable_grad():
            y = sos_filter(x, b, a)
        (y * weight).sum().backward()
        results.append([y.detach(), x.grad.clone(), b.grad, a.grad, *(p.grad for p in params)])
        x.grad = None
    (y_cpu, *grads_cpu), (y_blocks, *grads_blocks) = results
    assert y_blocks.dtype == dtype and error_db(y_blocks.numpy(), y_cpu.numpy()) <= -120
    for name, ref, got, bound in zip(
        ("x", "b", "a", "freq", "gain", "q"), grads_cpu, grads_blocks, (-120, -120, -120, -100, -100, -100)
    ):
        assert error_db(got.numpy(), ref.numpy()) <= bound, name


@pytest.mark.parametrize("sections", [1, 3, 2 * len(SECTIONS)])  # one pass; two passes of the cascade
def test_the_cascade_backward_passes_gradcheck(sections):
    assert linear_scan.SECTIONS_PER_PASS < 2 * len(SECTIONS)
    b, a, _ = _cascade(items=1)
    b, a = b.repeat(1, 2, 1)[:, :sections].requires_grad_(), a.repeat(1, 2, 1)[:, :sections].requires_grad_()
    x = torch.randn(1, 2, 70, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(linear_scan.sos_filter_blocks, (x, b, a), fast_mode=True)


def test_the_forced_path_runs_the_eqs_and_the_loudness_meter_as_the_cpu_kernels_do():
    torch.manual_seed(2)
    x = torch.randn(3, 2, 2 * SR, dtype=torch.float64) * 0.1
    eq = dict(
        sample_rate=SR,
        shapes=("low_shelf", "peak", "high_shelf"),
        freq_hz=torch.tensor([80.0, 1000.0, 9000.0]),
        gain_db=torch.tensor([4.0, -6.0, 3.0]),
        q=torch.tensor([0.707, 2.0, 0.707]),
    )
    gains = torch.linspace(-9, 9, 31, dtype=torch.float64)
    cpu = (parametric_eq(x, **eq), graphic_eq(x, sample_rate=SR, gain_db=gains), integrated_loudness(x, sample_rate=SR))
    with linear_scan.forced():
        blocks = (
            parametric_eq(x, **eq),
            graphic_eq(x, sample_rate=SR, gain_db=gains),
            integrated_loudness(x, sample_rate=SR),
        )
    for ref, got in zip(cpu[:2], blocks[:2]):
        assert error_db(got.numpy(), ref.numpy()) <= -120
    assert torch.allclose(blocks[2], cpu[2], atol=1e-9)
    assert not linear_scan.wanted(x)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_the_eq_on_cuda_equals_the_cpu_kernels_with_no_host_copy(dtype):
    torch.manual_seed(3)
    x = torch.randn(2, 2, 3 * SR, dtype=dtype)
    b, a, _ = _cascade()
    ref = sos_filter(x, b, a)
    got = sos_filter(x.cuda(), b.cuda(), a.cuda())
    assert got.device.type == "cuda" and got.dtype == dtype
    assert error_db(got.cpu().numpy(), ref.numpy()) <= -120


def test_first_order_scan_equals_the_loop():
    torch.manual_seed(4)
    a, b, y0 = torch.rand(3, 1000, dtype=torch.float64), torch.randn(3, 1000, dtype=torch.float64), torch.randn(3)
    a[:, 300:340] = 0.0  # maps that forget their input, beyond a block
    a[1] = a[1] ** 0.01  # all near 1: slow smoothing
    y, ref = linear_scan.first_order_scan(a, b, y0.double(), block=8), []  # four levels of blocks
    state = y0.double()
    for n in range(1000):
        state = a[:, n] * state + b[:, n]
        ref.append(state)
    assert error_db(y.numpy(), torch.stack(ref, 1).numpy()) <= -280


def test_min_affine_scan_equals_the_loop():
    torch.manual_seed(6)
    a, b = torch.rand(3, 999, dtype=torch.float64), torch.randn(3, 999, dtype=torch.float64)
    a[:, 500] = 0.0  # a map that forgets its input
    c = torch.randn(3, 999, dtype=torch.float64).cumsum(-1) * 0.1
    y0 = torch.tensor([0.5, -2.0, 10.0], dtype=torch.float64)
    y, state, ref = linear_scan.min_affine_scan(a, b, c, y0), y0, []
    for n in range(999):
        state = torch.minimum(c[:, n], a[:, n] * state + b[:, n])
        ref.append(state)
    assert error_db(y.numpy(), torch.stack(ref, 1).numpy()) <= -280


def _gain_curves(dtype=torch.float64):
    """Compressor gain curves (dB) of the example's drums, bass and chords, and attack / release weights."""
    from gradmix.dsp.dynamics import compressor_gain_db, time_to_coefficient
    from gradmix.example import example_multitrack

    stems = example_multitrack(seconds=2.0, sample_rate=SR)
    x = torch.stack([stems[n][:1] for n in ("kick", "snare", "bass", "chords")]).to(dtype)
    level = 20 * torch.log10(x.abs().amax(1).clamp_min(1e-12))
    per = dict(dtype=dtype)
    u = compressor_gain_db(
        level,
        threshold_db=torch.tensor([-30.0, -20.0, -40.0, -25.0], **per),
        ratio=torch.tensor([4.0, 2.0, 8.0, 3.0], **per),
        knee_db=torch.tensor([6.0, 0.0, 3.0, 6.0], **per),
    )
    attack = time_to_coefficient(torch.tensor([5.0, 1.0, 20.0, 10.0], **per), SR)
    release = time_to_coefficient(torch.tensor([100.0, 300.0, 50.0, 200.0], **per), SR)
    return u, attack, release, torch.tensor([0.0, -3.0, 0.0, -1.0], **per)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_the_branching_smoother_by_scan_equals_the_cpu_kernel_in_output_and_every_gradient(dtype):
    """Bounds: float64 <= -120 dB of the peak (measured below -250 dB), float32 <= -70 dB."""
    from gradmix.dsp.ballistics import smooth

    bound = -120 if dtype == torch.float64 else -70
    results = []
    for forced in (False, True):
        u, attack, release, initial = (t.requires_grad_() for t in _gain_curves(dtype))
        with linear_scan.forced() if forced else torch.enable_grad():
            y = smooth(u, attack, release, initial)
        (y * torch.linspace(-1, 1, y.shape[1], dtype=dtype)).sum().backward()
        results.append([y.detach(), u.grad, attack.grad, release.grad, initial.grad])
    assert results[1][0].dtype == dtype
    for name, ref, got in zip(("y", "u", "attack", "release", "initial"), *results):
        assert error_db(got.numpy(), ref.numpy()) <= bound, name


def test_the_branching_smoother_backward_passes_gradcheck():
    torch.manual_seed(5)
    u = (torch.randn(2, 80, dtype=torch.float64) * 6).cumsum(-1).requires_grad_()
    weights = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in ([0.3, 0.5], [0.05, 0.1], [0.0, 2.0])]
    assert torch.autograd.gradcheck(linear_scan.branching_smooth, (u, *weights), fast_mode=True)


@pytest.mark.parametrize("grad", [False, True])
def test_the_forced_path_runs_every_dynamics_processor_as_the_cpu_kernels_do(grad):
    from gradmix.dsp.dynamics import compressor, expander, limiter, noise_gate
    from gradmix.example import example_multitrack

    stems = example_multitrack(seconds=1.0, sample_rate=SR)
    x = torch.stack([stems[n].expand(2, -1) for n in ("kick", "bass", "chords")]).double()
    processors = {
        "compressor": lambda v: compressor(
            v, sample_rate=SR, threshold_db=-30.0, ratio=4.0, attack_ms=5.0, release_ms=100.0
        ),
        "expander": lambda v: expander(
            v, sample_rate=SR, threshold_db=-30.0, ratio=2.0, attack_ms=2.0, release_ms=80.0
        ),
        "gate": lambda v: noise_gate(v, sample_rate=SR, threshold_db=-40.0, attack_ms=1.0, release_ms=50.0),
        "limiter": lambda v: limiter(v * 4, sample_rate=SR, ceiling_db=-1.0),
    }
    for name, process in processors.items():
        outputs = []
        for forced in (False, True):
            v = x.clone().requires_grad_(grad)
            with linear_scan.forced() if forced else torch.no_grad() if not grad else torch.enable_grad():
                y = process(v)
            if grad:
                y.square().sum().backward()
            outputs.append((y.detach(), v.grad))
        assert error_db(outputs[1][0].numpy(), outputs[0][0].numpy()) <= -120, name
        if grad:
            assert error_db(outputs[1][1].numpy(), outputs[0][1].numpy()) <= -120, name


def test_series_inverse_is_the_impulse_response_of_the_all_pole_filter():
    d = torch.tensor([[1.0, -0.5, 0.0, 0.3, 0.1], [2.0, 0.0, 0.0, 0.0, -1.9]], dtype=torch.float64)
    h = linear_scan.series_inverse(d, 777)
    impulse = np.zeros(777)
    impulse[0] = 1.0
    for i in range(2):
        assert error_db(h[i].numpy(), scipy.signal.lfilter([1.0], d[i].numpy(), impulse)) <= -250
    gapped = linear_scan.series_inverse(d[:, [0, 2, 3, 4]], 777, gap=2)  # both items' term 1 is zero
    for i in range(2):
        ref = scipy.signal.lfilter([1.0], d[i, [0, 2, 3, 4]].numpy(), impulse)
        assert error_db(gapped[i].numpy(), ref) <= -250


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shortest", [1.0, 441.3])  # the inverse series from its first term, or from 441
def test_the_delay_line_by_fft_equals_the_cpu_kernel_in_output_and_every_gradient(dtype, shortest):
    """Delays of 1 (or 441.3), 441.3 and 13000.7 samples, feedback up to 0.95. Bounds: float64 <= -250 dB of
    the peak (measured -280 dB); float32 <= -120 dB (the CPU kernel's own float32 rounding; measured -135
    dB)."""
    from gradmix.dsp.delay_line import delay_line

    torch.manual_seed(7)
    x = torch.randn(3, 2, 20_000, dtype=dtype, requires_grad=True)
    delay = torch.tensor([shortest, 441.3, 13000.7], dtype=dtype, requires_grad=True)
    feedback = torch.tensor([0.5, -0.95, 0.9], dtype=dtype, requires_grad=True)
    weight = torch.randn(3, 2, 20_000, dtype=dtype)
    results = []
    for forced in (False, True):
        with linear_scan.forced() if forced else torch.enable_grad():
            y = delay_line(x, delay, feedback)
        results.append([y.detach(), *torch.autograd.grad((y * weight).sum(), [x, delay, feedback])])
    assert results[1][0].dtype == dtype
    bound = -250 if dtype == torch.float64 else -120
    for name, ref, got in zip(("y", "x", "delay", "feedback"), *results):
        assert error_db(got.numpy(), ref.numpy()) <= bound, name


def test_the_delay_line_by_fft_passes_gradcheck():
    x = torch.randn(2, 1, 60, dtype=torch.float64, requires_grad=True)
    frac = torch.tensor([0.3, 0.8], dtype=torch.float64, requires_grad=True)
    gain = torch.tensor([0.7, -0.4], dtype=torch.float64, requires_grad=True)
    whole = torch.tensor([3, 17])
    assert torch.autograd.gradcheck(
        lambda x, f, g: linear_scan.delay_line_fft(x, whole, f, g), (x, frac, gain), fast_mode=True
    )


def test_the_whole_console_renders_and_differentiates_by_the_block_path_as_on_the_cpu_kernels():
    """The default layout (strips, reverb and delay sends, master bus) with engineer-like settings."""
    from gradmix.console import Layout
    from gradmix.models.engineer import engineer_controls

    torch.manual_seed(8)
    layout = Layout.default()
    tracks = torch.randn(2, 3, 2, SR // 2, dtype=torch.float64) * 0.1
    controls = engineer_controls(layout, 2, 3, torch.Generator().manual_seed(9), dtype=torch.float64)
    results = []
    for forced in (False, True):
        strip = controls.strip.clone().requires_grad_()
        params = layout.denormalize(dataclasses.replace(controls, strip=strip))
        with linear_scan.forced() if forced else torch.enable_grad():
            mix, _ = layout.render(tracks, params, sample_rate=SR)
        results.append((mix.detach(), torch.autograd.grad(mix.square().sum(), strip)[0]))
    assert error_db(results[1][0].numpy(), results[0][0].numpy()) <= -120
    assert error_db(results[1][1].numpy(), results[0][1].numpy()) <= -100
