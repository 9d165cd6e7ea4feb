"""Audio I/O used by every command: load a folder of stems (validated, resampled, aligned), write atomically.

Bad input raises :class:`~gradmix.errors.AudioError` (a :class:`GradmixError`) naming the file, what was
found and what was expected; nothing is written before everything has been read and checked.
"""

from __future__ import annotations

import collections
import json
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from gradmix.errors import AudioError, GradmixError
from gradmix.progress import progress as show_progress

AUDIO_EXTENSIONS = (".wav", ".flac", ".aiff", ".aif", ".ogg")
STEM_MP4 = ".stem.mp4"
MUSDB_STEMS = ("drums", "bass", "other", "vocals")
SUBTYPES = {"float": "FLOAT", "24": "PCM_24", "16": "PCM_16"}
MAX_TRACKS = 256
_BLOCK_FRAMES = 1 << 16
"""Frames per read or write: an interleaved block stays in cache while it is split into or joined from channels."""


@dataclass
class Stem:
    """One loaded track.

    Attributes:
        name: track name (file name without extension; ``file:stem`` for MUSDB stems).
        path: the file it came from.
        audio: ``(channels, samples)`` float32, channels 1 or 2, at the common sample rate.
        source_rate: the file's own sample rate in Hz.
    """

    name: str
    path: Path
    audio: torch.Tensor
    source_rate: int

    @property
    def channels(self) -> int:
        return int(self.audio.shape[0])


def is_audio_file(path: Path) -> bool:
    name = path.name.lower()
    return (
        path.is_file()
        and not name.startswith(".")
        and (name.endswith(STEM_MP4) or path.suffix.lower() in AUDIO_EXTENSIONS)
    )


def list_audio_files(folder: str | os.PathLike) -> list[Path]:
    """Audio files directly inside ``folder`` in name order; raises if there are none."""
    folder = Path(folder)
    if not folder.exists():
        raise AudioError(f"{folder}: no such folder")
    if not folder.is_dir():
        raise AudioError(f"{folder}: is not a folder of stems")
    entries = sorted(folder.iterdir())
    if not entries:
        raise AudioError(f"{folder}: the folder is empty")
    files = [p for p in entries if is_audio_file(p)]
    if not files:
        raise AudioError(f"{folder}: no audio files (looked for {', '.join(AUDIO_EXTENSIONS + (STEM_MP4,))})")
    return files


def read_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Read one file as ``(channels, samples)`` float32 and its sample rate, checking it thoroughly."""
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: the file is empty (0 bytes)")
    try:
        with sf.SoundFile(path) as f:
            rate, channels, frames = f.samplerate, f.channels, f.frames
            data = np.empty((channels, frames), dtype=np.float32)
            block = np.empty((min(frames, _BLOCK_FRAMES), channels), dtype=np.float32)
            done = 0
            while done < frames:  # in cache-sized blocks, straight into the (channels, samples) array
                got = f.read(min(frames - done, len(block)), dtype="float32", always_2d=True, out=block)
                if len(got) == 0:
                    break
                data[:, done : done + len(got)] = got.T
                done += len(got)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise AudioError(f"{path}: cannot be read as audio ({_short(exc)})") from None
    if done < frames:
        raise AudioError(f"{path}: truncated: the header promises {frames} frames, the file holds {done}")
    if path.suffix.lower() == ".wav":
        _check_wav_length(path)
    return _checked(path, data, channels, rate)


def _check_wav_length(path: Path) -> None:
    """libsndfile quietly reads a cut-off WAV; compare the data chunk's declared size with the file."""
    import struct

    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RF64") or head[8:12] != b"WAVE":
            return
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk_id, chunk_size = struct.unpack("<4sI", f.read(8))
            if chunk_id == b"data":
                if head[:4] == b"RIFF" and pos + 8 + chunk_size > size:
                    raise AudioError(
                        f"{path}: truncated: the data chunk promises {chunk_size} bytes, "
                        f"the file holds {size - pos - 8}"
                    )
                return
            pos += 8 + chunk_size + (chunk_size & 1)


def _checked(path: Path, data: np.ndarray, channels: int, rate: int) -> tuple[np.ndarray, int]:
    if data.shape[-1] == 0:
        raise AudioError(f"{path}: has no samples (zero length)")
    if channels > 2:
        raise AudioError(
            f"{path}: has {channels} channels; gradmix takes mono or stereo stems — split it into "
            f"mono files first (e.g. `sox {path.name} ch1.wav remix 1`)"
        )
    if not np.isfinite(data.sum()):  # one pass; locate the culprit only when there is one
        first = int(np.argwhere(~np.isfinite(data))[0][-1])
        raise AudioError(f"{path}: contains NaN or Inf samples (first at {first / rate:.3f} s)")
    return np.ascontiguousarray(data, dtype=np.float32), int(rate)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    return text[:160]


def read_stem_mp4(path: Path, include_mixture: bool = False) -> list[tuple[str, np.ndarray, int]]:
    """Decode a MUSDB ``.stem.mp4`` (stream 0 the mixture, then drums, bass, other, vocals) with ffmpeg.

    Returns:
        ``[(stem name, (channels, samples) float32, rate), ...]``, the mixture (named ``mixture``) first
        when ``include_mixture``.
    """
    if shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None:
        raise AudioError(
            f"{path}: reading .stem.mp4 needs ffmpeg and ffprobe on the PATH (e.g. `apt-get install ffmpeg`)"
        )
    probe = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-select_streams",
            "a",
            "-show_entries",
            "stream=index,sample_rate,channels",
            "-of",
            "json",
            str(path),
        ],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        raise AudioError(f"{path}: cannot be read as audio ({_short(RuntimeError(probe.stderr))})")
    streams = json.loads(probe.stdout).get("streams", [])
    if len(streams) < 2:
        raise AudioError(f"{path}: a .stem.mp4 needs a mixture and stem streams, found {len(streams)} stream(s)")
    out = []
    first = 0 if include_mixture else 1
    for k, info in enumerate(streams[first:], start=first):
        rate, channels = int(info["sample_rate"]), int(info["channels"])
        dec = subprocess.run(
            ["ffmpeg", "-v", "error", "-i", str(path), "-map", f"0:a:{k}", "-f", "f32le", "-acodec", "pcm_f32le", "-"],
            capture_output=True,
        )
        if dec.returncode != 0:
            raise AudioError(f"{path}: stream {k} cannot be decoded ({_short(RuntimeError(dec.stderr.decode()))})")
        data = np.frombuffer(dec.stdout, dtype=np.float32).reshape(-1, channels).T
        name = "mixture" if k == 0 else MUSDB_STEMS[k - 1] if len(streams) == 5 else f"stem{k}"
        data, rate = _checked(path, data, channels, rate)
        out.append((name, data, rate))
    return out


def load_stems(
    folder: str | os.PathLike,
    *,
    files: list[str] | None = None,
    sample_rate: int | None = None,
    strict: bool = False,
    max_tracks: int = MAX_TRACKS,
    progress: bool = False,
) -> tuple[list[Stem], int]:
    """Load stems from ``folder``: validated, resampled to one rate, padded to the longest.

    Args:
        folder: a folder of stems (wav, flac, aiff, ogg; MUSDB ``.stem.mp4`` with ffmpeg).
        files: the files to load, relative to ``folder``, in this order (``song.stem.mp4#drums`` picks one
            stream of a stem file); default every audio file in the folder, in name order.
        sample_rate: target rate in Hz; default the most common rate among the files (ties: the highest).
        strict: refuse files at another rate instead of resampling them (soxr, high quality).
        max_tracks: refuse more stems than this.
        progress: show a progress bar.

    Returns:
        ``(stems, sample_rate)``.
    """
    folder = Path(folder)
    if files is None:  # every audio file; a .stem.mp4 named without #STREAM gives all its streams
        files = [p.name for p in list_audio_files(folder)]
    elif not folder.is_dir():
        raise AudioError(f"{folder}: no such folder")
    for name in files:
        path = folder / name.partition("#")[0]
        if not path.is_file():
            raise AudioError(f"{path}: the console names this file, but it is missing")
    plain = [folder / f for f in files if not f.partition("#")[0].lower().endswith(STEM_MP4)]
    with ThreadPoolExecutor(2) as pool:  # libsndfile releases the GIL: read two files at once
        read = dict(zip(plain, pool.map(_try_read, plain)))
    raw: list[tuple[str, Path, np.ndarray, int]] = []
    decoded: dict[Path, list[tuple[str, np.ndarray, int]]] = {}
    for name in show_progress(files, "loading stems", progress, transient=True):
        file, _, stream = name.partition("#")
        path = folder / file
        if path in read:
            result = read.pop(path)
            if isinstance(result, AudioError):
                raise result
            raw.append((Path(file).stem, path, *result))
            continue
        streams = decoded.setdefault(path, read_stem_mp4(path))
        if not stream:
            base = path.name[: -len(STEM_MP4)]
            raw += [(f"{base}#{s}", path, data, rate) for s, data, rate in streams]
            continue
        found = [s for s in streams if s[0] == stream]
        if not found:
            raise AudioError(
                f"{path}: has no stream {stream!r} (streams: {', '.join(s[0] for s in streams)}); "
                "name one as FILE.stem.mp4#STREAM"
            )
        raw.append((name, path, found[0][1], found[0][2]))
    if len(raw) > max_tracks:
        raise AudioError(f"{folder}: {len(raw)} stems, more than the {max_tracks} gradmix takes at once")
    rates = collections.Counter(r[3] for r in raw)
    if sample_rate is None:
        sample_rate = max(rates, key=lambda r: (rates[r], r))
    stems = []
    for name, path, data, rate in raw:
        if rate != sample_rate:
            if strict:
                raise AudioError(
                    f"{path}: sample rate {rate} Hz, expected {sample_rate} Hz (--strict refuses to resample)"
                )
            data = resample(data, rate, sample_rate)
        stems.append(Stem(name, path, torch.from_numpy(data), rate))
    length = max(s.audio.shape[-1] for s in stems)
    for s in stems:
        if s.audio.shape[-1] < length:
            s.audio = torch.nn.functional.pad(s.audio, (0, length - s.audio.shape[-1]))
    return stems, int(sample_rate)


MIN_SECONDS = 0.5
"""Shortest song the model listens to (its analysis frames need that much)."""


def check_mixable(audio: list[torch.Tensor], sample_rate: int, where: str | os.PathLike) -> None:
    """Refuse stems (each ``(channels, samples)`` at ``sample_rate`` Hz) too short for the model or all silent:
    there is nothing to mix (``gradmix mix``, the studio, ``dataset normalize``)."""
    longest = max(a.shape[-1] for a in audio) / sample_rate
    if longest < MIN_SECONDS:
        raise GradmixError(f"{where}: the stems are {longest:.2f} s long; gradmix needs at least {MIN_SECONDS} s")
    if not any(bool(a.abs().max() > 0) for a in audio):
        raise GradmixError(f"{where}: every stem is silent; nothing to mix")


def resample(data: np.ndarray, rate: int, sample_rate: int) -> np.ndarray:
    """``(channels, samples)`` audio from ``rate`` to ``sample_rate`` Hz: soxr, high quality; float32, contiguous."""
    import soxr

    out = soxr.resample(np.ascontiguousarray(data.T), rate, sample_rate, quality="HQ").T
    return np.ascontiguousarray(out, dtype=np.float32)


def _try_read(path: Path):
    try:
        return read_audio(path)
    except AudioError as exc:
        return exc


def safe_file_name(name: str) -> str:
    """``name`` with every character but letters, digits, ``-``, ``_`` and ``.`` replaced by ``_``."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def check_output_path(output: str | os.PathLike, inputs: list[Path] | None = None, *, audio: bool = False) -> Path:
    """Refuse an output that is one of the inputs, lies inside an input folder (a stems folder: it would be
    read as a stem next time), or in a folder that is missing or unwritable; with ``audio``, one that is not
    a .wav or .flac file (what :func:`write_audio` writes)."""
    output = Path(output)
    for p in map(Path, inputs or []):
        if p.is_dir() and output.resolve().is_relative_to(p.resolve()):
            raise GradmixError(f"{output}: the output is inside the input folder {p} (it would be read as an input)")
        if output.exists() and p.exists() and output.resolve() == p.resolve():
            raise GradmixError(f"{output}: the output would overwrite an input file")
    if audio and output.suffix.lower() not in (".wav", ".flac"):
        raise GradmixError(f"{output}: gradmix writes .wav or .flac audio files, not {output.suffix or 'no suffix'!r}")
    parent = output.parent if str(output.parent) else Path(".")
    if not parent.is_dir():
        raise GradmixError(f"{parent}: output folder does not exist")
    try:  # probe by writing: permission bits alone do not tell (root, read-only mounts, /proc)
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as exc:
        raise GradmixError(f"{parent}: output folder is not writable ({exc.strerror})") from None
    if output.is_dir():
        raise GradmixError(f"{output}: is a folder, expected a file name")
    return output


def make_output_folder(folder: str | os.PathLike) -> Path:
    """Create ``folder`` (and its parents) or raise :class:`GradmixError` saying why not."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GradmixError(f"{folder}: cannot create the output folder ({exc.strerror or exc})") from None
    return folder


def write_audio(
    path: str | os.PathLike, audio: torch.Tensor | np.ndarray, sample_rate: int, subtype: str = "float"
) -> Path:
    """Write ``(channels, samples)`` audio to a WAV/FLAC file atomically (temp file + rename).

    Args:
        path: output file; its folder must exist and be writable.
        audio: ``(channels, samples)``, full scale = 1.
        sample_rate: Hz.
        subtype: ``"float"`` (32-bit float), ``"24"`` or ``"16"`` (PCM).
    """
    import soundfile as sf

    path = Path(path)
    data = audio.detach().cpu().numpy() if isinstance(audio, torch.Tensor) else np.asarray(audio)
    if data.ndim != 2:
        raise GradmixError(f"{path}: expected audio of shape (channels, samples), got {data.shape}")
    if not np.isfinite(data).all():
        raise GradmixError(f"{path}: refusing to write audio that contains NaN or Inf")
    check_output_path(path, audio=True)
    fmt = "FLAC" if path.suffix.lower() == ".flac" else "WAV"

    def write(f: BinaryIO) -> None:
        # by name, not through f: libsndfile then writes with its own descriptor and a full disk is its error
        # ("System error."); through a Python file object the error is lost inside a C callback
        with sf.SoundFile(f.name, "w", int(sample_rate), data.shape[0], SUBTYPES[subtype], format=fmt) as out:
            for start in range(0, data.shape[1], _BLOCK_FRAMES):  # interleaved block by block: no song-long copy
                out.write(data[:, start : start + _BLOCK_FRAMES].T.astype(np.float32))

    return write_atomically(path, write)


def write_atomically(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Write ``path`` whole or not at all, wherever the process stops: ``write(f)`` fills a binary temporary
    file beside it, which is then renamed over ``path`` (not synced to the disk: a crash of the machine itself
    may still lose it). A failed write (a full disk; libsndfile says "System error.", torch "failed writing
    file") raises one :class:`GradmixError` naming the file and the space left; the temporary file is removed
    whatever happens. The file gets the permissions the umask gives a new file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        f = open(tmp, "xb")
    except OSError as exc:
        raise GradmixError(f"{path}: cannot write ({exc.strerror or exc}{_space_left(path)})") from exc
    try:
        with f:
            write(f)
        os.replace(tmp, path)
    except (RuntimeError, OSError) as exc:
        tmp.unlink(missing_ok=True)
        raise GradmixError(f"{path}: cannot write ({exc}{_space_left(path)})") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text_atomically(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` as UTF-8, whole or not at all (:func:`write_atomically`)."""
    data = text.encode()
    return write_atomically(path, lambda f: f.write(data))


def _space_left(path: Path) -> str:
    try:
        return f"; {shutil.disk_usage(path.parent).free / 2**20:.0f} MiB free on its disk"
    except OSError:
        return ""
