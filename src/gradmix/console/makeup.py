"""Each strip compressor's makeup gain set to what that compressor takes away, with the sound unchanged.

A mixing network may put any part of a track's level on the compressor's makeup gain (the default model puts
the song's level move there, one gain for all tracks). An engineer reads a makeup gain as the compressor's own
compensation: bypass it and the track should keep about its level. A compressor's curve depends on the input
level relative to its threshold only, so raising the fader by ``d`` dB, the threshold by ``d`` dB and lowering
the makeup by ``d`` dB leave the strip's output as it was (exactly, up to rounding), provided that only linear
effects (gain, EQ) sit between the fader and the compressor. :func:`makeup_to_gain_reduction` makes that move
so that each makeup equals the compressor's gain reduction, and the track's level sits on its fader.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from gradmix.console.setting import ConsoleSetting, Entry
from gradmix.dsp import integrated_loudness
from gradmix.dsp.loudness import LOUDNESS_FLOOR_LUFS


def gain_reduction_db(entries: Sequence[Entry], compressor: Entry, audio: Tensor, sample_rate: int) -> float | None:
    """How much quieter (dB, integrated loudness, >= 0) ``compressor`` without its makeup gain makes ``audio``
    after the linear ``entries`` before it; ``None`` where the compressor's input is too quiet to measure.

    Args:
        audio: ``(channels, samples)``, channels 1 or 2.
    """
    with torch.no_grad():
        x = audio[None]
        for e in entries:
            x = e.effect(x, e.params, sample_rate=sample_rate)
        y = compressor.effect(x, {**compressor.params, "makeup_db": 0.0}, sample_rate=sample_rate)
        before, after = (integrated_loudness(v.expand(-1, 2, -1), sample_rate=sample_rate) for v in (x, y))
    if not (before > LOUDNESS_FLOOR_LUFS and after > LOUDNESS_FLOOR_LUFS):
        return None
    return max(float(before - after), 0.0)


def makeup_to_gain_reduction(setting: ConsoleSetting, excerpts: Sequence[Tensor | None]) -> None:
    """In place: move each track's level between its compressor's makeup gain and its fader (the first gain of
    the strip), the threshold following the fader, so that the makeup equals the compressor's gain reduction on
    the track's excerpt (within the threshold's and makeup's ranges); the strip's output does not change.

    A track is left as it is when its excerpt is ``None`` or too quiet, or its strip does not start with a gain
    followed only by linear effects up to a compressor.

    Args:
        excerpts: per track ``(channels, samples)`` of its audio at the console's rate (a loud passage: the
            gain reduction is measured there), or ``None``.
    """
    for track, audio in zip(setting.tracks, excerpts):
        kinds = [e.effect.type_name for e in track.chain]
        if audio is None or not kinds or kinds[0] != "gain" or "compressor" not in kinds:
            continue
        k = kinds.index("compressor")
        if not all(e.effect.linear for e in track.chain[:k]):
            continue
        fader, comp = track.chain[0], track.chain[k]
        reduction = gain_reduction_db(track.chain[:k], comp, audio, setting.sample_rate)
        if reduction is None:
            continue
        threshold, makeup = float(comp.params["threshold_db"]), float(comp.params["makeup_db"])
        specs = {s.name: s for s in comp.effect.specs}  # the moved values stay in the compressor's ranges
        low = max(specs["threshold_db"].min - threshold, makeup - specs["makeup_db"].max)
        high = min(specs["threshold_db"].max - threshold, makeup - specs["makeup_db"].min)
        move = min(max(makeup - reduction, low), high)
        fader.params["gain_db"] = float(fader.params["gain_db"]) + move
        comp.params["threshold_db"] = threshold + move
        comp.params["makeup_db"] = makeup - move
