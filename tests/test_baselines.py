"""Baselines meet their definitions."""

from __future__ import annotations

import math

import pytest
import torch

from gradmix.baselines import BASELINES, baseline
from gradmix.dsp import integrated_loudness

SR = 44100


def song():
    gen = torch.Generator().manual_seed(0)
    n = 2 * SR
    t = torch.arange(n) / SR
    bass = 0.5 * torch.sin(2 * math.pi * 60 * t)[None]
    hats = torch.randn(1, n, generator=gen) * 0.02
    keys = torch.stack([torch.sin(2 * math.pi * 880 * t), torch.sin(2 * math.pi * 1320 * t)]) * 0.1
    silent = torch.zeros(1, n)
    return (
        ["bass", "hats", "keys", "silent"],
        [f"{k}.wav" for k in ("bass", "hats", "keys", "silent")],
        [bass, hats, keys, silent],
    )


def lufs(x):
    return float(integrated_loudness(x[None].double(), sample_rate=SR))


def test_plain_and_peak_normalised_sums():
    names, files, tracks = song()
    plain, _ = baseline("plain_sum", names, files, tracks, SR).render(tracks)
    expected = sum(t.repeat(2, 1) * 0.5**0.5 if t.shape[0] == 1 else t for t in tracks)
    assert torch.allclose(plain, expected, atol=1e-6)
    peak, _ = baseline("peak_normalized", names, files, tracks, SR).render(tracks)
    assert 20 * math.log10(peak.abs().max().item()) == pytest.approx(-1.0, abs=0.01)


def test_equal_loudness_levels_every_non_silent_track():
    names, files, tracks = song()
    setting = baseline("equal_loudness", names, files, tracks, SR)
    mix, strips = setting.render(tracks)
    for i, name in enumerate(names[:3]):
        strip = strips[i][:1] if tracks[i].shape[0] == 1 else strips[i]
        assert lufs(strip * (2**0.5 if tracks[i].shape[0] == 1 else 1)) == pytest.approx(-28.0, abs=0.5), name
    assert setting.tracks[3].chain[0].params["gain_db"] == 0.0  # silent: left alone
    assert lufs(mix) == pytest.approx(-14.0, abs=0.5)
    assert mix.abs().max().item() <= 10 ** (-1 / 20) + 1e-6


def test_rules_centre_the_low_tracks_and_spread_the_others():
    names, files, tracks = song()
    setting = baseline("rules", names, files, tracks, SR)
    pans = {t.name: next(e for e in t.chain if e.effect.type_name == "pan").params["pan"] for t in setting.tracks}
    assert pans["bass"] == 0.0
    assert pans["hats"] * pans["keys"] < 0  # brighter tracks alternate sides
    mix, _ = setting.render(tracks)
    assert lufs(mix) == pytest.approx(-14.0, abs=0.5)  # levelled like equal_loudness
    level = baseline("equal_loudness", names, files, tracks, SR)
    for i, name in enumerate(names[:3]):
        chain = {e.effect.type_name: e.params for e in setting.tracks[i].chain}
        faders = chain["gain"]["gain_db"] - level.tracks[i].chain[0].params["gain_db"]
        assert faders == pytest.approx(3.0 if name == "bass" else 0.0)  # the low track sits 3 dB above
        eq = chain["eq"]
        if name == "bass":
            assert eq["gain_db"][0] == 0.0
        else:  # a 100 Hz low cut on the others
            assert (eq["freq_hz"][0], eq["gain_db"][0], eq["q"][0]) == (100.0, -12.0, 0.707)
        comp = chain["compressor"]
        assert comp["ratio"] == 2.0 and comp["threshold_db"] == pytest.approx(lufs(tracks[i]) + 6.0)


def test_random_console_is_seeded_and_every_baseline_renders():
    names, files, tracks = song()
    a = baseline("random_console", names, files, tracks, SR, seed=3).to_json()
    assert a == baseline("random_console", names, files, tracks, SR, seed=3).to_json()
    assert a != baseline("random_console", names, files, tracks, SR, seed=4).to_json()
    for name in BASELINES:
        mix, _ = baseline(name, names, files, tracks, SR).render(tracks)
        assert torch.isfinite(mix).all()
