"""Effect normalisation of stems (FxNorm, after Martínez-Ramírez et al., ISMIR 2022, arXiv 2208.11428).

Pass 1 measures every stem (:func:`stem_features`) and averages the features per stem class (the stem's
label when the dataset has labels, else one class ``"all"``). Pass 2 normalises each stem towards its class,
in this order, and records what it did as a JSON label beside the stem:

1. **EQ**: a 31-band graphic EQ whose band gains are the class-average spectrum minus the stem's spectrum
   (both as third-octave band energies of the mid signal relative to their mean, in dB), limited to +-12 dB;
2. **dynamics**: if the stem's dynamic spread (95th minus 50th percentile of 50 ms RMS levels, in dB) exceeds
   its class average, a compressor with threshold 3 dB above the stem's median level and ratio
   ``spread / class spread`` (at most 10) bounds it;
3. **stereo image**: balance to the centre (equal left/right energy) and mid/side width to the class's
   average side-to-mid energy ratio (mono stems stay mono); after EQ, because EQ changes the two channels'
   energies differently when they hold different spectra;
4. **loudness**: a gain to ``target_lufs`` (BS.1770 integrated loudness; a mono stem is measured as one
   channel, as the console's constant-power pan law plays it).

Silent stems are copied unchanged and labelled ``"silent": true``.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import shutil
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gradmix import dsp
from gradmix.audio import check_mixable, make_output_folder, write_text_atomically, write_audio
from gradmix.data.segments import Example, read_example
from gradmix.data.songs import Song, find_songs, select_shard
from gradmix.defaults import DATASET_SAMPLE_RATE, STEM_LUFS
from gradmix.dsp.eq import THIRD_OCTAVE_CENTRES_HZ
from gradmix.errors import GradmixError
from gradmix.progress import progress as show_progress

BANDS_HZ = np.array(THIRD_OCTAVE_CENTRES_HZ, dtype=float)
SILENCE_LUFS = -65.0
EQ_LIMIT_DB = 12.0
MAX_RATIO = 10.0
ORDER = ("eq", "dynamics", "stereo", "loudness")
DONE = ".fxnorm-done"


@dataclass
class StemFeatures:
    """Measurements of one stem (see the module docstring)."""

    loudness_lufs: float
    spectrum_db: list[float]
    spread_db: float
    median_db: float
    width_db: float
    balance_db: float
    mono: bool


def _band_spectrum_db(x: torch.Tensor, sample_rate: int) -> np.ndarray:
    """Third-octave band energies (dB) of the mid signal, relative to their mean."""
    mid = x.mean(0).double()
    n_fft = 4096
    win = torch.hann_window(n_fft, dtype=torch.float64)
    spec = torch.stft(mid, n_fft, hop_length=n_fft // 2, window=win, return_complex=True).abs().square().mean(-1)
    freqs = np.fft.rfftfreq(n_fft, 1 / sample_rate)
    power = spec.numpy()
    out = []
    for fc in BANDS_HZ:
        sel = (freqs >= fc * 2 ** (-1 / 6)) & (freqs < fc * 2 ** (1 / 6))
        band = power[sel].sum() if sel.any() else power[np.argmin(np.abs(freqs - fc))]
        out.append(10 * np.log10(band + 1e-20))
    out = np.array(out)
    return out - out.mean()


def _short_term_levels_db(x: torch.Tensor, sample_rate: int) -> np.ndarray:
    frame, hop = int(0.05 * sample_rate), int(0.025 * sample_rate)
    power = x.double().square().mean(0)
    if power.numel() < frame:
        return np.array([10 * math.log10(float(power.mean()) + 1e-20)])
    frames = power.unfold(0, frame, hop).mean(-1)
    levels = 10 * torch.log10(frames + 1e-20).numpy()
    return levels[levels > -70.0] if (levels > -70.0).any() else levels


def stem_features(x: torch.Tensor, sample_rate: int, mono: bool) -> StemFeatures:
    """Features of a ``(2, samples)`` stem; a mono stem (duplicated) is measured as one channel, as the
    console's constant-power pan law plays it."""
    loud = float(dsp.integrated_loudness((x[:1] if mono else x)[None].double(), sample_rate=sample_rate))
    levels = _short_term_levels_db(x, sample_rate)
    left, right = x[0].double().square().sum(), x[1].double().square().sum()
    mid = ((x[0] + x[1]) / 2).double().square().sum()
    side = ((x[0] - x[1]) / 2).double().square().sum()
    return StemFeatures(
        loud,
        _band_spectrum_db(x, sample_rate).tolist(),
        float(np.percentile(levels, 95) - np.percentile(levels, 50)),
        float(np.percentile(levels, 50)),
        float(10 * math.log10((side + 1e-20) / (mid + 1e-20))),
        float(10 * math.log10((left + 1e-20) / (right + 1e-20))),
        bool(mono),
    )


def class_statistics(features: Iterable[tuple[str, StemFeatures]]) -> dict[str, dict[str, Any]]:
    """Average features per class: ``{class: {spectrum_db, spread_db, width_db, loudness_lufs, count}}``."""
    groups: dict[str, list[StemFeatures]] = {}
    for label, f in features:
        if f.loudness_lufs > SILENCE_LUFS:
            groups.setdefault(label, []).append(f)
    stats = {}
    for label, fs in groups.items():
        stereo = [f.width_db for f in fs if not f.mono]
        stats[label] = {
            "count": len(fs),
            "spectrum_db": np.mean([f.spectrum_db for f in fs], 0).tolist(),
            "spread_db": float(np.mean([f.spread_db for f in fs])),
            "width_db": float(np.mean(stereo)) if stereo else None,
            "loudness_lufs": float(np.mean([f.loudness_lufs for f in fs])),
        }
    return stats


def normalize_stem(
    x: torch.Tensor, sample_rate: int, mono: bool, stats: dict[str, Any], *, target_lufs: float = -25.0
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Normalise one ``(2, samples)`` stem towards its class ``stats``; returns the audio and the label."""
    before = stem_features(x, sample_rate, mono)
    label: dict[str, Any] = {"order": list(ORDER), "before": asdict(before)}
    if before.loudness_lufs <= SILENCE_LUFS:
        return x, {**label, "silent": True}
    y = x[None].double()
    eq = np.clip(np.array(stats["spectrum_db"]) - np.array(before.spectrum_db), -EQ_LIMIT_DB, EQ_LIMIT_DB)
    y = dsp.graphic_eq(y, sample_rate=sample_rate, gain_db=torch.tensor(eq)[None])
    comp = None
    spread = stem_features(y[0].float(), sample_rate, mono).spread_db
    if spread > stats["spread_db"] + 0.5:
        levels = _short_term_levels_db(y[0], sample_rate)
        comp = {
            "threshold_db": float(np.percentile(levels, 50)) + 3.0,
            "ratio": float(min(MAX_RATIO, spread / max(stats["spread_db"], 0.5))),
            "attack_ms": 10.0,
            "release_ms": 100.0,
            "knee_db": 6.0,
            "makeup_db": 0.0,
        }
        y = dsp.compressor(y, sample_rate=sample_rate, **comp)
    pan, width = 0.0, 1.0
    if not mono:
        left, right = y[0, 0].square().sum(), y[0, 1].square().sum()
        balance_db = 10 * math.log10(float(left + 1e-20) / float(right + 1e-20))
        # attenuate the louder side so that both carry the same energy
        ratio = 10 ** (-abs(balance_db) / 20)
        pan = math.copysign(2 / math.pi * math.acos(min(1.0, ratio)), balance_db)
        y = dsp.balance(y, pan=pan)
        if stats.get("width_db") is not None:
            mid = ((y[0, 0] + y[0, 1]) / 2).square().sum()
            side = ((y[0, 0] - y[0, 1]) / 2).square().sum()
            current = 10 * math.log10(float(side + 1e-20) / float(mid + 1e-20))
            width = float(np.clip(10 ** ((stats["width_db"] - current) / 20), 0.0, 2.0))
            y = dsp.stereo_width(y, width=width)
    loud = float(dsp.integrated_loudness(y[:, :1] if mono else y, sample_rate=sample_rate))
    gain_db = target_lufs - loud
    y = dsp.gain(y, gain_db=gain_db)
    label.update(
        {
            "balance_pan": pan,
            "width": width,
            "eq_gain_db": eq.tolist(),
            "eq_bands_hz": BANDS_HZ.tolist(),
            "compressor": comp,
            "gain_db": gain_db,
            "target_lufs": target_lufs,
            "after": asdict(stem_features(y[0].float(), sample_rate, mono)),
        }
    )
    return y[0].float(), label


def _class_of(song: Song, index: int, labelled: bool) -> str:
    return (song.stems[index].label or "unlabelled") if labelled else "all"


def _read_song(song: Song, sample_rate: int) -> Example:
    """The whole song, refused as ``gradmix mix`` refuses it (unreadable, truncated, too short, all silent)."""
    ex = read_example(song, sample_rate=sample_rate)
    check_mixable(list(ex.tracks), sample_rate, song.stems[0].path.parent)
    return ex


def _measure(args: tuple[Song, int, bool]) -> list[tuple[str, StemFeatures]]:
    song, sample_rate, labelled = args
    ex = _read_song(song, sample_rate)
    return [
        (_class_of(song, i, labelled), stem_features(ex.tracks[i], sample_rate, bool(ex.mono[i])))
        for i in range(len(song.stems))
    ]


def _normalize_song(args: tuple[Song, int, bool, dict, float, str]) -> str:
    song, sample_rate, labelled, stats, target_lufs, out_dir = args
    torch.set_num_threads(1)
    ex = _read_song(song, sample_rate)
    out = Path(out_dir) / song.name
    tmp = Path(out_dir) / f".{song.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    labels = {}
    for i, ref in enumerate(song.stems):
        cls = _class_of(song, i, labelled)
        mono = bool(ex.mono[i])
        y, label = normalize_stem(
            ex.tracks[i],
            sample_rate,
            mono,
            stats[cls] if cls in stats else {"spectrum_db": [0.0] * len(BANDS_HZ), "spread_db": 1e9, "width_db": None},
            target_lufs=target_lufs,
        )
        write_audio(tmp / f"{ref.name}.wav", y[:1] if mono else y, sample_rate)
        (tmp / f"{ref.name}.fxnorm.json").write_text(json.dumps({"class": cls, **label}, indent=1))
        labels[ref.name] = ref.label
    if ex.mix is not None:
        write_audio(tmp / "mix.wav", ex.mix, sample_rate)
    meta = {
        **song.meta,
        "labels": {k: v for k, v in labels.items() if v},
        "source": str(song.stems[0].path.parent),
        "fxnorm": {"order": list(ORDER), "target_lufs": target_lufs},
    }
    (tmp / "metadata.json").write_text(json.dumps(meta, indent=1, default=str))
    (tmp / DONE).write_text("ok\n")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return song.name


def normalize_dataset(
    root: str | Path,
    out_dir: str | Path,
    *,
    layout: str | None = None,
    sample_rate: int = DATASET_SAMPLE_RATE,
    target_lufs: float = STEM_LUFS,
    workers: int | None = None,
    progress: bool = False,
    shard: tuple[int, int] | None = None,
    stats_only: bool = False,
) -> dict[str, Any]:
    """FxNorm a whole dataset into ``out_dir`` (folder-of-stems layout); resumable, never touches ``root``.

    On a cluster: run once with ``stats_only=True`` (pass 1 writes ``classes.json``), then one job per
    ``shard=(i, n)`` (pass 2 for songs ``i, i + n, ...``), all writing into the same shared ``out_dir``.

    Returns:
        a summary: songs done, skipped (already finished), and the class statistics used.
    """
    root, out_dir = Path(root), Path(out_dir)
    if out_dir.resolve() == root.resolve() or root.resolve() in out_dir.resolve().parents:
        raise GradmixError(f"{out_dir}: the output must not be the dataset or lie inside it")
    songs = find_songs(root, layout)
    labelled = any(r.label for s in songs for r in s.stems)
    workers = workers or os.cpu_count() or 1
    stats_path = out_dir / "classes.json"
    if stats_path.is_file():
        stats = json.loads(stats_path.read_text())["classes"]
    elif shard is not None:
        raise GradmixError(f"{stats_path}: missing; run pass 1 once first (--stats-only) before sharded jobs")
    else:
        with _pool(workers) as pool:
            measured = list(
                show_progress(
                    pool.map(_measure, [(s, sample_rate, labelled) for s in songs]),
                    "pass 1: measuring stems",
                    progress,
                    total=len(songs),
                )
            )
        stats = class_statistics(f for song in measured for f in song)
        make_output_folder(out_dir)  # once every song has been read and checked
        table = json.dumps({"labelled": labelled, "classes": stats}, indent=1)
        write_text_atomically(stats_path, table)
    if stats_only:
        return {"done": [], "skipped": 0, "classes": stats}
    songs = select_shard(songs, shard)
    todo = [s for s in songs if not (out_dir / s.name / DONE).is_file()]
    with _pool(workers) as pool:
        jobs = [(s, sample_rate, labelled, stats, target_lufs, str(out_dir)) for s in todo]
        done = list(show_progress(pool.map(_normalize_song, jobs), "pass 2: normalising", progress, total=len(todo)))
    return {"done": done, "skipped": len(songs) - len(todo), "classes": stats}


class _Serial:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    @staticmethod
    def map(fn, items):
        return map(fn, items)


def _pool(workers: int):
    # spawn, not fork: forking a process whose torch/numba thread pools are running can deadlock
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) if workers > 1 else _Serial()
