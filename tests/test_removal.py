"""Effect removal: the chains it estimates and undoes, the level law, the pipeline and its training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile as sf
import torch

import gradmix.removal.train
from conftest import error_db
from gradmix.example import example_multitrack
from gradmix.models.removal import EffectEstimator, RemovalConfig, load_estimator
from gradmix.removal.chains import (
    REMOVABLE,
    draw_chains,
    estimated_specs,
    from_controls,
    peak_gain_db,
    render_chains,
    rescaled,
)
from gradmix.dsp import delay
from gradmix.removal.dry import (
    ECHO_PROBABILITY,
    RATIO_SHRINK,
    delay_spikes,
    echo_lag,
    fit_echo,
    power_cepstrum,
    remove_effects,
    undo,
)
from gradmix.removal.train import (
    RemovalTraining,
    best_thresholds,
    false_alarm_thresholds,
    held_out,
    pool_seed,
    segment_pool,
    train_removal,
)
from gradmix.errors import GradmixError

SR = 44100


def stems(seconds: float = 3.0) -> torch.Tensor:
    """The built-in example's tracks ``(tracks, 2, samples)``, each at a peak of -1 dBFS."""
    x = torch.stack([t.expand(2, -1) for t in example_multitrack(seconds, SR).values()]).double()
    return x * torch.pow(10.0, peak_gain_db(x) / 20)[:, None, None]


def si_sdr_db(estimate: torch.Tensor, reference: torch.Tensor) -> float:
    r, e = reference.flatten(), estimate.flatten()
    target = (e @ r) / (r @ r) * r
    return float(10 * torch.log10(target.square().sum() / (target - e).square().sum()))


def test_absent_effects_are_bypassed_exactly():
    x = stems(1.0)
    g = torch.Generator().manual_seed(0)
    none = draw_chains(x.shape[0], g, present=torch.zeros(x.shape[0], len(REMOVABLE), dtype=torch.bool))
    assert torch.equal(render_chains(x, none, SR), x)
    every = draw_chains(x.shape[0], g, present=torch.ones(x.shape[0], len(REMOVABLE), dtype=torch.bool))
    assert all(error_db(w, d) > -20 for w, d in zip(render_chains(x, every, SR), x))


def test_controls_round_trip_through_the_estimators_outputs():
    g = torch.Generator().manual_seed(1)
    chains = draw_chains(32, g)
    back = from_controls(chains.present, chains.controls().double())
    assert len(estimated_specs()) == 22
    for k, name in enumerate(REMOVABLE):
        rows = chains.present[:, k]
        for pname, value in chains.params[name].items():
            assert torch.allclose(back.params[name][pname][rows].double(), value[rows].double(), rtol=1e-4, atol=1e-3)


def test_a_chain_found_at_another_level_is_the_chain_of_the_file():
    """Scaling a chain's input by s scales its output by s once the threshold and drive follow the level."""
    x = stems(1.0)
    g = torch.Generator().manual_seed(2)
    chains = draw_chains(x.shape[0], g, present=torch.ones(x.shape[0], len(REMOVABLE), dtype=torch.bool))
    gain_db = torch.tensor([-3.0, 6.0, -2.0, 9.0, 4.0, 1.0], dtype=torch.float64)[: x.shape[0]]  # within the ranges
    s = torch.pow(10.0, gain_db / 20)[:, None, None]
    loud = render_chains(x * s, chains, SR)  # the chain as heard at the other level ...
    for item in range(x.shape[0]):
        one = type(chains)(
            chains.present[item : item + 1],
            {n: {k: v[item : item + 1] for k, v in p.items()} for n, p in chains.params.items()},
        )
        at_file = rescaled(one, gain_db[item : item + 1])  # ... is this chain at the file's level
        assert error_db(render_chains(x[item : item + 1], at_file, SR) * s[item], loud[item : item + 1]) < -100


@pytest.mark.parametrize("effect", ["eq", "compressor", "distortion", "delay"])
def test_undoing_a_known_chain_recovers_the_dry_stem(effect):
    x = stems(3.0)[:3]
    g = torch.Generator().manual_seed(3)
    present = torch.zeros(3, len(REMOVABLE), dtype=torch.bool)
    present[:, REMOVABLE.index(effect)] = True
    chains = draw_chains(3, g, present=present)
    wet = render_chains(x, chains, SR)
    for i in range(3):
        one = type(chains)(
            chains.present[i : i + 1], {n: {k: v[i : i + 1] for k, v in p.items()} for n, p in chains.params.items()}
        )
        assert si_sdr_db(undo(wet[i : i + 1], one, SR), x[i : i + 1]) > 40


def delayed(track: int, lag: float, feedback: float, mix: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One of the example's stems (3 s) and the same through a delay of ``lag`` samples."""
    x = stems(3.0)[track : track + 1]
    present = torch.zeros(1, len(REMOVABLE), dtype=torch.bool)
    present[0, REMOVABLE.index("delay")] = True
    chains = draw_chains(1, torch.Generator().manual_seed(4), present=present)
    chains.params["delay"].update(
        time_ms=torch.tensor([1000.0 * lag / SR]), feedback=torch.tensor([feedback]), mix=torch.tensor([mix])
    )
    return x[0], render_chains(x, chains, SR)[0]


@pytest.mark.parametrize("lag", [5000.5, 13231.0, 20000.3])
@pytest.mark.parametrize("track", [1, 2])  # snare, hats: a loop's own repeats (a kick's beat) can win instead
def test_the_delay_time_is_found_to_a_fraction_of_a_sample(track, lag):
    _, wet = delayed(track, lag, 0.3, 0.3)
    assert abs(echo_lag(wet, SR, 1000.0 * lag / SR * 1.8) - lag) <= 0.25  # from an estimate 80 % off


@pytest.mark.parametrize("feedback, mix", [(0.0, 0.2), (0.5, 0.3), (0.2, 0.55)])
def test_the_cepstral_spikes_of_a_feedback_delay_follow_its_feedback_and_mix(feedback, mix):
    lag, n = 100, 1 << 14
    impulse = torch.zeros(1, 1, n, dtype=torch.float64)
    impulse[..., 0] = 1.0
    h = delay(impulse, sample_rate=SR, time_ms=1000.0 * lag / SR, feedback=feedback, mix=mix)[0]
    cepstrum = power_cepstrum(h, SR)  # the response has died away long before the end: nothing is cut off
    measured = torch.stack([cepstrum[k * lag] for k in range(1, 5)])
    q = feedback - mix / (1 - mix)  # the zero of H: 1 - q z^-D
    seen = q if abs(q) <= 1 else 1 / q  # a zero outside the unit circle reads as its mirror image
    assert torch.allclose(
        measured, torch.tensor([(feedback**k - seen**k) / k for k in range(1, 5)], dtype=torch.float64), atol=1e-6
    )
    spikes = delay_spikes(torch.tensor(feedback, dtype=torch.float64), torch.tensor(mix, dtype=torch.float64), 4)
    assert torch.allclose(measured, spikes, atol=1e-6) if abs(q) <= 1 else torch.isinf(spikes).all()
    assert cepstrum[lag + 1 : 2 * lag].abs().max() < 1e-5  # nothing between the spikes


@pytest.mark.parametrize("feedback, mix", [(0.1, 0.35), (0.5, 0.2), (0.3, 0.45)])
def test_the_delays_feedback_and_mix_are_fitted_closely_enough_to_undo_it(feedback, mix):
    lag = 7000.4
    dry, wet = delayed(1, lag, feedback, mix)
    found = fit_echo(wet, SR, echo_lag(wet, SR, 1000.0 * lag / SR))
    assert abs(found[0] - feedback) < 0.05 and abs(found[1] - mix) < 0.05
    present = torch.zeros(1, len(REMOVABLE), dtype=torch.bool)
    present[0, REMOVABLE.index("delay")] = True
    chains = draw_chains(1, torch.Generator().manual_seed(0), present=present)
    chains.params["delay"].update(
        time_ms=torch.tensor([1000.0 * lag / SR]), feedback=torch.tensor([found[0]]), mix=torch.tensor([found[1]])
    )
    undone = si_sdr_db(undo(wet[None], chains, SR)[0], dry)
    assert undone > 20 and undone > si_sdr_db(wet, dry) + 5


def test_a_silent_stem_comes_back_unchanged_with_an_empty_chain():
    model = EffectEstimator(RemovalConfig()).eval()
    silent = torch.zeros(2, SR)
    result = remove_effects(model, silent, SR)
    assert torch.equal(result.dry, silent) and result.chain == [] and "silent" in result.notes[0]


@pytest.mark.parametrize("channels, rate", [(1, 22050), (2, 48000)])
def test_remove_effects_keeps_the_stems_rate_channels_and_length(channels, rate):
    model = EffectEstimator(RemovalConfig()).eval()
    x = torch.randn(channels, int(4.3 * rate), generator=torch.Generator().manual_seed(5)) * 0.1
    probabilities = remove_effects(model, x, rate).probabilities
    # each effect's own threshold decides: set them either side of what the estimator hears
    limits = [probabilities[n] + (0.01 if k % 2 else -0.01) for k, n in enumerate(REMOVABLE)]
    model.thresholds.copy_(torch.tensor(limits))
    result = remove_effects(model, x, rate)
    assert result.dry.shape == x.shape and torch.isfinite(result.dry).all()
    assert set(result.probabilities) == set(REMOVABLE)
    assert [e.effect.type_name for e in result.chain] == [n for k, n in enumerate(REMOVABLE) if k % 2 == 0]


def test_careful_removal_decides_by_the_careful_thresholds():
    model = EffectEstimator(RemovalConfig()).eval()
    x = torch.randn(2, 4 * SR, generator=torch.Generator().manual_seed(6)) * 0.1
    heard = torch.tensor(list(remove_effects(model, x, SR).probabilities.values()))
    model.thresholds.copy_(heard - 0.01)  # every effect found by the usual thresholds
    model.careful_thresholds.copy_(heard + 0.01)  # none by the careful ones
    model.careful_thresholds[0] = heard[0] - 0.01  # but the EQ
    assert len(remove_effects(model, x, SR).chain) >= 4  # (the delay also needs its echo in the cepstrum)
    careful = remove_effects(model, x, SR, careful=True)
    assert [e.effect.type_name for e in careful.chain] == ["eq"]


def test_false_alarm_thresholds_let_at_most_the_share_of_dry_windows_through():
    g = torch.Generator().manual_seed(0)
    probabilities = torch.rand(2000, 3, generator=g)
    probabilities[:, 1] *= 0.5  # an effect the dry windows never reach beyond 0.5
    floor = torch.tensor([0.5, 0.9, 0.2])
    thresholds = false_alarm_thresholds(probabilities, floor, share=0.01)
    above = (probabilities >= thresholds).float().mean(0)
    assert float(above[0]) <= 0.01 + 1 / 2000 and 0.985 < float(thresholds[0]) < 0.995
    assert float(thresholds[1]) == pytest.approx(0.9)  # the floor where the dry windows stay below it
    assert float(above[2]) <= 0.01 + 1 / 2000 and float(thresholds[2]) > 0.2


def test_training_runs_resumes_and_exports(tmp_path, monkeypatch):
    root = tmp_path / "dry"
    for song in ("alpha", "beta", "gamma"):
        folder = root / song
        folder.mkdir(parents=True)
        for name, audio in example_multitrack(4.0, SR, seed=len(song)).items():
            sf.write(folder / f"{name}.wav", audio.T.numpy(), SR)
    assert not all(held_out(s) for s in ("alpha", "beta", "gamma"))
    small = RemovalConfig(mels=32, channels=[4, 8], dim=16)
    run = RemovalTraining(
        [str(root)],
        str(tmp_path / "run"),
        steps=4,
        batch_size=2,
        segments=8,
        checkpoint_every=2,
        refresh_every=3,
        model=small,
    )
    # the pool is drawn anew at step 3 (and again after a resume there): other segments, not the dry windows' pool
    assert [pool_seed(run, step) for step in range(4)] == [run.seed] * 3 + [run.seed + 1000]
    first, second = (segment_pool([str(root)], seconds=1.0, sample_rate=SR, limit=8, seed=s) for s in (0, 1000))
    assert first.shape == second.shape == (8, 2, SR) and not torch.equal(first, second)
    seeds = []

    def recorded_pool(*args, seed, **kwargs):
        seeds.append(seed)
        return segment_pool(*args, seed=seed, **kwargs)

    monkeypatch.setattr(gradmix.removal.train, "segment_pool", recorded_pool)
    train_removal(run, show=False, max_minutes=0.0)  # cut off after its first step
    assert len((tmp_path / "run" / "log.csv").read_text().splitlines()) == 2
    path = train_removal(run, show=False)
    assert len((tmp_path / "run" / "log.csv").read_text().splitlines()) == 5  # resumed at step 1, not redone
    # each run: its pool, then the dry windows; the resumed one draws anew at step 3
    assert seeds == [run.seed, run.seed + 2, run.seed, run.seed + 1000, run.seed + 2]
    model = load_estimator(path)
    assert model.cfg.mels == 32 and model.num_parameters < 5_000_000
    # the presence thresholds were chosen after training and travel with the weights
    calibration = torch.load(path, weights_only=False)["calibration"]
    assert [calibration[n]["threshold"] for n in REMOVABLE] == pytest.approx(model.thresholds.tolist())
    best = [calibration[n]["best_f0.5_threshold"] for n in REMOVABLE]
    assert all(0.05 <= t <= 0.95 for t in best)  # of best_thresholds' grid, raised by the dry windows' bound only
    assert all(t >= b for t, b in zip(model.thresholds.tolist(), best))
    assert [calibration[n]["careful_threshold"] for n in REMOVABLE] == pytest.approx(model.careful_thresholds.tolist())
    assert bool((model.careful_thresholds >= model.thresholds).all())
    older = torch.load(path, weights_only=False)  # a file from before the thresholds decides at 0.5
    del older["state"]["careful_thresholds"]  # a file from before the careful thresholds: as careful as the others
    torch.save(older, tmp_path / "older.pt")
    assert load_estimator(tmp_path / "older.pt").careful_thresholds.tolist() == model.thresholds.tolist()
    del older["state"]["thresholds"]
    torch.save(older, tmp_path / "older.pt")
    assert load_estimator(tmp_path / "older.pt").thresholds.tolist() == [0.5] * len(REMOVABLE)
    with pytest.raises(GradmixError, match="not an effect-removal model"):
        (tmp_path / "bad.pt").write_bytes(b"nope")
        load_estimator(tmp_path / "bad.pt")


def test_a_run_started_from_a_model_continues_from_its_weights(tmp_path, tiny_estimator):
    start = load_estimator(tiny_estimator)
    run = RemovalTraining(
        [str(Path(tiny_estimator).parent.parent / "dry")],
        str(tmp_path / "continued"),
        steps=1,
        batch_size=2,
        segments=4,
        lr=1e-9,
        init=str(tiny_estimator),
    )  # run.model is the default config: the start's is taken
    model = load_estimator(train_removal(run, show=False))
    assert model.cfg.to_dict() == start.cfg.to_dict()
    for name, weights in start.named_parameters():
        assert torch.allclose(dict(model.named_parameters())[name], weights, atol=1e-6), name
    scratch = RemovalTraining(run.roots, str(tmp_path / "scratch"), steps=1, batch_size=2, segments=4, model=start.cfg)
    fresh = load_estimator(train_removal(scratch, show=False))
    assert not torch.allclose(next(fresh.parameters()), next(start.parameters()))


def test_a_root_of_many_stems_gives_each_song_only_its_share(tmp_path, capsys):
    """``stems_per_song`` caps the stems a song of that root gives a pool: the same ones for every seed (drawn
    by the song's name), the other roots untouched; a cap on a root that is not trained on is refused."""
    import numpy as np

    from gradmix.cli.main import main

    t = np.arange(2 * SR) / SR
    for root, song, count in (("many", "sounds-a", 6), ("few", "songb", 2)):
        assert not held_out(song)
        folder = tmp_path / root / song
        folder.mkdir(parents=True)
        for k in range(count):
            freq = 100 * (k + 1) + (0 if root == "many" else 50)
            sf.write(folder / f"{k:03d}.wav", np.stack([np.sin(2 * np.pi * freq * t)] * 2, 1) * 0.5, SR)
    roots = [str(tmp_path / "many"), str(tmp_path / "few")]

    def frequencies(seed: int, caps=None) -> set[int]:
        pool = segment_pool(roots, seconds=1.0, sample_rate=SR, limit=64, seed=seed, stems_per_song=caps)
        return {int(torch.fft.rfft(seg[0]).abs().argmax()) for seg in pool}  # 1-s segments: bins are Hz

    assert frequencies(0) == {100, 200, 300, 400, 500, 600, 150, 250}
    capped = [frequencies(seed, {roots[0]: 2}) for seed in (0, 1000)]
    assert capped[0] == capped[1] and len(capped[0] - {150, 250}) == 2 and {150, 250} <= capped[0]
    out = tmp_path / "run"
    assert main(["train-removal", *roots, "-o", str(out), "--stems-per-song", "elsewhere=2"]) == 2
    assert "--stems-per-song elsewhere=2" in capsys.readouterr().err and not out.exists()


def checked_thresholds(beta: float) -> torch.Tensor:
    """:func:`best_thresholds` on made-up detectors, checked against F-beta counted here; returns them."""
    g = torch.Generator().manual_seed(3)
    present = torch.rand(400, 3, generator=g) < 0.4
    noise = torch.rand(400, 3, generator=g)
    # effect 0 separable between 0.62 and 0.7; effects 1 and 2 overlapping, at different scales
    probabilities = torch.where(present, 0.7 + 0.3 * noise, 0.62 * noise)
    probabilities[:, 1:] = torch.where(present[:, 1:], 0.3 + 0.6 * noise[:, 1:], 0.5 * noise[:, 1:])
    probabilities[:, 2] = probabilities[:, 2] * 0.5
    thresholds, score = best_thresholds(probabilities, present, beta)
    assert float(score[0]) == 1.0 and abs(float(thresholds[0]) - 0.70) < 1e-6  # the highest of the perfect ones
    for k in range(3):  # no threshold of the grid does better (counted here the textbook way)
        for t in torch.arange(5, 96) / 100:
            found = probabilities[:, k] >= t
            tp = int((found & present[:, k]).sum())
            precision, recall = tp / max(1, int(found.sum())), tp / int(present[:, k].sum())
            other = (1 + beta**2) * precision * recall / max(1e-12, beta**2 * precision + recall)
            assert other <= float(score[k]) + 1e-6
    assert float(thresholds[2]) < float(thresholds[1])  # a quieter detector gets a lower threshold
    return thresholds


def test_best_thresholds_give_each_effect_its_best_f_beta_and_weighing_precision_raises_them():
    one, half = checked_thresholds(1.0), checked_thresholds(0.5)
    assert (half[1:] > one[1:]).all()


@pytest.fixture(scope="module")
def tiny_estimator(tmp_path_factory):
    """A tiny effect estimator trained for two steps on the built-in example (its decisions are arbitrary)."""
    tmp = tmp_path_factory.mktemp("estimator")
    folder = tmp / "dry" / "alpha"  # not held out
    folder.mkdir(parents=True)
    for name, audio in example_multitrack(4.0, SR).items():
        sf.write(folder / f"{name}.wav", audio.T.numpy(), SR)
    small = RemovalConfig(mels=32, channels=[4, 8], dim=16)
    run = RemovalTraining([str(tmp / "dry")], str(tmp / "run"), steps=2, batch_size=2, segments=4, model=small)
    return train_removal(run, show=False)


def wet_file(path, seconds=4.0, channels=2, rate=SR):
    """A stem through a compressor and a delay, written to ``path``; returns its audio ``(channels, samples)``."""
    x = stems(seconds)[3:4, :channels]  # the bass
    wet = render_chains(x, wet_chain(), SR)[0].float()
    sf.write(path, wet.T.numpy(), rate)
    return wet


def wet_chain():
    """The chain of :func:`wet_file`: a compressor and a delay."""
    present = torch.zeros(1, len(REMOVABLE), dtype=torch.bool)
    present[0, [1, 3]] = True
    return draw_chains(1, torch.Generator().manual_seed(7), present=present)


def test_dry_writes_the_dry_stem_and_a_console_file_that_renders_the_wet_one_back(
    tmp_path, tiny_estimator, capsys, monkeypatch
):
    """The console file written plays the dry stem through the chain found, which is the wet stem again: the
    estimator's decision is set to the true chain here (a tiny estimator's own is arbitrary, and the inverses
    are exact only for settings the wet stem can have come from)."""
    import gradmix.removal.dry as dry_module
    from gradmix.cli.main import main

    def hears_the_truth(model, heard, sample_rate):
        truth = wet_chain()  # at the file's level; the estimator hears the stem at -1 dBFS
        at_heard = rescaled(truth, -peak_gain_db(torch.from_numpy(sf.read(tmp_path / "bass.wav")[0].T)[None]))
        return truth.present[0].float(), at_heard.controls()[0]

    monkeypatch.setattr(dry_module, "hear", hears_the_truth)
    wet = wet_file(tmp_path / "bass.wav")
    out = tmp_path / "out"
    out.mkdir()
    code = main(["dry", str(tmp_path / "bass.wav"), "-o", str(out / "bass_dry.wav"), "--model", str(tiny_estimator)])
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "effects found" in printed and "presence" in printed
    assert "compressor: threshold_db " in printed and " ms, feedback " in printed  # each effect's settings
    dry, rate = sf.read(out / "bass_dry.wav", always_2d=True)
    assert rate == SR and dry.shape == (wet.shape[1], 2)
    console = out / "bass_dry.console.json"
    written = {e["type"]: e for e in json.loads(console.read_text())["tracks"][0]["chain"]}
    true_ratio = float(wet_chain().params["compressor"]["ratio"][0])
    assert written["compressor"]["ratio"] == pytest.approx(1 + RATIO_SHRINK * (true_ratio - 1))  # what was undone
    assert main(["render", str(console), "-o", str(tmp_path / "again.wav")]) == 0
    again, _ = sf.read(tmp_path / "again.wav", always_2d=True)
    assert error_db(torch.from_numpy(again.T), wet.double()) < -20


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.write_bytes(b"RIFF0000WAVEjunk"), "bass.wav"),
        (lambda p: sf.write(p, torch.full((SR, 2), float("nan")).numpy(), SR, subtype="FLOAT"), "NaN"),
        (lambda p: sf.write(p, torch.zeros(SR, 3).numpy() + 0.1, SR), "3 channels"),
    ],
)
def test_dry_refuses_bad_input_with_one_line_and_writes_nothing(tmp_path, tiny_estimator, capsys, make, message):
    from gradmix.cli.main import main

    make(tmp_path / "bass.wav")
    out = tmp_path / "out"
    out.mkdir()
    assert main(["dry", str(tmp_path / "bass.wav"), "-o", str(out / "d.wav"), "--model", str(tiny_estimator)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert list(out.iterdir()) == []


def test_dry_will_not_overwrite_its_input(tmp_path, tiny_estimator, capsys):
    from gradmix.cli.main import main

    wet_file(tmp_path / "bass.wav")
    before = (tmp_path / "bass.wav").read_bytes()
    assert (
        main(["dry", str(tmp_path / "bass.wav"), "-o", str(tmp_path / "bass.wav"), "--model", str(tiny_estimator)]) == 2
    )
    assert "overwrite an input" in capsys.readouterr().err
    assert (tmp_path / "bass.wav").read_bytes() == before


def test_dry_of_a_silent_mono_stem_at_another_rate(tmp_path, tiny_estimator, capsys):
    from gradmix.cli.main import main

    sf.write(tmp_path / "quiet.wav", torch.zeros(22050).numpy(), 22050)
    assert (
        main(["dry", str(tmp_path / "quiet.wav"), "-o", str(tmp_path / "d.wav"), "--model", str(tiny_estimator)]) == 0
    )
    assert "silent" in capsys.readouterr().out
    dry, rate = sf.read(tmp_path / "d.wav", always_2d=True)
    assert rate == 22050 and dry.shape == (22050, 1) and not dry.any()


def test_dataset_dry_is_resumable_and_normalises(tmp_path, tiny_estimator, capsys):
    from gradmix.cli.main import main
    from gradmix.data import find_songs

    root = tmp_path / "wet"
    for song in ("one", "two"):
        (root / song).mkdir(parents=True)
        wet_file(root / song / "bass.wav", seconds=3.0)
        wet_file(root / song / "lead.wav", seconds=3.0, channels=1)
    out = tmp_path / "out"
    args = ["dataset", "dry", str(root), "-o", str(out), "--model", str(tiny_estimator), "--normalize"]
    assert main(args) == 0, capsys.readouterr().err
    songs = find_songs(out / "dry")
    assert [s.name for s in songs] == ["one", "two"] and len(songs[0].stems) == 2
    chains = json.loads((out / "dry" / "one" / "chains.json").read_text())["stems"]
    assert set(chains) == {"bass.wav", "lead.wav"} and "probabilities" in chains["bass.wav"]
    assert len(find_songs(out / "normalized")) == 2
    made = {p: p.stat().st_mtime_ns for p in (out / "dry").rglob("*.wav")}
    assert main(args) == 0
    assert {p: p.stat().st_mtime_ns for p in (out / "dry").rglob("*.wav")} == made
    assert "2 already done" in capsys.readouterr().out


def test_the_estimator_hears_echoes_and_dynamics():
    """Its hand-made views: an echo is a peak of the onsets' autocorrelation at its lag, and a compressor
    spreads the envelope's levels otherwise."""
    model = EffectEstimator(RemovalConfig()).eval()
    x = stems(3.0)[1:2].float()  # the snare
    present = torch.zeros(1, len(REMOVABLE), dtype=torch.bool)
    present[0, REMOVABLE.index("delay")] = True
    chains = draw_chains(1, torch.Generator().manual_seed(8), present=present)
    chains.params["delay"]["time_ms"] = torch.tensor([310.0], dtype=torch.float64)
    chains.params["delay"]["mix"] = torch.tensor([0.5], dtype=torch.float64)
    lag = int(torch.argmax(model.echoes(render_chains(x, chains, SR))[0, 2:])) + 3
    assert abs(lag * model.cfg.envelope_hop_ms - 310.0) <= 2 * model.cfg.envelope_hop_ms
    present = torch.zeros(1, len(REMOVABLE), dtype=torch.bool)
    present[0, REMOVABLE.index("compressor")] = True
    chains = draw_chains(1, torch.Generator().manual_seed(9), present=present)
    chains.params["compressor"]["threshold_db"] = torch.tensor([-25.0], dtype=torch.float64)
    chains.params["compressor"]["ratio"] = torch.tensor([8.0], dtype=torch.float64)
    squashed = render_chains(x, chains, SR)
    assert (model.levels(squashed) - model.levels(x)).abs().sum() > 0.2  # its levels are spread otherwise


def test_eval_removal_writes_its_tables_and_page(tmp_path, tiny_estimator, capsys):
    from gradmix.cli.main import main

    root = tmp_path / "dry"
    for song in ("nu", "upsilon", "alpha"):  # the first two are held out
        (root / song).mkdir(parents=True)
        for name in ("snare", "chords"):
            sf.write(root / song / f"{name}.wav", example_multitrack(7.0, SR, seed=len(song))[name].T.numpy(), SR)
    out = tmp_path / "results"
    assert main(["eval", str(root), "--removal", "--model", str(tiny_estimator), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "chain of 3" in printed and "detection F1" in printed
    results = json.loads((out / "removal.json").read_text())
    assert set(results["cases"]) == {"none", *REMOVABLE, "chain of 2", "chain of 3"}
    none = results["cases"]["none"]
    assert none["si_sdr_db"]["identity"] == 60.0 and none["si_sdr_improvement_db"]["oracle"] == 0.0
    for case in REMOVABLE:  # the known chain undone recovers the dry stem (but for the reverb's phase)
        gain = results["cases"][case]["si_sdr_improvement_db"]["oracle"]
        assert gain > (0.0 if case == "reverb" else 10.0), (case, gain)
    assert (out / "removal.html").read_text().count("<audio") == len(results["cases"]) * 2 * 5
    assert main(["eval", str(root), "--removal", "--tracks", "-o", str(out)]) == 2
    assert main(["eval", str(root), "--careful", "-o", str(out)]) == 2  # --careful is for --removal
    assert "--careful applies to --removal only" in capsys.readouterr().err


def test_the_shipped_estimator_hears_a_reverb_and_a_delay_where_they_are_and_not_where_they_are_not():
    """The estimator in the package (``make removal-model``; <= 5 M parameters) on the built-in example's
    sustained parts, which it never trained on: a reverb and a delay drawn from the training distribution are
    in the chain it finds (by its presence probability or, for the delay, the cepstrum), and neither is on the
    dry part. (A drum loop's own repeats can read as a delay: left out.)"""
    model = load_estimator(None)
    assert sum(p.numel() for p in model.parameters()) <= 5_000_000
    example = example_multitrack(6.0, SR)
    for name in ("chords", "lead", "bass"):
        x = example[name].expand(2, -1).double()
        x = x / x.abs().max() * 0.5
        dry = [e.effect.type_name for e in remove_effects(model, x, SR).chain]
        assert "reverb" not in dry and "delay" not in dry, (name, dry)
        for effect in ("reverb", "delay"):
            present = torch.zeros(1, len(REMOVABLE), dtype=torch.bool)
            present[0, REMOVABLE.index(effect)] = True
            wet = render_chains(x[None], draw_chains(1, torch.Generator().manual_seed(1), present=present), SR)[0]
            assert effect in [e.effect.type_name for e in remove_effects(model, wet, SR).chain], (name, effect)


def test_the_cepstrum_decides_the_delay_with_the_estimator():
    model = EffectEstimator(RemovalConfig()).eval()
    d = REMOVABLE.index("delay")
    lag = 9000.0
    dry, wet = delayed(1, lag, 0.3, 0.35)
    unsure = remove_effects(model, wet.float(), SR).probabilities["delay"]
    assert unsure >= ECHO_PROBABILITY  # an untrained estimator: about even
    model.thresholds.fill_(1.0)  # the estimator is sure of nothing; the echo is plain in the cepstrum
    found = {e.effect.type_name: e.params for e in remove_effects(model, wet.float(), SR).chain}
    assert list(found) == ["delay"] and abs(found["delay"]["time_ms"] * SR / 1000 - lag) < 0.25
    model.thresholds.fill_(1.0)
    model.thresholds[d] = 0.0  # sure of a delay that is not there: the cepstrum finds no echo, none is removed
    result = remove_effects(model, dry.float(), SR)
    assert result.chain == [] and torch.allclose(result.dry, dry.float(), atol=1e-6)


def test_a_loop_repeated_exactly_is_not_taken_for_a_delay():
    model = EffectEstimator(RemovalConfig()).eval()
    model.thresholds.fill_(1.0)
    model.thresholds[REMOVABLE.index("delay")] = 0.0  # the estimator is sure of a delay
    pattern = stems(0.25)[2, :, :9000]  # a quarter of a second of the hats, repeated sample-exactly
    loop = pattern.repeat(1, 16)
    result = remove_effects(model, loop.float(), SR)
    assert result.chain == [] and torch.allclose(result.dry, loop.float(), atol=1e-6)
    assert any("loop" in note for note in result.notes)
