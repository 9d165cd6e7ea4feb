"""The console file as an engineer writes it: each compressor's makeup gain is its own gain reduction (the
sound unchanged, the level on the fader), and every value has four significant digits."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import error_db
from gradmix.console import ConsoleSetting, Entry, Layout, makeup_to_gain_reduction
from gradmix.console.setting import significant
from gradmix.dsp import integrated_loudness
from gradmix.effects import create

SR = 44100


def bursts(seed: int, seconds: float = 3.0, level: float = 0.3) -> torch.Tensor:
    """``(2, samples)`` float64: noise bursts with a fast attack and a slow decay, four a second."""
    g = torch.Generator().manual_seed(seed)
    n = int(seconds * SR)
    t = torch.arange(n, dtype=torch.float64) / SR
    envelope = torch.exp(-((t * 4) % 1.0) * 6)
    return level * envelope * torch.randn(2, n, generator=g, dtype=torch.float64)


def compressing_setting(tracks: int, threshold_db: float, makeup_db: float) -> ConsoleSetting:
    layout = Layout.default()
    controls = layout.random_controls(1, tracks, generator=torch.Generator().manual_seed(1))
    params = layout.denormalize(controls)
    setting = ConsoleSetting.from_params(
        layout, params, names=[f"t{i}" for i in range(tracks)], files=[None] * tracks, sample_rate=SR
    )
    for track in setting.tracks:
        comp = next(e for e in track.chain if e.effect.type_name == "compressor")
        comp.params.update(threshold_db=threshold_db, ratio=4.0, makeup_db=makeup_db, attack_ms=5.0)
        next(e for e in track.chain if e.effect.type_name == "eq").params["gain_db"] = [3.0, -2.0, 0.0, 2.0, -3.0, 1.0]
        track.chain[0].params["gain_db"] = 0.0
    return setting


def strip_loudness(track, audio: torch.Tensor, bypass_compressor: bool) -> float:
    """Integrated loudness (LUFS) of the track's strip up to its pan, the compressor bypassed or not."""
    x = audio[None]
    for e in track.chain:
        if e.effect.type_name == "pan":
            break
        if not (bypass_compressor and e.effect.type_name == "compressor"):
            x = e.effect(x, e.params, sample_rate=SR)
    return float(integrated_loudness(x, sample_rate=SR)[0])


def test_makeup_becomes_the_gain_reduction_and_the_mix_does_not_change():
    setting = compressing_setting(3, threshold_db=-30.0, makeup_db=9.0)
    audio = [bursts(k, level=0.04 * 1.6**k) for k in range(3)]
    before, _ = setting.render(audio)
    faders = [t.chain[0].params["gain_db"] for t in setting.tracks]
    makeup_to_gain_reduction(setting, audio)
    after, _ = setting.render(audio)
    assert error_db(after.numpy(), before.numpy()) < -120
    makeups = []
    for track, x, fader in zip(setting.tracks, audio, faders):
        comp = next(e for e in track.chain if e.effect.type_name == "compressor").params
        makeups.append(comp["makeup_db"])
        assert 1.0 < comp["makeup_db"] < 9.0  # the compressor works, and less than the 9 dB it was given
        assert track.chain[0].params["gain_db"] - fader == pytest.approx(9.0 - comp["makeup_db"])
        assert comp["threshold_db"] == pytest.approx(-30.0 + 9.0 - comp["makeup_db"])
        # the engineer's meaning: bypassing the compressor keeps the track's loudness
        assert strip_loudness(track, x, True) == pytest.approx(strip_loudness(track, x, False), abs=1e-6)
    assert max(makeups) - min(makeups) > 1.0  # louder tracks are compressed harder: each its own makeup


def test_the_move_stays_within_the_threshold_and_makeup_ranges():
    setting = compressing_setting(1, threshold_db=-2.0, makeup_db=9.0)
    audio = [bursts(3, level=0.05)]
    before, _ = setting.render(audio)
    makeup_to_gain_reduction(setting, audio)
    comp = next(e for e in setting.tracks[0].chain if e.effect.type_name == "compressor").params
    assert comp["threshold_db"] == 0.0 and comp["makeup_db"] == pytest.approx(7.0)
    assert error_db(setting.render(audio)[0].numpy(), before.numpy()) < -120


def test_strips_it_cannot_move_exactly_and_silence_are_left_alone():
    setting = compressing_setting(3, threshold_db=-30.0, makeup_db=9.0)
    setting.tracks[0].chain.insert(1, Entry(create("distortion"), create("distortion").defaults()))
    audio = [bursts(0), torch.zeros(2, 3 * SR, dtype=torch.float64), bursts(2)]
    old = [[dict(e.params) for e in t.chain] for t in setting.tracks]
    makeup_to_gain_reduction(setting, [audio[0], audio[1], None])
    assert [[e.params for e in t.chain] for t in setting.tracks] == old


def test_values_are_rounded_to_four_significant_digits():
    assert significant(30.401487350463867, 4) == 30.4 and significant(4861.48193359375, 4) == 4861.0
    assert significant(-0.33876895904541016, 4) == -0.3388 and significant(0.0, 4) == 0.0
    assert significant([1.23456, {"a": 98765.4}], 4) == [1.235, {"a": 98770.0}]
    assert significant(7, 4) == 7 and significant(-math.inf, 4) == -math.inf and significant("x", 4) == "x"
    layout = Layout.default()
    params = layout.denormalize(layout.random_controls(1, 2, generator=torch.Generator().manual_seed(4)))
    setting = ConsoleSetting.from_params(layout, params, names=["a", "b"], files=[None, None], sample_rate=SR)
    for track in setting.tracks:  # a delay time moved by a fraction of a sample changes its interpolation's top
        track.sends.pop("delay", None)
    audio = [bursts(5), bursts(6)]
    exact, _ = setting.render(audio)
    seeds = [e.params["seed"] for b in setting.buses for e in b.chain if "seed" in e.params]
    setting.round_values()
    assert seeds == [e.params["seed"] for b in setting.buses for e in b.chain if "seed" in e.params]

    def floats(tree):
        if isinstance(tree, dict):
            return [f for v in tree.values() for f in floats(v)]
        if isinstance(tree, list):
            return [f for v in tree for f in floats(v)]
        return [tree] if isinstance(tree, float) else []

    values = floats(setting.to_json())
    assert len(values) > 50 and all(float(f"{v:.4g}") == v for v in values)
    # a change no one hears, band by band
    rounded, _ = setting.render(audio)
    assert (octave_bands_db(rounded) - octave_bands_db(exact)).abs().max() < 0.05


def octave_bands_db(x: torch.Tensor) -> torch.Tensor:
    """Energy (dB) of ``(channels, samples)`` in the ten octave bands from 31.5 Hz to 16 kHz."""
    power = torch.fft.rfft(x).abs().square().sum(0)
    freqs = torch.fft.rfftfreq(x.shape[-1], 1 / SR)
    centres = 31.25 * 2.0 ** torch.arange(10)
    return torch.stack([10 * torch.log10(power[(freqs >= c / 2**0.5) & (freqs < c * 2**0.5)].sum()) for c in centres])
