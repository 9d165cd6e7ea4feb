"""``--device``: the choice of device, its errors, and (with a CUDA device) the same mix on it as on the CPU."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import error_db

from gradmix.cli.main import main
from gradmix.devices import compute_device
from gradmix.errors import GradmixError


def test_the_device_names_and_their_errors(monkeypatch):
    assert compute_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert compute_device("auto") == torch.device("cpu") and compute_device(None) == torch.device("cpu")
    with pytest.raises(GradmixError, match="no CUDA device"):
        compute_device("cuda")
    with pytest.raises(GradmixError, match="not a device"):
        compute_device("gpu0")
    with pytest.raises(GradmixError, match="cpu or cuda"):
        compute_device("meta")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert compute_device("auto") == torch.device("cuda")
    with pytest.raises(GradmixError, match="1 CUDA device"):
        compute_device("cuda:3")


def test_a_device_torch_does_not_see_is_one_error_line_and_nothing_written(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["demo", "-o", str(tmp_path / "demo"), "--seconds", "2", "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--device cuda" in err[0] and not (tmp_path / "demo").exists()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_mix_and_render_on_cuda_equal_the_cpu(tmp_path):
    assert main(["demo", "-o", str(tmp_path / "demo"), "--seconds", "4"]) == 0
    stems, console = tmp_path / "demo" / "stems", tmp_path / "demo" / "mix.console.json"
    assert main(["mix", str(stems), "-o", str(tmp_path / "gpu.wav"), "--device", "cuda"]) == 0
    assert main(["render", str(stems), str(console), "-o", str(tmp_path / "render.wav"), "--device", "cuda"]) == 0
    cpu = sf.read(tmp_path / "demo" / "mix.wav", dtype="float32")[0]
    for name in ("gpu.wav", "render.wav"):
        assert error_db(sf.read(tmp_path / name, dtype="float32")[0], cpu) <= -80, name
    assert np.isfinite(cpu).all()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_sample_and_match_run_on_cuda(tmp_path):
    assert main(["demo", "-o", str(tmp_path / "demo"), "--seconds", "4"]) == 0
    stems, mix = tmp_path / "demo" / "stems", tmp_path / "demo" / "mix.wav"
    assert main(["sample", str(stems), "-n", "2", "-o", str(tmp_path / "s"), "--device", "cuda"]) == 0
    assert main(["match", str(stems), "--reference", str(mix), "-o", str(tmp_path / "m.wav"), "--device", "cuda"]) == 0
    for path in (tmp_path / "s" / "mix_01.wav", tmp_path / "s" / "mix_02.wav", tmp_path / "m.wav"):
        audio = sf.read(path, dtype="float32")[0]
        assert np.isfinite(audio).all() and np.abs(audio).max() > 0.01
