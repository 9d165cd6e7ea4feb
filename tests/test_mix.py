"""``gradmix mix`` and ``gradmix demo``: the model's console file reproduces the mix, order does not matter,
bad input is one line and exit 2 with nothing written."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from gradmix.cli.main import main
from gradmix.console import Layout
from gradmix.models import MixController, ModelConfig
from gradmix.models.checkpoint import DEFAULT_MODEL, save_model

SR = 44100


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    torch.manual_seed(0)
    m = MixController(Layout.default(), ModelConfig(mels=32, channels=(4, 8), dim=16, heads=2, layers=1, ff=32))
    with torch.no_grad():  # off the neutral start, so that tracks get different settings and sends
        m.strip_head[-1].weight.normal_(0, 0.5)
        m.strip_head[-1].bias[-2:] = 2.0
    return save_model(tmp_path_factory.mktemp("model") / "m.pt", m, sample_rate=SR, info={})


def make_stems(folder: Path, names=("kick", "bass", "pad"), seconds=2.0, rate=SR) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(0)
    for k, name in enumerate(names):
        x = 0.3 * np.sin(2 * np.pi * (60 + 200 * k) * t) * (1 + np.sin(2 * np.pi * 2 * t)) / 2
        x = x + 0.01 * rng.standard_normal(t.size)
        data = np.stack([x, 0.7 * x], 1) if k == 2 else x[:, None]
        sf.write(folder / f"{name}.wav", data.astype(np.float32), rate)
    return folder


def leaves(tree) -> list:
    """The numbers and strings of a JSON tree, in order (to compare two console files within rounding)."""
    if isinstance(tree, dict):
        return [v for k in sorted(tree) for v in [k, *leaves(tree[k])]]
    if isinstance(tree, list):
        return [v for item in tree for v in leaves(item)]
    return [tree]


def read(path: Path) -> np.ndarray:
    return sf.read(path, always_2d=True)[0]


def test_mix_writes_the_mix_a_console_that_reproduces_it_and_a_report(tmp_path, model_file, capsys):
    stems = make_stems(tmp_path / "stems")
    out = tmp_path / "out"
    out.mkdir()
    assert main(["mix", str(stems), "-o", str(out / "mix.wav"), "--model", str(model_file), "--report"]) == 0
    text = capsys.readouterr().out
    assert "mixed 3 tracks" in text and "LUFS" in text
    console = json.loads((out / "mix.console.json").read_text())
    assert console["format"] == "gradmix.console" and [t["file"] for t in console["tracks"]] == [
        "bass.wav",
        "kick.wav",
        "pad.wav",
    ]
    assert any(t["sends"] for t in console["tracks"])  # sends the model set are in the file
    assert main(["render", str(stems), str(out / "mix.console.json"), "-o", str(out / "again.wav")]) == 0
    mix, again = read(out / "mix.wav"), read(out / "again.wav")
    assert mix.shape == (2 * SR, 2) and np.isfinite(mix).all() and np.abs(mix).max() > 1e-3
    assert 20 * math.log10(np.abs(mix - again).max() / np.abs(mix).max() + 1e-30) < -60
    page = (out / "mix.report.html").read_text()
    assert "data:image/png;base64," in page and "kick" in page and "LUFS" in page and "<audio" in page


def test_the_console_file_holds_each_compressors_own_makeup_and_four_digit_values(tmp_path):
    """In the demo's console file (the shipped model) bypassing a compressor keeps its track's loudness (its
    makeup is its own gain reduction, not the song's one level move), and no value carries float32 noise."""
    from gradmix.console import ConsoleSetting
    from gradmix.dsp import integrated_loudness

    assert main(["demo", "-o", str(tmp_path / "demo"), "--seconds", "8"]) == 0
    setting = ConsoleSetting.load(tmp_path / "demo" / "mix.console.json")
    makeups = []
    for track in setting.tracks:
        x = torch.from_numpy(read(tmp_path / "demo" / "stems" / track.file).T.astype(np.float32))[None]
        k = [e.effect.type_name for e in track.chain].index("compressor")
        for e in track.chain[:k]:
            x = e.effect(x, e.params, sample_rate=SR)
        y = track.chain[k].effect(x, track.chain[k].params, sample_rate=SR)
        lufs = [float(integrated_loudness(v.expand(-1, 2, -1).double(), sample_rate=SR)[0]) for v in (x, y)]
        assert lufs[1] == pytest.approx(lufs[0], abs=0.01), track.name
        makeups.append(track.chain[k].params["makeup_db"])
    assert len({round(m, 1) for m in makeups if m > 0.1}) >= 3, makeups

    def floats(tree):
        if isinstance(tree, dict):
            return [f for v in tree.values() for f in floats(v)]
        return [f for v in tree for f in floats(v)] if isinstance(tree, list) else [tree] * isinstance(tree, float)

    values = floats(json.loads((tmp_path / "demo" / "mix.console.json").read_text()))
    assert len(values) > 100 and all(float(f"{v:.4g}") == v for v in values)


def test_render_and_export_find_the_stems_the_console_file_records(tmp_path, model_file, capsys):
    """mix records its stems folder (relative to the console file); render and export then need no folder,
    also after both folders have moved together. A console file without the record names --stems when the
    files are not beside it."""
    stems = make_stems(tmp_path / "project" / "stems")
    out = tmp_path / "project" / "mixes"
    out.mkdir()
    assert main(["mix", str(stems), "-o", str(out / "mix.wav"), "--model", str(model_file)]) == 0
    assert json.loads((out / "mix.console.json").read_text())["stems"] == "../stems"
    moved = tmp_path / "moved"
    shutil.move(tmp_path / "project", moved)
    out = moved / "mixes"
    assert main(["render", str(out / "mix.console.json"), "-o", str(out / "again.wav")]) == 0
    mix, again = read(out / "mix.wav"), read(out / "again.wav")
    assert 20 * math.log10(np.abs(mix - again).max() / np.abs(mix).max() + 1e-30) < -60
    assert main(["export", str(out / "mix.console.json"), "--format", "reaper", "-o", str(out / "mix.RPP")]) == 0
    assert 'FILE "../stems/kick.wav"' in (out / "mix.RPP").read_text()
    assert f"playing the stems in {moved / 'stems'}" in capsys.readouterr().out
    # saved again elsewhere (also through a link to a folder), the record still names the same stems
    from gradmix.console import ConsoleSetting

    (moved / "elsewhere").mkdir()
    (moved / "link").symlink_to(moved / "elsewhere")
    ConsoleSetting.load(out / "mix.console.json").save(moved / "link" / "copy.console.json")
    assert json.loads((moved / "elsewhere" / "copy.console.json").read_text())["stems"] == "../stems"
    assert ConsoleSetting.load(moved / "link" / "copy.console.json").stems == (moved / "stems").resolve()
    assert main(["render", str(moved / "stems"), "-o", str(out / "third.wav"), str(out / "mix.console.json")]) == 0
    console = json.loads((out / "mix.console.json").read_text())
    del console["stems"]
    (out / "plain.console.json").write_text(json.dumps(console))
    capsys.readouterr()
    assert main(["export", str(out / "plain.console.json"), "--format", "reaper", "-o", str(out / "p.RPP")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "but it is missing (--stems names the stems folder)" in err
    assert not (out / "p.RPP").exists()


def test_track_order_does_not_change_the_mix(tmp_path, model_file):
    a = make_stems(tmp_path / "a", names=("a1", "b2", "c3"))
    b = tmp_path / "b"
    b.mkdir()
    for src, dst in (("a1", "z1"), ("b2", "y2"), ("c3", "x3")):  # same audio, reversed file order
        shutil.copy(a / f"{src}.wav", b / f"{dst}.wav")
    assert main(["mix", str(a), "-o", str(tmp_path / "a.wav"), "--model", str(model_file)]) == 0
    assert main(["mix", str(b), "-o", str(tmp_path / "b.wav"), "--model", str(model_file)]) == 0
    x, y = read(tmp_path / "a.wav"), read(tmp_path / "b.wav")
    assert np.abs(x - y).max() < 1e-4 * np.abs(x).max()


def test_a_silent_stem_gets_a_neutral_strip_and_changes_nothing_else(tmp_path, model_file, capsys):
    """An empty stem (a muted export) is left out of the model's decisions: the other tracks' settings are the
    ones of the song without it, and its own strip is neutral (the untrained model's head sets every other
    strip away from neutral, so each comparison can fail)."""
    a = make_stems(tmp_path / "a")
    b = make_stems(tmp_path / "b")
    sf.write(b / "zz_empty.wav", np.zeros((2 * SR, 2), np.float32), SR)
    assert main(["mix", str(a), "-o", str(tmp_path / "a.wav"), "--model", str(model_file)]) == 0
    capsys.readouterr()
    assert main(["mix", str(b), "-o", str(tmp_path / "b.wav"), "--model", str(model_file)]) == 0
    assert "note: 1 silent track(s) left neutral (the model does not hear them): zz_empty" in capsys.readouterr().out
    without = json.loads((tmp_path / "a.console.json").read_text())
    with_empty = json.loads((tmp_path / "b.console.json").read_text())
    others = leaves([with_empty["tracks"][:3], with_empty["master"]])
    alone = leaves([without["tracks"], without["master"]])
    assert [v for v in others if isinstance(v, str)] == [v for v in alone if isinstance(v, str)]
    numbers = [v for v in others if not isinstance(v, str)]
    assert numbers == pytest.approx([v for v in alone if not isinstance(v, str)], rel=1e-4, abs=1e-4)
    empty = with_empty["tracks"][3]
    chain = {e["type"]: e for e in empty["chain"]}
    assert empty["sends"] == [] and chain["gain"]["gain_db"] == 0.0 and chain["pan"]["pan"] == 0.0
    assert all(band["gain_db"] == 0.0 for band in chain["eq"]["bands"]) and chain["compressor"]["ratio"] == 1.0
    assert any(t["sends"] or t["chain"][0]["gain_db"] != 0.0 for t in without["tracks"])
    x, y = read(tmp_path / "a.wav"), read(tmp_path / "b.wav")
    assert np.abs(x - y).max() < 1e-4 * np.abs(x).max()


def test_stems_at_another_rate_are_resampled_to_the_models(tmp_path, model_file):
    stems = make_stems(tmp_path / "stems", rate=48000)
    assert main(["mix", str(stems), "-o", str(tmp_path / "m.wav"), "--model", str(model_file)]) == 0
    assert sf.info(tmp_path / "m.wav").samplerate == SR
    assert main(["mix", str(stems), "-o", str(tmp_path / "s.wav"), "--model", str(model_file), "--strict"]) == 2
    assert not (tmp_path / "s.wav").exists()


def _nan(stems: Path) -> None:
    x = read(stems / "kick.wav")
    x[10] = np.nan
    sf.write(stems / "kick.wav", x.astype(np.float32), SR, subtype="FLOAT")


@pytest.mark.parametrize(
    "case, message",
    [
        ("empty", "the folder is empty"),
        ("nan", "NaN"),
        ("overwrite", "overwrite an input"),
        ("model", "no such model file"),
        ("inside", "inside the input folder"),  # the mix would be read as a stem next time
        ("model over", "overwrite an input"),  # the model file given as the output
        ("console", "the console file and the mix would be the same file"),
        ("short", "gradmix needs at least 0.5 s"),
        ("silent", "every stem is silent"),
        ("mp3", "gradmix writes .wav or .flac audio files, not '.mp3'"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, model_file, case, message):
    stems = make_stems(tmp_path / "stems")
    output = tmp_path / "mix.wav"
    model = str(model_file)
    if case == "empty":
        stems = tmp_path / "empty"
        stems.mkdir()
    elif case == "nan":
        _nan(stems)
    elif case == "overwrite":
        output = stems / "kick.wav"
    elif case == "model":
        model = str(tmp_path / "missing.pt")
    elif case == "inside":
        output = stems / "new_mix.wav"
    elif case == "model over":
        model = str(tmp_path / "model.pt")
        shutil.copy(model_file, model)
        output = Path(model)
    elif case == "mp3":
        output = tmp_path / "mix.mp3"
    elif case in ("short", "silent"):
        for f in stems.iterdir():
            x = read(f)
            sf.write(f, x[: SR // 4] if case == "short" else np.zeros_like(x), SR)
    extra = ["--console", str(output)] if case == "console" else []
    before = sorted(p.name for p in tmp_path.rglob("*"))
    proc = subprocess.run(
        [sys.executable, "-m", "gradmix.cli.main", "mix", str(stems), "-o", str(output), "--model", model, *extra],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_demo_mixes_the_example_with_the_default_model(tmp_path, capsys):
    assert DEFAULT_MODEL.is_file()  # shipped in the package: the demo must run out of the box
    assert main(["demo", "-o", str(tmp_path / "bad"), "--seconds", "0"]) == 2 and not (tmp_path / "bad").exists()
    assert main(["demo", "-o", str(tmp_path / "demo"), "--seconds", "3"]) == 0
    out = tmp_path / "demo"
    stems = sorted(p.name for p in (out / "stems").iterdir())
    assert stems == sorted(f"{n}.wav" for n in ("kick", "snare", "hats", "bass", "chords", "lead"))
    mix = read(out / "mix.wav")
    assert mix.shape == (3 * SR, 2) and np.isfinite(mix).all() and np.abs(mix).max() <= 1.0
    assert not np.allclose(read(out / "sum.wav"), mix)
    assert (out / "mix.console.json").is_file() and (out / "mix.report.html").stat().st_size > 10_000
    assert "report page" in capsys.readouterr().out


def test_the_shipped_model_treats_a_kick_a_hihat_a_bass_and_a_pad_differently():
    """Per-track mixing, not one strip for all: every pair of these tracks gets EQ curves that differ by at
    least 2 dB somewhere in 100 Hz - 10 kHz, and a compressor or sends that differ too (threshold or send by
    at least 2 dB, or ratio by at least 0.3)."""
    from gradmix import dsp
    from gradmix.example import example_multitrack
    from gradmix.mix import automix
    from gradmix.models.checkpoint import load_model

    model, meta = load_model(None)
    stems = example_multitrack(seconds=8.0, sample_rate=meta["sample_rate"])
    names = ["kick", "hats", "bass", "chords"]
    setting = automix(model, names, [f"{n}.wav" for n in names], [stems[n] for n in names], meta["sample_rate"])
    freqs = np.geomspace(100, 10000, 200)
    curves, dynamics = {}, {}
    for track in setting.tracks:
        eq = next(e for e in track.chain if e.effect.type_name == "eq")
        p = {k: torch.tensor([eq.params[k]], dtype=torch.float64) for k in ("freq_hz", "gain_db", "q")}
        b, a = dsp.eq.eq_coefficients(eq.effect.shapes, sample_rate=setting.sample_rate, **p)
        curves[track.name] = dsp.frequency_response_db(b, a, freqs, setting.sample_rate)[0].numpy()
        comp = next(e for e in track.chain if e.effect.type_name == "compressor").params
        dynamics[track.name] = (
            comp["threshold_db"],
            comp["ratio"],
            track.sends.get("reverb", -60.0),
            track.sends.get("delay", -60.0),
        )
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert np.abs(curves[a] - curves[b]).max() >= 2.0, (a, b, curves[a] - curves[b])
            (ta, ra, va, da), (tb, rb, vb, db_) = dynamics[a], dynamics[b]
            assert abs(ta - tb) >= 2 or abs(ra - rb) >= 0.3 or abs(va - vb) >= 2 or abs(da - db_) >= 2, (
                a,
                b,
                dynamics[a],
                dynamics[b],
            )
