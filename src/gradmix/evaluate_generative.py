"""``gradmix eval DATASET --generative``: are sampled mixes diverse and plausible, does ``match`` follow a reference?

On every chosen song (its first ``seconds``):

- **diversity**: ``n`` mixes sampled (:func:`gradmix.generate.sample_settings`, ``refine_steps`` steps each); the
  mean pairwise distance between their feature vectors
  (:data:`gradmix.metrics.distances.STYLE_FEATURES`, measured per 10-s segment, samples compared on the same
  segment, standardised over every vector of the run), divided by the mean pairwise distance between the
  human mixes of different songs (their segment averages).
- **plausibility**: the share of samples whose aggregate feature error against the song's human mix is below
  the mean error of ``n`` random consoles on that song; the share of (sample, random console) pairs of a song
  in which the sample is the closer, over all samples and for the worst one; and the Fréchet distance of the
  set of samples to the set of human mixes beside that of the random consoles.
- **match**: the reference is the human mix of the next song in the list (other content); the style distance
  of ``match`` (with ``refine_steps`` steps, and with none: the style encoder and decoder alone) to the
  reference over that of the equal-loudness mix.

Writes ``generative.json`` (summary and per-song rows), ``generative.md`` (the table) and ``vectors.npz`` (the
feature vectors: ``human/SONG`` ``(segments, features)``, ``samples/SONG`` and ``random/SONG``
``(n, segments, features)``, unstandardised) for further analysis.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gradmix.audio import make_output_folder
from gradmix.baselines import baseline
from gradmix.data import find_songs, read_example
from gradmix.errors import GradmixError
from gradmix.metrics import aggregate_score, feature_errors, frechet_distance, mix_features, style_distance
from gradmix.metrics.distances import STYLE_FEATURES
from gradmix.progress import progress as show_progress

SEGMENT_S = 10.0


def _vectors(mix: torch.Tensor, sample_rate: int) -> np.ndarray:
    """Feature vectors ``(segments, features)`` of a ``(2, samples)`` mix, one per 10-s segment."""
    seg = int(SEGMENT_S * sample_rate)
    parts = [mix[:, i: i + seg] for i in range(0, max(1, mix.shape[-1] - seg // 2), seg)] or [mix]
    out = []
    for p in parts:
        f = mix_features(p[None].double(), sample_rate)
        out.append([float(f[k]) for k in STYLE_FEATURES])
    return np.asarray(out)


def _mean_pairwise(v: np.ndarray) -> float:
    d = np.sqrt(((v[:, None] - v[None]) ** 2).sum(-1))
    return float(d.sum() / max(len(v) * (len(v) - 1), 1))


def evaluate_generative(dataset: str | Path, out_dir: str | Path, *, songs: list[str] | None = None,
                        held_out: bool = False, model_path: str | Path | None = None, n: int = 8,
                        seconds: float = 30.0, refine_steps: int = 30, seed: int = 0, temperature: float | None = None,
                        progress: bool = False) -> dict[str, Any]:
    from gradmix.generate import SAMPLE_TEMPERATURE, refine, sample_settings
    from gradmix.mix import Song, analyse, console_for
    from gradmix.models.checkpoint import load_model

    temperature = SAMPLE_TEMPERATURE if temperature is None else temperature
    model, meta = load_model(model_path)
    sr = int(meta["sample_rate"])
    if held_out:
        songs = list(meta["info"].get("excluded") or [])
    found = [s for s in find_songs(dataset) if s.mix is not None]
    if songs:
        found = [s for s in found if s.name in set(songs)]
    if len(found) < 2:
        raise GradmixError(f"{dataset}: the generative evaluation needs at least 2 songs with a mix")
    out = Path(out_dir)
    make_output_folder(out)
    examples = [read_example(s, seconds=seconds, sample_rate=sr) for s in found]
    human = {s.name: _vectors(e.mix, sr) for s, e in zip(found, examples)}
    rows, sample_vecs, random_vecs = [], {}, {}
    for i, (song, ex) in enumerate(show_progress(list(zip(found, examples)), "generative evaluation", progress)):
        tracks = [t[:1] if m else t for t, m in zip(ex.tracks, ex.mono)]
        names, files = [r.name for r in song.stems], [str(r.path) for r in song.stems]
        target = ex.mix[None].double()
        analysis = analyse(model, tracks, sr)
        song_obj = Song(model, names, files, tracks, sr, [])

        def render(setting):
            with torch.no_grad():
                return setting.render(list(tracks), keep_strips=False)[0]

        def score(mix):
            return float(aggregate_score(feature_errors(mix[None].double(), target, sr))[0])

        samples = [render(s) for s in sample_settings(song_obj, analysis, n, seed=seed, temperature=temperature,
                                                     refine_steps=refine_steps)]
        randoms = [render(baseline("random_console", names, files, tracks, sr, seed=seed + k)) for k in range(n)]
        sample_vecs[song.name] = np.stack([_vectors(m, sr) for m in samples])  # (n, segments, features)
        random_vecs[song.name] = np.stack([_vectors(m, sr) for m in randoms])
        random_scores = [score(m) for m in randoms]
        random_mean = float(np.mean(random_scores))
        sample_scores = [score(m) for m in samples]
        ref = examples[(i + 1) % len(examples)].mix
        equal = render(baseline("equal_loudness", names, files, tracks, sr))
        with torch.no_grad():
            z = model.encode_style(ref[None], sample_rate=sr)[0][0]
        matched = render(console_for(model, analysis, names, files, sr, z))
        refined = render(refine(song_obj, analysis, z, ref, steps=refine_steps))
        d = {k: float(style_distance(m[None], ref[None], sr)) for k, m in
             (("equal_loudness", equal), ("match", matched), ("match_refined", refined))}
        rows.append({"song": song.name, "reference": found[(i + 1) % len(found)].name,
                     "sample_scores": sample_scores, "random_scores": random_scores, "random_mean_score": random_mean,
                     "sample_win_rates": [float(np.mean([s < r for r in random_scores])) for s in sample_scores],
                     "plausible_share": float(np.mean([s < random_mean for s in sample_scores])), "style": d})
    flat = {k: v.reshape(-1, v.shape[-1]) for k, v in sample_vecs.items()}
    flat_random = {k: v.reshape(-1, v.shape[-1]) for k, v in random_vecs.items()}
    every = np.concatenate([*human.values(), *flat.values(), *flat_random.values()])
    mu, sd = every.mean(0), every.std(0) + 1e-12

    def z(v):
        return (v - mu) / sd

    between_human = _mean_pairwise(np.stack([z(v).mean(0) for v in human.values()]))
    # samples are compared segment by segment: the same 10 s of the song in different mixes
    within = float(np.mean([_mean_pairwise(z(v[:, k])) for v in sample_vecs.values() for k in range(v.shape[1])]))
    all_human = z(np.concatenate(list(human.values())))
    summary = {
        "songs": [r["song"] for r in rows], "n": n, "seconds": seconds, "temperature": temperature,
        "diversity_ratio": within / max(between_human, 1e-12),
        "plausible_share": float(np.mean([r["plausible_share"] for r in rows])),
        "win_rate": float(np.mean([w for r in rows for w in r["sample_win_rates"]])),
        "worst_win_rate": float(min(w for r in rows for w in r["sample_win_rates"])),
        "frechet_samples": frechet_distance(z(np.concatenate(list(flat.values()))), all_human),
        "frechet_random": frechet_distance(z(np.concatenate(list(flat_random.values()))), all_human),
        "match_ratio": float(np.mean([r["style"]["match"] / r["style"]["equal_loudness"] for r in rows])),
        "match_refined_ratio": float(np.mean([r["style"]["match_refined"] / r["style"]["equal_loudness"] for r in rows])),
        "refine_steps": refine_steps, "rows": rows,
    }
    tmp = out / "generative.json.tmp"
    tmp.write_text(json.dumps(summary, indent=1))
    os.replace(tmp, out / "generative.json")
    (out / "generative.md").write_text(generative_table(summary))
    np.savez(out / "vectors.npz", features=np.array(STYLE_FEATURES), songs=np.array(summary["songs"]),
             **{f"human/{k}": v for k, v in human.items()}, **{f"samples/{k}": v for k, v in sample_vecs.items()},
             **{f"random/{k}": v for k, v in random_vecs.items()})
    return summary


def generative_table(s: dict[str, Any]) -> str:
    """The Markdown table of a generative evaluation (criteria of the generative issue beside each value)."""
    lines = [f"Generative evaluation on {len(s['songs'])} song(s) ({', '.join(s['songs'])}), first {s['seconds']:g} s, "
             f"{s['n']} samples each (temperature {s.get('temperature', 1.0):g}).", "", "| measure | value | criterion |", "|---|---:|---|",
             f"| diversity: mean pairwise distance of samples / between human mixes | {s['diversity_ratio']:.2f} | >= 0.5 |",
             f"| plausible: share of samples closer to the human mix than the random consoles' mean | "
             f"{s['plausible_share']:.2f} | 1.0 |",
             f"| share of (sample, random console) pairs in which the sample is closer to the human mix: all samples "
             f"(the worst sample) | {s['win_rate']:.2f} ({s['worst_win_rate']:.2f}) | |",
             f"| Fréchet distance to the human mixes: samples | {s['frechet_samples']:.2f} | below random |",
             f"| Fréchet distance to the human mixes: random consoles | {s['frechet_random']:.2f} | |",
             f"| match --refine {s['refine_steps']} (the default): style distance to the reference / equal "
             f"loudness's | {s['match_refined_ratio']:.2f} | <= 0.5 |",
             f"| match --refine 0 (the style encoder and decoder alone): same ratio | {s['match_ratio']:.2f} | |"]
    return "\n".join(lines) + "\n"
