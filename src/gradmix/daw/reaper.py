"""REAPER project (``.RPP``) writer.

An ``.RPP`` is text: ``<TAG ...`` opens a chunk, ``>`` closes it, other lines are ``KEY value ...``. What
is written (field layouts after the REAPER state-chunk definitions, github.com/ReaTeam/Doc):

- one ``<TRACK`` per stem: ``NAME``, ``VOLPAN volume pan -1 -1 1`` (volume linear, 1 = 0 dB; pan -1 .. 1;
  ``-1``: the project's pan law), ``MAINSEND 1 0`` (to the master), one ``<ITEM`` at ``POSITION 0`` of the
  stem's ``LENGTH`` in seconds whose ``<SOURCE WAVE|FLAC|VORBIS`` plays ``FILE "path"`` (relative to the
  project file's folder);
- one ``<TRACK`` per bus (a return track) with one ``AUXRECV src 0 volume 0 0 0 0 0 0 -1 0 -1`` per track
  that sends to it: source track index (0-based), mode 0 (post-fader, post-pan, as gradmix's sends),
  linear volume;
- the master's fader and pan as ``MASTER_VOLUME volume pan -1 -1 1``;
- everything else (EQ, dynamics, reverb, ... with every value) as text: the project notes
  (``<NOTES 0 2`` with each line prefixed by ``|``, shown by View > Project notes) hold the whole console,
  and each track's part is also written as SWS track notes (``<EXTENSIONS`` > ``<S&M_TRACKNOTES {GUID}``,
  shown by the SWS Notes window).
"""

from __future__ import annotations

import uuid
from pathlib import Path

from gradmix.console.setting import ConsoleSetting, Entry
from gradmix.daw import StemFile, relative_path
from gradmix.daw._chain import analyse, db_to_linear, describe, fmt, notes_lines

SOURCE_TYPES = {".flac": "FLAC", ".ogg": "VORBIS"}
"""REAPER source type by file extension; everything else (wav, aiff) is ``WAVE``."""

_NAMESPACE = uuid.UUID("5f3b8a52-6f0e-4d1c-9a59-2b7f0d6c1e44")


def quote(text: str) -> str:
    """An RPP string: in double quotes, or single quotes or backticks where the text holds double quotes."""
    text = " ".join(str(text).splitlines())
    for q in ('"', "'", "`"):
        if q not in text:
            return f"{q}{text}{q}"
    return '"' + text.replace('"', "'") + '"'


def guid(*parts: object) -> str:
    """A track GUID, ``{XXXXXXXX-...}``, the same for the same console (reproducible files)."""
    return "{" + str(uuid.uuid5(_NAMESPACE, "/".join(map(str, parts)))).upper() + "}"


def _num(value: float) -> str:
    return f"{float(value):.10g}"


def chain_notes(chain: list[Entry]) -> list[str]:
    """Every entry of a chain with its values, in order, and where it went in REAPER."""
    strip = analyse(chain)
    lines = [
        f"fader (VOLPAN volume): {fmt(strip.fader_db)} dB, the sum of the chain's gain effects",
        f"pan (VOLPAN pan): {fmt(strip.pan or 0.0)} (gradmix law: constant power sin/cos, -3 dB at centre; "
        "REAPER applies its own pan law)",
    ]
    if not strip.steps:
        return lines + ["chain: empty"]
    lines.append("chain, in order (REAPER holds the fader and the pan; set up the rest with plugins):")
    first_pan = next((s.index for s in strip.steps if s.type == "pan"), None)
    for step in strip.steps:
        text = f"  chain[{step.index}] {describe(step.entry)}"
        if step.type == "gain":
            text += " -> fader"
        elif step.index == first_pan:
            text += " -> pan"
        moved = step.threshold_on_fader()
        if moved is not None and step.gain_before_db != 0.0:
            text += f" (with the gain on the fader before this plugin: {fmt(moved)} dB)"
        lines.append(text)
    return lines


def rpp_text(setting: ConsoleSetting, stems: list[StemFile], output: Path) -> str:
    """The ``.RPP`` of the session (``output``: where it goes, for the stems' relative paths)."""
    from gradmix import __version__

    tracks: list[tuple[str, str, list[str], list[str], list[str]]] = []  # guid, name, settings, items, notes
    index = {t.name: i for i, t in enumerate(setting.tracks)}
    for i, (t, stem) in enumerate(zip(setting.tracks, stems)):
        strip = analyse(t.chain)
        source = SOURCE_TYPES.get(stem.path.suffix.lower(), "WAVE")
        settings = [f"VOLPAN {_num(db_to_linear(strip.fader_db))} {_num(strip.pan or 0.0)} -1 -1 1"]
        item = [
            "<ITEM",
            "  POSITION 0",
            f"  LENGTH {_num(stem.seconds)}",
            "  LOOP 0",
            f"  NAME {quote(Path(stem.file).name)}",
            f"  <SOURCE {source}",
            f"    FILE {quote(relative_path(stem.path, output.parent))}",
            "  >",
            ">",
        ]
        sends = ", ".join(f"{b} {fmt(v)} dB" for b, v in t.sends.items()) or "none"
        notes = [
            f"track {t.name!r} (file {t.file})",
            *chain_notes(t.chain),
            f"sends (post-fader; AUXRECV on the bus tracks): {sends}",
        ]
        tracks.append((guid("track", i, t.name), t.name, settings, item, notes))
    for k, bus in enumerate(setting.buses):
        strip = analyse(bus.chain)
        settings = [f"VOLPAN {_num(db_to_linear(strip.fader_db))} {_num(strip.pan or 0.0)} -1 -1 1"]
        senders = [t for t in setting.tracks if bus.name in t.sends]
        settings += [
            f"AUXRECV {index[t.name]} 0 {_num(db_to_linear(t.sends[bus.name]))} 0 0 0 0 0 0 -1 0 -1" for t in senders
        ]
        notes = [
            f"bus {bus.name!r} (a return track; receives from: {', '.join(t.name for t in senders) or 'nothing'})",
            *chain_notes(bus.chain),
        ]
        tracks.append((guid("bus", k, bus.name), bus.name, settings, [], notes))
    master = analyse(setting.master)
    project_notes = [
        f"gradmix {__version__}: a console at {setting.sample_rate} Hz exported for REAPER.",
        "Faders, pans, sends and the stems are set; every other setting is listed here.",
        "",
        "master",
        *chain_notes(setting.master),
    ]
    for *_, notes in tracks:
        project_notes += ["", *notes]
    lines = [
        f'<REAPER_PROJECT 0.1 "7.0/gradmix-{__version__}" 0',
        "  <NOTES 0 2",
        *(f"    |{line}" for line in notes_lines(project_notes)),
        "  >",
        "  TEMPO 120 4 4",
        f"  SAMPLERATE {setting.sample_rate} 0 0",
        "  MASTER_NCH 2 2",
        f"  MASTER_VOLUME {_num(db_to_linear(master.fader_db))} {_num(master.pan or 0.0)} -1 -1 1",
    ]
    for g, name, settings, item, _ in tracks:
        lines += [
            f"  <TRACK {g}",
            f"    NAME {quote(name)}",
            f"    TRACKID {g}",
            "    MUTESOLO 0 0 0",
            "    NCHAN 2",
            *(f"    {b}" for b in settings),
            "    MAINSEND 1 0",
            *(f"    {b}" for b in item),
            "  >",
        ]
    lines.append("  <EXTENSIONS")
    for g, *_, notes in tracks:
        lines += [f"    <S&M_TRACKNOTES {g}", *(f"      |{line}" for line in notes_lines(notes)), "    >"]
    lines += ["  >", ">"]
    return "\n".join(lines) + "\n"


__all__ = ["chain_notes", "quote", "rpp_text"]
