"""Effect removal: the chains it estimates and undoes, the level law, the pipeline and its training."""

from __future__ import annotations

import pytest
import soundfile as sf
import torch

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
from gradmix.removal.dry import remove_effects, strongest_echo_ms, undo
from gradmix.removal.train import RemovalTraining, held_out, train_removal
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


@pytest.mark.parametrize("lag", [5000.5, 13231.0, 20000.3])
@pytest.mark.parametrize("track", [1, 2])  # snare, hats: a loop's own repeats (a kick's beat) can win instead
def test_the_delay_time_is_found_to_the_sample(track, lag):
    x = stems(3.0)[track : track + 1]
    present = torch.zeros(1, len(REMOVABLE), dtype=torch.bool)
    present[0, REMOVABLE.index("delay")] = True
    chains = draw_chains(1, torch.Generator().manual_seed(4), present=present)
    chains.params["delay"]["time_ms"] = torch.tensor([1000.0 * lag / SR], dtype=torch.float64)
    wet = render_chains(x, chains, SR)[0]
    found = strongest_echo_ms(wet, SR, 1000.0 * lag / SR * 1.05) * SR / 1000  # from an estimate 5 % off
    assert abs(found - lag) <= 1.0


def test_a_silent_stem_comes_back_unchanged_with_an_empty_chain():
    model = EffectEstimator(RemovalConfig()).eval()
    silent = torch.zeros(2, SR)
    result = remove_effects(model, silent, SR)
    assert torch.equal(result.dry, silent) and result.chain == [] and "silent" in result.notes[0]


@pytest.mark.parametrize("channels, rate", [(1, 22050), (2, 48000)])
def test_remove_effects_keeps_the_stems_rate_channels_and_length(channels, rate):
    model = EffectEstimator(RemovalConfig()).eval()
    x = torch.randn(channels, int(4.3 * rate), generator=torch.Generator().manual_seed(5)) * 0.1
    result = remove_effects(model, x, rate)
    assert result.dry.shape == x.shape and torch.isfinite(result.dry).all()
    assert set(result.probabilities) == set(REMOVABLE)
    assert [e.effect.type_name for e in result.chain] == [n for n in REMOVABLE if result.probabilities[n] >= 0.5]


def test_training_runs_resumes_and_exports(tmp_path):
    root = tmp_path / "dry"
    for song in ("alpha", "beta", "gamma"):
        folder = root / song
        folder.mkdir(parents=True)
        for name, audio in example_multitrack(4.0, SR, seed=len(song)).items():
            sf.write(folder / f"{name}.wav", audio.T.numpy(), SR)
    assert not all(held_out(s) for s in ("alpha", "beta", "gamma"))
    small = RemovalConfig(mels=32, channels=[4, 8], dim=16)
    run = RemovalTraining(
        [str(root)], str(tmp_path / "run"), steps=4, batch_size=2, segments=8, checkpoint_every=2, model=small
    )
    train_removal(run, show=False, max_minutes=0.0)  # cut off after its first step
    assert len((tmp_path / "run" / "log.csv").read_text().splitlines()) == 2
    path = train_removal(run, show=False)
    assert len((tmp_path / "run" / "log.csv").read_text().splitlines()) == 5  # resumed at step 1, not redone
    model = load_estimator(path)
    assert model.cfg.mels == 32 and model.num_parameters < 5_000_000
    with pytest.raises(GradmixError, match="not an effect-removal model"):
        (tmp_path / "bad.pt").write_bytes(b"nope")
        load_estimator(tmp_path / "bad.pt")
