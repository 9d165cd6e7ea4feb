"""Export a console setting as a DAW session: DAWproject 1.0 (``.dawproject``) or REAPER (``.RPP``).

The stems become audio tracks, each with one clip at time 0 that plays the whole stem; the console's
faders, pans and post-fader sends become the DAW's; buses become effect (return) tracks that feed the
master. What the format can hold is written as the DAW's own settings; everything else is written, with
its values, as text the DAW shows (a DAWproject track's ``comment``, REAPER's project and track notes).
See docs/daw-export.md for every mapping and unit conversion.

Only the standard library writes the files (``xml.etree``, ``zipfile``); ``soundfile`` reads the stems'
lengths.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from gradmix.audio import write_atomically
from gradmix.console.setting import ConsoleSetting
from gradmix.errors import AudioError, GradmixError

FORMATS = {"dawproject": ".dawproject", "reaper": ".rpp"}
"""What :func:`export_session` writes, and the file suffix of each (any case)."""


@dataclass(frozen=True)
class StemFile:
    """A stem the session plays, read from its file's header."""

    path: Path
    """The file on disk."""
    file: str
    """The name the console gives it (relative to the stems folder)."""
    frames: int
    sample_rate: int
    channels: int

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate


def stem_files(setting: ConsoleSetting, stems_dir: str | os.PathLike) -> list[StemFile]:
    """Every track's stem, checked and measured (one per track, in track order); nothing is decoded.

    Raises:
        GradmixError: a track names no file or a stream of a ``.stem.mp4``; a file is missing, unreadable
            or empty.
    """
    import soundfile as sf

    stems_dir = Path(stems_dir)
    if not stems_dir.is_dir():
        raise AudioError(f"{stems_dir}: no such folder")
    out = []
    for i, track in enumerate(setting.tracks):
        if not track.file:
            raise GradmixError(f"tracks[{i}] ({track.name!r}) names no file; a DAW session needs one per track")
        if "#" in track.file or track.file.lower().endswith(".mp4"):
            raise GradmixError(
                f"tracks[{i}] ({track.name!r}): {track.file!r} is a stream of a .stem.mp4, which "
                "DAWs cannot open as a track; decode it to a wav file first (e.g. with ffmpeg)"
            )
        path = stems_dir / track.file
        if not path.is_file():
            raise AudioError(f"{path}: the console names this file, but it is missing (--stems names the stems folder)")
        try:
            info = sf.info(str(path))
        except Exception as exc:  # libsndfile's errors are not one class
            raise AudioError(f"{path}: not a readable audio file ({str(exc).strip().splitlines()[-1]})") from None
        if info.frames <= 0:
            raise AudioError(f"{path}: has no samples")
        out.append(StemFile(path, track.file, int(info.frames), int(info.samplerate), int(info.channels)))
    return out


def relative_path(target: Path, start: Path) -> str:
    """``target`` relative to the folder ``start`` with ``/`` separators, or absolute where there is no
    relative path (another drive)."""
    try:
        rel = os.path.relpath(target.resolve(), start.resolve())
    except ValueError:
        return target.resolve().as_posix()
    return Path(rel).as_posix()


def export_session(setting: ConsoleSetting, fmt: str, output: Path, *, stems_dir: Path, embed: bool = False) -> Path:
    """Write ``setting`` as a DAW session that plays the stems of ``stems_dir``.

    Args:
        setting: the console.
        fmt: ``"dawproject"`` (a DAWproject 1.0 container) or ``"reaper"`` (a REAPER ``.RPP`` text file).
        output: the file to write; it must not be one of the stems, and its folder must exist and be writable.
        stems_dir: the folder the tracks' ``file`` names are relative to.
        embed: copy the stems into the ``.dawproject`` (``audio/...``) instead of referring to them by a path
            relative to ``output`` (DAWproject only: an ``.RPP`` cannot hold audio).

    Returns:
        ``output``. Everything is read and checked before anything is written; the file is written atomically.
    """
    from gradmix.audio import check_output_path, read_audio

    if fmt not in FORMATS:
        raise GradmixError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    if embed and fmt != "dawproject":
        raise GradmixError(f"--embed needs --format dawproject: a {fmt} project cannot hold audio")
    stems = stem_files(setting, stems_dir)
    output = check_output_path(output, [s.path for s in stems])
    if output.suffix.lower() != FORMATS[fmt]:
        raise GradmixError(f"{output}: a {fmt} session is a {FORMATS[fmt]} file, not {output.suffix or 'no suffix'!r}")
    if embed:  # the stems go inside: checked as gradmix mix reads them (truncated, NaN, > 2 channels)
        for path in dict.fromkeys(s.path for s in stems):
            read_audio(path)
    if fmt == "dawproject":
        from gradmix.daw.dawproject import write_dawproject

        write = write_dawproject(setting, stems, output, embed=embed)
    else:
        from gradmix.daw.reaper import rpp_text

        text = rpp_text(setting, stems, output)

        def write(f: BinaryIO) -> None:
            f.write(text.encode("utf-8"))

    return write_atomically(output, write)


__all__ = ["FORMATS", "StemFile", "export_session", "stem_files"]
