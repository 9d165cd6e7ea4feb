"""The per-track group of ``gradmix eval``: track parts of a console, the measures against wet stems, the CLI."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import scipy.signal
import soundfile as sf
import torch

from gradmix.cli.main import main
from gradmix.console import ConsoleSetting
from gradmix.errors import GradmixError
from gradmix.metrics.tracks import (
    ambience_db,
    compression_db,
    descriptor_spread,
    eq_tilt_db_per_octave,
    octave_band_powers,
    track_descriptors,
    track_errors,
)

SR = 44100
SECONDS = 2
EXCERPT_S = 0.5  # what eval reads of each song: enough for 0.1 dB, and quick
QUIET_DB = -30.0  # tracks b and c sit this far below track a, so that changing them moves the mix by < 0.05 dB
SHELF = dict(freq_hz=4000.0, gain_db=9.0)


def high_shelf(freq_hz: float, gain_db: float, sample_rate: float = SR) -> tuple[np.ndarray, np.ndarray]:
    """RBJ cookbook high shelf (S = 1), an oracle independent of gradmix's EQ."""
    a_lin = 10 ** (gain_db / 40)
    w0 = 2 * math.pi * freq_hz / sample_rate
    alpha = math.sin(w0) / 2 * math.sqrt(2)
    c, k = math.cos(w0), 2 * math.sqrt(a_lin) * alpha
    b = [
        a_lin * ((a_lin + 1) + (a_lin - 1) * c + k),
        -2 * a_lin * ((a_lin - 1) + (a_lin + 1) * c),
        a_lin * ((a_lin + 1) + (a_lin - 1) * c - k),
    ]
    a = [(a_lin + 1) - (a_lin - 1) * c + k, 2 * ((a_lin - 1) - (a_lin + 1) * c), (a_lin + 1) - (a_lin - 1) * c - k]
    return np.array(b) / a[0], np.array(a) / a[0]


def shelf_tilt_db_per_octave() -> float:
    """The shelf's response at the octave-band centres, fitted by a straight line against the octave index."""
    centres = 1000.0 * 2.0 ** np.arange(-5, 5)
    _, h = scipy.signal.freqz(*high_shelf(**SHELF), worN=centres, fs=SR)
    return float(np.polyfit(np.arange(10), 20 * np.log10(np.abs(h)), 1)[0])


def song_audio(seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Three mono dry tracks of white noise and their wet stems ``(samples, 2)``: a panned hard left, b brightened
    by a +9 dB shelf at 4 kHz, c 6 dB louder; b and c 30 dB below a. The centred tracks use the pan law's
    -3 dB per channel, so that a plain sum matches them in level."""
    rng = np.random.default_rng(seed)
    quiet = 10 ** (QUIET_DB / 20)
    dry = [rng.standard_normal(SR * SECONDS) * g for g in (0.1, 0.1 * quiet, 0.1 * quiet)]
    centre = 1 / math.sqrt(2)
    a, b, c = dry
    bright = scipy.signal.lfilter(*high_shelf(**SHELF), b)
    wet = [
        np.stack([a, np.zeros_like(a)], 1),
        np.stack([bright, bright], 1) * centre,
        np.stack([c, c], 1) * centre * 10 ** (6 / 20),
    ]
    return dry, wet


def write_dataset(root, songs: int = 2, without_wet: int = 0) -> None:
    for k in range(songs + without_wet):
        d = root / f"song{k}"
        (d / "wet").mkdir(parents=True)
        dry, wet = song_audio(k)
        for name, x, w in zip("abc", dry, wet):
            sf.write(d / f"{name}.wav", x.astype(np.float32), SR, subtype="FLOAT")
            if k < songs:
                sf.write(d / "wet" / f"{name}.wav", w.astype(np.float32), SR, subtype="FLOAT")
        sf.write(d / "mix.wav", sum(wet).astype(np.float32), SR, subtype="FLOAT")


def tensors(seed: int = 0):
    dry, wet = song_audio(seed)
    dry_t = torch.from_numpy(np.stack([np.stack([x, x]) for x in dry]))
    wet_t = torch.from_numpy(np.stack([w.T for w in wet]))
    return dry_t, wet_t, torch.ones(3, dtype=torch.bool)


# ---- ConsoleSetting.track_outputs ------------------------------------------------------------------------------


def test_track_parts_sum_to_the_mix_before_the_master_chain():
    rng = np.random.default_rng(3)
    audio = [torch.from_numpy(rng.standard_normal((channels, SR // 2)) * 0.1) for channels in (1, 2, 1)]
    setting = ConsoleSetting.neutral(["t0", "t1", "t2"], sample_rate=SR)
    assert [b.name for b in setting.buses] == ["reverb", "delay"]
    setting.tracks[0].sends = {"reverb": -6.0}
    setting.tracks[1].sends = {"reverb": -12.0, "delay": -3.0}
    next(e for e in setting.tracks[2].chain if e.effect.type_name == "gain").params["gain_db"] = -4.0
    pre_master = ConsoleSetting(SR, setting.tracks, setting.buses, [])
    with torch.no_grad():
        mix, strips = pre_master.render(audio)
        parts = setting.track_outputs(strips)
    assert parts.shape == strips.shape == (3, 2, SR // 2) and parts.dtype == torch.float64

    def rel_db(err, ref):
        return 10 * math.log10(float(err.square().sum()) / float(ref.square().sum()) + 1e-40)

    assert rel_db(parts.sum(0) - mix, mix) < -100
    assert rel_db(parts[2] - strips[2], strips[2]) < -300  # no send: the part is the strip itself
    # the sends matter: without its buses, the sum of the strips misses the reverb and delay by far
    assert rel_db(strips.sum(0) - mix, mix) > -20
    with pytest.raises(GradmixError, match="strips"):
        setting.track_outputs(strips[:2])


# ---- the measures ----------------------------------------------------------------------------------------------


def test_the_wet_stems_against_themselves_have_no_error_and_spread_ratio_one():
    dry, wet, has = tensors()
    e = track_errors(wet, wet, dry, has, sample_rate=SR)
    assert e["measured"].all()
    for k in ("level_error_db", "position_error", "octave_band_error_db"):
        assert float(e[k].abs().max()) < 1e-9, k
    assert e["off_centre"].tolist() == [True, False, False]
    assert e["centred_position_error"].tolist() == pytest.approx([1.0, 0.0, 0.0], abs=1e-9)
    authors = track_descriptors(wet, dry, sample_rate=SR)
    for name, (s, a, r) in descriptor_spread(authors, authors, e["measured"]).items():
        assert s == a and (math.isnan(r) or r == pytest.approx(1.0)), name


def test_level_error_is_the_offset_of_one_track_and_no_measure_depends_on_levels_of_mix_or_dry():
    dry, wet, has = tensors()
    parts = wet.clone()
    parts[2] = parts[2] * 10 ** (-6 / 20)  # track c 6 dB quieter than the authors had it
    e = track_errors(parts, wet, dry, has, sample_rate=SR)
    assert float(e["level_error_db"][2]) == pytest.approx(6.0, abs=0.1)
    assert float(e["level_error_db"][:2].abs().max()) < 0.1  # track c is 30 dB down: the mix hardly moves
    scaled = track_errors(parts * 0.01, wet, dry * 20, has, sample_rate=SR)  # a gain on the mix, a louder dry
    for k in ("level_error_db", "position_error", "octave_band_error_db"):
        assert torch.allclose(scaled[k], e[k], atol=1e-6), k
    d1, d2 = track_descriptors(parts, dry, sample_rate=SR), track_descriptors(parts * 0.01, dry * 20, sample_rate=SR)
    for k in d1:
        assert torch.allclose(d1[k], d2[k], atol=1e-6), k


def test_a_centred_mix_has_the_wet_position_as_its_error():
    dry, wet, has = tensors()
    centred = torch.stack([wet[0, 0], wet[0, 0]]) / math.sqrt(2)  # track a, same energy, centred
    parts = torch.cat([centred[None], wet[1:]])
    e = track_errors(parts, wet, dry, has, sample_rate=SR)
    assert e["position_error"].tolist() == pytest.approx([1.0, 0.0, 0.0], abs=1e-6)


def test_tilt_recovers_the_sign_and_size_of_a_shelf():
    dry, wet, _ = tensors()
    expected = shelf_tilt_db_per_octave()
    assert expected > 0.5
    tilt = eq_tilt_db_per_octave(wet, dry, sample_rate=SR)
    assert float(tilt[1]) == pytest.approx(expected, rel=0.25)
    assert float(tilt[0].abs()) < 0.1 and float(tilt[2].abs()) < 0.1  # pan and gain: no tilt
    dark = torch.from_numpy(scipy.signal.lfilter(*high_shelf(SHELF["freq_hz"], -SHELF["gain_db"]), dry[1].numpy()))
    assert float(eq_tilt_db_per_octave(dark[None], dry[1:2], sample_rate=SR)) == pytest.approx(-expected, rel=0.25)


def test_octave_bands_of_float32_audio_match_float64_to_1e_5_in_bands_55_db_apart():
    white = np.random.default_rng(1).standard_normal((2, 2, SR * SECONDS))
    x = torch.from_numpy(scipy.signal.sosfilt(scipy.signal.butter(4, 500, fs=SR, output="sos"), white))
    exact = octave_band_powers(x, sample_rate=SR)
    assert bool((exact.amax(-1) > 10**5.5 * exact.amin(-1)).all())  # 24 dB/octave above 500 Hz, to the window's leakage
    fast = octave_band_powers(x.float(), sample_rate=SR)
    assert fast.dtype == torch.float64
    assert torch.allclose(fast, exact, rtol=1e-5, atol=0)


def test_compression_and_ambience_descriptors():
    t = torch.arange(SR, dtype=torch.float64) / SR
    tone = torch.sin(2 * math.pi * 1000 * t)
    loud_then_quiet = torch.cat([tone[: SR // 2], tone[SR // 2 :] * 0.25])[None, None]  # 12 dB step
    squashed = torch.cat([tone[: SR // 2] * 0.5, tone[SR // 2 :] * 0.25])[None, None]  # the loud half 6 dB down
    # crest = 10 log10(max frame power / mean): 10 log10(2 / (1 + 1/16)) - 10 log10(2 / (1 + 1/4)) = 0.706 dB
    expected = 10 * math.log10(2 / (1 + 1 / 16)) - 10 * math.log10(2 / (1 + 1 / 4))
    assert float(compression_db(squashed, loud_then_quiet, sample_rate=SR)) == pytest.approx(expected, abs=0.02)
    assert float(compression_db(loud_then_quiet * 3, loud_then_quiet, sample_rate=SR)) == pytest.approx(0.0, abs=1e-9)
    burst = torch.cat([tone[: SR // 4], torch.zeros(3 * SR // 4, dtype=torch.float64)])[None, None]
    after = t[: 3 * SR // 4]
    tail = burst + torch.cat(
        [
            torch.zeros(SR // 4, dtype=torch.float64),
            0.3 * torch.exp(-after / 0.2) * torch.sin(2 * math.pi * 700 * after),
        ]
    )
    assert float(ambience_db(burst * 0.5, burst, sample_rate=SR)) == pytest.approx(0.0, abs=1e-9)
    assert float(ambience_db(tail, burst, sample_rate=SR)) > 40  # the dry's gaps are silent, the tail fills them


# ---- gradmix eval --tracks ----------------------------------------------------------------------------------------


def test_eval_tracks_writes_tables_and_resumes(tmp_path, capsys):
    write_dataset(tmp_path / "data", songs=2)
    out = tmp_path / "results"
    args = [
        "eval",
        str(tmp_path / "data"),
        "--systems",
        "plain_sum,equal_loudness",
        "-o",
        str(out),
        "--seconds",
        str(EXCERPT_S),
        "--tracks",
    ]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "measured 6 track(s) in 2 song(s), 2 off-centre" in captured.out and not captured.err
    table = (out / "tracks.md").read_text()
    assert "| plain_sum |" in table and "| equal_loudness |" in table and "Skipped" not in table
    assert "Per-track measures" in (out / "index.html").read_text()
    rows = list(csv.DictReader(open(out / "tracks.csv")))
    assert len(rows) == 2 * 2 * 3 and {r["song"] for r in rows} == {"song0", "song1"}
    for r in rows:
        if r["system"] != "plain_sum":
            continue
        if r["track"] == "a":  # panned hard left by the authors, centred by the plain sum
            assert r["off_centre"] == "True" and float(r["position_error"]) == pytest.approx(1.0, abs=0.01)
            assert float(r["centred_position_error"]) == pytest.approx(1.0, abs=0.01)
        if r["track"] == "b":  # brightened by the authors, left alone by the plain sum
            assert float(r["wet_tilt_db_per_octave"]) == pytest.approx(shelf_tilt_db_per_octave(), rel=0.25)
            assert abs(float(r["tilt_db_per_octave"])) < 0.1
        if r["track"] == "c":  # 6 dB up in the authors' mix
            assert float(r["level_error_db"]) == pytest.approx(6.0, abs=0.1)
    assert len(list(csv.DictReader(open(out / "tracks_spread.csv")))) == 2 * 2
    stamp = (out / "tracks" / "song0.json").stat().st_mtime_ns
    (out / "tracks" / "song1.json").unlink()  # as if interrupted before song1's tracks were written
    assert main(args) == 0
    assert (out / "tracks" / "song0.json").stat().st_mtime_ns == stamp
    assert len(list(csv.DictReader(open(out / "tracks.csv")))) == 12


def test_eval_tracks_without_wet_stems_is_one_line(tmp_path, capsys):
    write_dataset(tmp_path / "data", songs=0, without_wet=1)
    out = tmp_path / "results"
    assert main(["eval", str(tmp_path / "data"), "--systems", "plain_sum", "-o", str(out), "--tracks"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--tracks needs wet stems" in err and str(tmp_path / "data") in err
    assert not out.exists()


def test_model_as_adds_a_system_and_refuses_bad_names_and_paths(tmp_path, capsys):
    from gradmix.console import Layout
    from gradmix.models import MixController, ModelConfig
    from gradmix.models.checkpoint import save_model

    write_dataset(tmp_path / "data", songs=1, without_wet=1)
    tiny = MixController(Layout.default(), ModelConfig(channels=(4, 8), dim=16, layers=1))
    model = save_model(tmp_path / "m.pt", tiny, sample_rate=SR, info={})
    out = tmp_path / "results"
    base = ["eval", str(tmp_path / "data"), "--systems", "target", "-o", str(out), "--seconds", str(EXCERPT_S)]
    for bad, why in (
        (f"plain_sum={model}", "already a system"),
        (f"gradmix={model}", "already a system"),
        (f"previous={tmp_path / 'nope.pt'}", "does not exist"),
        ("previous", "NAME=PATH"),
    ):
        assert main([*base, "--model-as", bad]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and why in err, err
    assert main([*base, "--model-as", f"previous={model}", "--model-as", f"previous={model}"]) == 2
    assert "given twice" in capsys.readouterr().err
    assert not out.exists()
    assert main([*base, "--model-as", f"previous={model}", "--tracks"]) == 0
    err = capsys.readouterr().err  # the song without wet stems is skipped by the tracks group, in one line
    assert err.count("\n") == 1 and "1 song(s) without wet stems skipped: song1" in err
    assert {r["system"] for r in csv.DictReader(open(out / "results.csv"))} == {"target", "previous"}
    assert {(r["song"], r["system"]) for r in csv.DictReader(open(out / "tracks.csv"))} == {("song0", "previous")}
    table = (out / "tracks.md").read_text()
    assert "| previous |" in table and "| target |" not in table and "Skipped (no wet stems): song1" in table
