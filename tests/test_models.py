"""The mixing network, its losses, the engineer-like random consoles and model files."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from conftest import require
from gradmix.console import Layout
from gradmix.dsp import integrated_loudness
from gradmix.errors import GradmixError
from gradmix.models import MixController, MixLoss, ModelConfig, normalization_db
from gradmix.models.checkpoint import load_model, save_model
from gradmix.models.controller import DESCRIPTORS, MAX_NORM_DB, TRACK_LUFS, TrackHead, mel_filterbank
from gradmix.models.engineer import engineer_controls
from gradmix.models.losses import LossWeights

SR = 44100
TINY = ModelConfig(mels=32, channels=(4, 8), dim=16, heads=2, layers=1, ff=32)


def tracks_batch(batch=2, n=4, seconds=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * SR)) / SR
    freqs = torch.rand(batch, n, 1, 1, generator=g) * 2000 + 60
    x = torch.sin(2 * math.pi * freqs * t) * (0.05 + 0.3 * torch.rand(batch, n, 1, 1, generator=g))
    x = x + 0.02 * torch.randn(batch, n, 2, t.numel(), generator=g)
    return x.expand(batch, n, 2, -1).contiguous()


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = MixController(Layout.default(), TINY)
    with torch.no_grad():  # move the heads off their neutral start so that tests see track-dependent output
        for head in (m.strip_head, m.master_head):
            head[-1].weight.normal_(0, 0.5)
    return m.eval()


def test_permuting_tracks_permutes_strips_and_keeps_the_mix(model):
    x = tracks_batch()
    perm = torch.tensor([2, 0, 3, 1])
    with torch.no_grad():
        c = model(x, sample_rate=SR)
        cp = model(x[:, perm], sample_rate=SR)
        assert torch.allclose(cp.strip, c.strip[:, perm], atol=1e-5)
        assert torch.allclose(cp.sends, c.sends[:, perm], atol=1e-5)
        assert torch.allclose(cp.master, c.master, atol=1e-5) and torch.allclose(cp.buses, c.buses, atol=1e-5)
        assert c.strip.std(1).mean() > 1e-3  # tracks really get different settings
        mix, _ = model.layout.render_normalized(x, c, sample_rate=SR)
        mixp, _ = model.layout.render_normalized(x[:, perm], cp, sample_rate=SR)
    assert (mix - mixp).abs().max() < 1e-4 * mix.abs().max()


def test_padding_tracks_change_nothing(model):
    x = tracks_batch(batch=1, n=3)
    padded = torch.cat([x, torch.randn(1, 2, *x.shape[2:])], 1)  # padding holds garbage, the mask hides it
    mask = torch.tensor([[True, True, True, False, False]])
    with torch.no_grad():
        c = model(x, sample_rate=SR)
        cp = model(padded, sample_rate=SR, mask=mask)
        mix, _ = model.layout.render_normalized(x, c, sample_rate=SR)
        mixp, _ = model.layout.render_normalized(padded, cp, sample_rate=SR, mask=mask)
    assert torch.allclose(cp.strip[:, :3], c.strip, atol=1e-5) and torch.allclose(cp.master, c.master, atol=1e-5)
    assert (mix - mixp).abs().max() < 1e-4 * mix.abs().max()


@pytest.mark.parametrize("n", [1, 64])
def test_any_number_of_tracks(model, n):
    x = tracks_batch(batch=1, n=n, seconds=0.5)
    with torch.no_grad():
        c = model(x, sample_rate=SR)
    assert c.strip.shape == (1, n, model.layout.num_strip_params) and torch.isfinite(c.strip).all()
    assert c.sends.shape == (1, n, len(model.layout.buses))


def test_untrained_model_starts_at_the_neutral_console():
    layout = Layout.default()
    m = MixController(layout, TINY)
    with torch.no_grad():
        p = layout.denormalize(m(tracks_batch(), sample_rate=SR))
    assert p.strip[0]["gain_db"].abs().max() < 1.0  # faders near 0 dB
    assert p.strip[1]["gain_db"].abs().max() < 0.5  # EQ bands near flat
    assert p.strip[3]["pan"].abs().max() < 0.05  # centred
    assert p.sends_db.max() < -55  # sends off
    assert p.strip[2]["ratio"].max() < 1.2  # compressors nearly off


def test_model_size_of_the_default_config():
    m = MixController(Layout.default(), ModelConfig())
    assert m.num_parameters <= 5_000_000


def test_normalization_brings_tracks_to_the_target_loudness():
    x = tracks_batch(batch=1, n=3)
    x[0, 1] *= 0.1
    x[0, 2] = 0
    g = normalization_db(x, None, SR)
    assert g[0, 2] == 0  # silent: left alone
    y = x * torch.pow(10.0, g / 20)[..., None, None]
    lufs = integrated_loudness(y[0, :2].double(), sample_rate=SR)
    assert torch.allclose(lufs, torch.full_like(lufs, TRACK_LUFS), atol=0.05)
    assert float(normalization_db(x[:, :1] * 10 ** (-40 / 20), None, SR)) == pytest.approx(MAX_NORM_DB)  # capped
    assert float(normalization_db(x[:, :1] * 10 ** (40 / 20), None, SR)) == pytest.approx(-MAX_NORM_DB)


def test_mel_filterbank_peaks_at_band_centres_and_has_unit_area():
    fb = mel_filterbank(SR, 2048, 32)
    assert torch.allclose(fb.sum(-1), torch.ones(32), atol=1e-5)
    peaks = fb.argmax(-1)
    assert (peaks[1:] >= peaks[:-1]).all() and peaks[0] < peaks[-1]


def test_loss_is_zero_for_identical_mixes_and_grows_with_difference():
    require("auraloss")
    loss = MixLoss(SR)
    x = tracks_batch(batch=1, n=2).sum(1)
    zero, terms = loss(x, x)
    assert float(zero) == pytest.approx(0.0, abs=1e-6)
    small, _ = loss(x * 10 ** (1 / 20), x)
    big, big_terms = loss(x * 10 ** (6 / 20), x)
    assert 0 < float(small) < float(big)
    assert float(big_terms["loudness"]) == pytest.approx(0.6, abs=0.02)  # |6 LU| / 10
    assert float(big_terms["balance"]) == pytest.approx(0.0, abs=1e-4)
    shifted = x * torch.tensor([1.0, 10 ** (3 / 20)])[None, :, None]  # right channel 3 dB up
    assert float(loss(shifted, x)[1]["balance"]) == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("case", ["silent_target", "silent_both", "centred_mono"])
def test_loss_gradients_are_finite(case):
    require("auraloss")
    loss = MixLoss(SR)
    x = tracks_batch(batch=2, n=2).sum(1)
    if case == "centred_mono":
        x = x[:, :1].expand(-1, 2, -1).contiguous()
    est = (torch.zeros_like(x) if case == "silent_both" else x).requires_grad_()
    target = torch.zeros_like(x) if case != "centred_mono" else x * 0.5
    value, _ = loss(est, target)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(est.grad).all()


def test_training_steps_reduce_the_loss():
    """End to end through the console: a few optimiser steps on one batch lower the loss."""
    require("auraloss")
    torch.manual_seed(0)
    layout = Layout.default()
    m = MixController(layout, TINY)
    x = tracks_batch(batch=1, n=3, seconds=1.0)
    target, _ = layout.render_normalized(
        x, engineer_controls(layout, 1, 3, torch.Generator().manual_seed(1)), sample_rate=SR
    )
    loss = MixLoss(SR, LossWeights(stft=1.0, stereo=1.0, loudness=1.0, features=0.0))
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    values = []
    for _ in range(8):
        mix, _ = layout.render_normalized(x, m(x, sample_rate=SR), sample_rate=SR)
        value, _ = loss(mix, target)
        opt.zero_grad()
        value.backward()
        assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)
        opt.step()
        values.append(float(value.detach()))
    assert values[-1] < 0.8 * values[0]


def test_engineer_controls_are_valid_and_repeatable():
    layout = Layout.default()
    a = engineer_controls(layout, 4, 50, torch.Generator().manual_seed(3))
    b = engineer_controls(layout, 4, 50, torch.Generator().manual_seed(3))
    for name in ("strip", "sends", "buses", "master"):
        u = getattr(a, name)
        assert torch.equal(u, getattr(b, name)) and ((u >= 0) & (u <= 1)).all()
    p = layout.denormalize(a)
    reverb_on = (p.sends_db[..., 0] > -59).float().mean()
    assert 0.45 < float(reverb_on) < 0.75  # 60 % of tracks send to the reverb
    gains = p.strip[0]["gain_db"]
    assert gains.min() >= -12 and gains.max() <= 9 and 2.5 < float(gains.std()) < 5
    assert (p.master[2]["ceiling_db"] <= -0.3).all()


def test_model_file_round_trip_and_bad_files(tmp_path, model):
    path = save_model(tmp_path / "m.pt", model, sample_rate=SR, info={"steps": 0})
    loaded, meta = load_model(path)
    assert meta["sample_rate"] == SR and meta["info"] == {"steps": 0}
    x = tracks_batch()
    with torch.no_grad():
        a, b = model(x, sample_rate=SR), loaded(x, sample_rate=SR)
    assert (a.strip - b.strip).abs().max() < 2e-2  # weights are stored as float16
    (tmp_path / "bad.pt").write_bytes(b"not a model")
    with pytest.raises(GradmixError, match="not a gradmix model file"):
        load_model(tmp_path / "bad.pt")
    with pytest.raises(GradmixError, match="no such model file"):
        load_model(tmp_path / "missing.pt")


def test_direct_style_path_starts_silent_and_moves_every_control_with_z(tmp_path):
    torch.manual_seed(0)
    cfg = ModelConfig(mels=32, channels=(4, 8), dim=16, heads=2, layers=1, ff=32, style_dim=3, style_direct=True)
    m = MixController(Layout.default(), cfg)
    emb, z = torch.randn(1, 4, 16), torch.randn(1, 3)
    with_direct = m.decide(emb, None, z)
    m.cfg.style_direct = False  # the same weights without the direct path
    without = m.decide(emb, None, z)
    m.cfg.style_direct = True
    # silent at the start: for any z the direct path adds nothing to what the transformer decides
    assert torch.equal(with_direct.strip, without.strip) and torch.equal(with_direct.master, without.master)
    a = m.decide(emb, None, torch.zeros(1, 3))
    with torch.no_grad():
        m.style_strip.weight.normal_()
        m.style_master.weight.normal_()
    c = m.decide(emb, None, torch.ones(1, 3))
    assert (c.strip - a.strip).abs().min() > 0 and (c.master - a.master).abs().min() > 0
    assert torch.allclose(m.decide(emb, None, torch.zeros(1, 3)).strip, a.strip)  # z = 0: no offset
    loaded, _ = load_model(save_model(tmp_path / "m.pt", m, sample_rate=SR, info={}))
    assert loaded.cfg.style_direct and torch.allclose(
        loaded.decide(emb, None, torch.ones(1, 3)).strip, c.strip, atol=2e-3
    )


def _example_tracks(names, seconds=6.0):
    from gradmix.example import example_multitrack

    stems = example_multitrack(seconds=seconds, sample_rate=SR)
    x = torch.stack([stems[n].expand(2, -1) if stems[n].shape[0] == 1 else stems[n] for n in names])[None]
    return x * torch.pow(10.0, normalization_db(x, None, SR) / 20)[..., None, None]


def test_engineer_habits_treat_a_kick_a_hihat_a_bass_and_chords_as_an_engineer_would():
    names = ["kick", "hats", "bass", "chords"]
    x = _example_tracks(names)
    layout = Layout.default()
    p = layout.denormalize(
        engineer_controls(layout, 1, 4, torch.Generator().manual_seed(0), audio=x, mask=None, sample_rate=SR)
    )
    gain, eq, comp, pan = ({k: v[0] for k, v in s.items()} for s in p.strip)
    kick, hats, bass, chords = range(4)
    # the moves are relative to the song's other tracks, at EQ_SCALE (0.5) of the table's:
    # the low shelf cuts under the hi-hat's content, not under the kick's or the bass's
    assert eq["gain_db"][hats, 0] <= -3 and eq["freq_hz"][hats, 0] >= 250
    assert eq["gain_db"][kick, 0] - eq["gain_db"][hats, 0] >= 2.5
    assert eq["gain_db"][bass, 0] - eq["gain_db"][hats, 0] >= 2.5
    # the bass loses its top, the hi-hat keeps (or gains) its air
    assert eq["gain_db"][hats, 5] - eq["gain_db"][bass, 5] >= 2
    # the kick keeps its click and loses its box (the 440 Hz peak), where the bass line is rolled off
    assert eq["gain_db"][kick, 5] - eq["gain_db"][bass, 5] >= 2
    assert eq["gain_db"][kick, 2] <= eq["gain_db"][bass, 2] - 1.5
    assert eq["gain_db"][kick, 4] >= eq["gain_db"][bass, 4] + 1
    # the moves carve tracks against each other and leave the song's power where they act as it was: at each
    # peak's frequency, the tracks' powers there weighted by their gains sum to what they summed to
    from gradmix.metrics.tracks import OCTAVE_BAND_CENTRES_HZ, octave_band_powers

    powers = octave_band_powers(x[0].double(), sample_rate=SR)  # (tracks, octaves)
    octaves = torch.log2(torch.tensor(OCTAVE_BAND_CENTRES_HZ, dtype=torch.float64))
    for band in (1, 2, 3, 4):
        at = float(torch.log2(eq["freq_hz"][0, band].double()))
        k = int((octaves <= at).sum()) - 1
        w = (at - float(octaves[k])) / float(octaves[k + 1] - octaves[k])
        power = powers[:, k] * (1 - w) + powers[:, k + 1] * w
        kept = (power * torch.pow(10.0, eq["gain_db"][:, band].double() / 10)).sum() / power.sum()
        assert abs(10 * math.log10(float(kept))) < 0.01, band
    # low tracks are centred and dry; the others are placed on both sides (at PAN_SCALE, 0.25, of the table's
    # width) and sent to the reverb
    assert abs(float(pan["pan"][kick])) < 0.05 and abs(float(pan["pan"][bass])) < 0.05
    assert float(pan["pan"][hats]) * float(pan["pan"][chords]) < 0 and abs(float(pan["pan"][hats])) > 0.07
    sends = p.sends_db[0, :, 0]
    assert sends[kick] == -60 and sends[bass] == -60 and sends[chords] > -40
    # a drum is compressed harder, with a slower attack, than a sustained part
    assert comp["ratio"][kick] > comp["ratio"][chords] + 0.5 and comp["attack_ms"][kick] > comp["attack_ms"][chords]


def test_engineer_habits_are_repeatable_and_share_a_songs_taste():
    x = _example_tracks(["kick", "hats", "bass", "chords"]).repeat(3, 1, 1, 1)
    layout = Layout.default()
    a = engineer_controls(layout, 3, 4, torch.Generator().manual_seed(5), audio=x, sample_rate=SR)
    b = engineer_controls(layout, 3, 4, torch.Generator().manual_seed(5), audio=x, sample_rate=SR)
    assert torch.equal(a.strip, b.strip) and torch.equal(a.sends, b.sends)
    assert ((a.strip >= 0) & (a.strip <= 1)).all() and ((a.sends >= 0) & (a.sends <= 1)).all()
    p = layout.denormalize(a)
    pan = p.strip[3]["pan"]
    # one song's width and reverb level are shared by its tracks and differ between songs (the song's taste)
    assert (
        float((pan[0, 1].abs() - pan[1, 1].abs()).abs()) > 0.02
        or float((pan[0, 3].abs() - pan[2, 3].abs()).abs()) > 0.02
    )
    with pytest.raises(ValueError, match="audio must be"):
        engineer_controls(layout, 2, 4, audio=x, sample_rate=SR)


def test_carving_adds_the_habits_eq_moves_to_the_tone_in_db_and_keeps_the_rest():
    from gradmix.models.engineer import carve_on, eq_gain_columns

    layout = Layout.default()
    cols = eq_gain_columns(layout)
    habits = engineer_controls(layout, 2, 3, torch.Generator().manual_seed(3))
    tone = engineer_controls(layout, 2, 3, torch.Generator().manual_seed(4))
    carved = carve_on(habits, tone, layout)
    p, h, t = (layout.denormalize(c).strip[1] for c in (carved, habits, tone))
    assert p["gain_db"].shape == (2, 3, 6) and len(cols) == 6
    assert torch.allclose(p["gain_db"], (h["gain_db"] + t["gain_db"]).clamp(-12.0, 12.0), atol=1e-4)
    for k in ("freq_hz", "q"):
        assert torch.equal(p[k], h[k])  # the habits' own bands
    others = [c for c in range(layout.num_strip_params) if c not in cols]
    assert torch.equal(carved.strip[..., others], habits.strip[..., others])
    assert torch.equal(carved.sends, habits.sends) and torch.equal(carved.master, habits.master)

    def eq_at(c, u):
        strip = c.strip.clone()
        strip[..., cols] = u
        return dataclasses.replace(c, strip=strip)

    # a flat tone (0 dB) leaves the habits as they are; a +12 dB one pins every band at the range's top
    assert torch.allclose(carve_on(habits, eq_at(tone, 0.5), layout).strip, habits.strip, atol=1e-6)
    top = layout.denormalize(carve_on(eq_at(habits, 0.75), eq_at(tone, 1.0), layout)).strip[1]["gain_db"]
    assert torch.allclose(top, torch.full_like(top, 12.0))


def test_control_loss_counts_only_the_weighted_tracks_and_is_zero_on_a_match():
    from gradmix.models.losses import control_loss

    layout = Layout.default()
    a = engineer_controls(layout, 2, 3, torch.Generator().manual_seed(1))
    b = engineer_controls(layout, 2, 3, torch.Generator().manual_seed(2))
    ones = torch.ones(2, 3)
    assert float(control_loss(a, a, ones)) == 0.0
    assert float(control_loss(a, b, ones)) > 0.01
    only_first = torch.tensor([[1.0, 0, 0], [0, 0, 0]])
    mixed = dataclasses.replace(
        a, strip=torch.cat([a.strip[:, :1], b.strip[:, 1:]], 1), sends=torch.cat([a.sends[:, :1], b.sends[:, 1:]], 1)
    )
    assert float(control_loss(mixed, a, only_first)) == 0.0 and float(control_loss(mixed, a, ones)) > 0.0
    assert float(control_loss(a, b, torch.zeros(2, 3))) == 0.0
    assert float(control_loss(dataclasses.replace(a, sends=b.sends), a, ones)) > 0.0  # the sends count too


def test_track_contrast_ignores_what_tracks_share_and_reaches_the_strip_head():
    from gradmix.models.controller import track_contrast

    gen = torch.Generator().manual_seed(0)
    tokens = torch.randn(2, 5, 16, generator=gen, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)
    c = track_contrast(tokens, mask)
    shared = torch.randn(2, 1, 16, generator=gen, dtype=torch.float64) * 1000  # e.g. a large style offset
    assert torch.allclose(track_contrast(tokens + shared, mask), c, atol=1e-9)
    assert c[1, 3:].abs().max() == 0 and float(c[1, :3].mean((0, 1)).abs().max()) < 1e-12  # padding out, song mean 0
    assert float(c[0].square().mean().sqrt()) == pytest.approx(1.0, abs=0.01)
    assert track_contrast(tokens[:, :1].expand(-1, 4, -1)).abs().max() < 1e-6  # identical tracks: no contrast
    perm = torch.tensor([4, 2, 0, 1, 3])
    assert torch.allclose(track_contrast(tokens[:1, perm]), track_contrast(tokens[:1])[:, perm])
    torch.manual_seed(0)
    cfg = ModelConfig(mels=32, channels=(4, 8), dim=16, heads=2, layers=1, ff=32, style_dim=3, track_contrast=True)
    m = MixController(Layout.default(), cfg)
    with torch.no_grad():
        m.strip_head[-1].weight.normal_()
    emb = torch.randn(1, 4, 16, generator=gen)
    z = torch.randn(1, 3, generator=gen) * 100  # a large style: the tracks still get their own settings
    out = m.decide(emb, None, z).strip
    assert float(out.std(1).mean()) > 0.05


def test_the_engineer_switch_has_its_own_heads_defaults_to_the_engineer_and_is_saved(tmp_path):
    torch.manual_seed(0)
    cfg = ModelConfig(mels=32, channels=(4, 8), dim=16, heads=2, layers=1, ff=32, track_contrast=True)
    switched = MixController(Layout.default(), dataclasses.replace(cfg, engineer_switch=True))
    emb, both = torch.randn(2, 4, 16), torch.tensor([0.0, 1.0])
    start = switched.decide(emb, None, None, both)
    # the engineer's heads start as copies of the others
    assert torch.allclose(start.strip, switched.decide(emb, None, None, torch.zeros(2)).strip)
    with torch.no_grad():
        for p in (*switched.engineer_strip_head.parameters(), *switched.engineer_master_head.parameters()):
            p.add_(0.1 * torch.randn_like(p))
    authors, engineer = (
        switched.decide(emb, None, None, torch.zeros(2)),
        switched.decide(emb, None, None, torch.ones(2)),
    )
    mixed = switched.decide(emb, None, None, both)  # per song: the first the authors', the second the engineer's
    assert torch.equal(mixed.strip[0], authors.strip[0]) and torch.equal(mixed.strip[1], engineer.strip[1])
    assert torch.equal(mixed.master[0], authors.master[0]) and torch.equal(mixed.master[1], engineer.master[1])
    assert (authors.strip - engineer.strip).abs().amax() > 0 and (authors.master - engineer.master).abs().amax() > 0
    assert torch.equal(switched.decide(emb).strip, engineer.strip)  # gradmix mix asks for the engineer's
    loaded, _ = load_model(save_model(tmp_path / "m.pt", switched, sample_rate=SR, info={}))
    assert loaded.cfg.engineer_switch and torch.allclose(
        loaded.decide(emb, None, None, torch.ones(2)).strip, engineer.strip, atol=2e-3
    )
    # models without the switch (every one trained before it) load with it off and ignore the argument
    assert not ModelConfig.from_dict({k: v for k, v in cfg.to_dict().items() if k != "engineer_switch"}).engineer_switch
    plain = MixController(Layout.default(), cfg)
    assert torch.equal(plain.decide(emb, None, None, torch.zeros(1)).strip, plain.decide(emb).strip)


def test_track_descriptors_tell_a_kick_from_a_bass_and_reach_the_token():
    """The descriptors an engineer-like console reads: a kick (decaying 55 Hz bursts) and a bass (a steady
    55 Hz tone) share their octave bands but not their crest factor; a token with descriptors changes with
    them, one without does not see them."""
    from gradmix.models.controller import TrackEncoder, track_descriptors

    t = torch.arange(2 * SR) / SR
    bass = 0.1 * torch.sin(2 * math.pi * 55 * t)
    kick = bass * torch.exp(-(t % 0.5) / 0.05)
    d = track_descriptors(torch.stack([kick, bass])[:, None].repeat(1, 2, 1), SR)
    assert d.shape == (2, 11)
    assert int(d[0, :10].argmax()) == int(d[1, :10].argmax()) == 1  # the 62.5 Hz octave
    assert d[0, 10] * 10 > d[1, 10] * 10 + 6  # crest factor (dB): bursts against a steady tone
    cfg = ModelConfig(mels=32, channels=(4, 8), dim=16, heads=2, layers=1, ff=32)
    torch.manual_seed(0)
    with_d = TrackEncoder(dataclasses.replace(cfg, track_descriptors=True))
    assert with_d.proj.in_features == TrackEncoder(cfg).proj.in_features + 11
    x = torch.stack([kick, bass])[:, None].repeat(1, 2, 1)
    with torch.no_grad():
        base = with_d(x, SR)
        with_d.proj.weight[:, -11:] = 0  # the descriptors' columns are what differs
        assert (base - with_d(x, SR)).abs().amax() > 0


def test_the_track_head_starts_silent_and_reads_each_tracks_own_descriptors():
    """With ``track_head`` the strip logits get a per-track term from each track's contrast and descriptors: zero
    until its last layer moves, then different for a kick and a hi-hat even where their tokens agree."""
    torch.manual_seed(0)
    cfg = ModelConfig(mels=32, channels=(4, 8), dim=16, heads=2, layers=1, ff=32, track_head=True)
    m = MixController(Layout.default(), cfg)
    x = _example_tracks(["kick", "hats"], seconds=2.0)
    emb = m.encoder(x[0], SR)[None]
    assert emb.shape == (1, 2, 16 + 11)
    described = emb[..., 16:]
    assert (described[0, 0] - described[0, 1]).abs().max() > 0.5  # a kick and a hi-hat differ in band shares
    plain = MixController(Layout.default(), dataclasses.replace(cfg, track_head=False))
    plain.load_state_dict({k: v for k, v in m.state_dict().items() if not k.startswith("track_head")})
    assert torch.equal(m.decide(emb).strip, plain.decide(emb[..., :16]).strip)
    same = torch.cat([emb[..., :16].mean(1, keepdim=True).expand(1, 2, 16), described], -1)  # tokens alike
    with torch.no_grad():
        m.track_head[-1].weight.normal_()
    out = m.decide(same).strip
    assert (out[0, 0] - out[0, 1]).abs().max() > 0.05


def test_the_loudness_an_eq_move_adds_is_what_the_rendered_track_gains():
    """``eq_loudness_change_db`` from octave-band shares against the K-weighted level of the track rendered
    through both EQs (the octave approximation within 0.3 dB); no move, 0 dB."""
    from gradmix.dsp.eq import parametric_eq
    from gradmix.metrics.tracks import k_weighted_level_db
    from gradmix.models.controller import track_descriptors
    from gradmix.models.engineer import eq_loudness_change_db

    sr, layout = 44100, Layout.default()
    g = torch.Generator().manual_seed(5)
    white = torch.randn(1, 2, sr, generator=g, dtype=torch.float64) * 0.1
    t = torch.arange(sr, dtype=torch.float64) / sr
    low = (0.3 * torch.sin(2 * math.pi * 80 * t) + 0.05 * torch.sin(2 * math.pi * 3000 * t)).expand(1, 2, -1)
    bright = white - torch.nn.functional.pad(white[..., :-1], (1, 0))  # a first difference: a rising spectrum
    tracks = torch.cat([white, low, bright])[None]  # (1, 3, 2, samples)
    shares_db = track_descriptors(tracks[0].float(), sr)[:, :10][None] * 10
    before = engineer_controls(layout, 1, 3, torch.Generator().manual_seed(6))
    after = engineer_controls(layout, 1, 3, torch.Generator().manual_seed(7))
    predicted = eq_loudness_change_db(layout, before.strip, after.strip, shares_db, sr)
    assert predicted.shape == (1, 3)
    slot = layout.strip[1]
    levels = []
    for c in (before, after):
        p = slot.denormalize(c.strip[0, :, 1:19].double())
        y = torch.stack(
            [
                parametric_eq(
                    tracks[0, k : k + 1],
                    sample_rate=sr,
                    shapes=slot.effect.shapes,
                    **{n: p[n][k] for n in ("freq_hz", "gain_db", "q")},
                )[0]
                for k in range(3)
            ]
        )
        levels.append(k_weighted_level_db(y, sample_rate=sr))
    measured = levels[1] - levels[0]
    assert measured.abs().max() > 1.0  # the moves change the loudness, so the test can fail
    assert (predicted[0].double() - measured).abs().max() < 0.3, (predicted, measured)
    assert torch.allclose(eq_loudness_change_db(layout, before.strip, before.strip, shares_db, sr), torch.zeros(1, 3))


def test_a_level_matched_eq_takes_the_habits_eq_and_gives_back_its_loudness_on_the_fader():
    from gradmix.models.engineer import eq_gain_columns, eq_loudness_change_db, level_matched_eq

    sr, layout = 44100, Layout.default()
    cols = eq_gain_columns(layout)
    own = engineer_controls(layout, 2, 3, torch.Generator().manual_seed(1))
    habits = engineer_controls(layout, 2, 3, torch.Generator().manual_seed(2))
    shares_db = -10 * torch.rand(2, 3, 10, generator=torch.Generator().manual_seed(3))
    matched = level_matched_eq(layout, own, habits, shares_db, sr)
    assert torch.equal(matched.strip[..., cols], habits.strip[..., cols])
    kept = [c for c in range(1, layout.num_strip_params) if c not in cols]
    assert torch.equal(matched.strip[..., kept], own.strip[..., kept])  # EQ frequencies, Q, compressor, pan
    assert torch.equal(matched.sends, own.sends) and torch.equal(matched.master, own.master)
    change = eq_loudness_change_db(layout, own.strip, matched.strip, shares_db, sr)
    assert change.abs().max() > 0.5
    fader = lambda c: layout.denormalize(c).strip[0]["gain_db"]  # noqa: E731
    spec = layout.strip[0].specs[0]
    inside = (fader(own) - change > spec.min + 1e-3) & (fader(own) - change < spec.max - 1e-3)
    assert inside.sum() >= 4
    assert torch.allclose(fader(matched)[inside], (fader(own) - change)[inside], atol=1e-4)


def test_the_song_level_move_brings_what_the_master_receives_to_the_references_loudness():
    """``song_level_db``: one level move per song, the same for its tracks (a rise on the compressors' makeup
    gain, a cut on the faders), after which the strip sum and the bus returns are as loud as under the reference
    console, within 0.1 dB; nothing else changes."""
    from gradmix.console import pre_master
    from gradmix.models.engineer import level_moved, song_level_db

    sr, layout = 44100, Layout.default()
    g = torch.Generator().manual_seed(4)
    tracks = 0.1 * torch.randn(2, 3, 2, sr, generator=g)
    tracks = tracks * torch.pow(10.0, normalization_db(tracks, None, sr) / 20)[..., None, None]
    controls = engineer_controls(layout, 2, 3, g, audio=tracks, sample_rate=sr)
    reference = engineer_controls(layout, 2, 3, torch.Generator().manual_seed(5), audio=tracks, sample_rate=sr)
    reference.strip[0, :, 0] = reference.strip[0, :, 0] + 0.1  # song 0 louder: 6 dB more on every fader

    def level(c):
        params = layout.denormalize(c)
        strips = layout.render(tracks, params, sample_rate=sr)[1]
        return integrated_loudness(pre_master(layout, strips, params, sample_rate=sr).double(), sample_rate=sr)

    move = song_level_db(layout, controls, reference, tracks, sr)
    assert move[0] > 1.0 and move[1] < -0.5, move  # a rise and a cut to make, so the test can fail
    moved = level_moved(layout, controls, move)
    assert (level(moved) - level(reference)).abs().max() < 0.1, (level(moved), level(reference))
    makeup = lambda c: layout.denormalize(c).strip[2]["makeup_db"]  # noqa: E731
    fader = lambda c: layout.denormalize(c).strip[0]["gain_db"]  # noqa: E731
    assert torch.allclose(makeup(moved)[0] - makeup(controls)[0], move[0].float().expand(3), atol=1e-3)
    assert torch.allclose(fader(moved)[1] - fader(controls)[1], move[1].float().expand(3), atol=1e-3)
    changed = (moved.strip != controls.strip).any(0).any(0).nonzero().flatten().tolist()
    names = [(slot.effect.type_name, spec.name) for slot in layout.strip for spec in slot.specs]
    assert changed == [0, names.index(("compressor", "makeup_db"))], changed
    assert torch.equal(moved.sends, controls.sends)


def test_sounding_mask_keeps_the_real_tracks_louder_than_silence():
    from gradmix.models import SILENT_LUFS, sounding_mask, track_loudness

    t = torch.arange(SR) / SR
    tone = 0.1 * torch.sin(2 * torch.pi * 440 * t)
    tracks = torch.stack([tone, tone * 10 ** ((SILENT_LUFS - 10) / 20), torch.zeros_like(t), tone])
    tracks = tracks[None, :, None].expand(1, 4, 2, -1)
    mask = torch.tensor([[True, True, True, False]])
    lufs = track_loudness(tracks, SR)
    assert sounding_mask(lufs, mask).tolist() == [[True, False, False, False]]
    assert sounding_mask(lufs, None).tolist() == [[True, False, False, True]]


def test_the_engineers_song_makeup_is_one_per_song_and_ignores_padding():
    """``engineer_song_makeup``: an engineer's console gives every real track of a song the same compressor
    makeup, the mean of the strip heads' (padding does not count); the authors' heads keep their own per track."""
    torch.manual_seed(0)
    cfg = dataclasses.replace(TINY, engineer_switch=True, engineer_song_makeup=True)
    model = MixController(Layout.default(), cfg).eval()
    for p in model.parameters():  # random heads, so that tracks differ
        torch.nn.init.normal_(p, std=0.3)
    col = model.makeup_column
    emb = torch.randn(2, 4, cfg.dim)
    mask = torch.tensor([[True, True, True, False], [True, True, True, True]])
    with torch.no_grad():
        eng = model.decide(emb, mask, engineer=torch.ones(2)).strip[..., col]
        authors = model.decide(emb, mask, engineer=torch.zeros(2)).strip[..., col]
        free = MixController(Layout.default(), dataclasses.replace(cfg, engineer_song_makeup=False))
        free.load_state_dict(model.state_dict())
        own = free.eval().decide(emb, mask, engineer=torch.ones(2)).strip[..., col]
        emb2 = emb.clone()
        emb2[0, 3] += 5.0  # the padding track of song 0 changes nothing
        eng2 = model.decide(emb2, mask, engineer=torch.ones(2)).strip[..., col]
    assert authors[1].std() > 1e-3 and own[1].std() > 1e-3
    assert torch.allclose(eng[0, :3], own[0, :3].mean().expand(3)) and torch.allclose(eng[1], own[1].mean().expand(4))
    assert torch.equal(eng[0, :3], eng2[0, :3])
    with pytest.raises(ValueError, match="one compressor"):
        MixController(Layout.build(["gain", "eq", "pan"]), cfg)


def test_a_track_head_with_raw_descriptors_reads_them_in_their_own_units():
    """``track_head_raw_descriptors``: the layer norm covers the track contrast only, so scaling a track's contrast
    changes nothing and a descriptor's step lands at the same value for every track; with one layer norm over
    both, the contrast's scale moves what the head makes of the descriptors."""
    torch.manual_seed(0)
    outputs = {}
    for raw in (True, False):
        cfg = dataclasses.replace(TINY, track_head=True, track_head_raw_descriptors=raw)
        model = MixController(Layout.default(), cfg).eval()
        head = model.track_head
        torch.nn.init.normal_(head[-1].weight, std=0.3)  # zero at first: give it an output
        contrast, described = torch.randn(5, cfg.dim), torch.randn(5, 2 * DESCRIPTORS)
        with torch.no_grad():
            outputs[raw] = [head(torch.cat([k * contrast, described], -1)) for k in (1.0, 4.0)]
        assert isinstance(head, TrackHead) == raw
    assert torch.allclose(*outputs[True], atol=1e-5)
    assert (outputs[False][0] - outputs[False][1]).abs().max() > 1e-2


def test_compressors_set_by_their_gain_reduction_take_it_and_keep_each_tracks_loudness():
    """``compressed_by_gain_reduction``: each sounding track's compressor gets the habits' ratio, attack, release
    and knee and a threshold at which it takes the wanted reduction, measured independently as the console
    file's own meter does (``gain_reduction_db`` on the rendered strip, within 0.25 dB); the fader raised by
    that much keeps the strip's output as loud as with the compressor bypassed (within 0.25 dB); a track that
    wants none and a silent one keep their compressor and fader."""
    from gradmix.console import ConsoleSetting
    from gradmix.console.makeup import gain_reduction_db
    from gradmix.models.engineer import compressed_by_gain_reduction

    sr, layout = 44100, Layout.default()
    g = torch.Generator().manual_seed(7)
    t = torch.arange(2 * sr) / sr
    hits = torch.sin(2 * math.pi * 60 * t) * torch.exp(-((t % 0.5) / 0.08))  # a kick: four decaying hits
    pad = torch.sin(2 * math.pi * 220 * t) * (0.6 + 0.4 * torch.sin(2 * math.pi * 0.7 * t))  # a swelling pad
    noise = 0.3 * torch.randn(2 * sr, generator=g)
    tracks = torch.stack([hits, pad, noise, torch.zeros_like(t)])[None, :, None].expand(1, 4, 2, -1).contiguous()
    tracks = tracks * torch.pow(10.0, normalization_db(tracks, None, sr).nan_to_num(0.0) / 20)[..., None, None]
    own = engineer_controls(layout, 1, 4, torch.Generator().manual_seed(1))
    habits = engineer_controls(layout, 1, 4, torch.Generator().manual_seed(2), audio=tracks, sample_rate=sr)
    wanted = torch.tensor([[3.0, 1.5, 0.0, 2.0]], dtype=torch.float64)
    made, taken = compressed_by_gain_reduction(layout, own, habits, tracks, wanted, sr)
    assert torch.allclose(taken[0, :2], wanted[0, :2], atol=0.25), taken
    assert taken[0, 2:].abs().max() == 0
    cols = [layout.strip_control_index(2, name) for name in ("ratio", "attack_ms", "release_ms", "knee_db")]
    assert torch.equal(made.strip[0, :2][:, cols], habits.strip[0, :2][:, cols])
    assert torch.equal(made.strip[0, 2:], own.strip[0, 2:])
    names = ["kick", "pad", "noise", "silence"]
    chains = [
        track.chain
        for track in ConsoleSetting.from_params(
            layout, layout.denormalize(made), names=names, files=[None] * 4, sample_rate=sr
        ).tracks
    ]
    for k in range(2):
        fader, eq, comp = chains[k][:3]
        measured = gain_reduction_db([fader, eq], comp, tracks[0, k], sr)
        assert abs(measured - float(wanted[0, k])) < 0.25, (k, measured)
        x = eq.effect(fader.effect(tracks[0, k][None], fader.params, sample_rate=sr), eq.params, sample_rate=sr)
        compressed = comp.effect(x, {**comp.params, "makeup_db": 0.0}, sample_rate=sr)
        bypassed = x * 10 ** (-float(taken[0, k]) / 20)  # the fader as it was, no compressor
        loud = [float(integrated_loudness(v, sample_rate=sr)) for v in (compressed, bypassed)]
        assert abs(loud[0] - loud[1]) < 0.25, (k, loud)


def test_the_wanted_gain_reduction_is_a_songs_taste_halved_for_bright_tracks():
    """``wanted_gain_reduction_db``: one taste per song within ``REDUCTION_TASTE_DB`` (per-track noise N(0, 0.5)),
    half for a track whose centroid is above 4 kHz, 0 for padding and silence."""
    from gradmix.models.engineer import REDUCTION_TASTE_DB, wanted_gain_reduction_db

    sr = 44100
    g = torch.Generator().manual_seed(3)
    t = torch.arange(sr) / sr
    low = torch.sin(2 * math.pi * 110 * t)
    bright = torch.sin(2 * math.pi * 9000 * t)
    tracks = torch.stack([low, low, bright, torch.zeros_like(t)])[None, :, None].expand(256, 4, 2, -1)
    mask = torch.tensor([True, True, True, True]).expand(256, 4).clone()
    mask[:, 1] = False
    wanted = wanted_gain_reduction_db(tracks, mask, sr, g)
    assert wanted.shape == (256, 4)
    assert (wanted[:, 1] == 0).all() and (wanted[:, 3] == 0).all()
    assert 0 <= float(wanted[:, 0].min()) and float(wanted[:, 0].max()) < 5.0
    middle = sum(REDUCTION_TASTE_DB) / 2
    assert middle - 0.3 < float(wanted[:, 0].mean()) < middle + 0.3, wanted[:, 0].mean()  # the taste plus noise
    ratio = wanted[:, 2].mean() / wanted[:, 0].mean()
    assert 0.4 < ratio < 0.6, ratio
    assert wanted[:, 0].std() > 0.4  # songs differ in taste


def test_arrangement_sides_follow_the_habits_rule():
    """Low tracks, silent tracks and the middle bright one centred; the rest in pairs by centroid, the darker of a
    pair left, the brightest pair at +-1; the rule of :func:`track_habits`' pans (``place``)."""
    from gradmix.models.engineer import arrangement_sides

    centroid = torch.tensor(
        [
            [100.0, 300.0, 1000.0, 3000.0, 8000.0, 500.0, 5000.0],
            [150.0, 400.0, 2000.0, 1.0, 1.0, 1.0, 1.0],
            [2000.0, 400.0, 2000.0, 2000.0, 1.0, 1.0, 1.0],  # a tie goes in the tracks' order
        ]
    )
    sounding = torch.tensor([[True] * 6 + [False], [True] * 3 + [False] * 4, [True] * 4 + [False] * 3])
    expected = torch.tensor(
        [[0.0, -0.5, 0.0, -1.0, 1.0, 0.5, 0.0], [0.0, -1.0, 1.0, 0.0, 0.0, 0.0, 0.0], [0.5, -0.5, -1.0, 1.0, 0, 0, 0]],
        dtype=torch.float64,
    )
    assert torch.equal(arrangement_sides(centroid, sounding), expected)
    x = _example_tracks(["kick", "hats", "bass", "chords"])
    from gradmix.models.engineer import PAN_SCALE, track_habits

    for seed in (0, 1):  # the habits' pans put each track on the side the rule gives it
        pan = track_habits(x, None, SR, torch.Generator().manual_seed(seed))[("pan", "pan")]
        assert float(pan[1]) > 0.3 * PAN_SCALE > 0 > float(pan[3])  # the hi-hat right of the chords


def test_the_per_track_heads_read_each_tracks_side_from_its_descriptors(tmp_path):
    """``pan_side``: the side comes from the band shares the encoder emits (a 60 Hz track is low and centred, of
    400 Hz, 1.5 kHz and 6 kHz the middle one centred, the darker of the others left); the heads read it as one
    more input, which a model grown from one without it (``warm_start``: a zero column) ignores until trained."""
    from gradmix.models.controller import arrangement_side, track_descriptors

    t = torch.arange(SR) / SR
    x = torch.stack([torch.sin(2 * math.pi * f * t) * 0.1 for f in (6000.0, 60.0, 400.0, 1500.0)])
    described = track_descriptors(x[:, None].expand(-1, 2, -1), SR)[None].float()
    assert torch.equal(arrangement_side(described), torch.tensor([[1.0, 0.0, -1.0, 0.0]]))
    assert torch.equal(
        arrangement_side(described, torch.tensor([[True, True, True, False]])), torch.tensor([[1.0, 0.0, -1.0, 0.0]])
    )
    assert torch.equal(
        arrangement_side(described, torch.tensor([[True, True, False, True]])), torch.tensor([[1.0, 0.0, 0.0, -1.0]])
    )
    cfg = dataclasses.replace(TINY, track_head=True, track_head_raw_descriptors=True, engineer_switch=True)
    torch.manual_seed(0)
    plain, sided = (
        MixController(Layout.default(), cfg),
        MixController(Layout.default(), dataclasses.replace(cfg, pan_side=True)),
    )
    for head in (plain.track_head, plain.engineer_track_head):
        torch.nn.init.normal_(head[-1].weight, std=0.3)
    from gradmix.train import warm_start

    path = save_model(tmp_path / "plain.pt", plain, sample_rate=SR, info={})
    plain = load_model(path)[0]  # as the file holds it
    warm_start(sided, path)  # the file's columns and a zero one for the side
    emb = torch.cat([torch.randn(1, 4, cfg.dim), described], -1)
    assert torch.equal(plain.decide(emb).strip, sided.decide(emb).strip)
    with torch.no_grad():
        sided.engineer_track_head[0].weight[:, -1].normal_()
    moved = (sided.decide(emb).strip - plain.decide(emb).strip).abs().amax(-1)[0]
    assert moved[1] == 0 and moved[3] == 0 and moved[0] > 1e-3 and moved[2] > 1e-3  # the centred ones read 0
    for head in ({}, {"track_head": True}):  # read past the layer norm, or not at all: refused
        with pytest.raises(ValueError, match="pan_side"):
            MixController(Layout.default(), dataclasses.replace(TINY, pan_side=True, **head))
