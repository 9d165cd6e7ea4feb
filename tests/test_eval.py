"""gradmix eval end to end on a small synthetic dataset."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import soundfile as sf

from gradmix.cli.main import main

SR = 44100


def test_eval_writes_tables_plots_page_and_resumes(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for k in range(2):
        d = tmp_path / "data" / f"song{k}"
        d.mkdir(parents=True)
        stems = [rng.standard_normal((2 * SR, 1)) * 0.1, rng.standard_normal((2 * SR, 2)) * 0.05]
        for i, s in enumerate(stems):
            sf.write(d / f"t{i}.wav", s.astype(np.float32), SR)
        mix = stems[0] * 0.5 + stems[1] * 0.8
        sf.write(d / "mix.wav", mix.astype(np.float32), SR)
    out = tmp_path / "results"
    args = [
        "eval",
        str(tmp_path / "data"),
        "--systems",
        "plain_sum,equal_loudness,rules,random_console,target",
        "-o",
        str(out),
        "--seconds",
        "2",
    ]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "| target | 0.000 ± 0.000" in text  # the human mix against itself scores zero
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert len(rows) == 10 and {r["system"] for r in rows} >= {"rules", "target"}
    for name in ("groups.png", "song0.png", "index.html", "audio/song1/rules.wav", "audio/song1/rules.console.json"):
        assert (out / name).is_file(), name
    assert "<audio" in (out / "index.html").read_text()
    stamp = (out / "songs" / "song0.json").stat().st_mtime_ns
    assert main(args) == 0  # resumes: per-song results are kept
    assert (out / "songs" / "song0.json").stat().st_mtime_ns == stamp
    assert main(["eval", str(tmp_path / "data"), "--systems", "magic", "-o", str(out)]) == 2


@pytest.mark.parametrize("systems", ["", " , "])
def test_eval_of_no_systems_is_one_line_before_any_work(tmp_path, capsys, systems):
    (tmp_path / "data" / "song0").mkdir(parents=True)
    for name in ("t0.wav", "mix.wav"):
        sf.write(tmp_path / "data" / "song0" / name, np.full(SR, 0.1, np.float32), SR)
    assert main(["eval", str(tmp_path / "data"), "--systems", systems, "-o", str(tmp_path / "results")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("gradmix: error: --systems: name at least one of plain_sum")
    assert not (tmp_path / "results").exists()


def test_eval_of_the_mixing_model_on_chosen_songs(tmp_path):
    from gradmix.console import Layout
    from gradmix.models import MixController, ModelConfig
    from gradmix.models.checkpoint import save_model

    rng = np.random.default_rng(1)
    for k in range(2):
        d = tmp_path / "data" / f"song{k}"
        d.mkdir(parents=True)
        stems = [rng.standard_normal((SR, 1)) * 0.1, rng.standard_normal((SR, 1)) * 0.05]
        for i, s in enumerate(stems):
            sf.write(d / f"t{i}.wav", s.astype(np.float32), SR)
        sf.write(d / "mix.wav", np.concatenate(stems, 1).astype(np.float32), SR)
    model = save_model(
        tmp_path / "m.pt",
        MixController(Layout.default(), ModelConfig(channels=(4, 8), dim=16, layers=1)),
        sample_rate=SR,
        info={"excluded": ["song0"]},
    )
    out = tmp_path / "results"
    base = ["eval", str(tmp_path / "data"), "--model", str(model), "-o", str(out)]
    assert main([*base, "--systems", "gradmix,equal_loudness", "--songs", "song1"]) == 0
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [(r["song"], r["system"]) for r in rows] == [("song1", "gradmix"), ("song1", "equal_loudness")]
    assert (out / "audio" / "song1" / "gradmix.console.json").is_file()
    assert main([*base, "--systems", "gradmix", "--songs", "nope"]) == 2
    assert main([*base[:-1], str(tmp_path / "held"), "--systems", "gradmix", "--held-out"]) == 0
    assert {r["song"] for r in csv.DictReader(open(tmp_path / "held" / "results.csv"))} == {"song0"}
    assert main([*base, "--systems", "rules", "--held-out"]) == 2


def test_each_system_decides_from_the_whole_song_and_is_compared_on_its_start(tmp_path):
    """As `gradmix mix` would: a part that enters after the compared window still gets the fader its own
    loudness asks for (equal loudness: -28 LUFS), and what is rendered and compared is the window."""
    import json

    from gradmix.dsp import integrated_loudness

    d = tmp_path / "data" / "song"
    d.mkdir(parents=True)
    rng = np.random.default_rng(2)
    early = rng.standard_normal((4 * SR, 1)) * 0.1
    late = rng.standard_normal((4 * SR, 1)) * 0.005
    late[: 2 * SR] = 0.0  # silent in the first 2 s, which are compared
    sf.write(d / "early.wav", early.astype(np.float32), SR)
    sf.write(d / "late.wav", late.astype(np.float32), SR)
    sf.write(d / "mix.wav", (early + late).astype(np.float32), SR)
    out = tmp_path / "results"
    assert main(["eval", str(tmp_path / "data"), "--systems", "equal_loudness", "-o", str(out), "--seconds", "2"]) == 0
    console = json.loads((out / "audio" / "song" / "equal_loudness.console.json").read_text())
    fader = {t["name"]: t["chain"][0]["gain_db"] for t in console["tracks"]}
    import torch

    own = float(integrated_loudness(torch.from_numpy(late.T[None]).double(), sample_rate=SR))
    # a part silent in the compared window would stay at 0 dB
    assert fader["late"] == pytest.approx(-28.0 - own, abs=0.01) and fader["late"] > 10
    assert sf.info(str(out / "audio" / "song" / "equal_loudness.wav")).frames == 2 * SR
