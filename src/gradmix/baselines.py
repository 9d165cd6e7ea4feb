"""Baseline mixes, each an editable console setting (so every system is rendered and compared the same way).

- ``plain_sum``: every effect neutral, no sends: the (panned) sum of the tracks.
- ``peak_normalized``: the plain sum with a master gain that brings its sample peak to -1 dBFS.
- ``equal_loudness``: each track's fader sets its integrated loudness to -28 LUFS (silent tracks, below
  -70 LUFS, are left at 0 dB), then the master gain brings the sum to a -14 LUFS mix.
- ``rules``: a knowledge-based mix. Tracks whose spectral centroid is below 400 Hz (bass, kick) are
  centred and sit 3 dB above the others; the remaining tracks are spread across the stereo field in order
  of centroid, alternating left and right and widening towards +-0.6 for the brightest; every track gets a
  100 Hz high-pass unless it is a low track, a 2:1 compressor 6 dB above its median level, and the master
  EQ/compressor stay neutral with the limiter at -1 dBFS; levels as for ``equal_loudness``.
- ``random_console``: uniform 0..1 controls of the default layout, from a seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from gradmix.console import ConsoleSetting, Entry, Layout
from gradmix.dsp import integrated_loudness
from gradmix.effects import create
from gradmix.errors import GradmixError
from gradmix.metrics import spectral_features

TRACK_LUFS = -28.0
MIX_LUFS = -14.0
LOW_CENTROID_HZ = 400.0
BASELINES = ("plain_sum", "peak_normalized", "equal_loudness", "rules", "random_console")


def _entry(setting: ConsoleSetting, track: int, type_name: str):
    return next(e for e in setting.tracks[track].chain if e.effect.type_name == type_name)


def _master(setting: ConsoleSetting, type_name: str):
    return next(e for e in setting.master if e.effect.type_name == type_name)


def _track_loudness(audio: Tensor, sample_rate: int) -> float:
    return float(integrated_loudness(audio[None].double(), sample_rate=sample_rate))


def _set_mix_loudness(setting: ConsoleSetting, tracks: Sequence[Tensor], target_lufs: float) -> None:
    with torch.no_grad():
        mix, _ = setting.render(list(tracks), keep_strips=False)
    lufs = float(integrated_loudness(mix[None].double(), sample_rate=setting.sample_rate))
    if lufs > -70:  # the level goes on the limiter's drive, so the mix cannot clip
        _master(setting, "limiter").params["gain_db"] += target_lufs - lufs


def plain_sum(
    names: Sequence[str], files: Sequence[str | None], tracks: Sequence[Tensor], sample_rate: int
) -> ConsoleSetting:
    return ConsoleSetting.neutral(names, files, sample_rate=sample_rate)


def peak_normalized(names, files, tracks, sample_rate, peak_dbfs: float = -1.0) -> ConsoleSetting:
    setting = plain_sum(names, files, tracks, sample_rate)
    with torch.no_grad():
        mix, _ = setting.render(list(tracks), keep_strips=False)
    peak = float(mix.abs().max())
    if peak > 0:
        setting.master.insert(0, _gain_entry(peak_dbfs - 20 * math.log10(peak)))
    return setting


def _gain_entry(gain_db: float) -> Entry:
    return Entry(create("gain"), {"gain_db": float(gain_db)})


def _level_tracks(setting: ConsoleSetting, tracks: Sequence[Tensor], track_lufs: float) -> list[float]:
    """Set every non-silent track's fader to ``track_lufs``; returns each track's own loudness."""
    loudness = [_track_loudness(audio, setting.sample_rate) for audio in tracks]
    for i, lufs in enumerate(loudness):
        if lufs > -70:
            _entry(setting, i, "gain").params["gain_db"] = float(track_lufs - lufs)
    return loudness


def _limit_and_level(setting: ConsoleSetting, tracks, mix_lufs: float) -> None:
    _master(setting, "limiter").params["ceiling_db"] = -1.0
    _set_mix_loudness(setting, tracks, mix_lufs)


def equal_loudness(
    names, files, tracks, sample_rate, track_lufs: float = TRACK_LUFS, mix_lufs: float = MIX_LUFS
) -> ConsoleSetting:
    setting = plain_sum(names, files, tracks, sample_rate)
    _level_tracks(setting, tracks, track_lufs)
    _limit_and_level(setting, tracks, mix_lufs)
    return setting


def rules(
    names, files, tracks, sample_rate, track_lufs: float = TRACK_LUFS, mix_lufs: float = MIX_LUFS
) -> ConsoleSetting:
    setting = plain_sum(names, files, tracks, sample_rate)
    loudness = _level_tracks(setting, tracks, track_lufs)
    centroids = []
    for audio in tracks:
        stereo = audio.repeat(2, 1) if audio.shape[0] == 1 else audio
        centroids.append(float(spectral_features(stereo[None].double(), sample_rate)["centroid_hz"]))
    others = sorted((c, i) for i, c in enumerate(centroids) if c >= LOW_CENTROID_HZ)
    for i, c in enumerate(centroids):
        comp = _entry(setting, i, "compressor").params
        comp.update(threshold_db=max(-60.0, min(0.0, loudness[i] + 6.0)), ratio=2.0, attack_ms=10.0, release_ms=150.0)
        if c < LOW_CENTROID_HZ:
            _entry(setting, i, "gain").params["gain_db"] += 3.0
    for rank, (_, i) in enumerate(others):
        spread = 0.6 * (rank + 1) / len(others)
        _entry(setting, i, "pan").params["pan"] = spread if rank % 2 else -spread
        eq = _entry(setting, i, "eq")
        if eq.effect.shapes[0] == "low_shelf":  # the default EQ's first band becomes a 100 Hz low cut
            eq.params["freq_hz"][0], eq.params["gain_db"][0], eq.params["q"][0] = 100.0, -12.0, 0.707
    _limit_and_level(setting, tracks, mix_lufs)
    return setting


def random_console(names, files, tracks, sample_rate, seed: int = 0) -> ConsoleSetting:
    layout = Layout.default()
    gen = torch.Generator().manual_seed(seed)
    controls = layout.random_controls(1, len(names), generator=gen, dtype=torch.float64)
    return ConsoleSetting.from_params(
        layout, layout.denormalize(controls), names=list(names), files=list(files), sample_rate=sample_rate
    )


def baseline(name: str, names, files, tracks, sample_rate, **kw) -> ConsoleSetting:
    """The console setting of baseline ``name`` (one of :data:`BASELINES`) for one song."""
    fns = {
        "plain_sum": plain_sum,
        "peak_normalized": peak_normalized,
        "equal_loudness": equal_loudness,
        "rules": rules,
        "random_console": random_console,
    }
    if name not in fns:
        raise GradmixError(f"baseline: {name!r} is not one of {', '.join(BASELINES)}")
    return fns[name](names, files, tracks, sample_rate, **kw)
