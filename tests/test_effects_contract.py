"""One contract for every registered effect (the DDSP pattern): run over the whole registry."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gradmix.dsp import DISTORTION_SHAPES, SHAPES
from gradmix.effects import REGISTRY, Effect, create, get_effect
from gradmix.errors import ParameterError, UnknownEffectError

SR = 44100

CONFIGS: list[tuple[str, dict]] = [(name, {}) for name in sorted(REGISTRY)]
CONFIGS += [("eq", {"shapes": list(SHAPES)}), ("graphic_eq", {"bands": 31})]
CONFIGS += [("distortion", {"shape": s}) for s in DISTORTION_SHAPES if s != "tanh"]
IDS = [f"{n}-{'-'.join(map(str, c.values()))}" if c else n for n, c in CONFIGS]


def audio(effect: Effect, batch: int, samples: int, dtype=torch.float32, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    channels = 1 if effect.mono_in else 2
    env = torch.linspace(0.01, 1.0, samples, dtype=dtype)
    return torch.randn(batch, channels, samples, generator=gen, dtype=dtype) * env * 0.3


def controls(effect: Effect, batch: int, seed: int = 0, dtype=torch.float32, lo=0.0, hi=1.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return lo + (hi - lo) * torch.rand(batch, effect.num_params, generator=gen, dtype=dtype)


@pytest.mark.parametrize("name,config", CONFIGS, ids=IDS)
def test_spec_names_equal_function_keywords(name, config):
    effect = create(name, **config)
    sig = inspect.signature(type(effect).function).parameters
    keywords = {k for k, p in sig.items() if p.kind is p.KEYWORD_ONLY} - {"sample_rate"} - set(effect.static)
    assert set(effect.names()) == keywords
    assert set(effect.config()) <= set(effect.static) | {"bands"}
    for spec in effect.specs:
        assert spec.unit is not None and spec.min < spec.max


@pytest.mark.parametrize("name,config", CONFIGS, ids=IDS)
def test_shape_dtype_kept_input_untouched_output_finite(name, config):
    effect = create(name, **config)
    for dtype in (torch.float32, torch.float64):
        x = audio(effect, 3, 4410, dtype)
        before = x.clone()
        y, params = effect.apply_normalized(x, controls(effect, 3, dtype=dtype), sample_rate=SR)
        assert torch.equal(x, before)
        expected = (3, 2, 4410)
        assert y.shape == expected and y.dtype == dtype and y.device == x.device
        assert torch.isfinite(y).all()
        assert set(params) == set(effect.names())


@pytest.mark.parametrize("name,config", CONFIGS, ids=IDS)
def test_normalise_round_trip_and_defaults_in_range(name, config):
    effect = create(name, **config)
    u = controls(effect, 5, dtype=torch.float64)
    back = effect.normalize(effect.denormalize(u), batch=5, dtype=torch.float64)
    np.testing.assert_allclose(back.numpy(), u.numpy(), atol=1e-12)
    d = effect.normalize(effect.defaults())
    assert bool(((d >= 0) & (d <= 1)).all())


@pytest.mark.parametrize("name,config", CONFIGS, ids=IDS)
def test_gradcheck_through_controls(name, config):
    effect = create(name, **config)
    x = audio(effect, 2, 64, torch.float64).requires_grad_()
    u = controls(effect, 2, seed=1, dtype=torch.float64, lo=0.05, hi=0.95).requires_grad_()
    if name == "reverb":  # keep the IR short: decay controls low
        u = (u * torch.tensor([0.2] * 4 + [1, 1], dtype=torch.float64)).detach().requires_grad_()
    assert torch.autograd.gradcheck(lambda x, u: effect.apply_normalized(x, u, sample_rate=SR)[0], (x, u),
                                    fast_mode=True)


@pytest.mark.parametrize("name,config", CONFIGS, ids=IDS)
def test_gradients_finite_and_nonzero_full_length_float32(name, config):
    effect = create(name, **config)
    for silent in (False, True):
        x = audio(effect, 2, 2 * SR)
        if silent:
            x = torch.zeros_like(x)
        x.requires_grad_()
        u = controls(effect, 2, seed=2, lo=0.1, hi=0.9).requires_grad_()
        y, _ = effect.apply_normalized(x, u, sample_rate=SR)
        (y.square().mean() + y.mean()).backward()
        assert torch.isfinite(y).all() and torch.isfinite(x.grad).all() and torch.isfinite(u.grad).all()
        if not silent:
            assert x.grad.abs().sum() > 0 and u.grad.abs().sum() > 0, name


@pytest.mark.parametrize("name,config", CONFIGS, ids=IDS)
def test_batch_equals_items(name, config):
    effect = create(name, **config)
    x = audio(effect, 3, 2000, torch.float64)
    u = controls(effect, 3, seed=3, dtype=torch.float64)
    y, _ = effect.apply_normalized(x, u, sample_rate=SR)
    for i in range(3):
        yi, _ = effect.apply_normalized(x[i:i + 1], u[i:i + 1], sample_rate=SR)
        err = (yi[0] - y[i]).abs().max().item() / max(y[i].abs().max().item(), 1e-30)
        assert err < 1e-9, (name, i, err)


@pytest.mark.parametrize("name,config", CONFIGS, ids=IDS)
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_edges_of_every_range_and_extreme_signals(name, config, data):
    effect = create(name, **config)
    edge = st.sampled_from([0.0, 1.0, 0.5])
    u = torch.tensor([[data.draw(edge) for _ in range(effect.num_params)]])
    kind = data.draw(st.sampled_from(["silence", "full_scale_noise", "dc", "impulse"]))
    channels = 1 if effect.mono_in else 2
    n = 3000
    gen = torch.Generator().manual_seed(0)
    x = {"silence": torch.zeros(1, channels, n), "full_scale_noise": torch.rand(1, channels, n, generator=gen) * 2 - 1,
         "dc": torch.ones(1, channels, n), "impulse": torch.nn.functional.pad(torch.ones(1, channels, 1), (0, n - 1))}[kind]
    x.requires_grad_()
    u.requires_grad_()
    y, _ = effect.apply_normalized(x, u, sample_rate=SR)
    y.square().sum().backward()
    assert torch.isfinite(y).all(), (name, u.tolist(), kind)
    assert torch.isfinite(x.grad).all() and torch.isfinite(u.grad).all(), (name, u.tolist(), kind)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_defaults_are_neutral_or_nearly(name):
    """A console built from defaults is a plain sum: every default leaves a quiet signal unchanged."""
    effect = create(name)
    x = audio(effect, 1, 4410, torch.float64) * 0.1
    y = effect(x, sample_rate=SR)
    ref = torch.cat([x, x], 1) * (0.5 ** 0.5) if effect.mono_in else x
    err = (y - ref).abs().max().item() / ref.abs().max().item()
    assert err < 1e-6, (name, err)


def test_registry_and_bad_input():
    with pytest.raises(UnknownEffectError, match="'fuzz' is not one of"):
        get_effect("fuzz")
    eq = create("eq")
    with pytest.raises(ParameterError, match="freq_hz\\[0\\]: normalised value 1.5 is outside 0..1"):
        eq.denormalize(torch.full((1, eq.num_params), 1.5))
    with pytest.raises(ParameterError, match="expected controls of shape"):
        eq.denormalize(torch.zeros(1, 3))
    with pytest.raises(ParameterError, match="unknown parameter"):
        create("gain")(torch.zeros(1, 1, 4), {"gain": 1.0}, sample_rate=SR)
    with pytest.raises(ParameterError, match="gain_db: nan is not finite"):
        create("gain")(torch.zeros(1, 1, 4), {"gain_db": float("nan")}, sample_rate=SR)
    with pytest.raises(ParameterError, match="ratio: 50 ratio is outside"):
        create("compressor").normalize({"ratio": 50.0})
