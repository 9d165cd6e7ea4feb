"""Separation-built data with a tiny Demucs model built here (nothing downloaded)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import require
from gradmix.cli.main import main
from gradmix.data import find_songs

SR = 44100


FOUR = ["drums", "bass", "other", "vocals"]
SIX = ["drums", "bass", "other", "vocals", "guitar", "piano"]  # htdemucs_6s's sources


@pytest.fixture(params=["demucs", "htdemucs_6s"])
def tiny_model(request, tmp_path):
    """A tiny randomly initialised separator saved as Demucs saves its checkpoints: a four-source Demucs, or a
    six-source Hybrid Transformer Demucs with htdemucs_6s's source names."""
    require("demucs_infer")
    torch.manual_seed(0)
    if request.param == "demucs":
        from demucs_infer.demucs import Demucs

        model = Demucs(FOUR, channels=8, depth=3, samplerate=SR, segment=4)
    else:
        from demucs_infer.htdemucs import HTDemucs

        model = HTDemucs(
            SIX,
            channels=4,
            depth=2,
            nfft=1024,
            t_layers=1,
            t_heads=1,
            dconv_depth=1,
            dconv_comp=4,
            samplerate=SR,
            segment=2,
        )
    args, kwargs = model._init_args_kwargs
    path = tmp_path / f"tiny_{request.param}.th"
    torch.save({"klass": type(model), "args": args, "kwargs": kwargs, "state": model.state_dict()}, path)
    return path, model.sources


def test_separate_then_normalise(tmp_path, tiny_model):
    tiny_model, sources_expected = tiny_model
    mixes = tmp_path / "mixes"
    mixes.mkdir()
    rng = np.random.default_rng(0)
    for k in range(2):
        sf.write(mixes / f"song{k}.wav", (rng.standard_normal((3 * SR, 2)) * 0.1).astype(np.float32), SR)
    out = tmp_path / "out"
    assert main(["dataset", "separate", str(mixes), "-o", str(out), "--model", str(tiny_model), "--workers", "1"]) == 0
    songs = find_songs(out / "stems")
    assert [s.name for s in songs] == ["song0", "song1"]
    assert sorted(r.label for r in songs[0].stems) == sorted(sources_expected)
    mix = sf.read(mixes / "song0.wav", always_2d=True)[0]
    sources = []
    for ref in songs[0].stems:
        x, sr = sf.read(ref.path, always_2d=True)
        assert sr == SR and x.shape == (3 * SR, 2) and np.isfinite(x).all()
        # the network's output, not the mix copied into every source
        assert 10 * np.log10(((x - mix) ** 2).sum() / (mix**2).sum()) > -20
        sources.append(x)
    assert all(np.abs(a - b).max() > 1e-4 for i, a in enumerate(sources) for b in sources[i + 1 :])
    classes = json.loads((out / "normalized" / "classes.json").read_text())["classes"]
    assert set(classes) == set(sources_expected)  # FxNorm: one class per source
    normalized = find_songs(out / "normalized")
    assert len(normalized) == 2 and sorted(r.label for r in normalized[0].stems) == sorted(sources_expected)
    made = {p: p.stat().st_mtime_ns for p in (out / "stems").rglob("*.wav")}
    assert main(["dataset", "separate", str(mixes), "-o", str(out), "--model", str(tiny_model)]) == 0
    assert {p: p.stat().st_mtime_ns for p in (out / "stems").rglob("*.wav")} == made  # resumed: nothing redone


def test_missing_model_is_one_clear_error(tmp_path, capsys):
    (tmp_path / "m").mkdir()
    sf.write(tmp_path / "m" / "a.wav", np.zeros((100, 2), np.float32), SR)
    assert (
        main(
            [
                "dataset",
                "separate",
                str(tmp_path / "m"),
                "-o",
                str(tmp_path / "o"),
                "--model",
                str(tmp_path / "nope.th"),
            ]
        )
        == 2
    )
    assert "no such separation model" in capsys.readouterr().err
