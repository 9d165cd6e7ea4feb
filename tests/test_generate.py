"""Generative mixing: ``gradmix sample``, ``gradmix match`` and ``gradmix fit`` on synthetic stems."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import require
from gradmix.cli.main import main
from gradmix.console import ConsoleSetting, Controls, Layout
from gradmix.errors import GradmixError
from gradmix.fit import TUNING, FitProblem
from gradmix.generate import build_style_bank, draw_styles, refine_controls, song_excerpt, toned_spectral_features
from gradmix.metrics import mix_features, style_distance, style_features
from gradmix.metrics.distances import STYLE_FEATURES, TONE_CENTRES_HZ, tonal_balance
from gradmix.mix import analyse
from gradmix.models import MixController, ModelConfig
from gradmix.models.checkpoint import save_model

SR = 44100
TINY = dict(mels=32, channels=(4, 8), dim=16, heads=2, layers=1, ff=32)


@pytest.fixture(scope="module")
def style_model(tmp_path_factory):
    torch.manual_seed(0)
    m = MixController(Layout.default(), ModelConfig(**TINY, style_dim=4))
    with torch.no_grad():  # make the style matter, as training would
        m.style_in.weight.normal_(0, 2.0)
        for head in (m.strip_head, m.master_head):
            head[-1].weight.normal_(0, 0.3)
    build_style_bank(m, human_windows(), SR)
    return save_model(tmp_path_factory.mktemp("model") / "style.pt", m, sample_rate=SR, info={})


def human_windows() -> list[tuple[list[torch.Tensor], torch.Tensor]]:
    """Five windows of 4 s: the same two tracks (a mono and a stereo one) and human mixes in distinct styles:
    dark and centred, bright and wide, quiet and one-sided, loud and clipped, swelling."""
    g = torch.Generator().manual_seed(3)
    noise = torch.randn(2, 4 * SR, generator=g)
    tracks = [noise[:1] * 0.1, torch.roll(noise, 999, -1) * 0.05]
    dark = torch.cumsum(noise, -1) * 0.002
    dark = (dark - dark.mean(-1, keepdim=True)).mean(0, keepdim=True).expand(2, -1).contiguous()
    bright = torch.diff(noise, dim=-1, prepend=noise[:, :1]) * 0.1
    quiet = noise * torch.tensor([[0.05], [0.005]])
    loud = (noise * 0.5).clamp(-0.6, 0.6)
    swell = noise * torch.linspace(0.001, 0.2, 4 * SR) * torch.tensor([[0.5], [1.0]])
    return [(tracks, mix) for mix in (dark, bright, quiet, loud, swell)]


def make_stems(folder: Path, n=3, seconds=1.5) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(0)
    for k in range(n):
        x = 0.2 * np.sin(2 * np.pi * 110 * (k + 1) * t) * (1 + np.sin(2 * np.pi * (k + 1) * t)) / 2
        sf.write(folder / f"t{k}.wav", (x + 0.01 * rng.standard_normal(t.size)).astype(np.float32), SR)
    return folder


def test_sample_writes_n_distinct_mixes_repeatably(tmp_path, style_model, capsys):
    stems = make_stems(tmp_path / "stems")
    args = ["sample", str(stems), "-n", "3", "--seed", "7", "--refine", "5", "--model", str(style_model)]
    assert main([*args, "-o", str(tmp_path / "a")]) == 0
    assert main([*args, "-o", str(tmp_path / "b")]) == 0
    mixes = [sf.read(tmp_path / "a" / f"mix_0{k}.wav")[0] for k in (1, 2, 3)]
    for k in (1, 2, 3):  # same seed, same mixes and consoles
        assert np.array_equal(mixes[k - 1], sf.read(tmp_path / "b" / f"mix_0{k}.wav")[0])
        assert (tmp_path / "a" / f"mix_0{k}.console.json").read_text() == (
            tmp_path / "b" / f"mix_0{k}.console.json"
        ).read_text()
    for i in range(3):
        for j in range(i + 1, 3):
            assert np.abs(mixes[i] - mixes[j]).max() > 1e-3  # distinct
    page = (tmp_path / "a" / "index.html").read_text()
    assert page.count("<audio") == 3 and "data:image/png" in page
    assert ConsoleSetting.load(tmp_path / "a" / "mix_02.console.json").stems == stems.resolve()  # valid, with its stems
    assert main([*args[:-2], "--model", str(style_model), "--seed", "8", "-o", str(tmp_path / "c")]) == 0
    assert not np.array_equal(sf.read(tmp_path / "c" / "mix_01.wav")[0], mixes[0])
    assert main([*args, "-o", str(stems)]) == 2  # into the stems folder: refused, nothing written
    assert sorted(p.name for p in stems.iterdir()) == ["t0.wav", "t1.wav", "t2.wav"]


def test_the_studio_s_next_sample_is_gradmix_sample_s_next(tmp_path, style_model):
    from gradmix.generate import sample_settings
    from gradmix.mix import load_song

    song = load_song(make_stems(tmp_path / "stems", n=2, seconds=1.0), style_model)
    analysis = analyse(song.model, song.audio, song.sample_rate)
    both = sample_settings(song, analysis, 2, seed=3, refine_steps=2)
    second = sample_settings(song, analysis, 1, seed=3, refine_steps=2, skip=1)[0]
    assert second.to_json() == both[1].to_json() and second.to_json() != both[0].to_json()


def test_draw_styles_is_seeded_and_checks_its_arguments(style_model):
    from gradmix.models.checkpoint import load_model

    model = load_model(style_model)[0]
    assert model.style_bank.shape == (5, 4) and model.style_bank_offsets.shape == (5, len(STYLE_FEATURES))
    z, f, t = draw_styles(model, 5, seed=1, temperature=1.0)
    z2, f2, t2 = draw_styles(model, 5, seed=1, temperature=1.0)
    assert torch.equal(z, z2) and torch.equal(f, f2) and torch.equal(t, t2)
    assert len({tuple(v.tolist()) for v in f}) == 5  # without replacement while the bank lasts
    assert not torch.equal(draw_styles(model, 5, seed=2, temperature=1.0)[1], f)
    for drawn, bank in ((f, model.style_bank_offsets), (t, model.style_bank_tones)):
        # the whole bank drawn: offsets less their mean, which is the model's bias
        assert torch.allclose(drawn.mean(0), torch.zeros(bank.shape[1]), atol=1e-4)
        assert torch.cdist(drawn + bank.mean(0), bank).min(1).values.max() < 1e-4  # each is a window's, shifted alike
    assert torch.equal(
        torch.cdist(f + model.style_bank_offsets.mean(0), model.style_bank_offsets).argmin(1),
        torch.cdist(t + model.style_bank_tones.mean(0), model.style_bank_tones).argmin(1),
    )  # same windows
    centre, none, flat = draw_styles(model, 3, seed=1, temperature=0)
    assert torch.allclose(centre, model.style_center.expand(3, -1)) and none.abs().max() == 0 and flat.abs().max() == 0
    half, half_offsets, half_tones = draw_styles(model, 5, seed=1, temperature=0.5)
    assert torch.allclose(half, (z + model.style_center) / 2, atol=1e-6) and torch.allclose(half_offsets, f / 2)
    assert torch.allclose(half_tones, t / 2)
    assert draw_styles(model, 12, seed=0)[0].shape == (12, 4)  # more mixes than styles: the bank again
    with pytest.raises(GradmixError, match="at least 1"):
        draw_styles(model, 0)
    with pytest.raises(GradmixError, match=">= 0"):
        draw_styles(model, 2, temperature=-1)
    plain = MixController(Layout.default(), ModelConfig(**TINY))
    with pytest.raises(GradmixError, match="no mix style"):
        draw_styles(plain, 2)
    unbanked = MixController(Layout.default(), ModelConfig(**TINY, style_dim=4))
    with pytest.raises(GradmixError, match="no style bank"):
        draw_styles(unbanked, 2)
    unbanked.style_bank, unbanked.style_bank_offsets = model.style_bank, model.style_bank_offsets
    with pytest.raises(GradmixError, match="no style bank with tonal offsets"):  # a bank from an older gradmix
        draw_styles(unbanked, 2)


def test_style_bank_holds_how_each_human_mix_differs_from_the_model_s(tmp_path):
    from gradmix.generate import style_coordinates, style_from_coordinates
    from gradmix.mix import automix
    from gradmix.models.checkpoint import load_model

    torch.manual_seed(1)
    m = MixController(Layout.default(), ModelConfig(**TINY, style_dim=4))
    windows = human_windows()
    build_style_bank(m, [*windows, ([torch.zeros(1, SR)], torch.zeros(2, SR))], SR)  # the silent one: left out
    assert m.style_bank.shape[0] == 5
    tracks, mix = windows[1]
    with torch.no_grad():  # the model's own mix of the window, by the console file's renderer
        own = automix(m, ["a", "b"], [None, None], tracks, SR).render(tracks, keep_strips=False)[0]
        assert torch.allclose(m.style_bank[1], m.encode_style(mix[None], sample_rate=SR)[0][0])
    expected = style_coordinates(style_features(mix[None].double(), SR)) - style_coordinates(
        style_features(own[None], SR)
    )
    assert torch.allclose(m.style_bank_offsets[1], expected[0].float(), atol=1e-2)  # two renderers, float32
    tones = tonal_balance(mix[None].double(), SR) - tonal_balance(own[None], SR)
    assert torch.allclose(m.style_bank_tones[1], tones[0].float(), atol=0.05)  # dB
    assert m.style_bank_tones[1, -3:].mean() > m.style_bank_tones[0, -3:].mean() + 20  # bright human mix against dark
    c = style_coordinates(style_features(mix[None], SR))
    back = style_from_coordinates(c)
    assert all(torch.allclose(back[k], style_features(mix[None], SR)[k], rtol=1e-5) for k in STYLE_FEATURES)
    loaded = load_model(save_model(tmp_path / "m.pt", m, sample_rate=SR, info={}))[0]
    assert torch.allclose(loaded.style_bank_offsets, m.style_bank_offsets, rtol=1e-3, atol=1e-3)  # float16 in the file
    assert torch.allclose(loaded.style_bank_tones, m.style_bank_tones, rtol=1e-3, atol=0.05)
    state = {k: v for k, v in m.state_dict().items() if not k.startswith("style_bank")}
    torch.save(
        {
            **torch.load(tmp_path / "m.pt", weights_only=True),
            "state_dict": {k: v.half() if v.is_floating_point() else v for k, v in state.items()},
        },
        tmp_path / "old.pt",
    )
    assert load_model(tmp_path / "old.pt")[0].style_bank.shape == (0, 4)  # a file from before the bank loads


def test_tonal_balance_is_each_octave_s_share_of_the_energy():
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(1, 1, 8 * SR, generator=g, dtype=torch.float64).expand(1, 2, -1)
    white = tonal_balance(noise, SR)[0]
    assert abs(float((10 ** (white / 10)).sum()) - 1) < 1e-9  # shares of the whole
    steps = white[2:-1].diff()  # white noise: each octave has twice the bandwidth, +3.01 dB
    assert torch.allclose(steps, torch.full_like(steps, 10 * np.log10(2)), atol=0.25), steps
    t = torch.arange(4 * SR, dtype=torch.float64) / SR
    for k in (3, 6):
        sine = torch.sin(2 * np.pi * TONE_CENTRES_HZ[k] * t)[None, None].expand(1, 2, -1)
        tone = tonal_balance(sine, SR)[0]
        assert tone[k] > -0.1 and (tone[torch.arange(len(tone)) != k] < -25).all()  # all of it in its band
    assert (tonal_balance(torch.zeros(1, 2, SR), SR) >= -60).all()  # silence: the floor, not -inf


def test_toned_spectral_features_are_those_of_the_mix_through_the_eq_curve():
    g = torch.Generator().manual_seed(1)
    x = torch.cumsum(torch.randn(1, 2, 6 * SR, generator=g, dtype=torch.float64), -1) * 1e-3  # a dark mix
    x = x - x.mean(-1, keepdim=True)
    flat = toned_spectral_features(x, torch.zeros(len(TONE_CENTRES_HZ)), SR)
    measured = style_features(x, SR)
    for k in flat:
        assert torch.allclose(flat[k], measured[k], rtol=1e-9), k
    curve = torch.linspace(-6, 12, len(TONE_CENTRES_HZ))  # a tilt towards the highs
    toned = toned_spectral_features(x, curve, SR)
    # independently: filter the audio by the same curve (whole-signal FFT) and measure it
    freqs = np.fft.rfftfreq(x.shape[-1], 1 / SR)
    gain = 10 ** (
        np.interp(np.log2(np.maximum(freqs, TONE_CENTRES_HZ[0])), np.log2(TONE_CENTRES_HZ), curve.numpy()) / 20
    )
    filtered = torch.from_numpy(np.fft.irfft(np.fft.rfft(x.numpy(), axis=-1) * gain, n=x.shape[-1], axis=-1))
    heard = style_features(filtered, SR)
    for k in ("centroid_hz", "bandwidth_hz", "rolloff_hz"):
        assert abs(float(toned[k] / heard[k]) - 1) < 0.03, (k, toned[k], heard[k])
    assert abs(float(torch.log(toned["flatness"] / heard["flatness"]))) < 0.1
    assert toned["centroid_hz"] > 1.5 * flat["centroid_hz"] and toned["rolloff_hz"] > flat["rolloff_hz"]


def test_style_features_are_the_measured_ones_and_differentiable():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 2, 4 * SR, generator=g) * torch.linspace(0.01, 0.3, 4 * SR)
    x[:, 1] *= 0.5
    mine, measured = style_features(x, SR), mix_features(x, SR)
    for k in STYLE_FEATURES:
        assert torch.allclose(mine[k], measured[k], rtol=1e-5), k
    x.requires_grad_()
    style_distance(x, {k: v * 1.1 for k, v in mine.items()}, SR).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_style_distance_is_zero_for_the_same_mix_and_ignores_length():
    t = torch.arange(SR * 2) / SR
    x = torch.stack([torch.sin(2 * torch.pi * 440 * t), 0.5 * torch.sin(2 * torch.pi * 440 * t)])[None] * 0.3
    assert float(style_distance(x, x, SR)) == pytest.approx(0.0, abs=1e-9)
    tiled = x.repeat(1, 1, 2)  # the same mix, twice as long: same style
    assert float(style_distance(tiled, x, SR)) < 0.02
    brighter = torch.stack([torch.sin(2 * torch.pi * 3000 * t)] * 2)[None] * 0.3
    assert float(style_distance(brighter, x, SR)) > 0.3


def test_song_excerpt_spreads_chunks_over_the_song_after_a_preroll():
    audio = [torch.arange(20 * 100, dtype=torch.float32)[None] + 1, torch.ones(2, 20 * 100)]
    analysis = type("A", (), {"gains_db": [0.0, 0.0], "embeddings": torch.zeros(1, 2, 4)})()
    ex = song_excerpt(audio, analysis, 100, seconds=12.0, chunk_s=4.0, preroll_s=1.0)
    assert ex.x.shape == (3, 2, 2, 500) and ex.preroll == 100
    assert ex.x[:, 0, 0, 100].tolist() == [1.0, 801.0, 1601.0]  # chunks start at 0, 8, 16 s
    assert ex.x[0, 0, :, :100].abs().max() == 0  # the first chunk's pre-roll is silence
    assert ex.x[1, 0, 0, 0] == 701.0  # the others' is the song before them
    assert ex.mono.tolist() == [[True, False]] * 3
    short = song_excerpt(audio, analysis, 100, seconds=30.0)
    assert short.x.shape == (1, 2, 2, 2100)


def test_refining_the_mix_section_moves_the_style_and_keeps_the_strips(style_model):
    from gradmix.models.checkpoint import load_model

    model = load_model(style_model)[0]
    tracks = [
        torch.from_numpy(np.asarray(x, dtype=np.float32))
        for x in (torch.randn(1, 3 * SR, generator=torch.Generator().manual_seed(k)).numpy() * 0.1 for k in range(3))
    ]
    analysis = analyse(model, tracks, SR)
    ex = song_excerpt(tracks, analysis, SR, seconds=2.0, chunk_s=1.0, preroll_s=0.5)
    start = model.decide(analysis.embeddings)
    target = style_features(human_windows()[2][1][None], SR)  # the quiet, one-sided style

    def distance(c):
        with torch.no_grad():
            est, _ = model.layout.render_normalized(
                ex.x,
                type(c)(*(v.expand(2, *v.shape[1:]) for v in (c.strip, c.sends, c.buses, c.master))),
                sample_rate=SR,
                mono=ex.mono,
            )
        return float(style_distance(est[..., ex.preroll :].transpose(0, 1).reshape(1, 2, -1), target, SR))

    end = refine_controls(model, ex, start, target, SR, steps=15, lr=0.1, mix_section_only=True)
    assert distance(end) < 0.8 * distance(start)
    pan = model.layout.num_strip_params - 1  # the strip's last control is its pan
    assert torch.allclose(end.strip[..., :pan], start.strip[..., :pan], atol=1e-4)
    assert not torch.allclose(end.master, start.master)


def test_pan_nudge_moves_only_the_pans_seeded_and_within_bounds(style_model):
    from gradmix.generate import SAMPLE_PAN_NUDGE, _nudge_pans
    from gradmix.models.checkpoint import load_model

    model = load_model(style_model)[0]
    start = model.layout.random_controls(1, 5, torch.Generator().manual_seed(0))
    a, b, c = (_nudge_pans(model, start, seed) for seed in (7, 7, 8))
    pan = model.layout.num_strip_params - 1
    assert torch.equal(a.strip, b.strip) and not torch.equal(a.strip, c.strip)
    assert torch.equal(a.strip[..., :pan], start.strip[..., :pan]) and torch.equal(a.master, start.master)
    moved = (a.strip[..., pan] - start.strip[..., pan]).abs()
    assert moved.max() <= SAMPLE_PAN_NUDGE + 1e-7 and (moved > 0).all()


def test_balanced_refinement_widens_to_both_sides(style_model):
    from gradmix.metrics.features import panning_features
    from gradmix.models.checkpoint import load_model

    model = load_model(style_model)[0]
    tracks = [0.1 * torch.randn(1, 3 * SR, generator=torch.Generator().manual_seed(k)) for k in range(4)]
    analysis = analyse(model, tracks, SR)
    ex = song_excerpt(tracks, analysis, SR, seconds=2.0, chunk_s=1.0, preroll_s=0.5)
    start = model.decide(analysis.embeddings)
    pan = model.layout.num_strip_params - 1
    start.strip[..., pan] = 0.45  # every track a little left of centre
    target = {k: v.clone() for k, v in style_features(ex.x[:1, 0], SR).items()}  # one centred track's style ...
    for band in ("low", "mid", "high"):
        target[f"panning_rms_{band}"] = torch.tensor([0.4], dtype=ex.x.dtype)  # ... but wide

    def side(c):
        with torch.no_grad():
            est, _ = model.layout.render_normalized(
                ex.x,
                type(c)(*(v.expand(2, *v.shape[1:]) for v in (c.strip, c.sends, c.buses, c.master))),
                sample_rate=SR,
                mono=ex.mono,
            )
        return float(
            panning_features(est[..., ex.preroll :].transpose(0, 1).reshape(1, 2, -1), SR)["panning_index"].abs()
        )

    leaning = refine_controls(model, ex, start, target, SR, steps=20, lr=0.1, mix_section_only=True)
    balanced = refine_controls(model, ex, start, target, SR, steps=20, lr=0.1, mix_section_only=True, balanced=True)
    pans = balanced.strip[0, :, pan]
    assert side(balanced) < 0.5 * side(leaning)
    assert (pans < 0.5).any() and (pans > 0.5).any()  # tracks on both sides


def test_match_follows_the_reference_and_refine_gets_closer(tmp_path, style_model, capsys):
    require("auraloss")
    stems = make_stems(tmp_path / "stems")
    t = np.arange(3 * SR) / SR  # a reference of other content and length: bright, wide, loud
    rng = np.random.default_rng(1)
    ref = np.stack([rng.standard_normal(t.size), rng.standard_normal(t.size)], 1) * 0.2
    sf.write(tmp_path / "ref.wav", ref.astype(np.float32), SR)
    out = tmp_path / "m.wav"
    assert (
        main(
            ["match", str(stems), "--reference", str(tmp_path / "ref.wav"), "-o", str(out), "--model", str(style_model)]
        )
        == 0
    )  # refined by default
    text = capsys.readouterr().out
    before, after = (float(text.split(f"{k} ")[1].split(",")[0].split()[0]) for k in ("model", "refined"))
    assert after < before
    assert (
        main(
            [
                "match",
                str(stems),
                "--reference",
                str(tmp_path / "ref.wav"),
                "-o",
                str(tmp_path / "m0.wav"),
                "--refine",
                "0",
                "--model",
                str(style_model),
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "refined" not in text and float(text.split("model ")[1].split()[0]) == pytest.approx(before, rel=1e-6)
    assert out.is_file() and out.with_suffix(".console.json").is_file()
    assert (
        main(
            [
                "match",
                str(stems),
                "--reference",
                str(tmp_path / "missing.wav"),
                "-o",
                str(out),
                "--model",
                str(style_model),
            ]
        )
        == 2
    )
    sf.write(tmp_path / "silent.wav", np.zeros((SR, 2), np.float32), SR)
    out.unlink()
    assert (
        main(
            [
                "match",
                str(stems),
                "--reference",
                str(tmp_path / "silent.wav"),
                "-o",
                str(out),
                "--model",
                str(style_model),
            ]
        )
        == 2
    )
    assert "silent.wav: silent" in capsys.readouterr().err and not out.exists()


def test_fit_recovers_a_console_of_the_same_stems(tmp_path, style_model, capsys):
    require("auraloss")
    stems = make_stems(tmp_path / "stems", n=2, seconds=1.0)
    setting = ConsoleSetting.neutral(["t0", "t1"], ["t0.wav", "t1.wav"], sample_rate=SR)
    setting.tracks[0].chain[0].params["gain_db"] = -6.0
    setting.tracks[1].chain[3].params["pan"] = 0.5
    setting.save(tmp_path / "truth.json")
    assert main(["render", str(stems), str(tmp_path / "truth.json"), "-o", str(tmp_path / "target.wav")]) == 0
    assert (
        main(
            [
                "fit",
                str(stems),
                "--target",
                str(tmp_path / "target.wav"),
                "-o",
                str(tmp_path / "fit.json"),
                "--steps",
                "60",
                "--model",
                str(style_model),
            ]
        )
        == 0
    )
    residual = float(capsys.readouterr().out.split("residual ")[1].split(" dB")[0])
    assert residual < -20
    assert main(["render", str(stems), str(tmp_path / "fit.json"), "-o", str(tmp_path / "again.wav")]) == 0
    a, b = sf.read(tmp_path / "again.wav")[0], sf.read(tmp_path / "target.wav")[0]
    assert 10 * np.log10(((a - b) ** 2).sum() / (b**2).sum()) == pytest.approx(residual, abs=1.0)
    for bad in (["--steps", "0"], ["--budget", "nan"]):
        assert (
            main(
                [
                    "fit",
                    str(stems),
                    "--target",
                    str(tmp_path / "target.wav"),
                    "-o",
                    str(tmp_path / "x.json"),
                    "--model",
                    str(style_model),
                    *bad,
                ]
            )
            == 2
        )
    assert (
        main(
            ["sample", str(stems), "-n", "2", "-o", str(tmp_path / "s"), "--refine", "-1", "--model", str(style_model)]
        )
        == 2
        and not (tmp_path / "s").exists()
    )
    sf.write(tmp_path / "short.wav", b[: SR // 2], SR)
    assert (
        main(
            [
                "fit",
                str(stems),
                "--target",
                str(tmp_path / "short.wav"),
                "-o",
                str(tmp_path / "x.json"),
                "--model",
                str(style_model),
            ]
        )
        == 2
    )
    assert "covers 50 % of them: fit needs a mix of these stems" in capsys.readouterr().err


def test_fit_aligns_a_bounce_with_a_tail_and_an_offset_to_its_stems(tmp_path, style_model, capsys):
    """A mix bounced from a DAW: 40 ms later than the stems and 0.3 s longer (a tail). fit aligns it, says so in
    one line, and fits it as well as the same mix cut by hand."""
    require("auraloss")
    from gradmix.fit import align_to_stems

    stems = make_stems(tmp_path / "stems", n=2, seconds=1.0)
    setting = ConsoleSetting.neutral(["t0", "t1"], ["t0.wav", "t1.wav"], sample_rate=SR)
    setting.tracks[0].chain[0].params["gain_db"] = -6.0
    setting.save(tmp_path / "truth.json")
    assert main(["render", str(stems), str(tmp_path / "truth.json"), "-o", str(tmp_path / "exact.wav")]) == 0
    exact = sf.read(tmp_path / "exact.wav", dtype="float32")[0]
    offset = int(0.04 * SR)
    bounce = np.concatenate([np.zeros((offset, 2), np.float32), exact, np.zeros((int(0.3 * SR), 2), np.float32)])
    sf.write(tmp_path / "bounce.wav", bounce, SR, subtype="FLOAT")
    tracks = [
        torch.from_numpy(sf.read(stems / f"t{i}.wav", dtype="float32", always_2d=True)[0].T.copy()) for i in range(2)
    ]
    aligned, lag, span = align_to_stems(torch.from_numpy(bounce.T.copy()), tracks, SR)
    assert lag == offset and span == (0, SR) and torch.equal(aligned, torch.from_numpy(exact.T.copy()))
    # a bounce that lacks the stems' first 40 ms covers them from there on, and only that part is fitted
    late, lag, span = align_to_stems(torch.from_numpy(exact[offset:].T.copy()), tracks, SR)
    assert lag == -offset and span == (offset, SR) and torch.equal(late, torch.from_numpy(exact[offset:].T.copy()))
    capsys.readouterr()
    assert (
        main(
            [
                "fit",
                str(stems),
                "--target",
                str(tmp_path / "bounce.wav"),
                "-o",
                str(tmp_path / "fit.json"),
                "--steps",
                "30",
                "--model",
                str(style_model),
            ]
        )
        == 0
    )
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and "starts +40 ms from them" in err and "1.34 s against the stems' 1.00 s" in err
    assert float(out.split("residual ")[1].split(" dB")[0]) < -20
    assert json.loads((tmp_path / "fit.json").read_text())["stems"] == "stems"  # render and export find them


def time_case(effect: str, seed: int, true_sends: list[float], start_sends: list[float] | None = None):
    """Two noise tracks through a random console whose ``effect`` bus (delay or reverb) hears them at
    ``true_sends`` (0..1 controls); the start: the same console with the bus's time (delay time, pre-delay)
    moved far off (and the sends to the bus at ``start_sends``). Returns the model, tracks, mono flags,
    target, the true console, the start's logits, the bus's index and the time's index in the bus controls."""
    from gradmix.fit.time_search import BUS_TIMES

    model = MixController(Layout.default(), ModelConfig(**TINY))
    layout = model.layout
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 2, 2, 2 * SR, generator=g) * 0.1
    mono = torch.zeros(1, 2, dtype=torch.bool)
    truth = layout.random_controls(1, 2, g)
    bus = layout.bus_names.index(effect)
    truth.sends[0, :, bus] = torch.tensor(true_sends)
    j = layout.bus_control_index(bus, 0, BUS_TIMES[effect][0])
    with torch.no_grad():
        ref = layout.render_normalized(x, truth, sample_rate=SR, mono=mono)[0][0]
    start = Controls(truth.strip, truth.sends.clone(), truth.buses.clone(), truth.master)
    if start_sends is not None:
        start.sends[0, :, bus] = torch.tensor(start_sends)
    start.buses[0, j] = 0.2 if truth.buses[0, j] > 0.5 else 0.8
    return model, x, mono, ref, truth, start.logits(), bus, j


def render_error(model, x, mono, logits, ref) -> float:
    """Sum of squares of the console's render with ``logits`` minus ``ref``."""
    with torch.no_grad():
        est = model.layout.render_normalized(x, Controls.from_logits(logits), sample_rate=SR, mono=mono)[0][0]
        return float((est - ref).square().sum())


def found_time(model, logits, bus: int, effect: str) -> float:
    from gradmix.fit.time_search import BUS_TIMES

    with torch.no_grad():
        return float(model.layout.denormalize(Controls.from_logits(logits)).buses[bus][0][BUS_TIMES[effect][0]][0])


@pytest.mark.parametrize("effect", ["delay", "reverb"])
def test_time_search_finds_the_bus_time_to_the_sample(effect):
    from gradmix.fit.time_search import search_time

    model, x, mono, ref, truth, logits, bus, j = time_case(effect, 0, [0.9, 0.9])
    true_ms = found_time(model, truth.logits(), bus, effect)
    before = render_error(model, x, mono, logits, ref)
    hold, moved = search_time(FitProblem(model, x, mono, ref, SR), logits, effect)
    assert moved and list(hold) == [j]  # the found time is to be held
    assert abs(found_time(model, logits, bus, effect) - true_ms) * SR / 1000 < 0.2  # samples: the parabola
    assert render_error(model, x, mono, logits, ref) < 0.02 * before


@pytest.mark.parametrize("effect", ["delay", "reverb"])
def test_time_search_finds_the_bus_time_of_a_track_the_bus_does_not_hear_yet(effect):
    from gradmix.fit.levels import solve_levels
    from gradmix.fit.time_search import search_time

    # only the second track is sent to the bus; the bus hears the wrong track at the start
    model, x, mono, ref, truth, logits, bus, j = time_case(effect, 1, [0.0, 0.9], start_sends=[0.9, 0.0])
    before = render_error(model, x, mono, logits, ref)
    hold, moved = search_time(FitProblem(model, x, mono, ref, SR), logits, effect)
    assert moved and list(hold) == [j]
    assert (
        abs(found_time(model, logits, bus, effect) - found_time(model, truth.logits(), bus, effect)) * SR / 1000 < 0.5
    )
    with torch.no_grad():
        sends = model.layout.denormalize(Controls.from_logits(logits)).sends_db[0, :, bus]  # dB
    assert float(sends[1]) > float(sends[0]) + 6  # the right track is heard on the bus, the other far less
    solve_levels(FitProblem(model, x, mono, ref, SR), logits)  # as fit follows the search: sends by least squares
    assert render_error(model, x, mono, logits, ref) < 0.5 * before


def test_fit_refuses_a_song_it_could_not_hold_in_memory_before_any_work(tmp_path, style_model, monkeypatch, capsys):
    import gradmix.fit.align as fit

    stems = make_stems(tmp_path / "stems", n=2, seconds=1.0)
    sf.write(tmp_path / "target.wav", np.zeros((SR, 2)) + 0.1, SR)
    monkeypatch.setattr(fit, "available_memory", lambda: 10**6)
    assert (
        main(
            [
                "fit",
                str(stems),
                "--target",
                str(tmp_path / "target.wav"),
                "-o",
                str(tmp_path / "fit.json"),
                "--model",
                str(style_model),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "2 tracks x 1 s need about" in err[0] and "0.0 GiB is available" in err[0]
    assert not (tmp_path / "fit.json").exists()
    monkeypatch.setattr(fit, "available_memory", lambda: None)  # a system that does not say: no refusal
    fit.check_memory(256, 600.0)
    monkeypatch.setattr(fit, "available_memory", lambda: 24 * 2**30)
    fit.check_memory(40, 240.0)  # a long song of many tracks fits 24 GiB
    with pytest.raises(GradmixError, match="256 tracks x 240 s"):
        fit.check_memory(256, 240.0)


def test_time_search_finds_the_delay_of_a_tonal_track_past_wrong_levels_and_a_copied_stem():
    """A tonal track repeats, so while its level is wrong the error correlates with it at every beat; a stem
    that copies another 113 ms late looks like an echo of it. The delay's time is still found to the sample."""
    from gradmix.fit.time_search import search_time

    model = MixController(Layout.default(), ModelConfig(**TINY))
    layout = model.layout
    g = torch.Generator().manual_seed(3)
    t = torch.arange(3 * SR, dtype=torch.float64) / SR
    notes = 55 * 2 ** (torch.tensor([0.0, 7, 3, 0, 5, 7, 3, 10], dtype=torch.float64) / 12)
    phase = 2 * np.pi * torch.cumsum(notes[(t / 0.25).long() % len(notes)], 0) / SR  # a bar of 250-ms notes, again
    tonal = sum(torch.sin(h * phase) / h for h in range(1, 8))
    clicks = torch.randn(t.shape, generator=g, dtype=torch.float64) * torch.exp(-(t % 0.5) / 0.03)
    copy = torch.roll(clicks, int(0.113 * SR))
    x = (0.1 * torch.stack([tonal, clicks, copy])).float()[None, :, None].repeat(1, 1, 2, 1)
    mono = torch.zeros(1, 3, dtype=torch.bool)
    truth = layout.random_controls(1, 3, g)
    bus = layout.bus_names.index("delay")
    truth.sends[0, :, bus] = torch.tensor([0.9, 0.0, 0.0])
    j = layout.bus_control_index(bus, 0, "time_ms")
    with torch.no_grad():
        ref = layout.render_normalized(x, truth, sample_rate=SR, mono=mono)[0][0]
    start = Controls(truth.strip.clone(), truth.sends.clone(), truth.buses.clone(), truth.master)
    start.buses[0, j] = 0.2 if truth.buses[0, j] > 0.5 else 0.8
    start.strip[0, :, layout.strip_control_index(0, "gain_db")] += torch.tensor([0.35, -0.35, 0.35])
    start.strip.clamp_(0, 1)
    logits = start.logits()
    hold, moved = search_time(FitProblem(model, x, mono, ref, SR), logits, "delay")
    assert moved and list(hold) == [j]
    error_samples = (
        (found_time(model, logits, bus, "delay") - found_time(model, truth.logits(), bus, "delay")) * SR / 1000
    )
    assert abs(error_samples) < 0.5  # 9 samples early before the dry levels were taken out and the lag refined


def test_the_whole_song_renders_in_chunks_of_tracks_as_the_console_renders_it():
    """fit's song error sums the strips a few tracks at a time (memory grows with the song, not with tracks x
    song): the same mix as the console's batched render, chunk boundaries and buses included."""

    model = MixController(Layout.default(), ModelConfig(**TINY))
    g = torch.Generator().manual_seed(5)
    x = torch.randn(1, 5, 2, SR, generator=g) * 0.1
    mono = torch.tensor([[True, False, False, True, False]])
    x[0, 0, 1], x[0, 3, 1] = x[0, 0, 0], x[0, 3, 0]
    logits = model.layout.random_controls(1, 5, g).logits()
    whole = render_error(model, x, mono, logits, torch.zeros(2, SR))
    with torch.no_grad():
        want = model.layout.render_normalized(x, Controls.from_logits(logits), sample_rate=SR, mono=mono)[0][0]
    tuning = dataclasses.replace(TUNING, chunk_samples=4 * SR)  # 2 tracks a chunk: chunks of 2, 2 and 1
    problem = FitProblem(model, x, mono, torch.zeros(2, SR), SR, tuning)
    got = problem.render(logits)
    assert torch.allclose(got, want, rtol=0, atol=1e-6 * float(want.abs().max()))
    assert math.isclose(problem.error(logits), whole, rel_tol=1e-5)


def test_time_search_in_chunks_of_tracks_finds_what_it_finds_at_once():
    """The cross-correlations are taken a few tracks at a time (each track's spectra are twice the searched
    span long): one track at a time, the search finds the same time and sends."""
    from gradmix.fit.time_search import search_time

    found = []
    for chunk in (TUNING.chunk_samples, 1):
        model, x, mono, ref, truth, logits, bus, j = time_case("delay", 1, [0.0, 0.9], start_sends=[0.9, 0.0])
        tuning = dataclasses.replace(TUNING, chunk_samples=chunk)
        hold, moved = search_time(FitProblem(model, x, mono, ref, SR, tuning), logits, "delay")
        assert moved
        found.append(logits.copy())
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(*found))


def test_level_solve_recovers_levels_pans_and_sends_of_a_known_console():
    from gradmix.example import example_multitrack
    from gradmix.fit.levels import solve_levels
    from gradmix.models.engineer import engineer_controls

    layout = Layout.default()
    model = MixController(layout, ModelConfig(**TINY))
    tracks = list(example_multitrack(3.0, SR, seed=0).values())[:4]
    mono = torch.tensor([[t.shape[0] == 1 for t in tracks]])
    x = torch.stack([t.expand(2, -1) for t in tracks])[None]
    true = engineer_controls(layout, 1, len(tracks), torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = layout.render_normalized(x, true, sample_rate=SR, mono=mono)[0][0]
    logits = true.logits()
    pan, makeup = layout.num_strip_params - 1, layout.strip_control_index(2, "makeup_db")
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():  # the truth with every level, pan and send moved
        logits.strip[0, :, pan] += torch.randn(len(tracks), generator=g)
        logits.strip[0, :, makeup] += 0.5 * torch.randn(len(tracks), generator=g)
        logits.sends.add_(torch.randn(logits.sends.shape, generator=g))

    def error_db():
        with torch.no_grad():
            est = layout.render_normalized(x, Controls.from_logits(logits), sample_rate=SR, mono=mono)[0][0]
        return 10 * np.log10(float((est - ref).square().sum() / ref.square().sum()))

    before = error_db()
    assert solve_levels(FitProblem(model, x, mono, ref, SR), logits)
    solve_levels(FitProblem(model, x, mono, ref, SR), logits)  # the master's envelopes, held in the first, have moved
    assert before > -15 and error_db() < -40
    found = Controls.from_logits([v.detach() for v in logits])
    assert torch.allclose(found.strip[0, :, pan], true.strip[0, :, pan], atol=0.01)
    params, truth = layout.denormalize(found), layout.denormalize(true)
    audible = truth.sends_db > -50  # a send far below the dry signal has no level to recover
    assert torch.allclose(params.sends_db[audible], truth.sends_db[audible], atol=1.0)


def test_pan_laws_invert_and_a_level_beyond_make_up_scales_the_strip_exactly():
    from gradmix import dsp
    from gradmix.console import render_strips
    from gradmix.fit.levels import pan_and_level, set_level, side_gains

    pan = torch.tensor([-0.9, -0.3, 0.0, 0.4, 1.0, -0.5, 0.0, 0.7])
    mono = torch.tensor([True] * 5 + [False] * 3)
    ones = torch.ones(len(pan), 2, 1)
    placed = torch.where(mono[:, None, None], dsp.pan(ones[:, :1], pan=pan), dsp.balance(ones, pan=pan))[..., 0]
    assert torch.allclose(side_gains(pan, mono), placed, atol=1e-6)
    found, level = pan_and_level(3.0 * placed, mono)  # the same placement, 9.54 dB louder
    assert torch.allclose(found, pan, atol=1e-5) and torch.allclose(level, torch.full_like(level, 9.542), atol=1e-3)

    layout = Layout.default()
    x = 0.3 * torch.randn(1, 2, 2, SR, generator=torch.Generator().manual_seed(0))
    logits = layout.random_controls(1, 2, torch.Generator().manual_seed(1)).logits()
    params = layout.denormalize(Controls.from_logits(logits))
    with torch.no_grad():
        comp = [s.effect.type_name for s in layout.strip].index("compressor")
        params.strip[comp]["threshold_db"].fill_(-30.0)  # room to move it
        logits.strip[0, :, layout.strip_control_index(comp, "threshold_db")] = torch.logit(
            layout.strip[comp].specs[0].normalize(torch.tensor(-30.0))
        )
        params = layout.denormalize(Controls.from_logits(logits))
        before = render_strips(layout.strip, x, params.strip, sample_rate=SR)
        set_level(layout, logits, params, torch.tensor([-20.0, 6.0]))  # -20 dB: below any make-up gain
        after = render_strips(layout.strip, x, layout.denormalize(Controls.from_logits(logits)).strip, sample_rate=SR)
    gain = torch.tensor([0.1, 10 ** (6 / 20)])[None, :, None, None]
    assert torch.allclose(after, before * gain, atol=1e-4 * float(before.abs().max()))


def test_generative_evaluation_reports_every_criterion(tmp_path, style_model, capsys):
    require("auraloss")
    rng = np.random.default_rng(2)
    for k in range(2):
        d = tmp_path / "data" / f"song{k}"
        stems = make_stems(d, n=2, seconds=2.0)
        mix = sum(sf.read(p)[0] for p in sorted(stems.glob("t*.wav")))
        sf.write(
            d / "mix.wav", np.stack([mix, 0.8 * mix + 0.01 * rng.standard_normal(mix.size)], 1).astype(np.float32), SR
        )
    out = tmp_path / "gen"
    assert (
        main(
            [
                "eval",
                str(tmp_path / "data"),
                "--generative",
                "-n",
                "3",
                "--refine",
                "2",
                "--seconds",
                "2",
                "--model",
                str(style_model),
                "-o",
                str(out),
            ]
        )
        == 0
    )
    summary = json.loads((out / "generative.json").read_text())
    rows = summary["per_seed"][0]["rows"]  # one seed (--seed's): the samples' rows; the random consoles' below
    assert summary["songs"] == ["song0", "song1"] and summary["seeds"] == [0] and len(rows[0]["sample_scores"]) == 3
    assert summary["diversity_ratio"] > 0 and 0 <= summary["plausible_share"] <= 1
    row, random = rows[0], summary["rows"][0]
    wins = [np.mean([a < b for b in random["random_scores"]]) for a in row["sample_scores"]]  # pairs the sample wins
    assert row["sample_win_rates"] == wins and len(random["random_scores"]) == 3
    every = [w for r in rows for w in r["sample_win_rates"]]
    assert summary["win_rate"] == pytest.approx(np.mean(every)) and summary["worst_win_rate"] == min(every)
    assert all(
        (s < random["random_mean_score"]) == (row["plausible_share"] * 3 > k)
        for k, s in enumerate(sorted(row["sample_scores"]))
    )  # the share: samples under the random consoles' mean
    assert all(np.isfinite(summary[k]) for k in ("frechet_samples", "frechet_random", "match_ratio", "mmd_samples"))
    assert "diversity" in capsys.readouterr().out and (out / "generative.md").is_file()
    vectors = np.load(out / "vectors.npz")  # samples: (seeds, n, segments, features)
    assert vectors["samples/song0"].shape[:2] == (1, 3)
    assert vectors["samples/song0"].shape[-1] == len(vectors["features"])
    assert vectors["human/song1"].shape[-1] == len(vectors["features"])


def test_the_shipped_model_samples_out_of_the_box(tmp_path):
    from gradmix.models.checkpoint import load_model

    model = load_model()[0]
    assert len(model.style_bank) == len(model.style_bank_offsets) == len(model.style_bank_tones) > 50
    stems = make_stems(tmp_path / "stems", n=2, seconds=2.0)
    assert main(["sample", str(stems), "-n", "2", "--refine", "2", "-o", str(tmp_path / "s")]) == 0
    a, b = (sf.read(tmp_path / "s" / f"mix_0{k}.wav")[0] for k in (1, 2))
    assert np.isfinite(a).all() and np.abs(a - b).max() > 1e-3
