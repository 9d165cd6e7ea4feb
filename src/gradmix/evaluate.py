"""``gradmix eval``: render each system on each song, compare with the human mix, write tables, plots, a page.

For every song that has a mix (the target), each system's console is rendered from the song's stems; its
features are compared with the target's (:func:`gradmix.metrics.feature_errors`, MR-STFT) and written per
song as JSON (so an interrupted run resumes), then aggregated into ``results.csv``, ``results.md`` (mean ±
std per feature group and system), ``groups.png`` (bars), one ``<song>.png`` per song (spectra and panning
of each system beside the human mix) and ``index.html`` (the table and audio players to listen side by side).
"""

from __future__ import annotations

import csv
import html
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gradmix.audio import make_output_folder, write_audio
from gradmix.baselines import BASELINES, baseline
from gradmix.data import find_songs, read_example
from gradmix.errors import GradmixError
from gradmix.metrics import GROUPS, aggregate_score, feature_errors
from gradmix.metrics import features as F
from gradmix.progress import progress as show_progress

SYSTEMS = BASELINES + ("gradmix", "target")


def evaluate(dataset: str | Path, out_dir: str | Path, *, systems: list[str], sample_rate: int = 44100,
             seconds: float | None = 30.0, seed: int = 0, progress: bool = False, model_path: str | Path | None = None,
             songs: list[str] | None = None, held_out: bool = False) -> dict[str, Any]:
    """Evaluate ``systems`` on every song of ``dataset`` that has a mix (or only on ``songs``, by name, or with
    ``held_out`` on the songs the model's training excluded); ``gradmix`` is the mixing model (``model_path``,
    default the shipped one). Returns the summary table."""
    if not systems:
        raise GradmixError(f"--systems: name at least one of {', '.join(SYSTEMS)}")
    for s in systems:
        if s not in SYSTEMS:
            raise GradmixError(f"--systems: {s!r} is not one of {', '.join(SYSTEMS)}")
    model = None
    if "gradmix" in systems:
        from gradmix.models.checkpoint import load_model

        model, meta = load_model(model_path)
        if held_out:
            songs = list(meta["info"].get("excluded") or [])
            if not songs:
                raise GradmixError("--held-out: the model's training excluded no songs")
    elif held_out:
        raise GradmixError("--held-out needs the gradmix system (it names the songs the model never saw)")
    out = Path(out_dir)
    found = [s for s in find_songs(dataset) if s.mix is not None]
    if songs is not None:
        missing = sorted(set(songs) - {s.name for s in found})
        if missing:
            raise GradmixError(f"{dataset}: no song named {missing[0]!r} with a mix")
        found = [s for s in found if s.name in set(songs)]
    songs = found
    if not songs:
        raise GradmixError(f"{dataset}: no song has a mix to compare with (name it mix.wav)")
    make_output_folder(out / "songs")
    for song in show_progress(songs, "evaluating", progress):
        result_path = out / "songs" / f"{song.name}.json"
        if result_path.is_file():
            continue
        result = _evaluate_song(song, out, systems, sample_rate, seconds, seed, model)
        tmp = result_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(result, indent=1))
        os.replace(tmp, result_path)
    rows = [r for song in songs for r in json.loads((out / "songs" / f"{song.name}.json").read_text())["rows"]]
    _write_tables(rows, systems, out)
    _plot_groups(rows, systems, out / "groups.png")
    _write_html(songs, rows, systems, out)
    return {"songs": len(songs), "rows": rows}


def _evaluate_song(song, out: Path, systems: list[str], sample_rate: int, seconds: float | None, seed: int,
                   model=None) -> dict:
    ex = read_example(song, sample_rate=sample_rate, seconds=seconds)
    tracks = [t[:1] if m else t for t, m in zip(ex.tracks, ex.mono)]
    names = [r.name for r in song.stems]
    files = [str(r.path) for r in song.stems]
    target = ex.mix[None].double()
    audio_dir = out / "audio" / song.name
    audio_dir.mkdir(parents=True, exist_ok=True)
    write_audio(audio_dir / "target.wav", ex.mix, sample_rate, "16")
    rows, spectra = [], {"target": _spectrum_and_panning(target, sample_rate)}
    for system in systems:
        if system == "target":
            mix = target
        else:
            if system == "gradmix":
                from gradmix.mix import automix

                setting = automix(model, names, files, tracks, sample_rate)
            else:
                setting = baseline(system, names, files, tracks, sample_rate,
                                   **({"seed": seed} if system == "random_console" else {}))
            with torch.no_grad():
                mix = setting.render(tracks, keep_strips=False)[0][None].double()
            setting.save(audio_dir / f"{system}.console.json")
        write_audio(audio_dir / f"{system}.wav", mix[0], sample_rate, "16")
        errors = feature_errors(mix, target, sample_rate)
        score, groups = aggregate_score(errors)
        row = {"song": song.name, "system": system, "score": float(score),
               **{f"group_{g}": float(v) for g, v in groups.items()}, **{k: float(v) for k, v in errors.items()}}
        try:
            from gradmix.metrics import mrstft_distance

            row.update({k: float(v) for k, v in mrstft_distance(mix.float(), target.float(), sample_rate).items()})
        except GradmixError:
            pass
        rows.append(row)
        spectra[system] = _spectrum_and_panning(mix, sample_rate)
    _plot_song(spectra, out / f"{song.name}.png", song.name)
    return {"rows": rows}


def _spectrum_and_panning(x: torch.Tensor, sample_rate: int) -> dict[str, list[float]]:
    spec = F._stft(x.float())
    mag = ((spec[:, 0] + spec[:, 1]) / 2).abs().square().mean(-1)[0]
    sps, energy = F.stereo_panning_spectrum(spec)
    pan = ((sps * energy).sum(-1) / energy.sum(-1).clamp_min(F.EPS))[0]
    return {"freqs": F._freqs(sample_rate, mag).tolist(), "spectrum_db": (10 * torch.log10(mag + 1e-12)).tolist(),
            "panning": pan.tolist()}


def _summary(rows: list[dict], systems: list[str]) -> list[tuple[str, dict[str, tuple[float, float]]]]:
    cols = ["score"] + [f"group_{g}" for g in GROUPS] + [c for c in ("mrstft_mono", "mrstft_stereo") if c in rows[0]]
    out = []
    for s in systems:
        vals = {c: np.array([r[c] for r in rows if r["system"] == s]) for c in cols}
        out.append((s, {c: (float(v.mean()), float(v.std())) for c, v in vals.items()}))
    return out


def _write_tables(rows: list[dict], systems: list[str], out: Path) -> None:
    keys = list(rows[0])
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    summary = _summary(rows, systems)
    cols = list(summary[0][1])
    lines = ["| system | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for s, vals in summary:
        lines.append(f"| {s} | " + " | ".join(f"{m:.3f} ± {d:.3f}" for m, d in vals.values()) + " |")
    (out / "results.md").write_text("Feature errors against the human mix (MAPE; lower is better), mean ± std over "
                                    f"{len({r['song'] for r in rows})} song(s).\n\n" + "\n".join(lines) + "\n")


def _plot_groups(rows: list[dict], systems: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = dict(_summary(rows, systems))
    groups = ["score"] + [f"group_{g}" for g in GROUPS]
    fig, ax = plt.subplots(figsize=(10, 4))
    width = 0.8 / len(systems)
    for k, s in enumerate(systems):
        means = [summary[s][g][0] for g in groups]
        stds = [summary[s][g][1] for g in groups]
        ax.bar(np.arange(len(groups)) + k * width, means, width, yerr=stds, label=s)
    ax.set_xticks(np.arange(len(groups)) + 0.4 - width / 2, [g.replace("group_", "") for g in groups])
    ax.set(ylabel="MAPE against the human mix", title="Feature errors per group (lower is better)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_song(spectra: dict[str, dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4))
    for name, d in spectra.items():
        style = dict(color="k", lw=2) if name == "target" else dict(lw=1)
        a.semilogx(d["freqs"][1:], d["spectrum_db"][1:], label=name, **style)
        b.semilogx(d["freqs"][1:], d["panning"][1:], label=name, **style)
    a.set(title=f"{title}: spectrum", xlabel="Hz", ylabel="dB")
    b.set(title="stereo panning spectrum", xlabel="Hz", ylabel="left (-1) .. right (1)", ylim=(-1, 1))
    a.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _write_html(songs, rows: list[dict], systems: list[str], out: Path) -> None:
    table = (out / "results.md").read_text()
    parts = ["<!doctype html><meta charset='utf-8'><title>gradmix eval</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}td,th{padding:2px 8px}</style>",
             "<h1>gradmix evaluation</h1><pre>" + html.escape(table) + "</pre><img src='groups.png' width='100%'>"]
    for song in songs:
        parts.append(f"<h2>{html.escape(song.name)}</h2><img src='{html.escape(song.name)}.png' width='100%'><table>")
        for s in ["target"] + [x for x in systems if x != "target"]:
            score = next((r["score"] for r in rows if r["song"] == song.name and r["system"] == s), math.nan)
            parts.append(f"<tr><td>{s}</td><td>{score:.3f}</td><td><audio controls preload='none' "
                         f"src='audio/{html.escape(song.name)}/{s}.wav'></audio></td></tr>")
        parts.append("</table>")
    (out / "index.html").write_text("\n".join(parts))
