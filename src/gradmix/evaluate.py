"""``gradmix eval``: render each system on each song, compare with the human mix, write tables, plots, a page.

For every song that has a mix (the target), each system sets its console from the whole song's stems, as
``gradmix mix`` does (a part that enters late is heard, and an intro keeps its place in the song), and the
console renders the first ``seconds`` of the stems; its features are compared with the target's
(:func:`gradmix.metrics.feature_errors`, MR-STFT) and written per song as JSON (so an interrupted run
resumes), then aggregated into ``results.csv``, ``results.md`` (mean ±
std per feature group and system), ``groups.png`` (bars), one ``<song>.png`` per song (spectra and panning
of each system beside the human mix) and ``index.html`` (the table and audio players to listen side by side).

With ``tracks``, the songs that have wet stems (each track as the human mix hears it) are also measured track
by track (:mod:`gradmix.metrics.tracks`): each system's part of every track against the authors' wet stem,
per song as JSON under ``tracks/`` (resumed like the rest), aggregated into ``tracks.csv`` (one row per song,
system and measured track), ``tracks_spread.csv`` (one row per song and system) and ``tracks.md``.

Besides the named systems, ``models`` adds systems that are the mixing model of another file (e.g. the
previous model, to compare two trainings in the same tables).

Devices: the mixing models (``gradmix`` and each of ``models``) analyse and decide on ``device``, and every
system's console is rendered there; the metrics (feature errors, MR-STFT, the per-track measures, the spectra
of the plots) run on the CPU on a copy of each mix (some are numpy-based, and they run once per song).
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gradmix.audio import make_output_folder, write_atomically, write_text_atomically, write_audio
from gradmix.baselines import BASELINES, baseline
from gradmix.data import find_songs, read_example, read_song_tracks
from gradmix.defaults import DEVICE, EVAL_SECONDS
from gradmix.errors import GradmixError
from gradmix.metrics import GROUPS, aggregate_score, feature_errors
from gradmix.metrics import features as F
from gradmix.metrics.tracks import DESCRIPTORS, OFF_CENTRE, descriptor_spread, track_descriptors, track_errors
from gradmix.progress import progress as show_progress

SYSTEMS = BASELINES + ("gradmix", "target")


def evaluate(
    dataset: str | Path,
    out_dir: str | Path,
    *,
    systems: list[str],
    sample_rate: int = 44100,
    seconds: float | None = EVAL_SECONDS,
    seed: int = 0,
    progress: bool = False,
    model_path: str | Path | None = None,
    songs: list[str] | None = None,
    held_out: bool = False,
    tracks: bool = False,
    models: Mapping[str, str | Path] | None = None,
    device: torch.device | str = DEVICE,
) -> dict[str, Any]:
    """Evaluate ``systems`` on every song of ``dataset`` that has a mix (or only on ``songs``, by name, or with
    ``held_out`` on the songs the model's training excluded); ``gradmix`` is the mixing model (``model_path``,
    default the shipped one). ``models`` maps further system names to model files (each a system that is the
    mixing model of that file, added to ``systems``). With ``tracks``, the songs with wet stems are also
    measured track by track (see the module docstring). The models and the renders run on ``device``, the
    metrics on the CPU. Returns the summary table (``tracks``: the counts of the per-track group)."""
    if not systems and not models:
        raise GradmixError(f"--systems: name at least one of {', '.join(SYSTEMS)}")
    models = dict(models or {})
    for name, path in models.items():
        if name in SYSTEMS:
            raise GradmixError(f"--model-as: {name!r} is already a system ({', '.join(SYSTEMS)}); choose another name")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            raise GradmixError(f"--model-as: {name!r} is not a usable system name (letters, digits, _ . -)")
        if not Path(path).is_file():
            raise GradmixError(f"--model-as {name}: {path} does not exist")
    for s in systems:
        if s not in SYSTEMS and s not in models:
            raise GradmixError(f"--systems: {s!r} is not one of {', '.join(SYSTEMS)}")
    systems = list(dict.fromkeys([*systems, *models]))
    if tracks and not [s for s in systems if s != "target"]:
        raise GradmixError("--tracks: name a system other than target (the target is what the tracks are measured by)")
    mixers: dict[str, Any] = {}
    if models:
        from gradmix.models.checkpoint import load_model

        mixers.update({name: load_model(path)[0].to(device) for name, path in models.items()})
    if "gradmix" in systems:
        from gradmix.models.checkpoint import load_model

        model, meta = load_model(model_path)
        mixers["gradmix"] = model.to(device)
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
    wet_songs = [s for s in songs if any(r.wet is not None for r in s.stems)] if tracks else []
    if tracks and not wet_songs:
        raise GradmixError(
            f"{dataset}: --tracks needs wet stems (<song>/wet/<the dry stem's file name>), and none of "
            f"its {len(songs)} song(s) with a mix has any"
        )
    wet_names = {s.name for s in wet_songs}
    make_output_folder(out / "songs")
    if tracks:
        (out / "tracks").mkdir(exist_ok=True)
    for song in show_progress(songs, "evaluating", progress):
        result_path = out / "songs" / f"{song.name}.json"
        tracks_path = out / "tracks" / f"{song.name}.json" if song.name in wet_names else None
        need_features = not result_path.is_file()
        need_tracks = tracks_path is not None and not tracks_path.is_file()
        if not (need_features or need_tracks):
            continue
        result, track_result = _evaluate_song(
            song,
            out,
            systems,
            sample_rate,
            seconds,
            seed,
            mixers,
            features=need_features,
            tracks=need_tracks,
            device=device,
        )
        if need_features:
            _write_json(result_path, result)
        if need_tracks:
            _write_json(tracks_path, track_result)
    rows = [r for song in songs for r in json.loads((out / "songs" / f"{song.name}.json").read_text())["rows"]]
    _write_tables(rows, systems, out)
    _plot_groups(rows, systems, out / "groups.png")
    summary: dict[str, Any] = {"songs": len(songs), "rows": rows}
    if tracks:
        measured = [json.loads((out / "tracks" / f"{s.name}.json").read_text()) for s in wet_songs]
        skipped = [s.name for s in songs if s.name not in wet_names]
        summary["tracks"] = _write_track_tables(measured, [s for s in systems if s != "target"], skipped, out)
    _write_html(songs, rows, systems, out, tracks=tracks)
    return summary


def _write_json(path: Path, data: Any) -> None:
    write_text_atomically(path, json.dumps(data, indent=1))


def _evaluate_song(
    song,
    out: Path,
    systems: list[str],
    sample_rate: int,
    seconds: float | None,
    seed: int,
    mixers: Mapping[str, Any],
    *,
    features: bool = True,
    tracks: bool = False,
    device: torch.device | str = DEVICE,
) -> tuple[dict, dict]:
    """Render every system on one song (on ``device``; the mixers are there already): each system sets its console
    from the whole song, as ``gradmix mix`` does, and its first ``seconds`` are rendered; with ``features``
    compare each mix with the target (rows, audio, plot), with ``tracks`` measure each system's parts against
    the wet stems, both on the CPU. Returns the two per-song results."""
    ex = read_example(song, sample_rate=sample_rate, seconds=seconds)
    audio = ex.heard_tracks()
    heard = audio if seconds is None else read_song_tracks(song, sample_rate)  # what the systems decide from
    names = [r.name for r in song.stems]
    files = [str(r.path) for r in song.stems]
    target = ex.mix[None].double()
    audio_dir = out / "audio" / song.name
    if features:
        audio_dir.mkdir(parents=True, exist_ok=True)
        write_audio(audio_dir / "target.wav", ex.mix, sample_rate, "16")
    rows, spectra = [], {"target": _spectrum_and_panning(target, sample_rate)}
    measure = _TrackMeasure(ex, names, sample_rate) if tracks else None
    for system in systems:
        if system == "target":
            if not features:
                continue
            mix = target
        else:
            if system in mixers:
                from gradmix.mix import automix

                setting = automix(mixers[system], names, files, heard, sample_rate)
            else:
                setting = baseline(
                    system, names, files, heard, sample_rate, **({"seed": seed} if system == "random_console" else {})
                )
            with torch.no_grad():
                mix, strips = setting.render(audio, keep_strips=tracks, device=device)
                if measure is not None:
                    measure.add(system, setting.track_outputs(strips).cpu())
                del strips
            mix = mix.cpu()[None].double()
            if features:
                setting.save(audio_dir / f"{system}.console.json")
        if not features:
            continue
        write_audio(audio_dir / f"{system}.wav", mix[0], sample_rate, "16")
        errors = feature_errors(mix, target, sample_rate)
        score, groups = aggregate_score(errors)
        row = {
            "song": song.name,
            "system": system,
            "score": float(score),
            **{f"group_{g}": float(v) for g, v in groups.items()},
            **{k: float(v) for k, v in errors.items()},
        }
        try:
            from gradmix.metrics import mrstft_distance

            row.update({k: float(v) for k, v in mrstft_distance(mix.float(), target.float(), sample_rate).items()})
        except GradmixError:
            pass
        rows.append(row)
        spectra[system] = _spectrum_and_panning(mix, sample_rate)
    if features:
        _plot_song(spectra, out / f"{song.name}.png", song.name)
    return {"rows": rows}, (measure.result() if measure is not None else {})


class _TrackMeasure:
    """The per-track group of one song: the authors' descriptors once, then each system's parts as they come."""

    def __init__(self, ex, names: list[str], sample_rate: int) -> None:
        self.song, self.names, self.sample_rate = ex.song, names, sample_rate
        self.wet, self.dry, self.has_wet = ex.wet.double(), ex.tracks.double(), ex.has_wet
        self.authors = track_descriptors(self.wet, self.dry, sample_rate=sample_rate)
        self.rows: list[dict] = []
        self.spread: list[dict] = []
        self.measured = None

    def add(self, system: str, parts: Tensor) -> None:
        parts = parts.double()
        errors = track_errors(parts, self.wet, self.dry, self.has_wet, sample_rate=self.sample_rate)
        desc = track_descriptors(parts, self.dry, sample_rate=self.sample_rate)
        self.measured = errors["measured"]
        for n in torch.nonzero(self.measured).flatten().tolist():
            row = {
                "song": self.song,
                "system": system,
                "track": self.names[n],
                "off_centre": bool(errors["off_centre"][n]),
            }
            row.update({k: float(v[n]) for k, v in errors.items() if k not in ("measured", "off_centre")})
            row.update({k: float(desc[k][n]) for k in DESCRIPTORS})
            row.update({f"wet_{k}": float(self.authors[k][n]) for k in DESCRIPTORS})
            self.rows.append(row)
        row = {"song": self.song, "system": system, "tracks": int(self.measured.sum())}
        for k, (s, a, r) in descriptor_spread(desc, self.authors, self.measured).items():
            row.update({f"spread_{k}": s, f"wet_spread_{k}": a, f"ratio_{k}": r})
        self.spread.append(row)

    def result(self) -> dict:
        measured = (
            self.measured if self.measured is not None else torch.zeros(len(self.names), dtype=torch.bool, device="cpu")
        )
        off = self.authors["position"].abs() >= OFF_CENTRE
        return {
            "tracks": len(self.names),
            "with_wet": int(self.has_wet.sum()),
            "measured": int(measured.sum()),
            "off_centre": int((measured & off).sum()),
            "rows": self.rows,
            "spread": self.spread,
        }


def _spectrum_and_panning(x: torch.Tensor, sample_rate: int) -> dict[str, list[float]]:
    spec = F.complex_stft(x.float())
    mag = ((spec[:, 0] + spec[:, 1]) / 2).abs().square().mean(-1)[0]
    sps, energy = F.stereo_panning_spectrum(spec)
    pan = ((sps * energy).sum(-1) / energy.sum(-1).clamp_min(F.EPS))[0]
    return {
        "freqs": F.bin_frequencies(sample_rate, mag).tolist(),
        "spectrum_db": (10 * torch.log10(mag + 1e-12)).tolist(),
        "panning": pan.tolist(),
    }


def _summary(rows: list[dict], systems: list[str]) -> list[tuple[str, dict[str, tuple[float, float]]]]:
    cols = ["score"] + [f"group_{g}" for g in GROUPS] + [c for c in ("mrstft_mono", "mrstft_stereo") if c in rows[0]]
    out = []
    for s in systems:
        vals = {c: np.array([r[c] for r in rows if r["system"] == s]) for c in cols}
        out.append((s, {c: (float(v.mean()), float(v.std())) for c, v in vals.items()}))
    return out


def _write_csv(path: Path, rows: list[dict], keys: list[str]) -> None:
    text = io.StringIO(newline="")
    w = csv.DictWriter(text, fieldnames=keys)
    w.writeheader()
    w.writerows(rows)
    write_text_atomically(path, text.getvalue())


def _write_tables(rows: list[dict], systems: list[str], out: Path) -> None:
    keys = list(rows[0])
    _write_csv(out / "results.csv", rows, keys)
    summary = _summary(rows, systems)
    cols = list(summary[0][1])
    lines = ["| system | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for s, vals in summary:
        lines.append(f"| {s} | " + " | ".join(f"{m:.3f} ± {d:.3f}" for m, d in vals.values()) + " |")
    table = (
        "Feature errors against the human mix (MAPE; lower is better), mean ± std over "
        f"{len({r['song'] for r in rows})} song(s).\n\n" + "\n".join(lines) + "\n"
    )
    write_text_atomically(out / "results.md", table)


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
    write_atomically(path, lambda f: fig.savefig(f, format="png", dpi=100))
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
    write_atomically(path, lambda f: fig.savefig(f, format="png", dpi=90))
    plt.close(fig)


TRACK_COLUMNS = (
    "level error (dB)",
    "position error",
    "off-centre: position error (centred mix)",
    "octave-band error (dB)",
    *(f"spread ratio: {d}" for d in DESCRIPTORS),
)
"""Columns of ``tracks.md`` after the system's name."""


def _write_track_tables(songs: list[dict], systems: list[str], skipped: list[str], out: Path) -> dict[str, Any]:
    """Write ``tracks.csv``, ``tracks_spread.csv`` and ``tracks.md`` from the per-song results; return the counts."""
    rows = [r for s in songs for r in s["rows"]]
    spread = [r for s in songs for r in s["spread"]]
    for name, table in (("tracks.csv", rows), ("tracks_spread.csv", spread)):
        _write_csv(out / name, table, list(dict.fromkeys(k for r in table for k in r)) or ["song", "system"])
    counts = {
        "songs": len(songs),
        "measured": sum(s["measured"] for s in songs),
        "off_centre": sum(s["off_centre"] for s in songs),
        "skipped": skipped,
    }

    def mean(values: list[float], fmt: str) -> str:
        v = np.array([x for x in values if x is not None and not math.isnan(x)], dtype=np.float64)
        return format(float(v.mean()), fmt) if len(v) else "–"

    lines = ["| system | " + " | ".join(TRACK_COLUMNS) + " |", "|---|" + "---:|" * len(TRACK_COLUMNS)]
    for system in systems:
        mine = [r for r in rows if r["system"] == system]
        off = [r for r in mine if r["off_centre"]]
        off_cell = (
            (
                f"{mean([r['position_error'] for r in off], '.3f')} "
                f"({mean([r['centred_position_error'] for r in off], '.3f')})"
            )
            if off
            else "–"
        )
        cells = [
            mean([r["level_error_db"] for r in mine], ".2f"),
            mean([r["position_error"] for r in mine], ".3f"),
            off_cell,
            mean([r["octave_band_error_db"] for r in mine], ".2f"),
        ]
        cells += [mean([r[f"ratio_{d}"] for r in spread if r["system"] == system], ".2f") for d in DESCRIPTORS]
        lines.append(f"| {system} | " + " | ".join(cells) + " |")
    head = (
        f"Per-track measures against the authors' wet stems: {counts['measured']} track(s) measured in "
        f"{len(songs)} song(s), {counts['off_centre']} of them off-centre (|wet position| >= {OFF_CENTRE:g}). "
        "Errors are means over tracks (lower is better); a spread ratio is the mean over songs of the standard "
        "deviation over a song's tracks of the descriptor, the system's over the authors' (1: as varied as the "
        "authors' mix, 0: every track treated alike)."
    )
    text = head + "\n\n" + "\n".join(lines) + "\n"
    if skipped:
        text += f"\nSkipped (no wet stems): {', '.join(skipped)}.\n"
    write_text_atomically(out / "tracks.md", text)
    return counts


def _write_html(songs, rows: list[dict], systems: list[str], out: Path, tracks: bool = False) -> None:
    table = (out / "results.md").read_text()
    parts = [
        "<!doctype html><meta charset='utf-8'><title>gradmix eval</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}td,th{padding:2px 8px}</style>",
        "<h1>gradmix evaluation</h1><pre>" + html.escape(table) + "</pre><img src='groups.png' width='100%'>",
    ]
    if tracks:
        parts.append("<h2>Per-track measures</h2><pre>" + html.escape((out / "tracks.md").read_text()) + "</pre>")
    for song in songs:
        parts.append(f"<h2>{html.escape(song.name)}</h2><img src='{html.escape(song.name)}.png' width='100%'><table>")
        for s in ["target"] + [x for x in systems if x != "target"]:
            score = next((r["score"] for r in rows if r["song"] == song.name and r["system"] == s), math.nan)
            parts.append(
                f"<tr><td>{s}</td><td>{score:.3f}</td><td><audio controls preload='none' "
                f"src='audio/{html.escape(song.name)}/{s}.wav'></audio></td></tr>"
            )
        parts.append("</table>")
    write_text_atomically(out / "index.html", "\n".join(parts))
