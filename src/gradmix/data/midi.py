"""``gradmix dataset midi``: symbolic music rendered part by part into dry multitracks of five or more sources.

Each score (the music21 corpus, or a folder of MIDI and MusicXML files) becomes one song folder of dry stems
(``folder`` layout, see :mod:`gradmix.data.songs`), rendered by FluidSynth with a General MIDI soundfont,
reverb and chorus off. The score's parts are kept, and these rules, seeded per song, add sources:

- every part gets a General MIDI instrument by its register, from several families: the lowest part a bass
  or low string, the top part a lead (reed, pipe, brass or string), the parts between keys, guitar, organ,
  strings or brass, no family twice where it can be helped;
- one inner part is doubled by a pad (string ensemble, choir or synth pad) on its own stem;
- where the lowest part sits above E3 (median MIDI pitch > 52), a bass line is added: it, an octave or two
  lower (below E3), on an electric or acoustic bass;
- a drum part of three stems (kick, snare, closed hi-hat) is added: kick on beats 1 and 3, snare on 2 and 4,
  hi-hat on every eighth note, in the score's metre (4/4 when it names none; in 3/4 the kick on 1 and the
  snare on 2 and 3);
- timing is humanised by a normal jitter of 8 ms (at most 20 ms) per note, velocities by one level per part
  (60-100) plus a normal jitter of 8 per note.

``metadata.json`` records the source, its licence, the tempo, the seed, each stem's instrument and rule, and
the labels of the stems (``"labels"``). The build is resumable (a finished song has a ``.midi-done`` marker),
shardable, and atomic per song (a song is written in a temporary folder and renamed).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gradmix.audio import make_output_folder, read_audio, safe_file_name, write_audio
from gradmix.data.songs import select_shard, song_written_whole
from gradmix.defaults import MIDI_SONG_SECONDS
from gradmix.errors import GradmixError
from gradmix.progress import progress as show_progress

SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
SCORE_EXTENSIONS = (".mid", ".midi", ".mxl", ".xml", ".musicxml", ".krn", ".abc")
DONE = ".midi-done"
SAMPLE_RATE = 44100
MUSIC21_LICENCE = "public-domain score from the music21 corpus (music21: BSD-3-Clause)"

BASS_PROGRAMS = {"fingered-bass": 33, "acoustic-bass": 32, "cello": 42, "tuba": 58}
LEAD_PROGRAMS = {"flute": 73, "oboe": 68, "clarinet": 71, "trumpet": 56, "violin": 40, "alto-sax": 65}
INNER_PROGRAMS = {
    "acoustic-piano": 0,
    "electric-piano": 4,
    "nylon-guitar": 24,
    "clean-guitar": 27,
    "drawbar-organ": 16,
    "viola": 41,
    "french-horn": 60,
    "vibraphone": 11,
}
PAD_PROGRAMS = {"string-ensemble": 48, "choir-aahs": 52, "warm-pad": 89}
FAMILY_LABELS = {0: "keys", 1: "keys", 2: "keys", 3: "guitar", 5: "strings", 7: "brass"}
"""Stem labels of the General MIDI families of :data:`INNER_PROGRAMS`."""
DRUMS = {"kick": 36, "snare": 38, "hihat": 42}
"""General MIDI percussion keys (channel 10) of the three drum stems."""


class MidiError(GradmixError):
    """A score that cannot be read or rendered."""


@dataclass
class Note:
    """One note: start and length in seconds, MIDI pitch and velocity."""

    start: float
    length: float
    pitch: int
    velocity: int


@dataclass
class Source:
    """One stem to render: its name, label, General MIDI program (``None``: drums on channel 10), the rule
    that made it and its notes."""

    name: str
    label: str
    program: int | None
    rule: str
    notes: list[Note]


def music21_scores(limit: int | None = None) -> list[Path]:
    """The music21 corpus's scores: MusicXML first (the Bach chorales, quartets and madrigals, of several
    parts each), then Humdrum, then ABC (mostly single-line folk tunes), each in name order."""
    from music21 import corpus

    rank = {".mxl": 0, ".xml": 0, ".musicxml": 0, ".krn": 1, ".abc": 2}
    paths = sorted((p for p in corpus.getPaths() if p.suffix in rank), key=lambda p: (rank[p.suffix], str(p)))
    return paths[:limit] if limit is not None else paths


def folder_scores(folder: Path) -> list[Path]:
    """Every MIDI or MusicXML file under ``folder``, in name order."""
    if not folder.is_dir():
        raise MidiError(f"{folder}: no such folder of scores")
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in SCORE_EXTENSIONS and p.is_file())


def read_parts(path: Path, seconds: float, rng: np.random.Generator) -> tuple[list[list[Note]], float, int]:
    """The parts of a score as notes within the first ``seconds``, at the score's first tempo (or one drawn
    from 70-130 BPM); returns ``(parts, seconds per quarter note, beats per bar)``. Parts without notes are
    dropped; a score with none raises :class:`MidiError`."""
    import music21

    try:
        score = music21.converter.parse(str(path))
    except Exception as exc:  # music21 raises many kinds of error for a file it cannot read
        raise MidiError(f"{path}: not a score music21 can read ({type(exc).__name__})") from None
    marks = score.metronomeMarkBoundaries() if hasattr(score, "metronomeMarkBoundaries") else []
    bpm = next((float(m.number) for _, _, m in marks if m.number), None) or float(rng.uniform(70, 130))
    quarter = 60.0 / bpm
    metres = score.recurse().getElementsByClass("TimeSignature")
    beats = int(metres[0].numerator) if metres and metres[0].denominator == 4 else 4
    parts = []
    for part in getattr(score, "parts", None) or [score]:
        notes = []
        for n in part.flatten().notes:
            start = float(n.offset) * quarter
            if start >= seconds:
                continue
            length = min(max(float(n.quarterLength), 0.125) * quarter, seconds - start)
            notes += [Note(start, length, int(p.midi), 0) for p in n.pitches]
        if notes:
            parts.append(notes)
    if not parts:
        raise MidiError(f"{path}: no notes in its first {seconds:g} s")
    return parts, quarter, beats


def arrange(
    parts: list[list[Note]], quarter: float, beats: int, seconds: float, rng: np.random.Generator
) -> list[Source]:
    """The sources of one song by the module's rules: the parts with instruments by register, a doubling pad,
    a bass line where the score has none, three drum stems; humanised."""
    order = sorted(range(len(parts)), key=lambda i: float(np.median([n.pitch for n in parts[i]])))
    bass_i = order[0]
    used: set[int] = set()

    def draw(programs: dict[str, int]) -> str:  # a program of a family not used yet, where one is left
        fresh = [n for n, p in programs.items() if program_family(p) not in used] or list(programs)
        fresh_families = sorted({program_family(programs[n]) for n in fresh})
        family = int(rng.choice(fresh_families))  # families alike, however many programs each has
        name = str(rng.choice([n for n in fresh if program_family(programs[n]) == family]))
        used.add(program_family(programs[name]))
        return name

    sources: list[Source] = []
    roles = {i: "bass" for i in order[:1] if len(parts) > 1} | {order[-1]: "lead"}
    names = {i: draw(BASS_PROGRAMS if roles[i] == "bass" else LEAD_PROGRAMS) for i in roles}
    for rank, i in enumerate(order):
        if i in roles:
            name = names[i]
            program, label = {**BASS_PROGRAMS, **LEAD_PROGRAMS}[name], roles[i]
        else:
            name = draw(INNER_PROGRAMS)
            program, label = INNER_PROGRAMS[name], FAMILY_LABELS[program_family(INNER_PROGRAMS[name])]
        sources.append(Source(f"part{rank + 1}-{name}", label, program, f"score part {i + 1}", _copy(parts[i])))
    inner = order[1:-1] or order
    doubled = int(rng.choice(inner))
    pad = str(rng.choice(list(PAD_PROGRAMS)))
    sources.append(
        Source(f"pad-{pad}", "pad", PAD_PROGRAMS[pad], f"doubles score part {doubled + 1}", _copy(parts[doubled]))
    )
    low = float(np.median([n.pitch for n in parts[bass_i]]))
    if low > 52 or len(parts) == 1:
        shift = 12 * int(np.ceil((low - 52) / 12)) if low > 52 else 12
        line = [Note(n.start, n.length, n.pitch - shift, 0) for n in parts[bass_i]]
        bass = str(rng.choice(["fingered-bass", "acoustic-bass"]))
        sources.append(
            Source(
                f"bassline-{bass}",
                "bass",
                BASS_PROGRAMS[bass],
                f"score part {bass_i + 1}, {shift} semitones down",
                line,
            )
        )
    sources += drum_sources(quarter, beats, seconds)
    for s in sources:
        humanise(s.notes, rng)
    return sources


def program_family(program: int) -> int:
    """The General MIDI family (0-15) of a program (0-127): piano, chromatic percussion, organ, guitar, ..."""
    return program // 8


def drum_sources(quarter: float, beats: int, seconds: float) -> list[Source]:
    """Kick, snare and closed hi-hat stems over ``seconds``: kick on beats 1 and 3, snare on 2 and 4, hi-hat on
    every eighth (3/4: kick on 1, snare on 2 and 3)."""
    bar = beats * quarter
    kick_beats = [0] if beats == 3 else [b for b in range(beats) if b % 2 == 0]
    snare_beats = [1, 2] if beats == 3 else [b for b in range(beats) if b % 2 == 1]
    hits: dict[str, list[Note]] = {name: [] for name in DRUMS}
    for k in range(int(np.ceil(seconds / bar))):
        t0 = k * bar
        for name, where in (("kick", kick_beats), ("snare", snare_beats), ("hihat", [h / 2 for h in range(2 * beats)])):
            for b in where:
                start = t0 + b * quarter
                if start < seconds:
                    hits[name].append(Note(start, min(0.1, seconds - start), DRUMS[name], 0))
    return [Source(name, name, None, "drum rule", notes) for name, notes in hits.items()]


def humanise(notes: list[Note], rng: np.random.Generator) -> None:
    """Jitter each start by N(0, 8 ms) within 20 ms; velocities one level per part (60-100) plus N(0, 8)."""
    level = rng.uniform(60, 100)
    for n in notes:
        n.start = max(0.0, n.start + float(np.clip(rng.normal(0, 0.008), -0.02, 0.02)))
        n.velocity = int(np.clip(round(level + rng.normal(0, 8)), 1, 127))


def _copy(notes: list[Note]) -> list[Note]:
    return [Note(n.start, n.length, n.pitch, n.velocity) for n in notes]


def write_midi(source: Source, path: Path) -> None:
    """One source as a one-track MIDI file (120 BPM, 960 ticks a second)."""
    import mido

    channel = 9 if source.program is None else 0
    events = []
    for n in source.notes:
        pitch = int(np.clip(n.pitch, 0, 127))
        events.append(
            (round(n.start * 960), 1, mido.Message("note_on", channel=channel, note=pitch, velocity=n.velocity))
        )
        events.append((round((n.start + n.length) * 960), 0, mido.Message("note_off", channel=channel, note=pitch)))
    events.sort(key=lambda e: (e[0], e[1]))
    track = mido.MidiTrack()
    if source.program is not None:
        track.append(mido.Message("program_change", channel=channel, program=source.program, time=0))
    now = 0
    for tick, _, msg in events:
        track.append(msg.copy(time=tick - now))
        now = tick
    midi = mido.MidiFile(ticks_per_beat=480)
    midi.tracks.append(track)
    midi.save(str(path))


def fluidsynth(midi: Path, wav: Path, soundfont: Path = SOUNDFONT, timeout_s: float = 120.0) -> None:
    """Render ``midi`` to ``wav`` at 44.1 kHz, reverb and chorus off."""
    command = ["fluidsynth", "-ni", "-q", "-R", "0", "-C", "0", "-g", "0.5", "-r", str(SAMPLE_RATE)]
    try:
        done = subprocess.run(
            [*command, "-F", str(wav), str(soundfont), str(midi)], capture_output=True, timeout=timeout_s
        )
    except FileNotFoundError:
        raise MidiError("fluidsynth is not installed (`make sysdeps` installs it)") from None
    except subprocess.TimeoutExpired:
        raise MidiError(f"{midi.name}: fluidsynth took more than {timeout_s:g} s") from None
    if done.returncode != 0 or not wav.is_file():
        raise MidiError(f"{midi.name}: fluidsynth failed ({done.stderr.decode(errors='replace').strip()[:200]})")


def render_song(score: Path, out_dir: Path, index: int, *, seconds: float, licence: str) -> Path:
    """Render song number ``index`` from ``score`` into ``out_dir/<NNNN-name>/`` (atomic); its seed is ``index``."""
    rng = np.random.default_rng(index)
    name = song_name(index, score)
    parts, quarter, beats = read_parts(score, seconds, rng)
    sources = arrange(parts, quarter, beats, seconds, rng)
    length = int(seconds * SAMPLE_RATE)
    with song_written_whole(out_dir, name, DONE) as tmp:
        stems: dict[str, Any] = {}
        for k, source in enumerate(sources):
            file = f"{k + 1:02d}-{source.name}"
            write_midi(source, tmp / f"{file}.mid")
            fluidsynth(tmp / f"{file}.mid", tmp / f"{file}.render.wav")
            audio, rate = read_audio(tmp / f"{file}.render.wav")
            audio = np.pad(audio, ((0, 0), (0, max(0, length - audio.shape[-1]))))[:, :length]
            if not np.isfinite(audio).all():
                raise MidiError(f"{score}: the stem {source.name!r} has NaN or Inf samples")
            if float(np.abs(audio).max()) < 1e-5:
                raise MidiError(f"{score}: the stem {source.name!r} is silent")
            write_audio(tmp / f"{file}.wav", audio, rate)
            for leftover in (tmp / f"{file}.mid", tmp / f"{file}.render.wav"):
                leftover.unlink()
            stems[file] = {"label": source.label, "program": source.program, "rule": source.rule}
        meta = {
            "title": score.stem,
            "source": str(score),
            "licence": licence,
            "seed": index,
            "seconds": seconds,
            "bpm": round(60.0 / quarter, 2),
            "beats_per_bar": beats,
            "sample_rate": SAMPLE_RATE,
            "stems": stems,
            "labels": {f: s["label"] for f, s in stems.items()},
            "note": "dry stems: FluidSynth with FluidR3_GM, reverb and chorus off; no mix (nobody mixed it)",
        }
        (tmp / "metadata.json").write_text(json.dumps(meta, indent=1))
    return out_dir / name


def build_dataset(
    out_dir: str | Path,
    source: str = "music21",
    *,
    songs: int | None = None,
    seconds: float = MIDI_SONG_SECONDS,
    shard: tuple[int, int] | None = None,
    workers: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Render scores into a folder-of-stems dataset; resumable, shardable.

    Args:
        out_dir: the dataset folder.
        source: ``"music21"`` (its corpus) or a folder of MIDI/MusicXML files.
        songs: at most this many songs (the first in name order; every score when ``None``).
        seconds: length of every song, from the score's start.
        shard: ``(i, n)``: songs ``i, i + n, ...`` only.
        workers: songs rendered at once (default: every core).
        progress: show a progress bar.

    Returns:
        ``{"done": [song names], "skipped": already done, "failed": {score: reason}}``. A score that cannot
        be read, has no notes, or renders a silent or non-finite stem is a failure of that song only.
    """
    from concurrent.futures import ThreadPoolExecutor

    if not seconds > 0:
        raise MidiError(f"--seconds: {seconds:g} is not positive")
    if not SOUNDFONT.is_file():
        raise MidiError(f"{SOUNDFONT}: no General MIDI soundfont (`make sysdeps` installs fluid-soundfont-gm)")
    if shutil.which("fluidsynth") is None:
        raise MidiError("fluidsynth is not installed (`make sysdeps` installs it)")
    if source == "music21":
        scores, licence = music21_scores(songs), MUSIC21_LICENCE
    else:
        scores, licence = folder_scores(Path(source))[:songs], "as the user's files (not known to gradmix)"
    if not scores:
        raise MidiError(f"{source}: no scores found")
    out_dir = Path(out_dir)
    make_output_folder(out_dir)
    numbered = select_shard(list(enumerate(scores)), shard)
    todo = [(i, p) for i, p in numbered if not (out_dir / song_name(i, p) / DONE).is_file()]
    failed: dict[str, str] = {}

    def one(item: tuple[int, Path]) -> str | None:
        try:
            return render_song(item[1], out_dir, item[0], seconds=seconds, licence=licence).name
        except MidiError as exc:
            failed[str(item[1])] = str(exc)
            return None

    with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
        done = [r for r in show_progress(pool.map(one, todo), "rendering scores", progress, total=len(todo)) if r]
    return {"done": done, "skipped": len(numbered) - len(todo), "failed": failed}


def song_name(index: int, score: Path) -> str:
    """The folder of song number ``index``, made from ``score``: ``NNNN-<file name>``."""
    return f"{index:04d}-{safe_file_name(score.stem)[:60]}"
