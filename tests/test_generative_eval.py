"""The kernel MMD (``gradmix.metrics.mmd``, ``mmd_test``) and ``gradmix eval --generative`` over several seeds."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from gradmix.cli.main import main
from gradmix.errors import GradmixError
from gradmix.evaluate_generative import FIGURES, evaluate_generative
from gradmix.console import Layout
from gradmix.generate import build_style_bank
from gradmix.metrics import median_bandwidth, mmd, mmd_test
from gradmix.models import MixController, ModelConfig
from gradmix.models.checkpoint import save_model
from test_generate import SR, TINY, human_windows, make_stems


def normal(seed: int, n: int, d: int = 5, shift: float = 0.0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)) + shift


def mmd2_by_loops(a: np.ndarray, b: np.ndarray, sigma: float) -> float:
    """MMD²_u written out term by term (Gretton et al. 2012, eq. 3), O(n²) Python loops."""

    def k(x, y):
        return math.exp(-sum((xi - yi) ** 2 for xi, yi in zip(x, y)) / (2 * sigma**2))

    n, m = len(a), len(b)
    xx = sum(k(a[i], a[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(k(b[i], b[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(a[i], b[j]) for i in range(n) for j in range(m)) / (n * m)
    return xx + yy - 2 * xy


def test_mmd_is_the_unbiased_estimator_written_out():
    a, b = normal(1, 7, 3), normal(2, 9, 3, shift=0.4)
    pooled = np.concatenate([a, b])
    median = float(np.median([np.linalg.norm(pooled[i] - pooled[j]) for i in range(16) for j in range(i + 1, 16)]))
    assert median_bandwidth(pooled) == pytest.approx(median, rel=1e-12)
    for sigma in (None, 0.7, 3.0):  # relative error 1e-9 against the loops (float64 sums in another order)
        expected = mmd2_by_loops(a, b, median if sigma is None else sigma)
        assert mmd(a, b, bandwidth=sigma) == pytest.approx(expected, rel=1e-9, abs=1e-12), sigma


def test_mmd_is_near_zero_for_one_distribution_and_grows_with_the_shift():
    same = [mmd(normal(s, 200), normal(s + 100, 200)) for s in range(5)]
    # null std of MMD²_u at n = m = 200, 5-D, median bandwidth: about 0.0016 (measured over 50 seeds)
    assert all(abs(v) < 0.01 for v in same), same
    shifted = [mmd(normal(7, 200), normal(8, 200, shift=s)) for s in (0.5, 1.0, 2.0)]
    assert shifted[0] > 0.05 and shifted[0] < shifted[1] < shifted[2] <= 2.0, shifted


def test_mmd_ignores_the_order_of_rows_and_is_symmetric():
    a, b = normal(3, 20), normal(4, 15, shift=0.3)
    ra, rb = np.random.default_rng(5).permutation(20), np.random.default_rng(6).permutation(15)
    assert mmd(a[ra], b[rb]) == pytest.approx(mmd(a, b), rel=1e-12)
    assert mmd(b, a) == pytest.approx(mmd(a, b), rel=1e-12)
    assert mmd_test(a[ra], b[rb], permutations=50)[0] == pytest.approx(mmd(a, b), rel=1e-12)


def test_mmd_permutation_p_value_is_uniform_under_the_null_and_small_for_a_shift():
    ps = np.array([mmd_test(normal(s, 30), normal(s + 1000, 30), permutations=200, seed=s)[1] for s in range(50)])
    assert (ps < 0.05).mean() < 0.2 and 0.3 < ps.mean() < 0.7, ps  # uniform: 5 % below 0.05, mean 0.5
    assert np.allclose(ps * 201, np.round(ps * 201)) and ps.min() >= 1 / 201  # p = (1 + count) / (1 + 200)
    observed, p = mmd_test(normal(9, 50), normal(10, 50, shift=1.0), permutations=1000, seed=0)
    assert observed == pytest.approx(mmd(normal(9, 50), normal(10, 50, shift=1.0)), rel=1e-12)
    assert p < 0.01 and p == pytest.approx(1 / 1001)  # no split of a clear shift comes near the observed one
    assert mmd_test(normal(9, 50), normal(10, 50), seed=4) == mmd_test(normal(9, 50), normal(10, 50), seed=4)


@pytest.mark.parametrize(
    "a, b, bandwidth, found",
    [
        (np.zeros((1, 3)), np.zeros((4, 3)), None, "shape (1, 3)"),
        (np.zeros((4, 3)), np.zeros((4, 2)), None, "a has 3 features and b 2"),
        (np.full((4, 3), np.nan), np.zeros((4, 3)), None, "non-finite"),
        (np.zeros((4, 3)), np.zeros((4, 3)), 0.0, "bandwidth 0.0"),
    ],
)
def test_mmd_refuses_bad_input_in_one_line(a, b, bandwidth, found):
    with pytest.raises(GradmixError, match=re.escape(found)) as info:
        mmd(a, b, bandwidth=bandwidth)
    assert "\n" not in str(info.value)
    with pytest.raises(GradmixError, match="permutations 0"):
        mmd_test(np.zeros((4, 3)), np.ones((4, 3)), permutations=0)


# --- the generative evaluation on a tiny dataset (2 songs x 2 s, 2 samples, no refinement: about 20 s a seed) ---

ARGS = ["-n", "2", "--refine", "0", "--seconds", "2"]


@pytest.fixture(scope="module")
def style_model(tmp_path_factory):
    """test_generate's tiny style model, its style bank from the first second of each human window (0.5 s to
    build instead of 15)."""
    torch.manual_seed(0)
    m = MixController(Layout.default(), ModelConfig(**TINY, style_dim=4))
    with torch.no_grad():
        m.style_in.weight.normal_(0, 2.0)
        for head in (m.strip_head, m.master_head):
            head[-1].weight.normal_(0, 0.3)
    build_style_bank(m, [([t[..., :SR] for t in tracks], mix[..., :SR]) for tracks, mix in human_windows()], SR)
    return save_model(tmp_path_factory.mktemp("model") / "style.pt", m, sample_rate=SR, info={})


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen")
    rng = np.random.default_rng(2)
    for k in range(2):
        d = root / "data" / f"song{k}"
        stems = make_stems(d, n=2, seconds=2.0)
        mix = sum(sf.read(p)[0] for p in sorted(stems.glob("t*.wav")))
        sf.write(
            d / "mix.wav", np.stack([mix, 0.8 * mix + 0.01 * rng.standard_normal(mix.size)], 1).astype(np.float32), SR
        )
    return root


@pytest.fixture(scope="module")
def two_seeds(dataset, style_model):
    out = dataset / "two"
    assert (
        main(
            [
                "eval",
                str(dataset / "data"),
                "--generative",
                *ARGS,
                "--seeds",
                "0",
                "1",
                "--model",
                str(style_model),
                "-o",
                str(out),
            ]
        )
        == 0
    )
    return out, json.loads((out / "generative.json").read_text())


def test_seeds_report_each_seed_and_the_mean_and_std_over_them(two_seeds):
    out, s = two_seeds
    assert s["seeds"] == [0, 1] and [p["seed"] for p in s["per_seed"]] == [0, 1]
    for k in FIGURES:
        values = [p[k] for p in s["per_seed"]]
        assert s[k] == pytest.approx(np.mean(values), rel=1e-12), k
        assert s["std"][k] == pytest.approx(np.std(values, ddof=1), rel=1e-12, abs=1e-15), k
    a, b = ([r["sample_scores"] for r in p["rows"]] for p in s["per_seed"])
    assert a != b  # the samples are drawn again for each seed ...
    assert all(len(r["random_scores"]) == 2 for r in s["rows"])  # ... the random consoles once, from --seed
    vectors = np.load(out / "vectors.npz")
    assert list(vectors["seeds"]) == [0, 1] and vectors["samples/song0"].shape[:2] == (2, 2)
    assert vectors["random/song0"].shape[0] == 2 and vectors["equal_loudness/song1"].ndim == 2
    table = (out / "generative.md").read_text()
    d0, d1 = (p["diversity_ratio"] for p in s["per_seed"])
    assert f"| {s['diversity_ratio']:.2f} ± {s['std']['diversity_ratio']:.2f} | {d0:.2f}, {d1:.2f} |" in table


def test_mmd_columns_are_the_mmd_of_the_standardised_vectors(two_seeds):
    out, s = two_seeds
    v = np.load(out / "vectors.npz")
    songs = s["songs"]
    human = np.concatenate([v[f"human/{k}"] for k in songs])
    random = np.concatenate([v[f"random/{k}"].reshape(-1, human.shape[1]) for k in songs])
    equal = np.concatenate([v[f"equal_loudness/{k}"] for k in songs])
    for i, p in enumerate(s["per_seed"]):
        samples = np.concatenate([v[f"samples/{k}"][i].reshape(-1, human.shape[1]) for k in songs])
        every = np.concatenate([human, samples, random])  # the Fréchet distance's standardisation
        mu, sd = every.mean(0), every.std(0) + 1e-12
        z = [(x - mu) / sd for x in (human, samples, random, equal)]
        bandwidth = median_bandwidth(np.concatenate(z))
        assert p["mmd_bandwidth"] == pytest.approx(bandwidth, rel=1e-9)
        for name, x in (("samples", z[1]), ("random", z[2]), ("equal_loudness", z[3])):
            assert p[f"mmd_{name}"] == pytest.approx(mmd(x, z[0], bandwidth=bandwidth), rel=1e-9, abs=1e-12), name
            assert 0 < p[f"mmd_{name}_p"] <= 1 and math.isfinite(p[f"mmd_{name}"])
    assert set(s["criteria"]) >= {"diversity", "plausible", "mmd_below_random", "mmd_below_equal_loudness"}
    assert s["criteria"]["mmd_below_random"] == (s["mmd_samples"] < s["mmd_random"])
    assert s["criteria"]["plausible"] == (s["plausible_share"] >= 0.9)
    table = (out / "generative.md").read_text()
    assert "kernel audio distance: random consoles" in table and "equal-loudness" in table
    assert table.count("| met |") + table.count("| not met |") == 6


def test_one_seed_gives_the_figures_that_seed_has_in_a_run_of_several(two_seeds, dataset, style_model):
    _, several = two_seeds
    one = evaluate_generative(
        dataset / "data", dataset / "one", n=2, refine_steps=0, seconds=2, seed=0, model_path=style_model
    )  # the single-seed path: seeds default to [seed]
    assert one["seeds"] == [0] and all(one["std"][k] is None for k in FIGURES)
    for k in FIGURES:  # rel 1e-9: the same computation, only float summation order could differ
        assert one[k] == pytest.approx(several["per_seed"][0][k], rel=1e-9), k
    assert one["per_seed"][0]["rows"] == several["per_seed"][0]["rows"] and one["rows"] == several["rows"]
    d = one["diversity_ratio"]
    assert f"| {d:.2f} | {d:.2f} | >= 0.5 |" in (dataset / "one" / "generative.md").read_text()  # no ± with one seed


@pytest.mark.parametrize(
    "seeds, found",
    [
        (["-1"], "--seeds: -1 is not a seed"),
        (["0", "2", "0"], "--seeds: 0 given more than once"),
        (["x"], "invalid int value: 'x'"),
    ],
)
def test_bad_seeds_are_one_line_and_exit_2(tmp_path, capsys, seeds, found):
    out = tmp_path / "out"
    try:  # the library's check returns 2 from main; argparse's (not an integer) exits with 2
        code = main(["eval", str(tmp_path), "--generative", "--seeds", *seeds, "-o", str(out)])
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2
    assert found in err and err.count("\n") == 1 and not out.exists(), err


def test_seeds_without_generative_and_repeated_library_seeds_are_refused(tmp_path, capsys):
    assert main(["eval", str(tmp_path), "--seeds", "1", "-o", str(tmp_path / "o")]) == 2
    assert "--seeds" in capsys.readouterr().err
    with pytest.raises(GradmixError, match="seeds: 3 given more than once"):
        evaluate_generative(tmp_path, tmp_path / "o", seeds=[3, 1, 3], model_path=tmp_path / "missing.pt")


def test_every_console_is_decided_from_the_whole_song_and_rendered_on_its_start(tmp_path, style_model, monkeypatch):
    """As ``gradmix sample`` and ``match`` would: the analysis and the baselines hear the whole 4-s song, the
    renders measured are its first 2 s."""
    import gradmix.evaluate_generative as module
    import gradmix.mix
    from gradmix.console import ConsoleSetting

    for k in range(2):
        d = tmp_path / "data" / f"song{k}"
        stems = make_stems(d, n=2, seconds=4.0)
        mix = sum(sf.read(p)[0] for p in sorted(stems.glob("t*.wav")))
        sf.write(d / "mix.wav", np.stack([mix, 0.9 * mix], 1).astype(np.float32), SR)
    heard, rendered, deciding = [], [], []
    analyse, baseline, render = gradmix.mix.analyse, module.baseline, ConsoleSetting.render

    def spy_analyse(model, tracks, sr, *a, **kw):
        heard.extend(t.shape[-1] for t in tracks)
        return analyse(model, tracks, sr, *a, **kw)

    def spy_baseline(system, names, files, tracks, sr, **kw):
        heard.extend(t.shape[-1] for t in tracks)
        deciding.append(True)  # equal loudness renders the whole song to set its faders
        try:
            return baseline(system, names, files, tracks, sr, **kw)
        finally:
            deciding.pop()

    def spy_render(self, audio, *a, **kw):
        if not deciding:
            rendered.extend(t.shape[-1] for t in audio)
        return render(self, audio, *a, **kw)

    monkeypatch.setattr(gradmix.mix, "analyse", spy_analyse)
    monkeypatch.setattr(module, "baseline", spy_baseline)
    monkeypatch.setattr(ConsoleSetting, "render", spy_render)
    evaluate_generative(tmp_path / "data", tmp_path / "out", n=2, refine_steps=0, seconds=2, model_path=style_model)
    # per song: the analysis, 2 random consoles and the equal-loudness mix, each of 2 tracks
    assert heard == [4 * SR] * (2 * 2 * 4)
    # per song: 2 random consoles, 2 samples, equal loudness, match with and without refinement: 7 renders
    assert rendered == [2 * SR] * (2 * 7 * 2)


def test_an_interrupted_run_resumes_and_another_seed_draws_only_its_samples(
    two_seeds, dataset, style_model, tmp_path, monkeypatch
):
    import shutil

    import gradmix.generate

    _, fresh = two_seeds
    data, out = shutil.copytree(dataset / "data", tmp_path / "data"), tmp_path / "out"
    sample_settings, calls = gradmix.generate.sample_settings, []

    def spy(song, *a, seed, **kw):
        calls.append((Path(song.files[0]).parent.name, seed))
        if len(calls) == stop_at:
            raise KeyboardInterrupt
        return sample_settings(song, *a, seed=seed, **kw)

    monkeypatch.setattr(gradmix.generate, "sample_settings", spy)

    def run(seeds, temperature=1.4):
        calls.clear()
        return evaluate_generative(
            data, out, n=2, refine_steps=0, seconds=2, seeds=seeds, temperature=temperature, model_path=style_model
        )

    stop_at = 2  # interrupted while drawing the second song's samples
    with pytest.raises(KeyboardInterrupt):
        run([0])
    kept = sorted(str(p.relative_to(out / "generative")) for p in (out / "generative").rglob("*.json"))
    assert kept == ["song0/seed0.json", "song0/song.json", "song1/song.json"]
    assert not (out / "generative.json").exists()
    stop_at = 0
    resumed = run([0, 1])
    assert calls == [("song0", 1), ("song1", 0), ("song1", 1)]
    for k in FIGURES:  # what was kept gives the figures of a run that was never interrupted
        assert resumed[k] == pytest.approx(fresh[k], rel=1e-9, abs=1e-15), k
    assert resumed["rows"] == fresh["rows"]
    assert [p["rows"] for p in resumed["per_seed"]] == [p["rows"] for p in fresh["per_seed"]]
    assert run([1])["per_seed"][0]["rows"] == fresh["per_seed"][1]["rows"] and calls == []
    reference = json.loads((out / "generative" / "song0" / "song.json").read_text())["key"]["reference"]
    audio, sr = sf.read(data / "song1" / "mix.wav")
    sf.write(data / "song1" / "mix.wav", 0.5 * audio, sr)
    run([1])  # song1's samples are measured again (their target changed), song0's kept: only its match is redone
    assert calls == [("song1", 1)]
    assert json.loads((out / "generative" / "song0" / "song.json").read_text())["key"]["reference"] != reference
    run([1], temperature=0.5)  # another temperature: the samples of every song again, nothing else
    assert sorted(calls) == [("song0", 1), ("song1", 1)]
