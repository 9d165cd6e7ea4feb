"""Inverses of effects given their settings: the law ``effect(inverse(y)) == y`` and ``inverse(effect(x)) == x``."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import error_db
from gradmix.dsp import compressor, delay, distortion, parametric_eq, reverb
from gradmix.dsp.inverse import dereverberate, undelay, uncompress, undistort
from gradmix.errors import ParameterError

SR = 16000.0


def drums(seconds: float = 1.0, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    """Stereo decaying noise bursts over a tone ``(1, 2, samples)``: peaks, decays and silence-free."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * SR), dtype=dtype) / SR
    burst = torch.exp(-(t % 0.25) * 20)
    return 0.5 * torch.randn(1, 2, t.numel(), generator=g, dtype=dtype) * burst + 0.2 * torch.sin(2 * math.pi * 220 * t)


def si_sdr_db(estimate: torch.Tensor, reference: torch.Tensor) -> float:
    r, e = reference.flatten(), estimate.flatten()
    target = (e @ r) / (r @ r) * r
    return float(10 * torch.log10(target.square().sum() / (target - e).square().sum()))


def test_eq_inverse_is_the_eq_with_negated_gains():
    x = drums()
    p = dict(
        freq_hz=torch.tensor([[80.0, 200, 800, 2500, 5000, 7000]], dtype=torch.float64),
        q=torch.tensor([[0.707, 2, 1, 3, 0.7, 0.707]], dtype=torch.float64),
    )
    shapes = ("low_shelf", "peak", "peak", "peak", "peak", "high_shelf")
    gains = torch.tensor([[6.0, -5, 4, -9, 7, 5]], dtype=torch.float64)
    y = parametric_eq(x, sample_rate=SR, gain_db=gains, shapes=shapes, **p)
    assert error_db(parametric_eq(y, sample_rate=SR, gain_db=-gains, shapes=shapes, **p), x) < -120


COMPRESSORS = [
    dict(threshold_db=-20.0, ratio=4.0, attack_ms=5.0, release_ms=100.0, knee_db=6.0, makeup_db=3.0),
    dict(threshold_db=-35.0, ratio=20.0, attack_ms=0.1, release_ms=1000.0, knee_db=0.0, makeup_db=0.0),
    dict(threshold_db=-10.0, ratio=2.0, attack_ms=50.0, release_ms=10.0, knee_db=12.0, makeup_db=10.0),
]


@pytest.mark.parametrize("settings_", COMPRESSORS)
def test_uncompress_inverts_the_compressor_exactly(settings_):
    x = drums()
    y = compressor(x, sample_rate=SR, **settings_)
    assert error_db(y, x) > -20  # the compressor did something
    assert error_db(uncompress(y, sample_rate=SR, **settings_), x) < -120
    assert error_db(compressor(uncompress(x, sample_rate=SR, **settings_), sample_rate=SR, **settings_), x) < -120


@settings(max_examples=15, deadline=None)
@given(
    threshold=st.floats(-60, 0),
    ratio=st.floats(1, 20),
    attack=st.floats(0.1, 100),
    release=st.floats(10, 1000),
    knee=st.floats(0, 12),
)
def test_uncompress_over_the_ranges(threshold, ratio, attack, release, knee):
    x = drums(0.5)
    kw = dict(threshold_db=threshold, ratio=ratio, attack_ms=attack, release_ms=release, knee_db=knee)
    assert error_db(uncompress(compressor(x, sample_rate=SR, **kw), sample_rate=SR, **kw), x) < -100


def test_uncompress_batch_items_keep_their_own_settings():
    x = torch.cat([drums(0.5, seed=1), drums(0.5, seed=2)])
    kw = dict(threshold_db=torch.tensor([-30.0, -10.0]), ratio=torch.tensor([8.0, 2.0]), attack_ms=3.0, release_ms=80.0)
    y = compressor(x.float(), sample_rate=SR, **kw)
    z = uncompress(y, sample_rate=SR, **kw)
    assert z.dtype == torch.float32 and error_db(z.double(), x) < -60  # float32 rounding, not the method


DISTORTIONS = [
    dict(drive_db=24.0, tone_db=0.0, mix=0.5),
    dict(drive_db=12.0, tone_db=6.0, mix=0.3),
    dict(drive_db=12.0, tone_db=-6.0, mix=0.8),
    dict(drive_db=6.0, tone_db=12.0, mix=0.6),
    dict(drive_db=12.0, tone_db=-12.0, mix=1.0),
]


@pytest.mark.parametrize("shape", ["tanh", "soft_clip"])
@pytest.mark.parametrize("settings_", DISTORTIONS)
def test_undistort_inverts_the_distortion_exactly(shape, settings_):
    x = drums() * (0.1 if settings_["mix"] == 1.0 else 1.0)  # fully wet: below the shaper's saturation
    y = distortion(x, sample_rate=SR, shape=shape, **settings_)
    assert error_db(y, x) > -30
    assert error_db(undistort(y, sample_rate=SR, shape=shape, **settings_), x) < -100


def test_undistort_of_a_saturated_shaper_reaches_the_output():
    """Fully wet and clipped, the cut part is lost; what comes back is an input that gives the same output."""
    x = drums()
    kw = dict(drive_db=20.0, tone_db=0.0, mix=1.0, shape="soft_clip")
    y = distortion(x, sample_rate=SR, **kw)
    z = undistort(y, sample_rate=SR, **kw)
    assert error_db(z, x) > -40  # information was lost ...
    assert error_db(distortion(z, sample_rate=SR, **kw), y) < -100  # ... but z is an exact preimage


def test_undistort_refuses_a_shape_without_inverse():
    with pytest.raises(ParameterError, match="cannot be inverted"):
        undistort(drums(0.1), sample_rate=SR, drive_db=6.0, shape="hard_clip")


@pytest.mark.parametrize(
    "settings_",
    [dict(time_ms=250.0, feedback=0.3, mix=0.3), dict(time_ms=123.4, feedback=0.6, mix=0.5)],
)
def test_undelay_inverts_a_delay_whose_inverse_is_causal(settings_):
    x = drums()
    y = delay(x, sample_rate=SR, **settings_)
    assert error_db(undelay(y, sample_rate=SR, **settings_), x) < -60


def test_undelay_of_a_mostly_wet_delay_is_exact_but_for_the_last_repeat():
    """Its inverse runs backwards in time: it needs the repeats after the signal's end, which are cut."""
    x = drums(2.0)
    kw = dict(time_ms=100.0, feedback=0.5, mix=0.9)
    y = delay(x, sample_rate=SR, **kw)
    z = undelay(y, sample_rate=SR, **kw)
    keep = x.shape[-1] - int(0.2 * SR)
    assert error_db(z[..., :keep], x[..., :keep]) < -40


def test_dereverberate_brings_the_signal_closer_to_the_dry_one():
    """Only the reverb's late energy can be known from its settings (not its phase): a modest gain, never a loss."""
    x = drums(3.0)
    gains = []
    for kw in (
        dict(decay_s=[1.8, 1.5, 1.2, 0.8], predelay_ms=0.0, mix=0.3),
        dict(decay_s=[3.0, 2.5, 2.0, 1.5], predelay_ms=20.0, mix=0.5),
        dict(decay_s=[0.8, 0.6, 0.5, 0.4], predelay_ms=0.0, mix=0.7),
    ):
        y = reverb(x, sample_rate=SR, **kw)
        gains.append(si_sdr_db(dereverberate(y, sample_rate=SR, **kw), x) - si_sdr_db(y, x))
    assert min(gains) > 0.1 and sum(gains) / len(gains) > 0.5, gains


def test_dereverberate_without_reverb_is_the_identity():
    x = drums()
    assert error_db(dereverberate(x, sample_rate=SR, decay_s=[1.0] * 4, mix=0.0), x) < -100
