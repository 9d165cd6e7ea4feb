"""``gradmix render`` and audio loading on synthetic stems, including the bad-input table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import error_db, require_tool
from gradmix.audio import load_stems
from gradmix.cli.main import main
from gradmix.console import ConsoleSetting
from gradmix.errors import AudioError

SR = 44100


def make_song(folder: Path, rates=(SR, SR, SR), channels=(1, 2, 1), lengths=(1.0, 0.7, 0.5)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    names = []
    for i, (rate, ch, sec) in enumerate(zip(rates, channels, lengths)):
        name = f"track{i}.wav"
        sf.write(
            folder / name, (rng.standard_normal((int(sec * rate), ch)) * 0.1).astype(np.float32), rate, subtype="FLOAT"
        )
        names.append(name)
    setting = ConsoleSetting.neutral([Path(n).stem for n in names], names, sample_rate=SR)
    setting.tracks[0].chain[0].params["gain_db"] = -6.0
    setting.tracks[1].sends = {"reverb": -12.0}
    setting.buses[0].chain[0].params.update(mix=1.0, decay_s=[0.4, 0.3, 0.3, 0.2])
    return setting.save(folder / "console.json")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gradmix.cli.main", *args], capture_output=True, text=True)


def test_render_pads_resamples_and_writes(tmp_path, capsys):
    song = tmp_path / "song"
    console = make_song(song, rates=(SR, 48000, SR))
    out = tmp_path / "mix.wav"
    assert main(["render", str(song), str(console), "-o", str(out), "--stems-out", str(tmp_path / "stems")]) == 0
    mix, sr = sf.read(out, always_2d=True)
    assert sr == SR and mix.shape == (SR, 2) and np.isfinite(mix).all()
    text = capsys.readouterr().out
    assert "dBFS" in text and "LUFS" in text and "timings" not in text
    stems, _ = load_stems(song, files=["track0.wav", "track1.wav", "track2.wav"], sample_rate=SR)
    assert stems[1].source_rate == 48000 and stems[1].audio.shape == (2, SR)
    assert stems[2].audio[:, int(0.5 * SR) :].abs().max() == 0  # padded with silence
    setting = ConsoleSetting.load(console)
    expected, strips = setting.render([s.audio for s in stems])
    assert error_db(mix.T, expected.numpy()) < -120
    written = sorted(p.name for p in (tmp_path / "stems").iterdir())
    assert written == ["track0.wav", "track1.wav", "track2.wav"]
    s0, _ = sf.read(tmp_path / "stems" / "track0.wav", always_2d=True)
    assert error_db(s0.T, strips[0].numpy()) < -120


def test_render_timings(tmp_path, capsys):
    console = make_song(tmp_path / "song")
    assert main(["render", str(tmp_path / "song"), str(console), "-o", str(tmp_path / "mix.wav"), "--timings"]) == 0
    line = capsys.readouterr().out.splitlines()[-1]
    assert line.startswith("timings: read ") and all(f"{s} " in line for s in ("render", "measure", "write"))


def test_render_24_bit_warns_when_clipping(tmp_path):
    song = tmp_path / "song"
    console = make_song(song)
    setting = ConsoleSetting.load(console)
    setting.tracks[0].chain[0].params["gain_db"] = 30.0
    setting.master = setting.master[:2]  # no limiter
    setting.save(console)
    proc = run_cli("render", str(song), str(console), "-o", str(tmp_path / "mix.wav"), "--format", "24")
    assert proc.returncode == 0, proc.stderr
    assert "warning: the mix peaks at" in proc.stderr
    assert sf.info(tmp_path / "mix.wav").subtype == "PCM_24"


def test_silent_tracks_are_fine(tmp_path):
    song = tmp_path / "song"
    console = make_song(song)
    sf.write(song / "track1.wav", np.zeros((1000, 2), np.float32), SR)
    assert main(["render", str(song), str(console), "-o", str(tmp_path / "mix.wav")]) == 0
    assert np.isfinite(sf.read(tmp_path / "mix.wav")[0]).all()


def _corrupt(song: Path) -> None:
    (song / "track1.wav").write_bytes(np.random.default_rng(0).bytes(5000))


def _truncated(song: Path) -> None:
    data = (song / "track1.wav").read_bytes()
    (song / "track1.wav").write_bytes(data[: len(data) // 2])


def _text_as_flac(song: Path) -> None:
    (song / "track1.wav").write_text("these are not the samples you are looking for\n" * 20)


def _empty_file(song: Path) -> None:
    (song / "track1.wav").write_bytes(b"")


def _no_samples(song: Path) -> None:
    sf.write(song / "track1.wav", np.zeros((0, 2), np.float32), SR)


def _nan(song: Path) -> None:
    x = np.zeros((1000, 2), np.float32)
    x[500, 1] = np.nan
    sf.write(song / "track1.wav", x, SR, subtype="FLOAT")


def _six_channels(song: Path) -> None:
    sf.write(song / "track1.wav", np.zeros((1000, 6), np.float32), SR)


def _missing(song: Path) -> None:
    (song / "track1.wav").unlink()


BAD_STEMS = [
    (_corrupt, "track1.wav: cannot be read as audio"),
    (_truncated, "track1.wav: truncated"),
    (_text_as_flac, "track1.wav: cannot be read as audio"),
    (_empty_file, "track1.wav: the file is empty (0 bytes)"),
    (_no_samples, "track1.wav: has no samples"),
    (_nan, "track1.wav: contains NaN or Inf samples (first at 0.011 s)"),
    (_six_channels, "track1.wav: has 6 channels; gradmix takes mono or stereo stems"),
    (_missing, "track1.wav: the console names this file, but it is missing"),
]


@pytest.mark.parametrize("spoil,message", BAD_STEMS, ids=[m.split(": ")[1][:30] for _, m in BAD_STEMS])
def test_bad_stems_give_one_line_and_write_nothing(tmp_path, spoil, message):
    song = tmp_path / "song"
    console = make_song(song)
    spoil(song)
    out = tmp_path / "mix.wav"
    proc = run_cli("render", str(song), str(console), "-o", str(out))
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr
    assert not out.exists()


def test_bad_folders_and_outputs(tmp_path):
    song = tmp_path / "song"
    console = make_song(song)
    cases = [
        (("render", str(song), str(console), "-o", str(song / "track0.wav")), "would overwrite an input file"),
        (
            ("render", str(song), str(console), "-o", str(tmp_path / "nowhere" / "mix.wav")),
            "output folder does not exist",
        ),
        (("render", str(song), str(console), "-o", "/proc/gradmix-mix.wav"), "output folder is not writable"),
        (
            ("render", str(song), str(console), "-o", str(tmp_path / "m.wav"), "--stems-out", str(song)),
            "would overwrite an input file",
        ),
        (("render", str(tmp_path / "missing"), str(console), "-o", str(tmp_path / "m.wav")), "no such folder"),
        (("render", str(song), str(tmp_path / "nope.json"), "-o", str(tmp_path / "m.wav")), "no such console file"),
    ]
    before = sorted(p.name for p in song.iterdir())
    for args, message in cases:
        proc = run_cli(*args)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and message in proc.stderr, (args, proc.stderr)
    assert sorted(p.name for p in song.iterdir()) == before
    assert not (tmp_path / "m.wav").exists()


def test_loading_a_folder_empty_or_without_audio(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(AudioError, match="the folder is empty"):
        load_stems(empty)
    (empty / "notes.txt").write_text("hi")
    with pytest.raises(AudioError, match="no audio files"):
        load_stems(empty)


def test_too_many_tracks_and_strict_rates(tmp_path):
    song = tmp_path / "song"
    make_song(song, rates=(SR, 48000, SR))
    with pytest.raises(AudioError, match="more than the 2 gradmix takes"):
        load_stems(song, max_tracks=2)
    with pytest.raises(AudioError, match="sample rate 48000 Hz, expected 44100 Hz"):
        load_stems(song, strict=True)
    stems, rate = load_stems(song)
    assert rate == SR and all(s.audio.shape[-1] == SR for s in stems)


def test_musdb_stem_mp4_through_ffmpeg(tmp_path):
    ffmpeg = require_tool("ffmpeg")
    require_tool("ffprobe")
    song = tmp_path / "song"
    song.mkdir()
    waves = []
    for k in range(5):
        w = tmp_path / f"s{k}.wav"
        sf.write(w, (np.random.default_rng(k).standard_normal((SR // 2, 2)) * 0.05).astype(np.float32), SR)
        waves.append(w)
    cmd = [ffmpeg, "-v", "error", "-y"]
    for w in waves:
        cmd += ["-i", str(w)]
    for k in range(5):
        cmd += ["-map", f"{k}:a"]
    cmd += ["-c:a", "flac", "-strict", "-2", str(song / "demo.stem.mp4")]
    subprocess.run(cmd, check=True)
    stems, rate = load_stems(song)
    assert [s.name for s in stems] == ["demo#drums", "demo#bass", "demo#other", "demo#vocals"]
    ref, _ = sf.read(waves[2], always_2d=True)
    assert error_db(stems[1].audio.numpy(), ref.T) < -90
    picked, _ = load_stems(song, files=["demo.stem.mp4#vocals"])
    assert torch.equal(picked[0].audio, stems[3].audio)
