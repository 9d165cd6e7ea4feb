"""Compressor, expander, gate and limiter: against a plain per-sample reference, theory and step responses."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import error_db
from gradmix.dsp import compressor, expander, limiter, limiter_latency_samples, noise_gate
from gradmix.dsp.ballistics import linked_peak
from gradmix.dsp.dynamics import GATE_RATIO, running_min
from gradmix.errors import ParameterError

SR = 8000.0


def reference(x, sr, kind, threshold, ratio, attack_ms, release_ms, knee, makeup=0.0, range_db=math.inf):
    """Giannoulis et al. (2012) feed-forward design, written as a plain loop (independent of gradmix)."""
    level = 20 * np.log10(np.maximum(np.abs(x).max(axis=0), 1e-12))
    a_att, a_rel = math.exp(-1000 / (attack_ms * sr)), math.exp(-1000 / (release_ms * sr))
    gs, out = 0.0, np.empty(x.shape[-1])
    for n, lv in enumerate(level):
        d = lv - threshold
        if kind == "compressor":
            if 2 * d < -knee:
                gc = 0.0
            elif 2 * d > knee:
                gc = (1 / ratio - 1) * d
            else:
                gc = (1 / ratio - 1) * (d + knee / 2) ** 2 / (2 * knee)
            a = a_att if gc < gs else a_rel
        else:
            if 2 * d > knee:
                gc = 0.0
            elif 2 * d < -knee:
                gc = (ratio - 1) * d
            else:
                gc = -(ratio - 1) * (d - knee / 2) ** 2 / (2 * knee)
            gc = max(gc, -range_db)
            a = a_rel if gc < gs else a_att
        gs = a * gs + (1 - a) * gc
        out[n] = gs
    return x * 10 ** ((out + makeup) / 20)


def music_like(rng, channels=2, n=4000):
    env = np.repeat(rng.uniform(0.001, 1.0, n // 200), 200)[:n]
    return rng.standard_normal((channels, n)) * env


@pytest.mark.parametrize("knee", [0.0, 6.0])
def test_compressor_matches_reference(rng, knee):
    x = music_like(rng)
    kw = dict(threshold=-20.0, ratio=4.0, attack_ms=3.0, release_ms=60.0, knee=knee, makeup=3.0)
    y = compressor(
        torch.tensor(x)[None],
        sample_rate=SR,
        threshold_db=-20.0,
        ratio=4.0,
        attack_ms=3.0,
        release_ms=60.0,
        knee_db=knee,
        makeup_db=3.0,
    )[0].numpy()
    assert error_db(y, reference(x, SR, "compressor", **kw)) < -200


def test_expander_matches_reference(rng):
    x = music_like(rng)
    kw = dict(threshold=-25.0, ratio=3.0, attack_ms=2.0, release_ms=80.0, knee=4.0, makeup=1.0, range_db=40.0)
    y = expander(
        torch.tensor(x)[None],
        sample_rate=SR,
        threshold_db=-25.0,
        ratio=3.0,
        attack_ms=2.0,
        release_ms=80.0,
        knee_db=4.0,
        range_db=40.0,
        makeup_db=1.0,
    )[0].numpy()
    assert error_db(y, reference(x, SR, "expander", **kw)) < -200


def square(level_db, n, period=16):
    """A square wave, whose peak level is constant, so the detector reads exactly ``level_db``."""
    return 10 ** (level_db / 20) * np.sign(np.sin(2 * np.pi * (np.arange(n) + 0.5) / period))


@pytest.mark.parametrize("ratio", [1.0, 2.0, 4.0, 10.0])
@pytest.mark.parametrize("knee", [0.0, 6.0])
def test_compressor_identity_below_threshold_and_slope_above(ratio, knee):
    threshold = -20.0
    levels = np.array([-40.0, -30.0, -10.0, -5.0, 0.0])
    x = torch.tensor(np.stack([square(lv, 4000) for lv in levels])[:, None])
    y = compressor(x, sample_rate=SR, threshold_db=threshold, ratio=ratio, attack_ms=1.0, release_ms=10.0, knee_db=knee)
    out_db = 20 * np.log10(np.abs(y[:, 0, -1].numpy()))
    expected = np.where(levels < threshold - knee / 2, levels, threshold + (levels - threshold) / ratio)
    np.testing.assert_allclose(out_db, expected, atol=1e-6)
    below = x[:2]
    assert torch.equal(
        compressor(
            below, sample_rate=SR, threshold_db=threshold, ratio=ratio, attack_ms=1.0, release_ms=10.0, knee_db=knee
        ),
        below,
    )


def time_to_63_percent(gain_db: np.ndarray, start: int, target: float) -> float:
    """Samples from ``start`` until the gain has covered 1 - 1/e of its way to ``target``, interpolated."""
    g0, g1 = gain_db[start - 1], target
    frac = (gain_db[start - 1 :] - g0) / (g1 - g0)
    k = int(np.argmax(frac >= 1 - 1 / math.e))
    return k - 1 + (1 - 1 / math.e - frac[k - 1]) / (frac[k] - frac[k - 1])


@pytest.mark.parametrize("attack_ms,release_ms", [(5.0, 50.0), (20.0, 200.0), (1.0, 500.0)])
def test_attack_and_release_time_constants_from_step_responses(attack_ms, release_ms):
    sr = 48000.0
    n = int(sr * 4)
    quiet, loud = np.full(n // 4, 10 ** (-40 / 20)), np.full(n // 2, 10 ** (-10 / 20))
    x = np.concatenate([quiet, loud, quiet])
    y = compressor(
        torch.tensor(x)[None, None],
        sample_rate=sr,
        threshold_db=-30.0,
        ratio=20.0,
        attack_ms=attack_ms,
        release_ms=release_ms,
        knee_db=0.0,
    )[0, 0].numpy()
    gain_db = 20 * np.log10(y / x)
    attack = time_to_63_percent(gain_db, n // 4, target=(1 / 20 - 1) * 20) / sr * 1000
    release = time_to_63_percent(gain_db, n // 4 + n // 2, target=0.0) / sr * 1000
    assert abs(attack - attack_ms) / attack_ms < 0.01, attack
    assert abs(release - release_ms) / release_ms < 0.01, release


def test_expander_and_gate_static_curves():
    levels = np.array([-70.0, -50.0, -35.0, -20.0])
    x = torch.tensor(np.stack([square(lv, 4000) for lv in levels])[:, None])
    y = expander(
        x, sample_rate=SR, threshold_db=-30.0, ratio=2.0, attack_ms=1.0, release_ms=5.0, knee_db=0.0, range_db=30.0
    )
    out = 20 * np.log10(np.abs(y[:, 0, -1].numpy()))
    expected = np.maximum(np.where(levels < -30, -30 + 2 * (levels + 30), levels), levels - 30)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    y = noise_gate(x, sample_rate=SR, threshold_db=-40.0, attack_ms=1.0, release_ms=5.0, range_db=50.0, knee_db=0.0)
    out = 20 * np.log10(np.abs(y[:, 0, -1].numpy()))
    gated = np.maximum(-40 + GATE_RATIO * (levels + 40), levels - 50)
    np.testing.assert_allclose(out, np.where(levels < -40, gated, levels), atol=1e-6)


def limiter_reference(x, sr, ceiling_db, release_ms, gain_db, lookahead_ms):
    """The limiter's documented gain, written out: ``r[n] = min(1, c / max_c |x[c, n]|)`` (1 outside the
    signal), the minimum over each look-ahead window ``r[i .. i + L]``, the mean of the ``L + 1`` minima of
    windows containing ``n``, then a release with instant attack; never above ``r[n]``."""
    x = x * 10 ** (gain_db / 20)
    c = 10 ** (ceiling_db / 20) * (1 - 1e-6)
    L = int(round(lookahead_ms * sr / 1000))
    n = x.shape[-1]
    r = np.minimum(1.0, c / np.maximum(np.abs(x).max(0), 1e-30))
    padded = np.concatenate([np.ones(L), r, np.ones(L)])
    minima = np.array([padded[i : i + L + 1].min() for i in range(n + L)])  # window starting at i - L
    averaged = np.array([minima[i : i + L + 1].mean() for i in range(n)])
    w = 1 - np.exp(-1000 / (release_ms * sr))
    gain, prev = np.empty(n), 1.0
    for i in range(n):
        prev = averaged[i] if averaged[i] < prev else prev + w * (averaged[i] - prev)
        gain[i] = min(prev, r[i])
    return x * gain


@pytest.mark.parametrize("lookahead_ms", [0.0, 5.0])
def test_limiter_matches_its_documented_gain(rng, lookahead_ms):
    x = rng.standard_normal((2, 3000)) * np.repeat(rng.uniform(0, 1, 30) ** 3, 100) * 2  # bursts: release acts
    want = limiter_reference(x, SR, -3.0, 20.0, 6.0, lookahead_ms)
    kw = dict(sample_rate=SR, ceiling_db=-3.0, release_ms=20.0, gain_db=6.0, lookahead_ms=lookahead_ms)
    fast = limiter(torch.tensor(x)[None], **kw)[0].numpy()  # the compiled inference path
    graph = limiter(torch.tensor(x)[None].requires_grad_(), **kw)[0].detach().numpy()  # the autograd path
    assert error_db(fast, want) < -200 and error_db(graph, want) < -120


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    ceiling_db=st.floats(-12.0, 0.0),
    gain_db=st.floats(0.0, 24.0),
    lookahead_ms=st.sampled_from([0.0, 0.5, 5.0]),
    release_ms=st.floats(1.0, 1000.0),
)
def test_limiter_output_never_exceeds_ceiling(seed, ceiling_db, gain_db, lookahead_ms, release_ms):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 2, 3000, generator=gen) * torch.rand(2, 1, 3000, generator=gen) ** 4 * 2
    y = limiter(
        x, sample_rate=SR, ceiling_db=ceiling_db, release_ms=release_ms, gain_db=gain_db, lookahead_ms=lookahead_ms
    )
    assert y.abs().max().item() <= 10 ** (ceiling_db / 20), (seed, ceiling_db, gain_db, lookahead_ms)


def test_limiter_is_identity_below_ceiling_and_reports_latency(rng):
    x = torch.tensor(rng.uniform(-0.5, 0.5, (1, 2, 1000)))
    assert torch.equal(limiter(x, sample_rate=SR, ceiling_db=0.0), x)
    assert limiter_latency_samples(5.0, 48000) == 240


def test_limiter_fades_in_over_the_lookahead_before_a_peak():
    x = torch.full((1, 1, 400), 0.5, dtype=torch.float64)
    x[..., 200] = 2.0
    y = limiter(x, sample_rate=SR, ceiling_db=0.0, release_ms=1.0, lookahead_ms=5.0)[0, 0]
    L = limiter_latency_samples(5.0, SR)
    assert y[200].item() <= 1.0
    assert torch.allclose(y[: 200 - L], x[0, 0, : 200 - L])
    assert bool((y[200 - L : 200].diff() <= 1e-12).all())  # gain falls monotonically towards the peak


@pytest.mark.parametrize(
    "fn,kw",
    [
        (compressor, dict(threshold_db=-20.0, ratio=4.0, attack_ms=3.0, release_ms=60.0, knee_db=6.0, makeup_db=2.0)),
        (compressor, dict(threshold_db=-20.0, ratio=8.0, attack_ms=1.0, release_ms=30.0, knee_db=0.0)),
        (expander, dict(threshold_db=-25.0, ratio=3.0, attack_ms=2.0, release_ms=80.0, knee_db=4.0, range_db=40.0)),
        (noise_gate, dict(threshold_db=-30.0, attack_ms=1.0, release_ms=50.0, range_db=60.0, knee_db=0.0)),
    ],
)
def test_fused_inference_path_equals_the_differentiable_path(rng, fn, kw):
    x = torch.tensor(music_like(rng))[None]
    with torch.no_grad():
        fast = fn(x, sample_rate=SR, **kw)
    slow = fn(x.clone().requires_grad_(), sample_rate=SR, **kw)
    assert error_db(fast.numpy(), slow.detach().numpy()) < -200


@pytest.mark.parametrize("lookahead_ms", [0.0, 0.5, 5.0])
def test_limiter_inference_path_equals_the_differentiable_path(rng, lookahead_ms):
    x = torch.tensor(music_like(rng) * 3)[None]
    kw = dict(sample_rate=SR, ceiling_db=-2.0, release_ms=40.0, gain_db=6.0, lookahead_ms=lookahead_ms)
    with torch.no_grad():
        fast = limiter(x, **kw)
    slow = limiter(x.clone().requires_grad_(), **kw).detach()
    assert error_db(fast.numpy(), slow.numpy()) < -200
    assert fast.abs().max().item() <= 10 ** (-2 / 20)


@pytest.mark.parametrize(
    "fn,kw",
    [
        (compressor, dict(threshold_db=-20.0, ratio=4.0, attack_ms=3.0, release_ms=60.0)),
        (limiter, dict(gain_db=6.0)),
        (limiter, dict(gain_db=0.0, lookahead_ms=0.0)),
    ],
)
def test_inference_paths_leave_the_input_untouched(rng, fn, kw):
    """They reuse their own temporaries in place, never the caller's audio."""
    x = torch.tensor(music_like(rng) * 3, dtype=torch.float32)[None]
    before = x.clone()
    with torch.no_grad():
        fn(x, sample_rate=SR, **kw)
    assert torch.equal(x, before)


def test_linked_peak_is_torch_maximum_of_abs_then_clamp(rng):
    x = torch.tensor(rng.standard_normal((3, 2, 500)), dtype=torch.float32)
    x[0, 0, 5], x[1, 1, 7], x[2, :, 9] = float("nan"), float("inf"), 0.0
    ref = torch.maximum(x[:, 0].abs(), x[:, 1].abs()).clamp_min(1e-12)
    assert torch.equal(linked_peak(x, 1e-12).nan_to_num(-1.0), ref.nan_to_num(-1.0))


def test_running_min():
    x = torch.tensor([[5.0, 3.0, 4.0, 1.0, 6.0, 2.0, 7.0]])
    np.testing.assert_array_equal(running_min(x, 3).numpy(), [[3.0, 1.0, 1.0, 1.0, 2.0]])
    r = torch.randn(3, 1000)
    ref = r.unfold(-1, 37, 1).min(-1).values
    assert torch.equal(running_min(r, 37), ref)


GRAD_CASES = {
    "compressor": (
        compressor,
        dict(
            threshold_db=[-10.0, -6.0],
            ratio=[4.0, 2.0],
            attack_ms=[1.0, 3.0],
            release_ms=[20.0, 10.0],
            knee_db=[6.0, 3.0],
            makeup_db=[1.0, 2.0],
        ),
    ),
    "expander": (
        expander,
        dict(
            threshold_db=[-6.0, -3.0],
            ratio=[2.0, 3.0],
            attack_ms=[1.0, 3.0],
            release_ms=[20.0, 10.0],
            knee_db=[6.0, 3.0],
            range_db=[40.0, 60.0],
            makeup_db=[1.0, 0.0],
        ),
    ),
    "gate": (
        noise_gate,
        dict(
            threshold_db=[-6.0, -3.0],
            attack_ms=[1.0, 3.0],
            release_ms=[20.0, 10.0],
            range_db=[40.0, 60.0],
            knee_db=[6.0, 3.0],
        ),
    ),
    "limiter": (limiter, dict(ceiling_db=[-3.0, -6.0], release_ms=[30.0, 10.0], gain_db=[3.0, 6.0])),
}


@pytest.mark.parametrize("name", list(GRAD_CASES))
def test_gradcheck_every_parameter(name):
    fn, params = GRAD_CASES[name]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 2, 150, generator=gen, dtype=torch.float64, requires_grad=True)
    names = list(params)
    tensors = [torch.tensor(params[k], dtype=torch.float64, requires_grad=True) for k in names]
    assert torch.autograd.gradcheck(lambda x, *p: fn(x, sample_rate=SR, **dict(zip(names, p))), (x, *tensors))


def test_bad_dynamics_parameters():
    x = torch.zeros(1, 1, 10)
    with pytest.raises(ParameterError, match="ratio: 0.5 is not >= 1"):
        compressor(x, sample_rate=SR, threshold_db=-10.0, ratio=0.5, attack_ms=1.0, release_ms=10.0)
    with pytest.raises(ParameterError, match="attack_ms: 0 is not > 0"):
        compressor(x, sample_rate=SR, threshold_db=-10.0, ratio=2.0, attack_ms=0.0, release_ms=10.0)
    with pytest.raises(ParameterError, match="lookahead_ms"):
        limiter(x, sample_rate=SR, lookahead_ms=-1.0)
