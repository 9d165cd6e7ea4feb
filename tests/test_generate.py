"""Generative mixing: ``gradmix sample``, ``gradmix match`` and ``gradmix fit`` on synthetic stems."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import require
from gradmix.cli.main import main
from gradmix.console import ConsoleSetting, Layout
from gradmix.errors import GradmixError
from gradmix.generate import prior_styles, style_features, style_loss
from gradmix.metrics import style_distance
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
    return save_model(tmp_path_factory.mktemp("model") / "style.pt", m, sample_rate=SR, info={})


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
    args = ["sample", str(stems), "-n", "3", "--seed", "7", "--model", str(style_model)]
    assert main([*args, "-o", str(tmp_path / "a")]) == 0
    assert main([*args, "-o", str(tmp_path / "b")]) == 0
    mixes = [sf.read(tmp_path / "a" / f"mix_0{k}.wav")[0] for k in (1, 2, 3)]
    for k in (1, 2, 3):  # same seed, same mixes and consoles
        assert np.array_equal(mixes[k - 1], sf.read(tmp_path / "b" / f"mix_0{k}.wav")[0])
        assert (tmp_path / "a" / f"mix_0{k}.console.json").read_text() == \
            (tmp_path / "b" / f"mix_0{k}.console.json").read_text()
    for i in range(3):
        for j in range(i + 1, 3):
            assert np.abs(mixes[i] - mixes[j]).max() > 1e-3  # distinct
    page = (tmp_path / "a" / "index.html").read_text()
    assert page.count("<audio") == 3 and "data:image/png" in page
    ConsoleSetting.load(tmp_path / "a" / "mix_02.console.json")  # valid console files
    assert main([*args[:-2], "--model", str(style_model), "--seed", "8", "-o", str(tmp_path / "c")]) == 0
    assert not np.array_equal(sf.read(tmp_path / "c" / "mix_01.wav")[0], mixes[0])
    assert main([*args, "-o", str(stems)]) == 2  # into the stems folder: refused, nothing written
    assert sorted(p.name for p in stems.iterdir()) == ["t0.wav", "t1.wav", "t2.wav"]


def test_prior_styles_check_their_arguments(style_model):
    from gradmix.models.checkpoint import load_model

    model = load_model(style_model)[0]
    assert torch.equal(prior_styles(model, 2, seed=1), prior_styles(model, 2, seed=1))
    assert prior_styles(model, 2, seed=1, temperature=0).abs().max() == 0
    with pytest.raises(GradmixError, match="at least 1"):
        prior_styles(model, 0)
    plain = MixController(Layout.default(), ModelConfig(**TINY))
    with pytest.raises(GradmixError, match="no mix style"):
        prior_styles(plain, 2)


def test_style_distance_is_zero_for_the_same_mix_and_ignores_length():
    t = torch.arange(SR * 2) / SR
    x = torch.stack([torch.sin(2 * torch.pi * 440 * t), 0.5 * torch.sin(2 * torch.pi * 440 * t)])[None] * 0.3
    assert float(style_distance(x, x, SR)) == pytest.approx(0.0, abs=1e-9)
    tiled = x.repeat(1, 1, 2)  # the same mix, twice as long: same style
    assert float(style_distance(tiled, x, SR)) < 0.02
    brighter = torch.stack([torch.sin(2 * torch.pi * 3000 * t)] * 2)[None] * 0.3
    assert float(style_distance(brighter, x, SR)) > 0.3
    assert float(style_loss(style_features(x, SR), style_features(x, SR))) == pytest.approx(0.0, abs=1e-6)


def test_match_follows_the_reference_and_refine_gets_closer(tmp_path, style_model, capsys):
    require("auraloss")
    stems = make_stems(tmp_path / "stems")
    t = np.arange(3 * SR) / SR  # a reference of other content and length: bright, wide, loud
    rng = np.random.default_rng(1)
    ref = np.stack([rng.standard_normal(t.size), rng.standard_normal(t.size)], 1) * 0.2
    sf.write(tmp_path / "ref.wav", ref.astype(np.float32), SR)
    out = tmp_path / "m.wav"
    assert main(["match", str(stems), "--reference", str(tmp_path / "ref.wav"), "-o", str(out), "--refine", "15",
                 "--model", str(style_model)]) == 0
    text = capsys.readouterr().out
    before, after = (float(text.split(f"{k} ")[1].split(",")[0].split()[0]) for k in ("model", "refined"))
    assert after < before
    assert out.is_file() and out.with_suffix(".console.json").is_file()
    assert main(["match", str(stems), "--reference", str(tmp_path / "missing.wav"), "-o", str(out),
                 "--model", str(style_model)]) == 2


def test_fit_recovers_a_console_of_the_same_stems(tmp_path, style_model, capsys):
    require("auraloss")
    stems = make_stems(tmp_path / "stems", n=2, seconds=1.0)
    setting = ConsoleSetting.neutral(["t0", "t1"], ["t0.wav", "t1.wav"], sample_rate=SR)
    setting.tracks[0].chain[0].params["gain_db"] = -6.0
    setting.tracks[1].chain[3].params["pan"] = 0.5
    setting.save(tmp_path / "truth.json")
    assert main(["render", str(stems), str(tmp_path / "truth.json"), "-o", str(tmp_path / "target.wav")]) == 0
    assert main(["fit", str(stems), "--target", str(tmp_path / "target.wav"), "-o", str(tmp_path / "fit.json"),
                 "--steps", "60", "--model", str(style_model)]) == 0
    residual = float(capsys.readouterr().out.split("residual ")[1].split(" dB")[0])
    assert residual < -20
    assert main(["render", str(stems), str(tmp_path / "fit.json"), "-o", str(tmp_path / "again.wav")]) == 0
    a, b = sf.read(tmp_path / "again.wav")[0], sf.read(tmp_path / "target.wav")[0]
    assert 10 * np.log10(((a - b) ** 2).sum() / (b ** 2).sum()) == pytest.approx(residual, abs=1.0)
    sf.write(tmp_path / "short.wav", b[: SR // 2], SR)
    assert main(["fit", str(stems), "--target", str(tmp_path / "short.wav"), "-o", str(tmp_path / "x.json"),
                 "--model", str(style_model)]) == 2


def test_generative_evaluation_reports_every_criterion(tmp_path, style_model, capsys):
    require("auraloss")
    rng = np.random.default_rng(2)
    for k in range(2):
        d = tmp_path / "data" / f"song{k}"
        stems = make_stems(d, n=2, seconds=2.0)
        mix = sum(sf.read(p)[0] for p in sorted(stems.glob("t*.wav")))
        sf.write(d / "mix.wav", np.stack([mix, 0.8 * mix + 0.01 * rng.standard_normal(mix.size)], 1).astype(np.float32), SR)
    out = tmp_path / "gen"
    assert main(["eval", str(tmp_path / "data"), "--generative", "-n", "3", "--refine", "2", "--seconds", "2",
                 "--model", str(style_model), "-o", str(out)]) == 0
    summary = json.loads((out / "generative.json").read_text())
    assert summary["songs"] == ["song0", "song1"] and len(summary["rows"][0]["sample_scores"]) == 3
    assert summary["diversity_ratio"] > 0 and 0 <= summary["plausible_share"] <= 1
    assert all(np.isfinite(summary[k]) for k in ("frechet_samples", "frechet_random", "match_ratio"))
    assert "diversity" in capsys.readouterr().out and (out / "generative.md").is_file()
