"""``--device``: the choice of device, its errors, what each command computes on it (checked on the CPU: no tensor
made without a device where the work runs), and (with a CUDA device) the same results on it as on the CPU."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import error_db, require
from torch.overrides import TorchFunctionMode

import gradmix
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


# ---- fit, eval and studio ----------------------------------------------------------------------------

SR = 44100
TINY = dict(mels=32, channels=(4, 8), dim=16, heads=2, layers=1, ff=32)
FACTORIES = (
    torch.empty,
    torch.zeros,
    torch.ones,
    torch.full,
    torch.arange,
    torch.linspace,
    torch.logspace,
    torch.eye,
    torch.rand,
    torch.randn,
    torch.randint,
    torch.randperm,
    torch.tensor,
    torch.scalar_tensor,
)
"""Functions that make a tensor on the default device (the CPU) unless given ``device=``."""


class MadeWithoutADevice(TorchFunctionMode):
    """Fails a tensor factory called without ``device=`` from the package files ``watched``: on a GPU such a
    tensor is made on the CPU and meets the device's tensors (an error, or a host copy in a loop). Run on the
    CPU, this finds what a run on CUDA would; a tensor meant for the CPU says ``device="cpu"``."""

    def __init__(self, *watched: str) -> None:
        super().__init__()
        root = Path(gradmix.__file__).parent
        self.watched = tuple(str((root / w).resolve()) for w in watched)
        self.torch_dir = str(Path(torch.__file__).parent)
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in FACTORIES and kwargs.get("device") is None:
            frame = sys._getframe(1)
            while frame is not None and frame.f_code.co_filename.startswith(self.torch_dir):
                frame = frame.f_back
            if frame is not None and frame.f_code.co_filename.startswith(self.watched):
                raise AssertionError(f"{frame.f_code.co_filename}:{frame.f_lineno}: {func.__name__} without a device")
            self.calls += frame is not None and "gradmix" in frame.f_code.co_filename
        return func(*args, **kwargs)


def test_the_watch_finds_a_tensor_made_without_a_device():
    with pytest.raises(AssertionError, match="test_devices.py:.*zeros without a device"):
        with MadeWithoutADevice(__file__):
            torch.zeros(3)
    with MadeWithoutADevice(__file__):
        torch.zeros(3, device="cpu")


def tiny_model(path: Path, bank: list[tuple[list[torch.Tensor], torch.Tensor]] | None = None) -> Path:
    """A small mixing model; with ``bank`` (windows of tracks and their human mix) a style model whose bank
    they fill."""
    from gradmix.console import Layout
    from gradmix.generate import build_style_bank
    from gradmix.models import MixController, ModelConfig
    from gradmix.models.checkpoint import save_model

    torch.manual_seed(0)
    model = MixController(Layout.default(), ModelConfig(**TINY, style_dim=4 if bank else 0))
    if bank:
        build_style_bank(model, bank, SR)
    return save_model(path, model, sample_rate=SR, info={})


def write_stems(folder: Path, n: int = 2, seconds: float = 1.0) -> np.ndarray:
    """Write ``n`` stems into ``folder``; returns their plain sum ``(samples, 2)``, a mix of them."""
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(0)
    mix = np.zeros((t.size, 2), np.float32)
    for k in range(n):
        x = 0.2 * np.sin(2 * np.pi * 110 * (k + 1) * t) * (1 + np.sin(2 * np.pi * (k + 1) * t)) / 2
        x = (x + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
        sf.write(folder / f"t{k}.wav", x, SR)
        mix += x[:, None] * np.array([1.0 - 0.3 * k, 0.7 + 0.3 * k], np.float32)
    return mix


def command(name: str, tmp_path: Path) -> tuple[list[str], Path]:
    """A run of ``gradmix name`` on small inputs in ``tmp_path``, and what it would write."""
    if name == "eval":  # a dataset of one song with its mix
        sf.write(tmp_path / "data" / "song" / "mix.wav", write_stems(tmp_path / "data" / "song"), SR)
        out = tmp_path / "results"
        return ["eval", str(tmp_path / "data"), "--systems", "gradmix", "-o", str(out)], out
    stems = tmp_path / "stems"
    mix = write_stems(stems, seconds=0.6 if name == "fit" else 1.0)  # fit's time searches cost most
    if name == "fit":
        sf.write(tmp_path / "target.wav", mix, SR)
        out = tmp_path / "fit.json"
        return ["fit", str(stems), "--target", str(tmp_path / "target.wav"), "-o", str(out)], out
    out = tmp_path / "studio_out"
    return ["studio", str(stems), "--out", str(out)], out


@pytest.mark.parametrize("name", ["fit", "eval", "studio"])
@pytest.mark.parametrize(
    "device, found", [("gpu0", "not a device"), ("cuda", "no CUDA device"), ("meta", "cpu or cuda")]
)
def test_fit_eval_and_studio_refuse_a_bad_device_in_one_line_before_any_work(
    tmp_path, capsys, monkeypatch, name, device, found
):
    import gradmix.mix
    import gradmix.models.checkpoint

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for module in (gradmix.mix, gradmix.models.checkpoint):
        monkeypatch.setattr(module, "load_model", lambda *a, **k: pytest.fail("work began"))
    args, out = command(name, tmp_path)
    assert main([*args, "--device", device]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"gradmix: error: --device {device}: ") and found in err[0], err
    assert not out.exists()


def test_fit_on_a_device_makes_every_tensor_there(tmp_path, monkeypatch, capsys):
    """A target 20 ms late (the alignment searches its lag), then every closed-form move at the first step (the
    level solve, the delay's and the reverb's time searches) and one gradient step, watched."""
    require("auraloss")
    import dataclasses

    from gradmix.fit import TUNING, fit_folder

    args, out = command("fit", tmp_path)
    late = np.concatenate([np.zeros((SR // 50, 2), np.float32), sf.read(tmp_path / "target.wav", dtype="float32")[0]])
    noise = 0.01 * np.random.default_rng(1).standard_normal(late.shape)  # no console explains it: no early stop
    sf.write(tmp_path / "target.wav", (late + noise).astype(np.float32), SR)
    moves = ((0.0, "levels"), (0.0, "delay"), (0.0, "reverb"))
    monkeypatch.setitem(fit_folder.__kwdefaults__, "tuning", dataclasses.replace(TUNING, moves=moves))
    watch = MadeWithoutADevice("fit")
    with watch:
        assert main([*args, "--steps", "1", "--model", str(tiny_model(tmp_path / "m.pt")), "--device", "cpu"]) == 0
    out_text, err = capsys.readouterr()
    assert out.is_file() and watch.calls > 0 and "after 1 steps" in out_text
    assert "starts +20 ms from them" in err


def recorded_renders(monkeypatch) -> list:
    """The ``device`` that each :meth:`ConsoleSetting.render` is asked to compute on."""
    from gradmix.console import ConsoleSetting

    devices, render = [], ConsoleSetting.render

    def recording(self, tracks, **kwargs):
        devices.append(kwargs.get("device"))
        return render(self, tracks, **kwargs)

    monkeypatch.setattr(ConsoleSetting, "render", recording)
    return devices


def recorded_placements(monkeypatch) -> list:
    """The device that each model loaded by ``gradmix.models.checkpoint.load_model`` is moved to."""
    import gradmix.models.checkpoint

    placed, load = [], gradmix.models.checkpoint.load_model

    def loading(path=None):
        m, meta = load(path)
        to = m.to
        m.to = lambda device: placed.append(torch.device(device)) or to(device)
        return m, meta

    monkeypatch.setattr(gradmix.models.checkpoint, "load_model", loading)
    return placed


def test_eval_runs_the_models_and_renders_on_its_device(tmp_path, monkeypatch):

    args, out = command("eval", tmp_path)
    (tmp_path / "data" / "song" / "wet").mkdir()
    for k in range(2):  # the authors' wet stems, for --tracks: each track's part rendered there, measured here
        (tmp_path / "data" / "song" / "wet" / f"t{k}.wav").write_bytes(
            (tmp_path / "data" / "song" / f"t{k}.wav").read_bytes()
        )
    model = tiny_model(tmp_path / "m.pt")
    devices = recorded_renders(monkeypatch)
    placed = recorded_placements(monkeypatch)
    args = [*args, "--systems", "gradmix", "--model", str(model), "--model-as", f"again={model}"]
    with MadeWithoutADevice("evaluate.py", "evaluate_generative.py"):
        assert main([*args, "--device", "cpu", "--tracks"]) == 0
    assert placed == [torch.device("cpu")] * 2  # the gradmix model and the other one
    assert devices == [torch.device("cpu")] * 2  # each system's render


@pytest.mark.filterwarnings("ignore:Matrix is singular")  # the Fréchet distance of two samples
def test_generative_eval_runs_the_model_and_renders_on_its_device(tmp_path, monkeypatch):

    windows = []
    for song in ("a", "b"):
        mix = write_stems(tmp_path / "data" / song)
        sf.write(tmp_path / "data" / song / "mix.wav", mix * (0.5 if song == "a" else 1.0), SR)
        tracks = [
            torch.from_numpy(sf.read(tmp_path / "data" / song / f"t{k}.wav", dtype="float32")[0])[None] for k in (0, 1)
        ]
        windows.append((tracks, torch.from_numpy(mix.T.copy()) * (0.5 if song == "a" else 1.0)))
    model = tiny_model(tmp_path / "m.pt", bank=windows)
    devices = recorded_renders(monkeypatch)
    placed = recorded_placements(monkeypatch)
    args = ["eval", str(tmp_path / "data"), "-o", str(tmp_path / "results"), "--model", str(model), "--generative"]
    with MadeWithoutADevice("evaluate.py", "evaluate_generative.py"):
        assert main([*args, "-n", "2", "--refine", "1", "--seconds", "1", "--device", "cpu"]) == 0
    assert placed == [torch.device("cpu")]
    # per song: 2 random consoles, 2 samples, the equal-loudness mix, match and match refined
    assert devices.count(torch.device("cpu")) == 2 * 7


def test_studio_takes_the_device_and_its_session_computes_there(tmp_path, monkeypatch):
    import gradmix.studio
    from gradmix.studio.session import EDITED, SUM, Session

    args, out = command("studio", tmp_path)
    seen = {}
    monkeypatch.setattr(gradmix.studio, "run_studio", lambda *a, **k: seen.update(k))
    assert main([*args, "--device", "cpu"]) == 0 and seen["device"] == torch.device("cpu")
    devices = recorded_renders(monkeypatch)
    with MadeWithoutADevice("studio"):
        session = Session(tmp_path / "stems", out, model_path=tiny_model(tmp_path / "m.pt"), device="cpu")
        session.edit([{"path": ["tracks", 0, "chain", 0, "gain_db"], "value": -3.0}])
        for version in (EDITED, SUM):
            session.meters(version)
            data, region = session.wav_bytes(version)
            assert region.mix.device.type == "cpu" and len(data) > 44
        session.state()
        session.save("take")
    assert session.device == torch.device("cpu") and next(session.model.parameters()).device == session.device
    assert all(t.device == session.device for t in session._region_audio + list(session._strips.values()))
    assert devices and set(devices) <= {None, torch.device("cpu")}  # None: the region's tracks' own device
    assert devices[-1] == torch.device("cpu")  # the save renders the whole song on the session's device


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fit_eval_and_studio_on_cuda_equal_the_cpu(tmp_path, capsys):
    require("auraloss")
    from gradmix.studio.session import EDITED, Session

    model = tiny_model(tmp_path / "m.pt")
    args, out = command("fit", tmp_path)
    args = [*args, "--steps", "12", "--model", str(model)]
    residuals = []
    for device in ("cpu", "cuda"):
        assert main([*args, "-o", str(tmp_path / f"{device}.json"), "--device", device]) == 0
        residuals.append(float(capsys.readouterr().out.split("residual ")[1].split(" dB")[0]))
    assert residuals[1] == pytest.approx(residuals[0], abs=1.0)  # the same windows and moves; float sums differ
    args, out = command("eval", tmp_path)
    rows = []
    for device in ("cpu", "cuda"):
        assert main([*args[:-1], str(tmp_path / device), "--model", str(model), "--device", device]) == 0
        rows.append(json.loads((tmp_path / device / "songs" / "song.json").read_text())["rows"])
    assert [r["system"] for r in rows[0]] == [r["system"] for r in rows[1]] == ["gradmix"]
    assert rows[0][0]["score"] == pytest.approx(rows[1][0]["score"], rel=1e-3)
    mixes = [
        Session(tmp_path / "stems", tmp_path / f"studio_{d}", model_path=model, device=d).render_region(EDITED).mix
        for d in ("cpu", "cuda")
    ]
    assert mixes[1].device.type == "cpu" and error_db(mixes[1].numpy(), mixes[0].numpy()) <= -80
