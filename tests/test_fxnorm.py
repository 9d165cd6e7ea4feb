"""Effect normalisation: towards the class statistics, labels, resumability, input untouched."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.signal
import soundfile as sf
import torch

from gradmix.cli.main import main
from gradmix.data import find_songs
from gradmix.data.fxnorm import ORDER, normalize_stem, stem_features
from gradmix.dsp import integrated_loudness

SR = 44100


def make_dataset(root: Path, songs: int = 3) -> None:
    rng = np.random.default_rng(0)
    for k in range(songs):
        folder = root / f"song{k}"
        folder.mkdir(parents=True)
        n = 3 * SR
        env = np.repeat(rng.uniform(0.05, 1.0, n // 2205 + 1), 2205)[:n] ** 2
        bass = scipy.signal.sosfilt(scipy.signal.butter(4, 150 + 100 * k, fs=SR, output="sos"), rng.standard_normal(n))
        hats = (
            scipy.signal.sosfilt(
                scipy.signal.butter(4, 3000 + 2000 * k, "highpass", fs=SR, output="sos"), rng.standard_normal(n)
            )
            * env
        )
        gains = (0.5, 0.05 + 0.1 * k)
        sf.write(folder / "bass.wav", (gains[0] * bass / np.abs(bass).max()).astype(np.float32), SR)
        stereo = np.stack([hats, 0.3 * hats + 0.2 * rng.standard_normal(n) * env], 1)  # left-heavy, wide
        sf.write(folder / "hats.wav", (gains[1] * stereo / np.abs(stereo).max()).astype(np.float32), SR)
        (folder / "metadata.json").write_text(json.dumps({"labels": {"bass": "bass", "hats": "hats"}}))


def digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


def test_normalize_dataset_cli(tmp_path):
    root, out = tmp_path / "raw", tmp_path / "norm"
    make_dataset(root)
    before = digest(root)
    assert main(["dataset", "normalize", str(root), "-o", str(out), "--workers", "2"]) == 0
    assert digest(root) == before  # the input is untouched
    classes = json.loads((out / "classes.json").read_text())["classes"]
    assert set(classes) == {"bass", "hats"}
    songs = find_songs(out)
    assert [s.name for s in songs] == ["song0", "song1", "song2"]
    raw = {s.name: s for s in find_songs(root)}
    dist_before, dist_after = [], []
    for song in songs:
        for ref in song.stems:
            label = json.loads((ref.path.parent / f"{ref.name}.fxnorm.json").read_text())
            assert label["order"] == list(ORDER) and label["class"] == ref.name
            assert {"eq_gain_db", "compressor", "gain_db", "balance_pan", "width"} <= set(label)
            y, _ = sf.read(ref.path, always_2d=True)
            lufs = integrated_loudness(torch.tensor(y.T)[None], sample_rate=SR).item()
            assert abs(lufs - (-25.0)) < 0.5, (song.name, ref.name, lufs)
            target = np.array(classes[ref.name]["spectrum_db"])
            dist_before.append(np.abs(np.array(label["before"]["spectrum_db"]) - target).mean())
            dist_after.append(np.abs(np.array(label["after"]["spectrum_db"]) - target).mean())
            if ref.name == "hats":
                assert abs(label["after"]["balance_db"]) < 0.5 < abs(label["before"]["balance_db"])
        assert raw[song.name].stems[0].label == song.stems[0].label
    assert np.mean(dist_after) < 0.5 * np.mean(dist_before)


def test_resumable_and_never_into_the_input(tmp_path, capsys):
    root, out = tmp_path / "raw", tmp_path / "norm"
    make_dataset(root, songs=2)
    assert main(["dataset", "normalize", str(root), "-o", str(out), "--workers", "1"]) == 0
    stamp = (out / "song0" / "bass.wav").stat().st_mtime_ns
    import shutil

    shutil.rmtree(out / "song1")
    (out / ".song1.partial").mkdir()  # an interrupted run leaves a partial folder behind
    capsys.readouterr()
    assert main(["dataset", "normalize", str(root), "-o", str(out), "--workers", "1"]) == 0
    assert "normalised 1 song(s), 1 already done" in capsys.readouterr().out
    assert (out / "song0" / "bass.wav").stat().st_mtime_ns == stamp
    assert (out / "song1" / "bass.wav").is_file() and not (out / ".song1.partial").exists()
    assert main(["dataset", "normalize", str(root), "-o", str(root / "inside")]) == 2


def test_the_eq_and_the_ratio_are_capped_and_the_width_reaches_the_class():
    """A class far from the stem: its EQ stops at +-12 dB, the ratio at 10, and the side-to-mid ratio after
    normalisation is the class's (the stereo-width step sets it exactly; loudness gain leaves it)."""
    from gradmix.data.fxnorm import EQ_LIMIT_DB, MAX_RATIO

    rng = np.random.default_rng(2)
    n = 4 * SR
    env = np.repeat(rng.uniform(0.001, 1.0, n // 2205 + 1), 2205)[:n] ** 3
    left = rng.standard_normal(n) * env
    x = torch.tensor(np.stack([left, 0.8 * left + 0.3 * rng.standard_normal(n) * env]) * 0.3, dtype=torch.float32)
    feats = stem_features(x, SR, mono=False)
    spectrum = np.array(feats.spectrum_db)
    spectrum[10] += 30.0
    spectrum[20] -= 30.0
    stats = {"spectrum_db": spectrum.tolist(), "spread_db": 0.1, "width_db": feats.width_db + 4.0}
    _, label = normalize_stem(x, SR, False, stats)
    assert max(label["eq_gain_db"]) == EQ_LIMIT_DB == 12 and min(label["eq_gain_db"]) == -EQ_LIMIT_DB
    assert label["compressor"]["ratio"] == MAX_RATIO == 10
    assert label["width"] > 1.2 and label["after"]["width_db"] == pytest.approx(stats["width_db"], abs=0.01)


def test_dynamics_bounded_and_silence_kept():
    rng = np.random.default_rng(1)
    n = 4 * SR
    env = np.repeat(rng.uniform(0.001, 1.0, n // 2205 + 1), 2205)[:n] ** 3
    x = torch.tensor(np.stack([rng.standard_normal(n) * env] * 2) * 0.3, dtype=torch.float32)
    feats = stem_features(x, SR, mono=True)
    stats = {"spectrum_db": feats.spectrum_db, "spread_db": feats.spread_db / 3, "width_db": None}
    y, label = normalize_stem(x, SR, True, stats)
    assert label["compressor"] is not None and label["compressor"]["ratio"] > 1
    assert label["after"]["spread_db"] < feats.spread_db
    silent, label = normalize_stem(torch.zeros(2, SR), SR, True, stats)
    assert label["silent"] and silent.abs().max() == 0


def test_sharded_run_equals_a_single_run(tmp_path, capsys):
    root = tmp_path / "raw"
    make_dataset(root, songs=3)
    assert main(["dataset", "normalize", str(root), "-o", str(tmp_path / "one"), "--workers", "1"]) == 0
    out = tmp_path / "sharded"
    assert main(["dataset", "normalize", str(root), "-o", str(out), "--shard", "0/2"]) == 2  # pass 1 first
    assert "run pass 1 once first" in capsys.readouterr().err
    assert main(["dataset", "normalize", str(root), "-o", str(out), "--stats-only"]) == 0
    for shard in ("1/2", "0/2"):
        assert main(["dataset", "normalize", str(root), "-o", str(out), "--shard", shard, "--workers", "1"]) == 0
    for song in ("song0", "song1", "song2"):
        a, _ = sf.read(tmp_path / "one" / song / "hats.wav")
        b, _ = sf.read(out / song / "hats.wav")
        assert np.array_equal(a, b)


def _truncate(folder: Path) -> str:
    data = (folder / "bass.wav").read_bytes()
    (folder / "bass.wav").write_bytes(data[: len(data) // 2])
    return "bass.wav: truncated"


def _two_samples(folder: Path) -> str:
    for p in folder.glob("*.wav"):
        p.unlink()
    sf.write(folder / "blip.wav", np.array([0.1, 0.2], np.float32), SR)
    return "the stems are 0.00 s long; gradmix needs at least 0.5 s"


def _silent(folder: Path) -> str:
    for p in folder.glob("*.wav"):
        sf.write(p, np.zeros(SR, np.float32), SR)
    return "every stem is silent"


@pytest.mark.parametrize("spoil", [_truncate, _two_samples, _silent])
@pytest.mark.parametrize("resume", [False, True])
def test_a_song_that_mix_refuses_is_refused_in_one_line_and_nothing_is_written(tmp_path, capsys, spoil, resume):
    root, out = tmp_path / "raw", tmp_path / "norm"
    make_dataset(root, songs=2)
    if resume:  # pass 1 already done: the song is read first in pass 2
        assert main(["dataset", "normalize", str(root), "-o", str(out), "--stats-only"]) == 0
    message = spoil(root / "song1")
    before = sorted(p.name for p in out.iterdir()) if resume else None
    capsys.readouterr()
    assert main(["dataset", "normalize", str(root), "-o", str(out), "--workers", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("gradmix: error: ") and message in err, err
    if resume:  # song0 may be done (whole); nothing of song1, no partial folder
        assert not (out / "song1").exists() and not list(out.glob(".*partial"))
        assert set(p.name for p in out.iterdir()) <= set(before) | {"song0"}
    else:
        assert not out.exists()
