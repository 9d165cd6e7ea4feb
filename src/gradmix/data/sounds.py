"""Dry stems of the sounds LMMS ships: its samples, DrumSynth kits and instrument presets, each played.

Debian's ``lmms-common`` holds some 1000 sounds that productions are made of: one-shot and looped samples
(``samples/``), DrumSynth drums (``samples/drumsynth/``, ``.ds``) and instrument presets (``presets/``,
``.xpf``: TripleOscillator, ZynAddSubFX, Kicker, ...). Each sound becomes one dry stem: a one-track LMMS
project plays it in a seeded pattern (:func:`pattern`) and ``lmms render`` renders it, its mixing neutral
(volume 100 %, centre, routed to the master, the preset's own effect chain switched off), as the dry stems
of ``gradmix dataset lmms`` are. Percussive sounds (drums, DrumSynth, Kicker, effects) play hits on a
sixteenth grid; the others play a phrase of notes in a pentatonic scale, now and then with a third or a
fifth over it. Tempo, density, velocity and register are drawn per sound, seeded by its path.

The sounds of one library folder are one "song" (``OUT/samples-drums/``, ``OUT/drumsynth-cr78/``,
``OUT/presets-TripleOscillator/``, ...), written whole or not at all, so that the build is resumable and
shardable as the other datasets are, and :func:`gradmix.removal.train.held_out` holds whole folders out.
There is no mix: the stems are material for effect removal (``gradmix train-removal``), not songs.
"""

from __future__ import annotations

import copy
import gzip
import json
import os
import zlib
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import numpy as np

from gradmix.audio import make_output_folder, safe_file_name, write_audio
from gradmix.data.lmms import LmmsError, licence_of, read_project, render
from gradmix.data.songs import select_shard, song_written_whole
from gradmix.errors import GradmixError
from gradmix.progress import progress as show_progress

LIBRARY_DIR = Path("/usr/share/lmms")
DONE = ".sounds-done"
SAMPLE_FOLDERS = ("basses", "bassloops", "beats", "drums", "effects", "instruments", "latin", "misc", "stringsnpads")
"""Folders of ``samples/`` that hold sounds (``shapes`` and ``waveforms`` hold single oscillator cycles)."""
PERCUSSIVE = ("drums", "beats", "latin", "effects", "misc", "drumsynth", "Kicker")
"""Folders whose sounds play hits rather than notes."""
TICKS_PER_BAR = 192
BASE_NOTE = 57
"""The key at which a sample plays at its own pitch (LMMS's default base note, A4)."""
PENTATONIC = (0, 2, 4, 7, 9)
SILENT_PEAK = 1e-4
"""A rendered stem whose peak is below this (-80 dBFS) is silent and left out."""


class SoundsError(GradmixError):
    """The library is missing or empty, or a sound cannot be rendered."""


def library_sounds(library: Path = LIBRARY_DIR) -> dict[str, list[Path]]:
    """The sounds of an LMMS data folder, by song: ``{"samples-drums": [...], "drumsynth-cr78": [...],
    "presets-TripleOscillator": [...], ...}`` (each list in name order; folders without a sound left out)."""
    groups: dict[str, list[Path]] = {}
    samples = library / "samples"
    for folder in SAMPLE_FOLDERS:
        found = sorted(p for p in (samples / folder).glob("*") if p.suffix.lower() in (".ogg", ".wav", ".flac"))
        if found:
            groups[f"samples-{folder}"] = found
    for folder in sorted(p for p in (samples / "drumsynth").glob("*") if p.is_dir()):
        found = sorted(folder.rglob("*.ds"))
        if found:
            groups[f"drumsynth-{safe_file_name(folder.name)}"] = found
    for folder in sorted(p for p in (library / "presets").glob("*") if p.is_dir()):
        found = sorted(folder.rglob("*.xpf"))
        if found:
            groups[f"presets-{safe_file_name(folder.name)}"] = found
    for bank in sorted(p for p in (library / "presets" / "ZynAddSubFX").glob("*") if p.is_dir()):
        found = sorted(bank.glob("*.xiz"))
        if found:
            groups[f"zynaddsubfx-{safe_file_name(bank.name)}"] = found
    return groups


def is_percussive(group: str) -> bool:
    """Whether the sounds of a song (a library folder) play hits rather than notes."""
    return any(group.endswith(f"-{name}") or group.startswith(f"{name}-") for name in PERCUSSIVE)


def pattern(percussive: bool, seconds: float, rng: np.random.Generator) -> tuple[float, list[dict[str, int]]]:
    """A seeded pattern that lasts ``seconds``: its tempo (bpm) and notes (``pos``, ``len`` in ticks of
    :data:`TICKS_PER_BAR` to the bar, ``key``, ``vol`` 0..100).

    Hits (``percussive``): each sixteenth sounds with a probability drawn in 0.15..0.5, at the sound's own
    pitch, velocity humanised. Notes: a random walk over a pentatonic scale around a key drawn in 40..76, each
    a sixteenth to a half note long, a rest now and then, a third or fifth above one note in four."""
    bpm = float(rng.uniform(80, 160))
    ticks = int(seconds * bpm / 60 * TICKS_PER_BAR / 4)
    sixteenth = TICKS_PER_BAR // 16
    notes: list[dict[str, int]] = []
    if percussive:
        density = rng.uniform(0.15, 0.5)
        for pos in range(0, ticks, sixteenth):
            if pos == 0 or rng.random() < density:
                notes.append({"pos": pos, "len": 2 * sixteenth, "key": BASE_NOTE, "vol": int(rng.integers(60, 101))})
        return bpm, notes
    root = int(rng.integers(40, 77))
    step = int(rng.integers(0, len(PENTATONIC)))
    pos = 0
    while pos < ticks:
        length = int(rng.choice([1, 2, 4, 8])) * sixteenth
        if pos == 0 or rng.random() > 0.15:
            step = int(np.clip(step + rng.integers(-2, 3), -5, 9))
            key = root + 12 * (step // len(PENTATONIC)) + PENTATONIC[step % len(PENTATONIC)]
            vol = int(rng.integers(60, 101))
            notes.append({"pos": pos, "len": length, "key": key, "vol": vol})
            if rng.random() < 0.25:
                notes.append({"pos": pos, "len": length, "key": key + int(rng.choice([3, 4, 7])), "vol": vol})
        pos += length
    return bpm, notes


def instrument_track(sound: Path, library: Path) -> ET.Element:
    """The ``<instrumenttrack>`` that plays ``sound``: the preset's own (``.xpf``), or LMMS's sample player
    with the sample; its mixing neutral and its effect chain off."""
    if sound.suffix == ".xiz":
        return zyn_track(sound)
    if sound.suffix == ".xpf":
        found = read_project(sound).find(".//instrumenttrack")
        if found is None:
            raise SoundsError(f"{sound}: not an LMMS instrument preset")
        track = copy.deepcopy(found)
    else:
        track = ET.Element("instrumenttrack", basenote=str(BASE_NOTE), pitch="0", pitchrange="1")
        instrument = ET.SubElement(track, "instrument", name="audiofileprocessor")
        ET.SubElement(instrument, "audiofileprocessor", src=str(sound.resolve()), amp="100", sframe="0")
    track.set("vol", "100")
    track.set("pan", "0")
    track.set("fxch", "0")
    for chain in track.iter("fxchain"):
        chain.set("enabled", "0")
    return track


def zyn_track(preset: Path) -> ET.Element:
    """The ``<instrumenttrack>`` of LMMS's ZynAddSubFX playing a bank preset (``.xiz``, XML, mostly gzipped) in its
    first part, every effect unit of the preset and of ZynAddSubFX's master off (ZynAddSubFX's defaults
    hold a reverb)."""
    try:
        data = preset.read_bytes()
        data = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data  # some banks store plain XML
        instrument = ET.fromstring(data.lstrip()).find("INSTRUMENT")
    except (OSError, EOFError, ET.ParseError) as exc:
        raise SoundsError(f"{preset}: not a ZynAddSubFX preset ({exc})") from None
    if instrument is None:
        raise SoundsError(f"{preset}: not a ZynAddSubFX preset (no INSTRUMENT)")
    for effect in instrument.iter("EFFECT"):
        for par in effect.findall("par[@name='type']"):
            par.set("value", "0")
    master = ET.Element("MASTER")
    ET.SubElement(master, "par", name="volume", value="80")
    ET.SubElement(master, "par", name="key_shift", value="64")
    part = ET.SubElement(master, "PART", id="0")
    for name, value in (("volume", "96"), ("panning", "64"), ("min_key", "0"), ("max_key", "127")):
        ET.SubElement(part, "par", name=name, value=value)
    ET.SubElement(part, "par", name="key_shift", value="64")
    ET.SubElement(part, "par_bool", name="enabled", value="yes")
    ET.SubElement(part, "par_bool", name="note_on", value="yes")
    ET.SubElement(part, "par_bool", name="poly_mode", value="yes")
    part.append(instrument)
    for kind, count in (("SYSTEM_EFFECT", 4), ("INSERTION_EFFECT", 8)):
        units = ET.SubElement(master, f"{kind}S")
        for k in range(count):
            unit = ET.SubElement(units, kind, id=str(k))
            if kind == "INSERTION_EFFECT":
                ET.SubElement(unit, "par", name="part", value="-1")
            ET.SubElement(ET.SubElement(unit, "EFFECT"), "par", name="type", value="0")
    track = ET.Element("instrumenttrack", basenote=str(BASE_NOTE), pitch="0", pitchrange="1")
    zyn = ET.SubElement(ET.SubElement(track, "instrument", name="zynaddsubfx"), "zynaddsubfx")
    data = ET.SubElement(zyn, "ZynAddSubFX-data", **{"version-major": "2", "version-minor": "4"})
    data.append(master)
    return track


def sound_project(sound: Path, library: Path, seconds: float, seed: int) -> ET.Element:
    """A one-track LMMS project that plays ``sound`` in its pattern (seeded by ``seed`` and the sound's path
    within the library), master neutral."""
    rng = np.random.default_rng([seed, zlib.crc32(str(sound.relative_to(library)).encode())])
    group = song_of(sound, library)
    bpm, notes = pattern(is_percussive(group), seconds, rng)
    root = ET.Element("lmms-project", version="1.0", creator="gradmix", type="song")
    ET.SubElement(root, "head", bpm=f"{bpm:.0f}", mastervol="100", masterpitch="0")
    container = ET.SubElement(ET.SubElement(root, "song"), "trackcontainer", type="song")
    track = ET.SubElement(container, "track", type="0", name=sound.stem, muted="0", solo="0")
    track.append(instrument_track(sound, library))
    end = max(n["pos"] + n["len"] for n in notes)
    clip = ET.SubElement(track, "pattern", pos="0", len=str(end), muted="0", type="1", steps="16")
    for note in notes:
        ET.SubElement(clip, "note", pan="0", **{k: str(v) for k, v in note.items()})
    return root


def song_of(sound: Path, library: Path) -> str:
    """The song (library folder) a sound belongs to, as :func:`library_sounds` names it."""
    parts = sound.relative_to(library).parts
    if parts[0] == "presets" and sound.suffix == ".xiz":
        return f"zynaddsubfx-{safe_file_name(parts[2])}"
    if parts[0] == "presets":
        return f"presets-{safe_file_name(parts[1])}"
    if parts[1] == "drumsynth":
        return f"drumsynth-{safe_file_name(parts[2])}"
    return f"samples-{parts[1]}"


def render_group(
    name: str, sounds: list[Path], out_dir: Path, library: Path, *, seconds: float, seed: int
) -> tuple[str, dict[str, str]]:
    """Render one song (library folder) into ``out_dir/name/``: a dry stem ``NNN-<sound>.wav`` per sound that
    renders and sounds, and ``metadata.json``. Returns the song's name and the sounds left out, with why."""
    import soundfile as sf

    skipped: dict[str, str] = {}
    stems: dict[str, Any] = {}
    with song_written_whole(out_dir, name, DONE) as tmp:
        for k, sound in enumerate(sounds, 1):
            stem = f"{k:03d}-{safe_file_name(sound.stem)}"
            project, wav = tmp / f"{stem}.mmp", tmp / f"{stem}.render.wav"
            try:
                project.write_bytes(ET.tostring(sound_project(sound, library, seconds, seed)))
                render(project, wav)
                audio, rate = sf.read(str(wav), dtype="float32", always_2d=True)
            except (LmmsError, SoundsError, sf.LibsndfileError, ET.ParseError) as exc:
                skipped[str(sound)] = str(exc).splitlines()[0][:200]
                continue
            finally:
                project.unlink(missing_ok=True)
                wav.unlink(missing_ok=True)
            audio = audio.T[:, : int(seconds * rate)]
            if not np.isfinite(audio).all():
                skipped[str(sound)] = "rendered NaN/Inf samples"
                continue
            if float(np.abs(audio).max(initial=0.0)) < SILENT_PEAK:
                skipped[str(sound)] = "rendered silent"
                continue
            write_audio(tmp / f"{stem}.wav", audio, rate)
            stems[stem] = {"source": str(sound), "percussive": is_percussive(name)}
        if not stems:
            raise SoundsError(f"{name}: no sound of the folder rendered")
        meta = {
            "title": name,
            "source": str(sounds[0].parent),
            **licence_of(sounds[0]),
            "seconds": seconds,
            "seed": seed,
            "stems": stems,
            "skipped": skipped,
            "note": "dry stems of single sounds played in seeded patterns; no mix (material for effect removal)",
        }
        (tmp / "metadata.json").write_text(json.dumps(meta, indent=1))
    return name, skipped


def build_dataset(
    out_dir: str | Path,
    library: str | Path = LIBRARY_DIR,
    *,
    seconds: float = 8.0,
    per_folder: int | None = None,
    seed: int = 0,
    shard: tuple[int, int] | None = None,
    workers: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Render the sounds of an LMMS data folder into dry stems (see the module docstring); resumable.

    Args:
        out_dir: the dataset folder.
        library: LMMS's data folder (with ``samples/`` and ``presets/``).
        seconds: length of every stem.
        per_folder: at most this many sounds of each folder (the first in name order; all when ``None``).
        seed: seeds every pattern (with the sound's path).
        shard: ``(i, n)``: songs ``i, i + n, ...`` only.
        workers: songs rendered at once (default: every core).
        progress: show a progress bar.

    Returns:
        ``{"done": [song names], "skipped": songs already done, "failed": {song: reason}, "left_out": {sound:
        reason}}``; a sound that does not render, or renders silent or non-finite, is left out of its song.
    """
    from concurrent.futures import ThreadPoolExecutor

    if not seconds > 0:
        raise SoundsError(f"--seconds: {seconds:g} is not positive")
    library = Path(library)
    groups = library_sounds(library)
    if not groups:
        raise SoundsError(f"{library}: no LMMS samples or presets found (`make sysdeps` installs lmms-common)")
    out_dir = Path(out_dir)
    make_output_folder(out_dir)
    items = select_shard(sorted(groups.items()), shard)
    todo = [(g, s[:per_folder]) for g, s in items if not (out_dir / g / DONE).is_file()]
    failed: dict[str, str] = {}
    left_out: dict[str, str] = {}

    def one(item: tuple[str, list[Path]]) -> str | None:
        try:
            name, skipped = render_group(item[0], item[1], out_dir, library, seconds=seconds, seed=seed)
        except SoundsError as exc:
            failed[item[0]] = str(exc)
            return None
        left_out.update(skipped)
        return name

    with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
        done = [r for r in show_progress(pool.map(one, todo), "rendering sounds", progress, total=len(todo)) if r]
    return {"done": done, "skipped": len(items) - len(todo), "failed": failed, "left_out": left_out}
