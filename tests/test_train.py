"""``gradmix train``: config files, a few steps on one CPU, resuming, and DDP with two CPU processes (gloo)."""

from __future__ import annotations

import csv
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from conftest import require
from gradmix.errors import GradmixError
from gradmix.metrics.distances import TONE_CENTRES_HZ
from gradmix.models.checkpoint import load_model
from gradmix.train import TrainConfig, check

SR = 44100
TINY = {"mels": 32, "channels": [4, 8], "dim": 16, "heads": 2, "layers": 1, "ff": 32}


def make_dataset(root: Path, songs: int = 2, with_mix: bool = True) -> Path:
    rng = np.random.default_rng(0)
    t = np.arange(int(2.0 * SR)) / SR
    for s in range(songs):
        stems = []
        for k in range(2 + s):
            x = 0.2 * np.sin(2 * np.pi * (100 + 150 * k + 40 * s) * t) + 0.02 * rng.standard_normal(t.size)
            stems.append(x)
            (root / f"song{s}").mkdir(parents=True, exist_ok=True)
            sf.write(root / f"song{s}" / f"track{k}.wav", x.astype(np.float32), SR)
        if with_mix:
            mix = np.stack([sum(stems) * 0.6, sum(stems) * 0.4], 1)
            sf.write(root / f"song{s}" / "mix.wav", mix.astype(np.float32), SR)
    return root


def write_config(path: Path, data: Path, out: Path, **run) -> Path:
    cfg = {
        "data": {"songs": [str(data)], "seconds": 1.0, "sample_rate": SR, "batch_size": 2, "regime": "mixed"},
        "model": TINY,
        "optim": {"lr": 1e-3, "warmup_steps": 1},
        "run": {"out": str(out), "max_steps": 2, "log_every": 1, "checkpoint_every": 1, "progress": False, **run},
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_make_models_stages_chain_and_hold_out_the_same_songs():
    """The three configs of `make model`: each stage grown from the previous stage's file, the EQ stage with the
    per-track stage's model shape, and one set of held-out songs (the ones `make eval-model` reads)."""
    root = Path(__file__).resolve().parents[1] / "configs"
    names = ("default", "per-track", "habit-eq")
    stages = [TrainConfig.load(root / f"{name}.yaml") for name in names]
    assert stages[0].run.init is None
    for earlier, later in zip(stages, stages[1:]):
        assert Path(later.run.init).resolve() == (Path(earlier.run.out) / "model.pt").resolve()
        assert sorted(later.data.exclude) == sorted(earlier.data.exclude) and len(later.data.exclude) == 6
        assert later.data.songs == earlier.data.songs
    # the EQ stage refits a head of the per-track stage's model, grown by the side its pans read
    assert stages[2].model.pan_side and dataclasses.replace(stages[2].model, pan_side=False) == stages[1].model
    assert [bool(cfg.habit_eq.segments) for cfg in stages] == [False, False, True]
    assert stages[2].data.augmentation == stages[1].data.augmentation  # the inputs its head hears in training


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(GradmixError, match=r"config.optim: unknown key 'learning_rate'"):
        TrainConfig.from_dict({"optim": {"learning_rate": 1}})
    with pytest.raises(GradmixError, match="too low"):
        check(TrainConfig.from_dict({"data": {"songs": ["x"], "sample_rate": 22050}}))
    with pytest.raises(GradmixError, match="regime"):
        check(TrainConfig.from_dict({"data": {"songs": ["x"], "regime": "magic"}}))
    with pytest.raises(GradmixError, match="no such config file"):
        TrainConfig.load(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("data: [unclosed")
    with pytest.raises(GradmixError, match="not valid YAML"):
        TrainConfig.load(tmp_path / "bad.yaml")
    (tmp_path / "rel.yaml").write_text(
        yaml.safe_dump({"data": {"songs": ["songs"]}, "run": {"out": "runs/x"}, "optim": {"loss": {"features": 0.5}}})
    )
    cfg = TrainConfig.load(tmp_path / "rel.yaml")
    assert cfg.data.songs == [str(tmp_path / "songs")] and cfg.run.out == str(tmp_path / "runs" / "x")
    assert cfg.optim.loss.features == 0.5


@pytest.mark.parametrize(
    "args, message",
    [
        (["--devices", "abc"], "config.run.devices (--devices): 'abc' is not a number of devices (>= 1) or 'auto'"),
        (["--devices", "0"], "config.run.devices (--devices): 0 is not a number of devices (>= 1) or 'auto'"),
        (["--num-nodes", "0"], "config.run.num_nodes: must be > 0, got 0"),
        (["--accelerator", "tpu9"], "config.run.accelerator (--accelerator): 'tpu9' is not one of auto, gpu, cpu"),
        (["--strategy", "nope"], "config.run.strategy (--strategy): 'nope' is not one of auto, ddp, "),
        (["--out", "afile"], "afile: cannot create the output folder (File exists)"),
        (["--out", "afile/run"], "afile/run: cannot create the output folder (Not a directory)"),
    ],
)
def test_bad_run_settings_are_one_line_before_any_work(tmp_path, monkeypatch, capsys, args, message):
    require("lightning")
    from gradmix.cli.main import main

    monkeypatch.chdir(tmp_path)
    data = make_dataset(tmp_path / "data", songs=1)
    write_config(tmp_path / "cfg.yaml", data, tmp_path / "run")
    (tmp_path / "afile").write_text("not a folder")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert main(["train", "cfg.yaml", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"gradmix: error: {message}"), err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_train_logs_checkpoints_exports_and_resumes(tmp_path):
    require("lightning")
    require("auraloss")
    from gradmix.train import train

    data = make_dataset(tmp_path / "data")
    out = tmp_path / "run"
    cfg = TrainConfig.load(write_config(tmp_path / "cfg.yaml", data, out))
    path = train(cfg)
    model, meta = load_model(path)
    assert meta["info"]["steps"] == 2 and meta["sample_rate"] == SR
    assert (out / "checkpoints" / "last.ckpt").is_file()
    rows = list(csv.DictReader((out / "logs" / "version_0" / "metrics.csv").open()))
    losses = [float(r["loss"]) for r in rows if r.get("loss")]
    assert len(losses) == 2 and all(np.isfinite(losses))
    cfg.run.max_steps = 4  # started again with a larger budget: resumes at step 2, not from scratch
    train(cfg)
    _, meta = load_model(path)
    assert meta["info"]["steps"] == 4
    rows = list(csv.DictReader((out / "logs" / "version_1" / "metrics.csv").open()))
    assert sorted(int(r["step"]) for r in rows if r.get("loss")) == [2, 3]
    assert (out / "logs" / "version_0" / "metrics.csv").is_file()  # the first run's log is kept


@pytest.mark.parametrize("average_from", [0, 2])
def test_the_exported_model_is_the_mean_of_the_weights_from_average_from_on(tmp_path, monkeypatch, average_from):
    require("lightning")
    require("auraloss")
    from gradmix.train import train

    after_step = []
    step = torch.optim.AdamW.step

    def recording_step(self, *args, **kwargs):
        result = step(self, *args, **kwargs)
        after_step.append([p.detach().clone() for group in self.param_groups for p in group["params"]])
        return result

    monkeypatch.setattr(torch.optim.AdamW, "step", recording_step)
    data = make_dataset(tmp_path / "data")
    cfg = TrainConfig.load(write_config(tmp_path / "cfg.yaml", data, tmp_path / "run", max_steps=4))
    cfg.optim.average_from = average_from
    model, _ = load_model(train(cfg))
    assert len(after_step) == 4
    kept = after_step[average_from - 1 :] if average_from else after_step[-1:]
    expected = [torch.stack(ws).mean(0) for ws in zip(*kept)]
    exported = list(model.parameters())  # stored in float16
    assert len(exported) == len(expected)

    def close(a: list, b: list) -> bool:
        return all(torch.allclose(x, y, rtol=2**-10, atol=1e-5) for x, y in zip(a, b))

    assert close(exported, expected)
    if average_from:  # the mean is not the last step's weights, which the checkpoint keeps to resume from
        assert not close(exported, after_step[-1])
        last = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
        for (name, _), want in zip(model.named_parameters(), after_step[-1]):
            torch.testing.assert_close(last["current_model_state"][f"model.{name}"], want)


def test_average_from_beyond_the_run_is_a_config_error(tmp_path):
    data = make_dataset(tmp_path / "data", songs=1)
    cfg = TrainConfig.load(write_config(tmp_path / "cfg.yaml", data, tmp_path / "run", max_steps=4))
    cfg.optim.average_from = 5
    with pytest.raises(GradmixError, match="optim.average_from"):
        check(cfg)


def test_self_supervised_regime_needs_no_mix(tmp_path):
    require("lightning")
    require("auraloss")
    from gradmix.train import train

    data = make_dataset(tmp_path / "data", songs=2, with_mix=False)
    cfg = TrainConfig.load(write_config(tmp_path / "cfg.yaml", data, tmp_path / "run", max_steps=1))
    cfg.data.regime = "self_supervised"
    cfg.optim.loss.control = 10.0
    assert load_model(train(cfg))[1]["info"]["regime"] == "self_supervised"
    rows = list(csv.DictReader((tmp_path / "run" / "logs" / "version_0" / "metrics.csv").open()))
    controls = [float(r["loss_control"]) for r in rows if r.get("loss_control")]
    assert len(controls) == 1 and 0 < controls[0] < 1  # the habits' settings, compared control by control
    cfg.data.regime = "supervised"
    with pytest.raises(GradmixError, match="no training songs"):
        train(cfg)


DDP_PROBE = """
import sys
import gradmix.train as T
from gradmix.cli.main import main

out, make = sys.argv[1], T._lightning_module


def probed(cfg, per_track):
    module = make(cfg, per_track)
    step = module.training_step

    def training_step(batch, *args):
        with open(f"{out}/rank{module.global_rank}.txt", "a") as f:
            f.write(f"batch {float(batch.tracks.double().square().sum()):.12e}\\n")
        return step(batch, *args)

    def on_train_end():
        with open(f"{out}/rank{module.global_rank}.txt", "a") as f:
            f.write("weights " + " ".join(f"{float(p.double().sum()):.12e}" for p in module.model.parameters()) + "\\n")

    module.training_step, module.on_train_end = training_step, on_train_end
    return module


T._lightning_module = probed
sys.exit(main(sys.argv[2:]))
"""


def test_ddp_with_two_cpu_processes(tmp_path):
    """The CLI with --devices 2 --strategy ddp: Lightning launches a second process; gloo all-reduces. Each
    rank draws its own segments, and both end with the same weights."""
    require("lightning")
    require("auraloss")
    data = make_dataset(tmp_path / "data", songs=3)
    config = write_config(tmp_path / "cfg.yaml", data, tmp_path / "run")
    (tmp_path / "probe.py").write_text(DDP_PROBE)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_PORT": str(29500 + os.getpid() % 1000)}
    proc = subprocess.run(
        [
            sys.executable,
            str(tmp_path / "probe.py"),
            str(tmp_path),
            "train",
            str(config),
            "--devices",
            "2",
            "--strategy",
            "ddp",
            "--accelerator",
            "cpu",
            "--max-steps",
            "2",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    model, meta = load_model(tmp_path / "run" / "model.pt")
    assert meta["info"]["steps"] == 2
    assert all(torch.isfinite(p).all() for p in model.parameters())
    ranks = [(tmp_path / f"rank{r}.txt").read_text().splitlines() for r in (0, 1)]
    batches = [[line for line in lines if line.startswith("batch")] for lines in ranks]
    weights = [[line for line in lines if line.startswith("weights")] for lines in ranks]
    assert len(batches[0]) == len(batches[1]) == 2 and all(a != b for a, b in zip(*batches))
    assert len(weights[0]) == 1 and weights[0] == weights[1]


def test_style_model_trains_with_kl_and_stores_the_style_of_human_mixes(tmp_path):
    require("lightning")
    require("auraloss")
    from gradmix.train import train

    data = make_dataset(tmp_path / "data")
    cfg = TrainConfig.load(write_config(tmp_path / "cfg.yaml", data, tmp_path / "run"))
    cfg.model.style_dim = 3
    cfg.data.self_supervised_fraction = 0.5
    cfg.optim.style_info_weight = 1.0
    model, meta = load_model(train(cfg))
    assert model.cfg.style_dim == 3 and model.style_center.shape == (3,)
    assert model.style_center.abs().sum() > 0  # the mean of q(z | human mix), not the prior's zero
    assert model.style_bank.shape == (2, 3)  # one window of each 2-s song: the styles `gradmix sample` draws
    assert torch.isfinite(model.style_bank_offsets).all() and model.style_bank_offsets.abs().sum() > 0
    assert model.style_bank_tones.shape == (2, len(TONE_CENTRES_HZ)) and torch.isfinite(model.style_bank_tones).all()
    rows = list(csv.DictReader((tmp_path / "run" / "logs" / "version_0" / "metrics.csv").open()))
    kl = [float(r["loss_kl"]) for r in rows if r.get("loss_kl")]
    assert len(kl) == 2 and all(np.isfinite(kl)) and all(v >= 0 for v in kl)
    info = [float(r["loss_style_info"]) for r in rows if r.get("loss_style_info")]
    assert len(info) == 2 and all(np.isfinite(info)) and all(v > 0 for v in info)
    with pytest.raises(GradmixError, match="self_supervised_fraction"):
        cfg.data.self_supervised_fraction = 1.5
        check(cfg)


def make_wet_dataset(root: Path) -> Path:
    """Two songs whose wet stems are their dry stems panned apart (-0.8 .. 0.8) at other levels; the mix is
    their sum."""
    make_dataset(root, songs=2, with_mix=False)
    for song in sorted(root.iterdir()):
        wets = []
        files = sorted(song.glob("track*.wav"))
        for k, f in enumerate(files):
            x, _ = sf.read(f, dtype="float32")
            pan = -0.8 + 1.6 * k / max(1, len(files) - 1)
            g = 10 ** ((-6 * k) / 20)
            wet = np.stack([x * g * np.cos((pan + 1) * np.pi / 4), x * g * np.sin((pan + 1) * np.pi / 4)], 1)
            (song / "wet").mkdir(exist_ok=True)
            sf.write(song / "wet" / f.name, wet, SR, subtype="FLOAT")
            wets.append(wet)
        sf.write(song / "mix.wav", sum(wets), SR, subtype="FLOAT")
    return root


def test_wet_stems_add_per_track_terms_and_data_without_them_says_so_once(tmp_path, capsys):
    require("lightning")
    require("auraloss")
    from gradmix.train import train

    data = make_wet_dataset(tmp_path / "wet")
    cfg = TrainConfig.load(write_config(tmp_path / "cfg.yaml", data, tmp_path / "run"))
    cfg.data.regime = "supervised"
    cfg.data.augment_tilt_db, cfg.data.augment_compress = 6.0, 0.5
    train(cfg)
    assert "note:" not in capsys.readouterr().err
    rows = list(csv.DictReader((tmp_path / "run" / "logs" / "version_0" / "metrics.csv").open()))
    for term in ("track_stft", "track_level", "track_position", "track_width"):
        values = [float(r[f"loss_{term}"]) for r in rows if r.get(f"loss_{term}")]
        assert len(values) == 2 and all(np.isfinite(values)) and max(values) > 0, term
    plain = make_dataset(tmp_path / "plain")
    cfg = TrainConfig.load(write_config(tmp_path / "cfg2.yaml", plain, tmp_path / "run2"))
    cfg.data.regime = "supervised"
    train(cfg)
    err = capsys.readouterr().err
    assert err.count("note: no training song has wet stems; the human mixes train with the mix losses alone") == 1
    rows = list(csv.DictReader((tmp_path / "run2" / "logs" / "version_0" / "metrics.csv").open()))
    assert not any(k.startswith("loss_track") for k in rows[0])


def test_the_track_loss_recovers_each_tracks_pan_and_level_where_the_mix_loss_cannot():
    """Gradient descent on the console's controls against the wet stems puts each track where its wet stem
    is; a mix loss alone is satisfied by any pans whose sum matches (here: both tracks are the same noise)."""
    require("auraloss")
    from gradmix.console import Controls, Layout, pre_master, track_outputs
    from gradmix.models.losses import TrackLoss, active_tracks

    layout = Layout.build(["gain", "pan"])
    x = torch.randn(1, 1, 1, SR // 2, generator=torch.Generator().manual_seed(0)).expand(1, 2, 1, SR // 2) * 0.1
    pans, gains = torch.tensor([[-0.6, 0.5]]), torch.tensor([[-3.0, 2.0]])
    params = layout.denormalize(
        Controls(torch.zeros(1, 2, 2), torch.zeros(1, 2, 0), torch.zeros(1, 0), torch.zeros(1, 0))
    )
    params.strip = [{"gain_db": gains}, {"pan": pans}]
    _, wet = layout.render(x, params, sample_rate=SR)
    logits = Controls(torch.full((1, 2, 2), 0.5), torch.zeros(1, 2, 0), torch.zeros(1, 0), torch.zeros(1, 0)).logits()
    opt = torch.optim.Adam([logits.strip], lr=0.05)
    loss_fn, has_wet = TrackLoss(SR), torch.ones(1, 2, dtype=torch.bool)
    for _ in range(150):
        c = Controls.from_logits(logits)
        p = layout.denormalize(c)
        _, strips = layout.render(x, p, sample_rate=SR)
        loss = loss_fn(
            track_outputs(layout, strips, p, sample_rate=SR),
            wet,
            active_tracks(x, wet, has_wet),
            pre_master(layout, strips, p, sample_rate=SR),
            wet.sum(1),
        )[0]
        opt.zero_grad()
        loss.backward()
        opt.step()
    p = layout.denormalize(Controls.from_logits(logits))
    assert (p.strip[1]["pan"] - pans).abs().max() < 0.05, p.strip[1]["pan"]
    assert (p.strip[0]["gain_db"] - gains).abs().max() < 0.5, p.strip[0]["gain_db"]


@pytest.mark.parametrize("name", ["default", "per-track", "habit-eq"])
def test_the_shipped_recipes_load_and_pass_the_checks(name):
    """`make model`'s first stage trains on the mix alone; the per-track stage weights every per-track term."""
    root = Path(__file__).parents[1]
    cfg = TrainConfig.load(root / "configs" / f"{name}.yaml")
    if cfg.run.init:  # the later stages start from what the one before writes; here, from the shipped model
        cfg.run.init = str(root / "src" / "gradmix" / "models" / "default_model.pt")
    check(cfg)
    if name == "habit-eq":
        assert cfg.habit_eq.segments > 0 and cfg.data.augmentation.enabled
        return
    assert cfg.optim.loss.per_track == (name == "per-track")
    assert cfg.data.augmentation.enabled == (name == "per-track")
    assert cfg.data.exclude and cfg.run.max_steps * 5.2 / 3600 < 2  # the 2-h CPU budget at the measured 5.2 s a step


@pytest.mark.parametrize("regime, engineer", [("self_supervised", 1.0), ("supervised", 0.0)])
def test_the_engineer_switch_is_told_which_targets_an_engineer_like_console_made(
    tmp_path, monkeypatch, regime, engineer
):
    require("lightning")
    require("auraloss")
    from gradmix.models import MixController
    from gradmix.train import train

    seen, decide = [], MixController.decide

    def spy(self, emb, mask=None, z=None, engineer=None):
        seen.append(engineer)
        return decide(self, emb, mask, z, engineer)

    monkeypatch.setattr(MixController, "decide", spy)
    data = make_dataset(tmp_path / "data", songs=2)
    cfg = TrainConfig.load(write_config(tmp_path / "cfg.yaml", data, tmp_path / "run", max_steps=1))
    cfg.data.regime, cfg.model.engineer_switch = regime, True
    assert load_model(train(cfg))[0].cfg.engineer_switch
    flags = torch.cat([e for e in seen if e is not None])
    assert len(flags) > 0 and bool((flags == engineer).all()), flags


def test_engineer_like_targets_carve_on_the_authors_heads_tone_when_asked(tmp_path, monkeypatch):
    """``data.engineer_carves``: each engineer-like target's EQ is the authors' heads' decision for the segment
    (the model asked with ``engineer`` 0, no gradient) plus the habits' moves; it needs the engineer switch."""
    require("lightning")
    require("auraloss")
    import gradmix.train as training
    from gradmix.models import MixController
    from gradmix.models.engineer import eq_gain_columns

    calls, decide, carve = [], MixController.decide, training.carve_on

    def spy_decide(self, emb, mask=None, z=None, engineer=None):
        out = decide(self, emb, mask, z, engineer)
        if not torch.is_grad_enabled():  # an untrained model's tone is flat (0 dB): lift it 2.4 dB to see it
            out.strip[..., eq_gain_columns(self.layout)] += 0.1
        calls.append(("decide", engineer, torch.is_grad_enabled(), out.strip.detach().clone()))
        return out

    def spy_carve(habits, tone, layout):
        carved = carve(habits, tone, layout)
        assert not torch.allclose(carved.strip, habits.strip)
        calls.append(("carve", tone.strip.clone(), carved.strip.clone()))
        return carved

    targets, control = [], training.control_loss

    def spy_control(controls, target, weights):
        targets.append(target.strip.clone())
        return control(controls, target, weights)

    monkeypatch.setattr(MixController, "decide", spy_decide)
    monkeypatch.setattr(training, "carve_on", spy_carve)
    monkeypatch.setattr(training, "control_loss", spy_control)
    data = make_dataset(tmp_path / "data", songs=2)
    cfg = TrainConfig.load(write_config(tmp_path / "cfg.yaml", data, tmp_path / "run", max_steps=1))
    cfg.data.regime, cfg.data.engineer_carves, cfg.optim.loss.control = "self_supervised", True, 1.0
    with pytest.raises(GradmixError, match="engineer_carves"):
        check(cfg)
    cfg.model.engineer_switch = True
    training.train(cfg)
    carved = [i for i, c in enumerate(calls) if c[0] == "carve"]
    assert carved, "no engineer-like target was carved"
    for i in carved:
        kind, engineer, grad, strip = calls[i - 1]  # the tone comes from the call just before
        assert kind == "decide" and not grad and bool((engineer == 0).all())
        assert torch.equal(strip, calls[i][1])
    # the carved console is the target: the control loss compares the step's decision with it
    assert len(targets) == len(carved) and all(torch.equal(t, calls[i][2]) for t, i in zip(targets, carved))
    # the step's own decision is the engineer's heads', with gradients
    assert any(c[0] == "decide" and c[2] and bool((c[1] == 1).all()) for c in calls)


def test_a_run_warm_started_from_a_model_file_decides_as_it_did_before_its_first_step(tmp_path):
    """``run.init``: the grown model (descriptors in the token, a per-track head, the engineer's heads) starts
    exactly where the file's model was, then trains from there; a missing file is one error before any work."""
    require("lightning")
    require("auraloss")
    from gradmix.console import Layout
    from gradmix.models import MixController, ModelConfig
    from gradmix.train import train, warm_start

    data = make_dataset(tmp_path / "data")
    first = train(TrainConfig.load(write_config(tmp_path / "a.yaml", data, tmp_path / "a")))
    source, _ = load_model(first)
    grown_cfg = ModelConfig(**TINY, track_descriptors=True, track_head=True, engineer_switch=True)
    grown, before = MixController(Layout.default(), grown_cfg), MixController(Layout.default(), grown_cfg)
    before.load_state_dict(grown.state_dict())
    warm_start(grown, first)
    x = torch.randn(1, 3, 2, SR) * 0.05
    with torch.no_grad():
        a, b, c = (m.eval()(x, sample_rate=SR) for m in (source, grown, before))
    assert torch.equal(a.strip, b.strip) and torch.equal(a.master, b.master) and torch.equal(a.sends, b.sends)
    assert not torch.allclose(a.strip, c.strip)  # the copy, not the initialisation, decides
    cfg = TrainConfig.load(write_config(tmp_path / "b.yaml", data, tmp_path / "b", init=str(first)))
    cfg.model.track_descriptors = cfg.model.track_head = cfg.model.engineer_switch = True
    trained = load_model(train(cfg))[0]
    assert trained.cfg.track_head and float(trained.track_head[-1].weight.abs().sum()) > 0  # it learns
    # optim.train_only: the named parts learn, the rest keeps the file's weights
    cfg.run.out, cfg.optim.train_only = str(tmp_path / "c"), ["track_head", "engineer_track_head"]
    partly = load_model(train(cfg))[0]
    assert float(partly.track_head[-1].weight.abs().sum()) > 0
    assert torch.equal(partly.strip_head[-1].weight, source.strip_head[-1].weight)
    assert torch.equal(partly.encoder.proj.weight[:, : source.encoder.proj.weight.shape[1]], source.encoder.proj.weight)
    cfg.run.out, cfg.optim.train_only = str(tmp_path / "d"), ["no_such_head"]
    with pytest.raises(GradmixError, match="train_only"):
        train(cfg)
    cfg.run.init = str(tmp_path / "none.pt")
    with pytest.raises(GradmixError, match="run.init"):
        check(cfg)


def grown_for_the_eq_stage(tmp_path: Path, raw_descriptors: bool = False) -> tuple[TrainConfig, Path]:
    """Two steps of a tiny model on three songs, then two more grown by the per-track and engineer's heads: the
    config of the second run and its model file, a start for an EQ stage."""
    from gradmix.train import train

    data = make_dataset(tmp_path / "data", songs=3)
    first = train(TrainConfig.load(write_config(tmp_path / "a.yaml", data, tmp_path / "a")))
    cfg = TrainConfig.load(write_config(tmp_path / "b.yaml", data, tmp_path / "b", init=str(first)))
    cfg.model.track_descriptors = cfg.model.track_head = cfg.model.engineer_switch = True
    cfg.model.track_head_raw_descriptors = raw_descriptors
    return cfg, train(cfg)


def test_the_eq_stage_fits_only_the_engineers_track_head_to_the_carved_habits_and_resumes(tmp_path):
    """``habit_eq``: segments encoded once (with each song's move to the authors' level and each compressor set
    by the habits' gain reduction), only ``engineer_track_head`` learns, its EQ gains and compressor thresholds
    move to the target's (the habits' EQ moves carved on the authors' heads' tone); a second start with more
    steps resumes from the checkpoint and reuses the encoded segments."""
    require("lightning")
    require("auraloss")
    from gradmix.models.engineer import eq_gain_columns
    from gradmix.train import train

    cfg, grown = grown_for_the_eq_stage(tmp_path)
    cfg.run.init, cfg.run.out, cfg.run.max_steps = str(grown), str(tmp_path / "c"), 40
    cfg.habit_eq.segments, cfg.optim.lr, cfg.optim.warmup_steps = 4, 0.01, 1
    cfg.habit_eq.authors_level = cfg.habit_eq.gain_reduction = True
    cfg.run.log_every, cfg.run.checkpoint_every = 10, 20
    fitted = train(cfg)
    before, after = load_model(grown)[0], load_model(fitted)[0]
    moved = []
    for (name, p), q in zip(before.named_parameters(), after.parameters()):
        if not torch.equal(p, q):
            moved.append(name)
    assert moved and all(name.startswith("engineer_track_head") for name in moved), moved
    segments = torch.load(tmp_path / "c" / "habit_eq_segments.pt", weights_only=True)
    assert len(segments) == 2  # 4 segments in batches of 2
    layout = before.layout
    threshold = layout.strip_control_index(2, "threshold_db")
    for cols in (eq_gain_columns(layout), [threshold]):
        errors = []
        with torch.no_grad():
            for model in (before, after):
                err = 0.0
                for emb, mask, strip, *_ in segments:
                    mine = model.decide(emb, mask, engineer=torch.ones(emb.shape[0]))
                    err += float((mine.strip[..., cols] - strip[..., cols]).square()[mask.bool()].mean())
                errors.append(err)
        assert errors[1] < 0.5 * errors[0], (cols, errors)
    levels = torch.cat([level for *_, level, _ in segments])  # the song-level moves to the authors' level
    assert levels.shape == (4,) and levels.isfinite().all() and levels.abs().max() > 0.05, levels
    taken = torch.cat([reduction[mask.bool()] for _, mask, *_, reduction in segments])
    assert taken.min() > 0.3 and taken.max() < 6.5, taken  # every heard track's compressor takes its share
    stamp = (tmp_path / "c" / "habit_eq_segments.pt").stat().st_mtime_ns
    cfg.run.max_steps = 60
    train(cfg)
    rows = list(csv.DictReader((tmp_path / "c" / "logs" / "habit_eq.csv").open()))
    assert [int(r["step"]) for r in rows] == [10, 20, 30, 40, 50, 60]
    assert (tmp_path / "c" / "habit_eq_segments.pt").stat().st_mtime_ns == stamp
    assert load_model(fitted)[1]["info"]["steps"] == 60
    cfg.habit_eq.gain_reduction = False  # the encoded targets compress: they are not this run's
    with pytest.raises(GradmixError, match="encoded with habit_eq.gain_reduction True"):
        train(cfg)
    cfg.model.engineer_switch = False
    with pytest.raises(GradmixError, match="needs model.engineer_switch"):
        check(cfg)
    cfg.model.engineer_switch, cfg.run.init = True, ""
    with pytest.raises(GradmixError, match="needs run.init"):
        check(cfg)
    cfg.habit_eq.segments = -1
    with pytest.raises(GradmixError, match="must be >= 0"):
        check(cfg)


def test_the_eq_stage_caps_a_songs_rise_to_the_authors_level_and_keeps_its_cuts():
    """``habit_eq.max_level_rise_db``: a song's move to the authors' level rises by at most the cap, on the
    compressors' makeup gain; a smaller rise and a cut (on the faders) stay whole."""
    from gradmix.console import Layout
    from gradmix.models import MixController
    from gradmix.train import HabitEqConfig, eq_stage_targets

    layout = Layout.default()
    model = MixController(layout)
    strip = torch.full((3, 2, layout.num_strip_params), 0.3, dtype=torch.float64)
    sends = torch.rand(3, 2, len(layout.buses), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    batch = (None, None, strip, sends, torch.tensor([-3.0, 2.0, 9.0], dtype=torch.float64), None)
    assert [layout.strip[0].specs[0].name, layout.strip[2].specs[-1].name] == ["gain_db", "makeup_db"]

    def settings(**kw):
        (target,) = eq_stage_targets(model, [batch], HabitEqConfig(segments=4, **kw))
        assert torch.equal(target.sends, sends)
        return tuple(  # in dB: both linear in their controls
            spec.min + (spec.max - spec.min) * target.strip[..., layout.strip_control_index(slot, spec.name)]
            for slot, spec in ((0, layout.strip[0].specs[0]), (2, layout.strip[2].specs[-1]))
        )

    still_fader, still_makeup = settings(authors_level=False)
    whole_fader, whole_makeup = settings(authors_level=True)
    capped_fader, capped_makeup = settings(authors_level=True, max_level_rise_db=4.0)
    assert torch.allclose(whole_makeup - still_makeup, torch.tensor([[0.0], [2.0], [9.0]], dtype=torch.float64))
    assert torch.allclose(capped_makeup - still_makeup, torch.tensor([[0.0], [2.0], [4.0]], dtype=torch.float64))
    assert torch.allclose(capped_fader - still_fader, torch.tensor([[-3.0], [0.0], [0.0]], dtype=torch.float64))
    assert torch.equal(capped_fader, whole_fader)
    for habit_eq, message in (
        ({"max_level_rise_db": 4.0}, "needs habit_eq.authors_level"),
        ({"authors_level": True, "max_level_rise_db": -1.0}, "must be >= 0, got -1.0"),
    ):
        with pytest.raises(GradmixError, match=f"config.habit_eq.max_level_rise_db: {message}"):
            check(TrainConfig.from_dict({"data": {"songs": ["x"]}, "habit_eq": habit_eq}))


def test_the_eq_stage_pans_each_track_to_its_side_in_the_song(tmp_path):
    """``habit_eq.pan_width`` with ``model.pan_side``: the model grown by the side input, the target's pans are the
    width times each track's side (the songs' tones at 100 to 630 Hz over noise: centred, left and right), and the
    engineer's head learns them; the other strip controls keep the starting model's decision."""
    require("lightning")
    require("auraloss")
    from gradmix.models.controller import arrangement_side
    from gradmix.train import eq_stage_targets, train

    cfg, grown = grown_for_the_eq_stage(tmp_path, raw_descriptors=True)
    cfg.model.pan_side, cfg.habit_eq.pan_width = True, 0.5
    cfg.run.init, cfg.run.out, cfg.run.max_steps = str(grown), str(tmp_path / "c"), 60
    cfg.habit_eq.segments, cfg.optim.lr, cfg.optim.warmup_steps = 8, 0.01, 1
    cfg.run.log_every, cfg.run.checkpoint_every = 20, 60
    fitted = load_model(train(cfg))[0]
    assert fitted.cfg.pan_side
    segments = torch.load(tmp_path / "c" / "habit_eq_segments.pt", weights_only=True)
    layout = fitted.layout
    pan = layout.strip_control_index(3, "pan")
    sides = torch.cat([arrangement_side(emb[..., fitted.cfg.dim :], mask)[mask.bool()] for emb, mask, *_ in segments])
    assert {-1.0, 0.0, 1.0} <= {float(v) for v in sides.unique()}
    keep = [c for c in range(layout.num_strip_params) if c != pan]
    for (_, _, strip, *_), target in zip(segments, eq_stage_targets(fitted, segments, cfg.habit_eq)):
        # pan_width moves the target's pans only (no level move, no gain reduction here)
        assert torch.equal(target.strip[..., keep], strip[..., keep])
    errors = {}
    for name, model in (("before", load_model(grown)[0]), ("after", fitted)):
        with torch.no_grad():
            pans = []
            for emb, mask, *_ in segments:
                mine = model.decide(emb, mask, engineer=torch.ones(emb.shape[0]))
                pans.append(layout.strip[3].spec("pan").denormalize(mine.strip[..., pan])[mask.bool()])
            errors[name] = (torch.cat(pans) - 0.5 * sides).abs().mean()
    assert errors["after"] < 0.5 * errors["before"], errors
    assert (torch.cat(pans) * sides)[sides != 0].min() > 0  # every sided track on its side
    cfg.model.pan_side = False
    with pytest.raises(GradmixError, match="pan_width: needs model.pan_side"):
        check(cfg)
    cfg.model.pan_side, cfg.habit_eq.pan_width = True, 1.5
    with pytest.raises(GradmixError, match="pan_width: must be within 0..1"):
        check(cfg)


def test_tracks_silent_in_a_segment_are_left_out_of_every_decision(tmp_path, monkeypatch):
    """As ``gradmix mix`` leaves a silent stem out of the model's decisions (``Analysis.mask``), training decides
    each segment with the tracks that sound in it: the step's decision, the authors' heads' tone of a carved
    target, the engineer-like habits, and the EQ stage's encoded segments. Song 0 has two silent stems beside
    two sounding ones, song 1 three sounding ones: no decision may see four tracks."""
    require("lightning")
    require("auraloss")
    from gradmix.models import MixController
    from gradmix.train import train

    data = make_dataset(tmp_path / "data", songs=2)
    for k in (8, 9):
        sf.write(data / "song0" / f"track{k}.wav", np.zeros(2 * SR, np.float32), SR)
    masks, decide = [], MixController.decide

    def spy(self, emb, mask=None, z=None, engineer=None):
        masks.append(mask)
        return decide(self, emb, mask, z, engineer)

    monkeypatch.setattr(MixController, "decide", spy)
    cfg = TrainConfig.load(write_config(tmp_path / "a.yaml", data, tmp_path / "a", max_steps=3))
    cfg.model.track_descriptors = cfg.model.track_head = cfg.model.engineer_switch = True
    cfg.data.self_supervised_fraction, cfg.data.engineer_carves, cfg.optim.loss.control = 0.5, True, 1.0
    first = train(cfg)
    cfg.run.init, cfg.run.out, cfg.habit_eq.segments = str(first), str(tmp_path / "b"), 4
    train(cfg)
    sums = torch.cat([m.sum(1) for m in masks if m is not None]).tolist()
    assert masks and all(m is not None for m in masks) and set(sums) == {2, 3}, sums
    segments = torch.load(tmp_path / "b" / "habit_eq_segments.pt", weights_only=True)
    assert set(torch.cat([mask.sum(1) for _, mask, *_ in segments]).tolist()) <= {2, 3}
