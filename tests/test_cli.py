"""The command line: the demo end to end, the effects listing, errors as one line."""

from __future__ import annotations

import subprocess
import sys

import pytest
import soundfile as sf
import torch

from gradmix.audio import write_audio
from gradmix.cli.main import main
from gradmix.errors import GradmixError


def test_effects_listing(capsys):
    assert main(["effects"]) == 0
    text = capsys.readouterr().out
    for name in ("compressor", "graphic_eq", "reverb", "threshold_db", "freq_hz[0]"):
        assert name in text


def test_bad_output_folder_is_one_line_and_exit_2(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = subprocess.run([sys.executable, "-m", "gradmix.cli.main", "demo", "-o", str(blocker / "sub")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "cannot create the output folder" in proc.stderr


def test_write_audio_is_atomic_and_refuses_nan(tmp_path):
    path = tmp_path / "a.wav"
    write_audio(path, torch.zeros(2, 100), 44100)
    data, sr = sf.read(path, always_2d=True)
    assert data.shape == (100, 2) and sr == 44100
    bad = torch.zeros(2, 100)
    bad[0, 5] = float("nan")
    with pytest.raises(GradmixError, match="NaN"):
        write_audio(path, bad, 44100)
    assert sf.read(path)[0].shape == (100, 2)  # the earlier file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["a.wav"]
    with pytest.raises(GradmixError, match="does not exist"):
        write_audio(tmp_path / "missing" / "b.wav", torch.zeros(1, 10), 44100)
