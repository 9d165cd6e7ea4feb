"""Songs on disk: discovering them in every supported layout.

A :class:`Song` is a list of stem references (+ an optional mix and metadata). Layouts:

- ``folder``: ``ROOT/<song>/*.wav|flac|aiff|ogg`` (a file named ``mix.*`` or ``mixture.*`` is the mix;
  ``metadata.json`` is the metadata, whose optional ``"labels": {stem name: class}`` labels stems; a file of
  the same name in ``ROOT/<song>/wet/`` is that stem's wet (processed) version, as the mix hears it);
- ``musdb``: MUSDB18, ``ROOT/{train,test}/<song>.stem.mp4`` (stream 0 the mixture, then drums, bass,
  other, vocals; needs ffmpeg);
- ``musdb-hq``: MUSDB18-HQ, ``ROOT/{train,test}/<song>/{mixture,drums,bass,other,vocals}.wav``;
- ``medleydb``: ``ROOT/<Song>/<Song>_METADATA.yaml`` with ``stems: {S01: {filename, instrument}}``, stem files
  in ``<Song>_STEMS/`` and the mix ``<Song>_MIX.wav``;
- ``csv``: a manifest file with columns ``song, stem, label, mix, wet`` (paths relative to the manifest; one
  row per stem; ``label``, ``mix`` and ``wet`` may be empty or absent).

Wet stems are optional, per stem: a song may have them for some tracks and not for others.
"""

from __future__ import annotations

import csv
import glob
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gradmix.audio import AUDIO_EXTENSIONS, MUSDB_STEMS, STEM_MP4, is_audio_file
from gradmix.errors import GradmixError

LAYOUTS = ("folder", "musdb", "musdb-hq", "medleydb", "csv")
MIX_NAMES = ("mix", "mixture")


class DatasetError(GradmixError):
    """A dataset root or manifest does not follow its layout."""


@dataclass(frozen=True)
class StemRef:
    """One stem on disk: ``path`` (and for a ``.stem.mp4``, the ``stream`` name), a track name, a class, and
    the path of its wet version (``None`` when the dataset has none)."""

    path: Path
    name: str
    label: str | None = None
    stream: str | None = None
    wet: Path | None = None


@dataclass
class Song:
    name: str
    stems: list[StemRef]
    mix: StemRef | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    split: str | None = None


def detect_layout(root: str | Path) -> str:
    """Guess the layout of ``root`` (a folder, or a ``.csv`` manifest)."""
    root = Path(root)
    if root.is_file() and root.suffix.lower() == ".csv":
        return "csv"
    if not root.is_dir():
        raise DatasetError(f"{root}: no such dataset folder or .csv manifest")
    splits = [root / s for s in ("train", "test") if (root / s).is_dir()]
    if splits:
        if any(p.name.endswith(STEM_MP4) for s in splits for p in s.iterdir()):
            return "musdb"
        return "musdb-hq"
    if any(root.glob("*/*_METADATA.yaml")):
        return "medleydb"
    return "folder"


def find_songs(root: str | Path, layout: str | None = None) -> list[Song]:
    """Every song under ``root`` in name order; ``layout`` defaults to :func:`detect_layout`."""
    root = Path(root)
    layout = layout or detect_layout(root)
    if layout not in LAYOUTS:
        raise DatasetError(f"layout: {layout!r} is not one of {', '.join(LAYOUTS)}")
    songs = {
        "folder": _folder_songs,
        "musdb": _musdb_songs,
        "musdb-hq": _musdb_hq_songs,
        "medleydb": _medleydb_songs,
        "csv": _csv_songs,
    }[layout](root)
    if not songs:
        raise DatasetError(f"{root}: no songs found in the {layout!r} layout")
    return songs


def _folder_song(folder: Path, split: str | None = None) -> Song | None:
    files = [p for p in sorted(folder.iterdir()) if is_audio_file(p) and not p.name.endswith(STEM_MP4)]
    meta: dict[str, Any] = {}
    if (folder / "metadata.json").is_file():
        try:
            meta = json.loads((folder / "metadata.json").read_text())
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{folder / 'metadata.json'}: not valid JSON ({exc})") from None
    labels = meta.get("labels", {})
    mix = next((p for p in files if p.stem.lower() in MIX_NAMES), None)
    wet = {p.name: p for p in (folder / "wet").iterdir() if is_audio_file(p)} if (folder / "wet").is_dir() else {}
    stems = [StemRef(p, p.stem, labels.get(p.stem), wet=wet.get(p.name)) for p in files if p != mix]
    if not stems:
        return None
    return Song(folder.name, stems, StemRef(mix, "mix") if mix else None, meta, split)


def _folder_songs(root: Path) -> list[Song]:
    return [s for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".") and (s := _folder_song(d))]


def _musdb_songs(root: Path) -> list[Song]:
    songs = []
    for split in ("train", "test"):
        for p in sorted((root / split).glob(f"*{STEM_MP4}")) if (root / split).is_dir() else []:
            name = p.name[: -len(STEM_MP4)]
            songs.append(
                Song(name, [StemRef(p, s, s, s) for s in MUSDB_STEMS], StemRef(p, "mix", None, "mixture"), {}, split)
            )
    return songs


def _musdb_hq_songs(root: Path) -> list[Song]:
    songs = []
    for split in ("train", "test"):
        for d in sorted((root / split).iterdir()) if (root / split).is_dir() else []:
            if not d.is_dir():
                continue
            stems = [StemRef(d / f"{s}.wav", s, s) for s in MUSDB_STEMS if (d / f"{s}.wav").is_file()]
            if stems:
                mix = d / "mixture.wav"
                songs.append(Song(d.name, stems, StemRef(mix, "mix") if mix.is_file() else None, {}, split))
    return songs


def _medleydb_songs(root: Path) -> list[Song]:
    import yaml

    songs = []
    for meta_path in sorted(root.glob("*/*_METADATA.yaml")):
        folder, name = meta_path.parent, meta_path.name[: -len("_METADATA.yaml")]
        try:
            meta = yaml.safe_load(meta_path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise DatasetError(f"{meta_path}: not valid YAML ({str(exc).splitlines()[0]})") from None
        stem_dir = folder / f"{name}_STEMS"
        stems = []
        for key, info in sorted((meta.get("stems") or {}).items()):
            path = stem_dir / str(info.get("filename", ""))
            if not path.is_file():
                raise DatasetError(f"{meta_path}: stems.{key} names {path.name}, which is missing from {stem_dir}")
            stems.append(StemRef(path, path.stem, info.get("instrument")))
        mix = folder / f"{name}_MIX.wav"
        songs.append(
            Song(
                name,
                stems,
                StemRef(mix, "mix") if mix.is_file() else None,
                {k: v for k, v in meta.items() if k != "stems"},
            )
        )
    return songs


def _csv_songs(manifest: Path) -> list[Song]:
    base = manifest.parent
    songs: dict[str, Song] = {}
    with open(manifest, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"song", "stem"} - set(reader.fieldnames or [])
        if missing:
            raise DatasetError(
                f"{manifest}: missing column(s) {', '.join(sorted(missing))} (expected song, stem, label, mix, wet)"
            )
        for line, row in enumerate(reader, start=2):
            path = base / row["stem"]
            if not path.is_file():
                raise DatasetError(f"{manifest}:{line}: stem {row['stem']} is missing")
            wet = base / row["wet"] if row.get("wet") else None
            if wet is not None and not wet.is_file():
                raise DatasetError(f"{manifest}:{line}: wet stem {row['wet']} is missing")
            song = songs.setdefault(row["song"], Song(row["song"], []))
            song.stems.append(StemRef(path, path.stem, row.get("label") or None, wet=wet))
            if row.get("mix"):
                song.mix = StemRef(base / row["mix"], "mix")
    return list(songs.values())


TEMP_SUFFIX_BYTES = 4
"""A song's temporary folder is ``.<name>.<this many random bytes in hex>``."""


@contextmanager
def song_written_whole(out_dir: Path, name: str, done: str) -> Iterator[Path]:
    """A song folder ``out_dir/name`` written whole or not at all: the body fills the temporary folder it is
    given; on leaving without an error a ``done`` marker is added and the folder renamed into place (replacing
    an older one), on an error it is removed. Temporary folders of a run killed mid-song are removed first."""
    for stale in out_dir.glob(f".{glob.escape(name)}.{'[0-9a-f]' * 2 * TEMP_SUFFIX_BYTES}"):
        shutil.rmtree(stale, ignore_errors=True)  # exactly this song's: not those of a song named "{name}.x"
    tmp = out_dir / f".{name}.{secrets.token_hex(TEMP_SUFFIX_BYTES)}"
    tmp.mkdir()  # not mkdtemp: its 0700 would stay on the song folder and hide it from other users
    try:
        yield tmp
        (tmp / done).write_text("ok\n")
        shutil.rmtree(out_dir / name, ignore_errors=True)
        os.replace(tmp, out_dir / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def select_shard(items: list, shard: tuple[int, int] | None) -> list:
    """Items ``i, i + n, i + 2n, ...`` of ``shard = (i, n)`` (all items when ``None``): one job's part of a
    dataset job split over a cluster."""
    if shard is None:
        return items
    i, n = shard
    if not (n >= 1 and 0 <= i < n):
        raise DatasetError(f"shard: {i}/{n} is not i/n with 0 <= i < n")
    return items[i::n]


__all__ = [
    "AUDIO_EXTENSIONS",
    "LAYOUTS",
    "DatasetError",
    "Song",
    "StemRef",
    "detect_layout",
    "find_songs",
    "select_shard",
    "song_written_whole",
]
