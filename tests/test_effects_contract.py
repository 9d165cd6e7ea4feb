"""One contract for every registered effect (the DDSP pattern): run over the whole registry."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gradmix.dsp import DISTORTION_SHAPES, SHAPES
from gradmix.dsp.biquad import GAIN_SHAPES
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
    assert {spec.unit for spec in effect.specs} <= {"dB", "Hz", "ms", "s", "ratio", ""}  # ParamSpec's documented units


@pytest.mark.parametrize("name,config", CONFIGS, ids=IDS)
def test_the_linear_flag_is_superposition(name, config):
    """``Effect.linear`` (what a console relies on to split a bus into each track's part) holds exactly
    where it is claimed: f(a x + b y) = a f(x) + b f(y) to -120 dB in float64, for random in-range
    parameters; an effect not flagged linear breaks it by more than -60 dB somewhere."""
    effect = create(name, **config)
    x, y = audio(effect, 3, 4410, torch.float64, seed=1), audio(effect, 3, 4410, torch.float64, seed=2) * 4
    worst = -np.inf
    for seed in range(3):
        u = controls(effect, 3, seed=seed, dtype=torch.float64)
        f = [effect.apply_normalized(v, u, sample_rate=SR)[0] for v in (x, y, 0.5 * x - 2.0 * y)]
        ref = 0.5 * f[0] - 2.0 * f[1]
        worst = max(worst, float(10 * torch.log10((f[2] - ref).square().sum() / ref.square().sum())))
    assert (worst < -120) if effect.linear else (worst > -60), (name, worst)


@pytest.mark.parametrize("name,config", CONFIGS, ids=IDS)
def test_the_envelope_flag_is_one_gain_for_all_channels(name, config):
    """``Effect.envelope`` (what fit relies on to hold the master's dynamics) holds exactly where it is claimed:
    the output is the input times one gain shared by the channels (the limiter's output is latency-compensated),
    so the cross products ``y_L x_R`` and ``y_R x_L`` agree to -120 dB; a stereo effect flagged neither envelope
    nor linear breaks it by more than -60 dB."""
    effect = create(name, **config)
    x = audio(effect, 3, 4410, torch.float64, seed=1)
    if x.shape[1] != 2:
        assert not effect.envelope
        return
    worst = -np.inf
    for seed in range(3):
        y = effect.apply_normalized(x, controls(effect, 3, seed=seed, dtype=torch.float64), sample_rate=SR)[0]
        a, b = y[:, 0] * x[:, 1], y[:, 1] * x[:, 0]
        worst = max(worst, float(10 * torch.log10((a - b).square().sum() / (a.square().sum() + 1e-300))))
    assert (worst < -120) if effect.envelope else (worst > -60 or effect.linear), (name, worst)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name,config", CONFIGS, ids=IDS)
def test_on_cuda_the_output_and_its_gradient_stay_on_cuda_and_equal_the_cpu(name, config):
    """The device half of the contract, which a CPU cannot test: CUDA in, CUDA out, as the CPU computes it
    (the bound of tests/test_linear_scan.py, whose recursions CUDA tensors take)."""
    effect = create(name, **config)
    x = audio(effect, 3, 4410, torch.float64)
    u = controls(effect, 3, dtype=torch.float64)
    cpu = effect.apply_normalized(x, u, sample_rate=SR)[0]
    gx, gu = x.cuda(), u.cuda().requires_grad_()
    y = effect.apply_normalized(gx, gu, sample_rate=SR)[0]
    y.square().sum().backward()
    assert y.device == gx.device and gu.grad.device == gx.device
    assert float((y.cpu() - cpu).abs().max()) <= 1e-6 * max(float(cpu.abs().max()), 1e-12)  # -120 dB


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
    defaults = effect.denormalize(effect.normalize(effect.defaults(), dtype=torch.float64))
    for k, v in effect.defaults().items():
        np.testing.assert_allclose(defaults[k][0].numpy(), np.asarray(v, dtype=np.float64), rtol=1e-9, atol=1e-12)


# Per effect: excerpt length and an affine map (scale, shift) of the random controls under which every control
# moves the output inside the excerpt — delay times and pre-delays shorter than it, a short reverb tail, a gate
# threshold within the signal's levels (else the gate stays open and every gradient is 0).
GRADCHECK_SETUP = {
    "delay": (2048, [0.1, 1, 1], 0.0),
    "reverb": (2048, [0.2] * 4 + [0.1, 1], 0.0),
    "gate": (512, [0.1, 1, 0.2, 1, 1], torch.tensor([0.85, 0, 0, 0, 0], dtype=torch.float64)),
}


def dead_controls(effect: Effect, grad: torch.Tensor) -> list[str]:
    """Controls whose gradient is 0 for every item, leaving out gains of EQ bands whose shape has none."""
    shapes = effect.config().get("shapes", [])
    gainless = {
        j
        for j, s in enumerate(effect.specs)
        if s.name == "gain_db"
        and shapes
        and shapes[sum(t.name == "gain_db" for t in effect.specs[:j])] not in GAIN_SHAPES
    }
    return [
        f"{s.name}[{j}]" for j, s in enumerate(effect.specs) if j not in gainless and not grad[:, j].abs().max() > 0
    ]


@pytest.mark.parametrize("name,config", CONFIGS, ids=IDS)
def test_gradcheck_through_controls(name, config):
    effect = create(name, **config)
    samples, scale, shift = GRADCHECK_SETUP.get(name, (64, 1.0, 0.0))
    x = audio(effect, 2, samples, torch.float64).requires_grad_()
    u = controls(effect, 2, seed=1, dtype=torch.float64, lo=0.05, hi=0.95)
    u = (u * torch.as_tensor(scale, dtype=torch.float64) + shift).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x, u: effect.apply_normalized(x, u, sample_rate=SR)[0], (x, u), fast_mode=True
    )
    y = effect.apply_normalized(x, u, sample_rate=SR)[0]
    (grad,) = torch.autograd.grad(
        (y * torch.randn(y.shape, generator=torch.Generator().manual_seed(0), dtype=y.dtype)).sum(), u
    )
    assert not dead_controls(effect, grad), "controls that do not move the output: the check above saw 0 = 0"


@pytest.mark.parametrize("name,config", CONFIGS, ids=IDS)
def test_gradients_finite_and_nonzero_full_length_float32(name, config):
    effect = create(name, **config)
    for silent in (False, True):
        x = audio(effect, 2, 2 * SR)
        if silent:
            x = torch.zeros_like(x)
        x.requires_grad_()
        u = controls(effect, 2, seed=2, lo=0.1, hi=0.9).requires_grad_()
        if name in GRADCHECK_SETUP:
            _, scale, shift = GRADCHECK_SETUP[name]
            u = (u.detach() * torch.as_tensor(scale) + torch.as_tensor(shift)).float().requires_grad_()
        y, _ = effect.apply_normalized(x, u, sample_rate=SR)
        (y.square().mean() + y.mean()).backward()
        assert torch.isfinite(y).all() and torch.isfinite(x.grad).all() and torch.isfinite(u.grad).all()
        if not silent:
            assert x.grad.abs().sum() > 0 and not dead_controls(effect, u.grad), name


@pytest.mark.parametrize("name,config", CONFIGS, ids=IDS)
def test_batch_equals_items(name, config):
    effect = create(name, **config)
    x = audio(effect, 3, 2000, torch.float64)
    u = controls(effect, 3, seed=3, dtype=torch.float64)
    y, _ = effect.apply_normalized(x, u, sample_rate=SR)
    for i in range(3):
        yi, _ = effect.apply_normalized(x[i : i + 1], u[i : i + 1], sample_rate=SR)
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
    x = {
        "silence": torch.zeros(1, channels, n),
        "full_scale_noise": torch.rand(1, channels, n, generator=gen) * 2 - 1,
        "dc": torch.ones(1, channels, n),
        "impulse": torch.nn.functional.pad(torch.ones(1, channels, 1), (0, n - 1)),
    }[kind]
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
    ref = torch.cat([x, x], 1) * (0.5**0.5) if effect.mono_in else x
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


EVERY_KERNEL = """
import torch
from numba.core import event
from gradmix.effects import REGISTRY, create
with event.install_recorder("numba:compile") as compiled:
    for name in sorted(REGISTRY):
        effect = create(name)
        for dtype in (torch.float32, torch.float64):
            for grad in (True, False):  # the commands run without gradients, on kernels of their own
                x = torch.randn(2, 1 if effect.mono_in else 2, 4410, dtype=dtype, requires_grad=grad)
                u = torch.rand(2, effect.num_params, dtype=dtype, requires_grad=grad)
                y = effect.apply_normalized(x, u, sample_rate=44100)[0]
                if grad:
                    y.square().sum().backward()
print(len(compiled.buffer))
"""


def test_every_compiled_kernel_loads_from_the_cache_in_a_new_process(tmp_path):
    """numba compiles a kernel once and caches it on disk; one it cannot cache (a closure over another compiled
    function) would be compiled again by every command, 1.5-3 s each time."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}  # an empty cache: the first run must compile
    runs = [
        subprocess.run([sys.executable, "-c", EVERY_KERNEL], capture_output=True, text=True, check=True, env=env)
        for _ in "ab"
    ]
    compiled = [int(r.stdout.split()[-1]) for r in runs]
    assert compiled[0] > 0 and compiled[1] == 0, compiled
