"""Reading songs and random segments of them, and batching songs with different track counts.

A segment is read from every stem at the same offset (partial reads for wav/flac/aiff/ogg, so long songs
are never loaded whole), converted to stereo (a mono stem is duplicated and flagged ``mono`` so that the
console pans it with the mono law) and resampled with soxr when a file has another rate. Offsets are drawn
from a seeded ``torch.Generator``; a segment whose summed stems are quieter than ``min_level_db`` RMS is
skipped (up to ``tries`` draws), so training sees music rather than silence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

from gradmix.audio import STEM_MP4, read_audio, read_stem_mp4, resample
from gradmix.data.songs import Song, StemRef
from gradmix.errors import AudioError


@dataclass
class Example:
    """One song segment: ``tracks (N, 2, samples)``, ``mono (N,)`` bool, ``mix (2, samples)`` or ``None``,
    and the wet stems ``wet (N, 2, samples)`` (silence for a track without one) with ``has_wet (N,)`` bool, or
    ``wet = None`` when no track of the song has a wet stem."""

    song: str
    tracks: Tensor
    mono: Tensor
    mix: Tensor | None
    labels: list[str | None]
    offset_s: float
    wet: Tensor | None = None
    has_wet: Tensor | None = None

    def heard_tracks(self) -> list[Tensor]:
        """The tracks as the mixer hears them, each ``(channels, samples)``: a mono stem one channel."""
        return [t[:1] if m else t for t, m in zip(self.tracks, self.mono)]


@dataclass
class Batch:
    """Songs padded to the most tracks: ``tracks (B, N, 2, T)``, ``mask (B, N)``, ``mono (B, N)``,
    ``mix (B, 2, T)`` (zeros where a song has none), ``has_mix (B,)``, the wet stems ``wet (B, N, 2, T)``
    (zeros where a track has none) and ``has_wet (B, N)`` (false for padding and tracks without one)."""

    tracks: Tensor
    mask: Tensor
    mono: Tensor
    mix: Tensor
    has_mix: Tensor
    songs: list[str]
    labels: list[list[str | None]]
    wet: Tensor | None = None
    has_wet: Tensor | None = None


def stem_info(ref: StemRef) -> tuple[int, int]:
    """``(frames, sample_rate)`` of a stem without reading its samples (``.stem.mp4`` is decoded)."""
    if ref.path.name.lower().endswith(STEM_MP4):
        data, rate = _mp4_stream(ref)
        return data.shape[-1], rate
    import soundfile as sf

    try:
        info = sf.info(str(ref.path))
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise AudioError(f"{ref.path}: cannot be read as audio ({exc})") from None
    return info.frames, info.samplerate


_MP4_CACHE: dict[str, list] = {}


def _mp4_stream(ref: StemRef) -> tuple[np.ndarray, int]:
    key = str(ref.path)
    if key not in _MP4_CACHE:
        _MP4_CACHE.clear()  # keep one decoded file: MUSDB songs are read one after another
        mixture_and_stems = read_stem_mp4(ref.path, include_mixture=True)
        _MP4_CACHE[key] = mixture_and_stems
    for name, data, rate in _MP4_CACHE[key]:
        if name == ref.stream:
            return data, rate
    raise AudioError(f"{ref.path}: has no stream {ref.stream!r}")


def _fit(x: np.ndarray, length: int) -> np.ndarray:
    """``(channels, samples)`` cut or padded with silence to ``length`` samples."""
    return np.pad(x[:, :length], ((0, 0), (0, max(length - x.shape[-1], 0))))


def read_segment(ref: StemRef, offset_s: float, seconds: float | None, sample_rate: int) -> np.ndarray:
    """``(2, samples)`` float32 of one stem from ``offset_s`` for ``seconds`` (``None``: to the end), at
    ``sample_rate``; mono is duplicated; past the end of the file is silence."""
    if ref.path.name.lower().endswith(STEM_MP4):
        data, rate = _mp4_stream(ref)
        start = int(round(offset_s * rate))
        stop = None if seconds is None else start + int(math.ceil(seconds * rate))
        data = data[:, start:stop]
    elif seconds is None and offset_s == 0:
        data, rate = read_audio(ref.path)
    else:
        import soundfile as sf

        frames, rate = stem_info(ref)
        start = int(round(offset_s * rate))
        count = -1 if seconds is None else int(math.ceil(seconds * rate))
        try:
            data = sf.read(str(ref.path), start=min(start, frames), frames=count, dtype="float32", always_2d=True)[0].T
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise AudioError(f"{ref.path}: cannot be read as audio ({exc})") from None
        if data.shape[0] > 2:
            raise AudioError(f"{ref.path}: has {data.shape[0]} channels; gradmix takes mono or stereo stems")
        if not np.isfinite(data).all():
            raise AudioError(f"{ref.path}: contains NaN or Inf samples")
    if rate != sample_rate and data.shape[-1] > 0:
        data = resample(data, rate, sample_rate)
    if data.shape[0] == 1:
        data = np.concatenate([data, data])
    if seconds is not None:
        data = _fit(data, int(round(seconds * sample_rate)))
    return np.ascontiguousarray(data, dtype=np.float32)


def _is_mono(ref: StemRef) -> bool:
    if ref.path.name.lower().endswith(STEM_MP4):
        return _mp4_stream(ref)[0].shape[0] == 1
    import soundfile as sf

    return sf.info(str(ref.path)).channels == 1


def song_seconds(song: Song) -> float:
    """Length of the longest stem in seconds."""
    return max(frames / rate for frames, rate in map(stem_info, song.stems))


def read_example(
    song: Song, *, offset_s: float = 0.0, seconds: float | None = None, sample_rate: int = 44100
) -> Example:
    """The stems (and mix, and wet stems) of ``song`` from ``offset_s`` for ``seconds`` (``None``: the whole song;
    from the start, every file is read whole and checked as ``gradmix mix`` reads stems, truncation included),
    padded with silence to the longest stem."""
    if seconds is None and offset_s != 0:
        seconds = song_seconds(song) - offset_s
    parts = [read_segment(r, offset_s, seconds, sample_rate) for r in song.stems]
    mix = None if song.mix is None else read_segment(song.mix, offset_s, seconds, sample_rate)
    wets = [
        None if r.wet is None else read_segment(StemRef(r.wet, r.name), offset_s, seconds, sample_rate)
        for r in song.stems
    ]
    length = max(x.shape[-1] for x in parts)
    tracks = torch.from_numpy(np.stack([_fit(x, length) for x in parts]))
    mono = torch.tensor([_is_mono(r) for r in song.stems])
    mix = None if mix is None else torch.from_numpy(_fit(mix, length))
    wet = has_wet = None
    if any(w is not None for w in wets):
        wet = torch.from_numpy(
            np.stack([np.zeros((2, length), np.float32) if w is None else _fit(w, length) for w in wets])
        )
        has_wet = torch.tensor([w is not None for w in wets])
    return Example(song.name, tracks, mono, mix, [r.label for r in song.stems], offset_s, wet, has_wet)


def read_song_tracks(song: Song, sample_rate: int = 44100) -> list[torch.Tensor]:
    """The whole song's dry stems as the mixer hears them, each ``(channels, samples)`` (a mono stem one channel),
    padded with silence to the longest; the mix and the wet stems are not read."""
    stems = [replace(r, wet=None) for r in song.stems]
    return read_example(replace(song, mix=None, stems=stems), sample_rate=sample_rate).heard_tracks()


def random_example(
    song: Song,
    *,
    seconds: float,
    sample_rate: int = 44100,
    generator: torch.Generator | None = None,
    min_level_db: float = -50.0,
    tries: int = 10,
) -> Example:
    """A random segment of ``song`` whose summed stems are louder than ``min_level_db`` RMS (dBFS).

    Draws up to ``tries`` offsets from ``generator``; if every draw is quieter, the loudest one is returned.
    """
    length = song_seconds(song)
    best, best_level = None, -math.inf
    for _ in range(max(1, tries)):
        span = max(length - seconds, 0.0)
        offset = float(torch.rand((), generator=generator)) * span
        ex = read_example(song, offset_s=offset, seconds=seconds, sample_rate=sample_rate)
        total = ex.tracks.sum(0)
        level = 10 * math.log10(float(total.square().mean()) + 1e-20)
        if level >= min_level_db:
            return ex
        if level > best_level:
            best, best_level = ex, level
    return best


def collate(examples: list[Example]) -> Batch:
    """Pad songs to the most tracks; padding tracks are silent and masked out."""
    n = max(e.tracks.shape[0] for e in examples)
    length = max(e.tracks.shape[-1] for e in examples)
    b = len(examples)
    tracks = torch.zeros(b, n, 2, length)
    mask = torch.zeros(b, n, dtype=torch.bool)
    mono = torch.zeros(b, n, dtype=torch.bool)
    mix = torch.zeros(b, 2, length)
    has_mix = torch.zeros(b, dtype=torch.bool)
    any_wet = any(e.wet is not None for e in examples)
    wet = torch.zeros(b, n, 2, length) if any_wet else None
    has_wet = torch.zeros(b, n, dtype=torch.bool) if any_wet else None
    for i, e in enumerate(examples):
        k, t = e.tracks.shape[0], e.tracks.shape[-1]
        tracks[i, :k, :, :t] = e.tracks
        mask[i, :k] = True
        mono[i, :k] = e.mono
        if e.mix is not None:
            mix[i, :, :t] = e.mix
            has_mix[i] = True
        if e.wet is not None:
            wet[i, :k, :, :t] = e.wet
            has_wet[i, :k] = e.has_wet
    return Batch(
        tracks,
        mask,
        mono,
        mix,
        has_mix,
        [e.song for e in examples],
        [e.labels + [None] * (n - len(e.labels)) for e in examples],
        wet,
        has_wet,
    )


class SegmentDataset(torch.utils.data.Dataset):
    """Random segments of songs for training: item ``i`` is a segment of song ``i % len(songs)`` at an
    offset drawn from a generator seeded by ``(seed, epoch, i)``, so runs are repeatable and workers agree.

    Use with ``DataLoader(..., collate_fn=collate)``; call :meth:`set_epoch` to draw new offsets.
    """

    def __init__(
        self,
        songs: list[Song],
        *,
        seconds: float,
        sample_rate: int = 44100,
        seed: int = 0,
        length: int | None = None,
        min_level_db: float = -50.0,
    ) -> None:
        if not songs:
            raise AudioError("SegmentDataset: no songs given")
        self.songs, self.seconds, self.sample_rate = songs, seconds, sample_rate
        self.seed, self.epoch, self.min_level_db = seed, 0, min_level_db
        self.length = length or len(songs)

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, index: int) -> Example:
        gen = torch.Generator().manual_seed(hash((self.seed, self.epoch, index)) & 0x7FFFFFFF)
        return random_example(
            self.songs[index % len(self.songs)],
            seconds=self.seconds,
            sample_rate=self.sample_rate,
            generator=gen,
            min_level_db=self.min_level_db,
        )
