"""``gradmix eval DATASET --generative``: are sampled mixes diverse and plausible, does ``match`` follow a reference?

On every chosen song, for each sample seed of ``seeds`` (default: ``[seed]``); every console (samples, random
consoles, equal loudness, ``match``) is decided from the whole song's stems, as ``gradmix sample`` and ``gradmix
match`` would decide it (the refinements hear the excerpt they hear there), and its first ``seconds`` are rendered
and measured:

- **diversity**: ``n`` mixes sampled (:func:`gradmix.generate.sample_settings`, ``refine_steps`` steps each); the
  mean pairwise distance between their feature vectors
  (:data:`gradmix.metrics.distances.STYLE_FEATURES`, measured per 10-s segment, samples compared on the same
  segment, standardised over every vector of the seed's run: human mixes, samples, random consoles), divided by
  the mean pairwise distance between the human mixes of different songs (their segment averages).
- **plausibility**: the share of samples whose aggregate feature error against the song's human mix is below
  the mean error of ``n`` random consoles on that song; the share of (sample, random console) pairs of a song
  in which the sample is the closer, over all samples and for the worst one; and the Fréchet distance of the
  set of samples to the set of human mixes beside that of the random consoles.
- **kernel audio distance**: MMD²_u (:func:`gradmix.metrics.mmd`) of the standardised vectors of the samples
  (all songs, samples and segments pooled) to those of the human mixes, with its permutation p-value
  (:func:`gradmix.metrics.mmd_test`), beside the same for the random consoles and for the equal-loudness mix of
  each song. The three use one Gaussian kernel per seed, its bandwidth the median heuristic on the pooled
  standardised vectors of the four sets (the same for every split of a permutation test, so the test stays
  exact, and the same for the three sets, so their distances are in one unit).

Seed-independent, measured once: the human mixes' vectors, the ``n`` random consoles of each song (seeded
``seed + k``, ``k < n``, as ``gradmix eval`` seeds its random console: the same for every sample seed, so that
the seeds vary only the sampler), the equal-loudness mix, and **match**: the reference is the human mix of
the next song in the list (other content); the style distance of ``match`` (with ``refine_steps`` steps, and
with none: the style encoder and decoder alone) to the reference over that of the equal-loudness mix. With a
single seed equal to ``seed`` (the default) every figure is what the single-seed evaluation measured before
seeds existed.

Each per-seed figure is reported as its mean and standard deviation (``ddof=1``; ``null`` with one seed) over
the seeds, and per seed. The criteria (:func:`criteria`) are judged on the means.

Devices: the model (analysis, style encoder, decisions), the refinements of the samples and of ``match``, and
every render run on ``device``; each mix is then copied to the CPU, where every measure is taken (the feature
vectors and scores are numpy-based, the distances small).

Writes ``generative.json`` (``seeds``; each figure's mean at the top level, ``std``, ``per_seed`` summaries
with their per-song rows; seed-independent per-song ``rows``; ``criteria``), ``generative.md`` (the table) and
``vectors.npz`` (the feature vectors, unstandardised: ``human/SONG`` and ``equal_loudness/SONG``
``(segments, features)``, ``random/SONG`` ``(n, segments, features)``, ``samples/SONG``
``(seeds, n, segments, features)``; ``features``, ``songs``, ``seeds``) for further analysis.

The run resumes: each song's seed-independent results are kept in ``generative/SONG/song.json`` and each
seed's samples in ``generative/SONG/seedS.json`` as soon as they are measured, under a key of what they depend
on: the SHA-256 of the gradmix source files, of the model file and of the audio files read (the song's stems
and mix; for ``match``, the reference's mix), the device type, ``n``, ``seconds``, ``refine_steps`` and
``seed`` (and, for the samples, ``temperature`` and the sample seed). A run measures only what is not kept
under its key, so an interrupted run goes on where it stopped and adding a seed draws only that seed's
samples.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

import gradmix
from gradmix.audio import make_output_folder, write_atomically, write_text_atomically
from gradmix.baselines import baseline
from gradmix.data import find_songs, read_example, read_song_tracks
from gradmix.defaults import DEVICE, EVAL_SECONDS, SAMPLE_COUNT, SAMPLE_REFINE_STEPS, SAMPLE_TEMPERATURE
from gradmix.errors import GradmixError
from gradmix.metrics import (
    aggregate_score,
    feature_errors,
    frechet_distance,
    median_bandwidth,
    mix_features,
    mmd_test,
    style_distance,
)
from gradmix.metrics.distances import STYLE_FEATURES
from gradmix.models.checkpoint import DEFAULT_MODEL
from gradmix.progress import progress as show_progress

SEGMENT_S = 10.0

FIGURES = (
    "diversity_ratio",
    "plausible_share",
    "win_rate",
    "worst_win_rate",
    "frechet_samples",
    "frechet_random",
    "mmd_samples",
    "mmd_samples_p",
    "mmd_random",
    "mmd_random_p",
    "mmd_equal_loudness",
    "mmd_equal_loudness_p",
    "mmd_bandwidth",
)
"""The figures measured once per sample seed (each reported as mean and std over the seeds, and per seed)."""

DIVERSITY_MIN = 0.5
"""Criterion: mean diversity ratio over the seeds at least this."""
PLAUSIBLE_MIN = 0.9
"""Criterion: mean over the seeds of the share of plausible samples at least this."""
MATCH_MAX = 0.5
"""Criterion: ``match``'s style distance to the reference at most this share of the equal-loudness mix's."""


def check_seeds(seeds: Any, name: str = "seeds") -> list[int]:
    """``seeds`` as a list of distinct integers >= 0, or a :class:`GradmixError` naming ``name`` and the value."""
    try:
        values = list(seeds)
    except TypeError:
        raise GradmixError(f"{name}: {seeds!r} is not a list of seeds; expected integers >= 0") from None
    if not values:
        raise GradmixError(f"{name}: no seed given; expected one or more integers >= 0")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise GradmixError(f"{name}: {v!r} is not a seed; expected integers >= 0")
    repeated = sorted({int(v) for v in values if values.count(v) > 1})
    if repeated:
        raise GradmixError(f"{name}: {', '.join(map(str, repeated))} given more than once; expected distinct seeds")
    return [int(v) for v in values]


def _vectors(mix: torch.Tensor, sample_rate: int) -> np.ndarray:
    """Feature vectors ``(segments, features)`` of a ``(2, samples)`` mix, one per 10-s segment."""
    seg = int(SEGMENT_S * sample_rate)
    parts = [mix[:, i : i + seg] for i in range(0, max(1, mix.shape[-1] - seg // 2), seg)] or [mix]
    out = []
    for p in parts:
        f = mix_features(p[None].double(), sample_rate)
        out.append([float(f[k]) for k in STYLE_FEATURES])
    return np.asarray(out)


def _mean_pairwise(v: np.ndarray) -> float:
    d = np.sqrt(((v[:, None] - v[None]) ** 2).sum(-1))
    return float(d.sum() / max(len(v) * (len(v) - 1), 1))


def _sha256(*paths: Path) -> str:
    """Hex SHA-256 of the bytes of ``paths`` in order (what a cached result was measured from)."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            for block in iter(lambda f=f: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _cached(path: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    """The results kept in ``path`` if it holds them for ``key`` (the run's settings), else None."""
    try:
        kept = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return kept if isinstance(kept, dict) and kept.get("key") == key else None


def evaluate_generative(
    dataset: str | Path,
    out_dir: str | Path,
    *,
    songs: list[str] | None = None,
    held_out: bool = False,
    model_path: str | Path | None = None,
    n: int = SAMPLE_COUNT,
    seconds: float = EVAL_SECONDS,
    refine_steps: int = SAMPLE_REFINE_STEPS,
    seed: int = 0,
    seeds: list[int] | None = None,
    temperature: float = SAMPLE_TEMPERATURE,
    permutations: int = 1000,
    progress: bool = False,
    device: torch.device | str = DEVICE,
) -> dict[str, Any]:
    """Measure sampling and ``match`` on the songs of ``dataset`` (see the module docstring); write the results
    into ``out_dir`` and return the summary of ``generative.json``.

    Args:
        dataset: folder of a dataset (any layout) whose songs have a human mix; at least 2 songs.
        out_dir: results folder (created; ``generative.json``, ``generative.md``, ``vectors.npz`` replaced).
        songs: names of the songs to evaluate (default: every song with a mix); ``held_out``: the songs the
            model's training left out instead.
        model_path: model file (default: the shipped model).
        n: samples (and random consoles) per song and seed.
        seconds: length rendered and measured, from the start of each song, in s (the consoles are decided from
            the whole song).
        refine_steps: refinement steps of each sample and of ``match``.
        seed: seed of the random consoles (``seed + k``, ``k < n``), and of the samples when ``seeds`` is None.
        seeds: seeds of the samples, distinct integers >= 0 (default ``[seed]``); the samples, and every
            figure that depends on them, are drawn again for each.
        temperature: as :func:`gradmix.generate.sample_settings`.
        permutations: random splits of each MMD permutation test (seeded by the sample seed).
        device: where the model, the refinements and the renders run (the measures: on the CPU).
    """
    from gradmix.generate import refine, sample_settings
    from gradmix.mix import Song, analyse, console_for
    from gradmix.models.checkpoint import load_model

    seeds = check_seeds([seed] if seeds is None else seeds)
    model, meta = load_model(model_path)
    model.to(device)
    sr = int(meta["sample_rate"])
    if held_out:
        songs = list(meta["info"].get("excluded") or [])
    found = [s for s in find_songs(dataset) if s.mix is not None]
    if songs:
        found = [s for s in found if s.name in set(songs)]
    if len(found) < 2:
        raise GradmixError(f"{dataset}: the generative evaluation needs at least 2 songs with a mix")
    out = Path(out_dir)
    make_output_folder(out / "generative")
    run_key = {
        "code_sha256": _sha256(*sorted(Path(gradmix.__file__).parent.rglob("*.py"))),
        "model_sha256": _sha256(Path(model_path) if model_path is not None else DEFAULT_MODEL),
        "device": torch.device(device).type,
        "n": n,
        "seconds": seconds,
        "refine_steps": refine_steps,
        "seed": seed,
    }
    examples = [read_example(s, seconds=seconds, sample_rate=sr) for s in found]
    human = {s.name: _vectors(e.mix, sr) for s, e in zip(found, examples)}
    rows, random_vecs, equal_vecs = [], {}, {}
    sample_vecs: dict[int, dict[str, np.ndarray]] = {s: {} for s in seeds}
    seed_rows: dict[int, list[dict[str, Any]]] = {s: [] for s in seeds}
    for i, (song, ex) in enumerate(show_progress(list(zip(found, examples)), "generative evaluation", progress)):
        reference, reference_example = found[(i + 1) % len(found)], examples[(i + 1) % len(examples)]
        own = {**run_key, "song": song.name, "files": _sha256(*(r.path for r in (*song.stems, song.mix)))}
        song_key = {**own, "reference": _sha256(reference.mix.path)}
        song_path = out / "generative" / song.name / "song.json"
        seed_paths = {s: out / "generative" / song.name / f"seed{s}.json" for s in seeds}
        seed_keys = {s: {**own, "temperature": temperature, "sample_seed": s} for s in seeds}
        make_output_folder(song_path.parent)
        cached = _cached(song_path, song_key)
        cached_seeds = {s: _cached(seed_paths[s], seed_keys[s]) for s in seeds}
        if cached is None or any(c is None for c in cached_seeds.values()):
            tracks = ex.heard_tracks()
            heard = read_song_tracks(song, sr)  # what the consoles are decided from
            names, files = [r.name for r in song.stems], [str(r.path) for r in song.stems]
            target = ex.mix[None].double()
            analysis = analyse(model, heard, sr)
            song_obj = Song(model, names, files, heard, sr, [])

            def render(setting):
                with torch.no_grad():
                    return setting.render(list(tracks), keep_strips=False, device=device)[0].cpu()

            def score(mix):
                return float(aggregate_score(feature_errors(mix[None].double(), target, sr))[0])

            if cached is None:
                randoms = [render(baseline("random_console", names, files, heard, sr, seed=seed + k)) for k in range(n)]
                random_scores = [score(m) for m in randoms]
                ref = reference_example.mix
                equal = render(baseline("equal_loudness", names, files, heard, sr))
                with torch.no_grad():
                    z = model.encode_style(ref[None].to(device), sample_rate=sr)[0][0]
                matched = render(console_for(model, analysis, names, files, sr, z))
                refined = render(refine(song_obj, analysis, z, ref.to(device), steps=refine_steps))
                row = {
                    "song": song.name,
                    "reference": reference.name,
                    "random_scores": random_scores,
                    "random_mean_score": float(np.mean(random_scores)),
                    "style": {
                        k: float(style_distance(m[None], ref[None], sr))
                        for k, m in (("equal_loudness", equal), ("match", matched), ("match_refined", refined))
                    },
                }
                cached = {
                    "key": song_key,
                    "random_vectors": np.stack([_vectors(m, sr) for m in randoms]).tolist(),
                    "equal_loudness_vectors": _vectors(equal, sr).tolist(),
                    "row": row,
                }
                write_text_atomically(song_path, json.dumps(cached))
                del randoms
            random_scores, random_mean = cached["row"]["random_scores"], cached["row"]["random_mean_score"]
            for s in seeds:
                if cached_seeds[s] is not None:
                    continue
                samples = [
                    render(c)
                    for c in sample_settings(
                        song_obj, analysis, n, seed=s, temperature=temperature, refine_steps=refine_steps
                    )
                ]
                sample_scores = [score(m) for m in samples]
                cached_seeds[s] = {
                    "key": seed_keys[s],
                    "vectors": np.stack([_vectors(m, sr) for m in samples]).tolist(),
                    "row": {
                        "song": song.name,
                        "sample_scores": sample_scores,
                        "sample_win_rates": [float(np.mean([x < r for r in random_scores])) for x in sample_scores],
                        "plausible_share": float(np.mean([x < random_mean for x in sample_scores])),
                    },
                }
                write_text_atomically(seed_paths[s], json.dumps(cached_seeds[s]))
        random_vecs[song.name] = np.asarray(cached["random_vectors"])  # (n, segments, features)
        equal_vecs[song.name] = np.asarray(cached["equal_loudness_vectors"])
        rows.append(cached["row"])
        for s in seeds:
            sample_vecs[s][song.name] = np.asarray(cached_seeds[s]["vectors"])
            seed_rows[s].append(cached_seeds[s]["row"])
    per_seed = [
        {
            "seed": s,
            **_seed_figures(
                human, sample_vecs[s], random_vecs, equal_vecs, seed_rows[s], permutations=permutations, seed=s
            ),
            "rows": seed_rows[s],
        }
        for s in seeds
    ]
    summary: dict[str, Any] = {
        "songs": [r["song"] for r in rows],
        "n": n,
        "seconds": seconds,
        "temperature": temperature,
        "refine_steps": refine_steps,
        "seed": seed,
        "seeds": seeds,
        "permutations": permutations,
        **{k: float(np.mean([p[k] for p in per_seed])) for k in FIGURES},
        "std": {k: float(np.std([p[k] for p in per_seed], ddof=1)) if len(seeds) > 1 else None for k in FIGURES},
        "match_ratio": float(np.mean([r["style"]["match"] / r["style"]["equal_loudness"] for r in rows])),
        "match_refined_ratio": float(
            np.mean([r["style"]["match_refined"] / r["style"]["equal_loudness"] for r in rows])
        ),
        "per_seed": per_seed,
        "rows": rows,
    }
    summary["criteria"] = criteria(summary)
    write_text_atomically(out / "generative.json", json.dumps(summary, indent=1))
    write_text_atomically(out / "generative.md", generative_table(summary))
    write_atomically(
        out / "vectors.npz",
        lambda f: np.savez(
            f,
            features=np.array(STYLE_FEATURES),
            songs=np.array(summary["songs"]),
            seeds=np.array(seeds),
            **{f"human/{k}": v for k, v in human.items()},
            **{f"equal_loudness/{k}": v for k, v in equal_vecs.items()},
            **{f"random/{k}": v for k, v in random_vecs.items()},
            **{f"samples/{k}": np.stack([sample_vecs[s][k] for s in seeds]) for k in human},
        ),
    )
    return summary


def _seed_figures(
    human: dict[str, np.ndarray],
    samples: dict[str, np.ndarray],
    randoms: dict[str, np.ndarray],
    equal: dict[str, np.ndarray],
    rows: list[dict[str, Any]],
    *,
    permutations: int,
    seed: int,
) -> dict[str, float]:
    """The :data:`FIGURES` of one sample seed from the unstandardised vectors ``{song: (segments, features)}``
    (``human``, ``equal``) and ``{song: (n, segments, features)}`` (``samples``, ``randoms``), and the seed's
    per-song rows (scores against the human mix)."""
    flat = {k: v.reshape(-1, v.shape[-1]) for k, v in samples.items()}
    flat_random = {k: v.reshape(-1, v.shape[-1]) for k, v in randoms.items()}
    every = np.concatenate([*human.values(), *flat.values(), *flat_random.values()])
    mu, sd = every.mean(0), every.std(0) + 1e-12

    def z(v):
        return (v - mu) / sd

    between_human = _mean_pairwise(np.stack([z(v).mean(0) for v in human.values()]))
    # samples are compared segment by segment: the same 10 s of the song in different mixes
    within = float(np.mean([_mean_pairwise(z(v[:, k])) for v in samples.values() for k in range(v.shape[1])]))
    all_human = z(np.concatenate(list(human.values())))
    all_samples, all_random = z(np.concatenate(list(flat.values()))), z(np.concatenate(list(flat_random.values())))
    all_equal = z(np.concatenate(list(equal.values())))
    bandwidth = median_bandwidth(np.concatenate([all_human, all_samples, all_random, all_equal]))
    figures = {
        "diversity_ratio": within / max(between_human, 1e-12),
        "plausible_share": float(np.mean([r["plausible_share"] for r in rows])),
        "win_rate": float(np.mean([w for r in rows for w in r["sample_win_rates"]])),
        "worst_win_rate": float(min(w for r in rows for w in r["sample_win_rates"])),
        "frechet_samples": frechet_distance(all_samples, all_human),
        "frechet_random": frechet_distance(all_random, all_human),
        "mmd_bandwidth": bandwidth,
    }
    for name, vectors in (("samples", all_samples), ("random", all_random), ("equal_loudness", all_equal)):
        figures[f"mmd_{name}"], figures[f"mmd_{name}_p"] = mmd_test(
            vectors, all_human, bandwidth=bandwidth, permutations=permutations, seed=seed
        )
    return figures


def criteria(s: dict[str, Any]) -> dict[str, bool]:
    """Whether each criterion of the generative evaluation is met, judged on the means over the seeds of a
    summary of :func:`evaluate_generative`: ``diversity`` (ratio >= :data:`DIVERSITY_MIN`), ``plausible`` (share
    >= :data:`PLAUSIBLE_MIN`), ``frechet_below_random``, ``mmd_below_random`` and ``mmd_below_equal_loudness``
    (the samples' distance to the human mixes below the random consoles' / the equal-loudness mixes'),
    ``match`` (refined ratio <= :data:`MATCH_MAX`)."""
    return {
        "diversity": s["diversity_ratio"] >= DIVERSITY_MIN,
        "plausible": s["plausible_share"] >= PLAUSIBLE_MIN,
        "frechet_below_random": s["frechet_samples"] < s["frechet_random"],
        "mmd_below_random": s["mmd_samples"] < s["mmd_random"],
        "mmd_below_equal_loudness": s["mmd_samples"] < s["mmd_equal_loudness"],
        "match": s["match_refined_ratio"] <= MATCH_MAX,
    }


def generative_table(s: dict[str, Any]) -> str:
    """The Markdown table of a generative evaluation: each figure's mean ± standard deviation over the sample
    seeds and its value for each seed, the criteria beside (met / not met, judged on the means)."""
    seeds, per_seed, met = s["seeds"], s["per_seed"], criteria(s)

    def mean(key: str, digits: int = 2) -> str:
        sd = s["std"][key]
        return f"{s[key]:.{digits}f}" + (f" ± {sd:.{digits}f}" if sd is not None else "")

    def each(key: str, digits: int = 2, p: bool = False) -> str:
        return ", ".join(f"{q[key]:.{digits}f}" + (f" (p {q[key + '_p']:.3f})" if p else "") for q in per_seed)

    def row(
        measure: str, key: str, criterion: str = "", ok: bool | None = None, digits: int = 2, p: bool = False
    ) -> str:
        verdict = "" if ok is None else ("met" if ok else "not met")
        return f"| {measure} | {mean(key, digits)} | {each(key, digits, p)} | {criterion} | {verdict} |"

    lines = [
        f"Generative evaluation on {len(s['songs'])} song(s) ({', '.join(s['songs'])}), first {s['seconds']:g} s, "
        f"{s['n']} samples each (temperature {s.get('temperature', 1.0):g}), sample seed(s) "
        f"{', '.join(map(str, seeds))}; {s['n']} random consoles per song from seed {s['seed']} (the same for "
        f"every sample seed). Values: mean ± standard deviation over the seeds, then each seed's in seed order; "
        f"the criteria are judged on the means.",
        "",
        "| measure | mean ± std | per seed | criterion | met? |",
        "|---|---:|---|---|---|",
        row(
            "diversity: mean pairwise distance of samples / between human mixes",
            "diversity_ratio",
            f">= {DIVERSITY_MIN:g}",
            met["diversity"],
        ),
        row(
            "plausible: share of samples closer to the human mix than the random consoles' mean",
            "plausible_share",
            f">= {PLAUSIBLE_MIN:g}",
            met["plausible"],
        ),
        row(
            "share of (sample, random console) pairs in which the sample is closer to the human mix: all samples",
            "win_rate",
        ),
        row("same, the worst sample", "worst_win_rate"),
        row(
            "Fréchet distance to the human mixes: samples",
            "frechet_samples",
            "below random consoles'",
            met["frechet_below_random"],
        ),
        row("Fréchet distance to the human mixes: random consoles", "frechet_random"),
        row(
            "kernel audio distance (MMD²_u) to the human mixes (permutation p): samples",
            "mmd_samples",
            digits=3,
            p=True,
        ),
        row(
            "kernel audio distance: random consoles",
            "mmd_random",
            "samples' below this",
            met["mmd_below_random"],
            digits=3,
            p=True,
        ),
        row(
            "kernel audio distance: equal-loudness mix",
            "mmd_equal_loudness",
            "samples' below this",
            met["mmd_below_equal_loudness"],
            digits=3,
            p=True,
        ),
        row("kernel bandwidth (median heuristic, standardised features)", "mmd_bandwidth"),
        f"| match --refine {s['refine_steps']} (the default): style distance to the reference / equal "
        f"loudness's | {s['match_refined_ratio']:.2f} | (no seed) | <= {MATCH_MAX:g} | "
        f"{'met' if met['match'] else 'not met'} |",
        f"| match --refine 0 (the style encoder and decoder alone): same ratio | {s['match_ratio']:.2f} | "
        f"(no seed) | | |",
    ]
    return "\n".join(lines) + "\n"
