"""The command line: the demo end to end, the effects listing, errors as one line."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import soundfile as sf
import torch

from gradmix.audio import write_atomically, write_audio, write_text_atomically
from gradmix.cli.main import main
from gradmix.errors import GradmixError


def test_effects_listing(capsys):
    assert main(["effects"]) == 0
    text = capsys.readouterr().out
    for name in ("compressor", "graphic_eq", "reverb", "threshold_db", "freq_hz[0]"):
        assert name in text


@pytest.mark.parametrize(
    "args, message",
    [
        (["sample", "x", "-n", "1000", "-o", "y"], "-n: 1000 is outside 1..100"),
        (["eval", "x", "-o", "y", "--seconds", "nan"], "--seconds: nan is outside 0..inf"),
        (["dataset", "normalize", "x", "-o", "y", "--sample-rate", "0"], "--sample-rate: 0 is outside 1..inf"),
        (["dataset", "lmms", "y", "--workers", "0"], "--workers: 0 is outside 1..inf"),
        (["match", "x", "--reference", "r.wav", "-o", "m.wav", "--refine", "-2"], "--refine: -2 is outside 0..inf"),
        (["dataset", "normalize", "x", "-o", "y", "--target-lufs", "nan"], "--target-lufs: nan is outside -70..0"),
        (
            ["dataset", "separate", "x", "-o", "y", "--model", "m", "--target-lufs", "inf"],
            "--target-lufs: inf is outside -70..0",
        ),
    ],
)
def test_numbers_out_of_range_are_one_line_before_any_work(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)  # the relative outputs would land here
    assert main(args) == 2
    assert capsys.readouterr().err == f"gradmix: error: {message}\n"
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "args, message",
    [
        (["mix", "stems"], "the following arguments are required: -o/--output (see gradmix mix --help)"),
        (["dataset", "normalize", "x", "-o", "y", "--bogus"], "unrecognized arguments: --bogus (see gradmix --help)"),
        (
            ["render", "s", "c.json", "-o", "m.wav", "--format", "16"],
            "argument --format: invalid choice: '16' (choose from 'float', '24') (see gradmix render --help)",
        ),
        (
            ["sample", "s", "-o", "y", "-n", "many"],
            "argument -n: invalid int value: 'many' (see gradmix sample --help)",
        ),
        (["dataset"], "the following arguments are required: dataset_command (see gradmix dataset --help)"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    assert capsys.readouterr().err == f"gradmix: error: {message}\n"
    assert not any(tmp_path.iterdir())


def test_help_is_argparse_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["mix", "--help"])
    out = capsys.readouterr().out
    assert exc.value.code == 0 and out.startswith("usage: gradmix mix [-h] -o OUTPUT") and "--strict" in out


def test_eval_of_a_missing_dataset_leaves_no_output_folder(tmp_path):
    assert main(["eval", str(tmp_path / "nosuch"), "-o", str(tmp_path / "ev")]) == 2
    assert not (tmp_path / "ev").exists()


def test_bad_output_folder_is_one_line_and_exit_2(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = subprocess.run(
        [sys.executable, "-m", "gradmix.cli.main", "demo", "-o", str(blocker / "sub")], capture_output=True, text=True
    )
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


FILE_SIZE_LIMITED = """
import resource, signal, sys
import numpy as np
from gradmix.audio import write_audio
from gradmix.errors import GradmixError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG, as one fails with ENOSPC on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
try:
    write_audio(sys.argv[1], np.full((2, 44100), 0.5, np.float32), 44100, sys.argv[2])
except GradmixError as exc:
    print(exc)
"""


@pytest.mark.parametrize("subtype", ["float", "16"])
def test_a_write_that_the_system_refuses_is_one_error_and_leaves_the_earlier_file(tmp_path, subtype):
    path = tmp_path / "a.wav"
    write_audio(path, torch.zeros(2, 100), 44100)
    run = subprocess.run(
        [sys.executable, "-c", FILE_SIZE_LIMITED, str(path), subtype], capture_output=True, text=True, timeout=120
    )
    assert run.stderr == ""  # no traceback from inside libsndfile
    assert re.fullmatch(r".*a\.wav: cannot write \(System error\.; \d+ MiB free on its disk\)\n", run.stdout)
    assert sf.read(path)[0].max() == 0 and [p.name for p in tmp_path.iterdir()] == ["a.wav"]


def test_every_file_is_written_whole_with_the_umask_permissions(tmp_path):
    path = tmp_path / "model.pt"
    umask = os.umask(0o022)
    try:
        write_atomically(path, lambda f: torch.save({"w": torch.ones(3)}, f))
    finally:
        os.umask(umask)
    assert torch.load(path)["w"].sum() == 3
    assert path.stat().st_mode & 0o777 == 0o644  # a temp file's 0600 would hide it from other users

    def dies(f):
        f.write(b"half")
        raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")

    with pytest.raises(GradmixError, match=r"model\.pt: cannot write \(PytorchStreamWriter .* MiB free on its disk\)"):
        write_atomically(path, dies)
    with pytest.raises(KeyboardInterrupt):
        write_atomically(path, lambda f: (_ for _ in ()).throw(KeyboardInterrupt))
    assert torch.load(path)["w"].sum() == 3 and [p.name for p in tmp_path.iterdir()] == ["model.pt"]
    with pytest.raises(GradmixError, match=r"x\.pt: cannot write \(No such file or directory\)$"):
        write_atomically(tmp_path / "missing" / "x.pt", lambda f: f.write(b"x"))


def test_text_is_written_whole_as_utf8(tmp_path):
    path = tmp_path / "notes.md"
    assert write_text_atomically(path, "Fader − 3 dB\n") == path
    assert path.read_bytes() == "Fader − 3 dB\n".encode()
    with pytest.raises(GradmixError, match=r"notes\.md: cannot write \(No such file or directory\)$"):
        write_text_atomically(tmp_path / "missing" / "notes.md", "x")
    assert [p.name for p in tmp_path.iterdir()] == ["notes.md"]


def test_generative_eval_refuses_whole_songs_in_one_line(tmp_path, capsys):
    assert main(["eval", str(tmp_path), "--generative", "--seconds", "0", "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--seconds 0 (whole songs) does not apply to --generative" in err
    assert not (tmp_path / "out").exists()
