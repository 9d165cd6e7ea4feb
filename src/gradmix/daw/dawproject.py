"""DAWproject 1.0 writer (the open exchange format of Bitwig Studio, Studio One and Cubase).

A ``.dawproject`` is a ZIP holding ``project.xml`` (schema ``Project.xsd``) and ``metadata.xml``
(``MetaData.xsd``), plus the audio when it is embedded. Element and attribute names, their order and
the units follow the format's schema and reference (github.com/bitwig/dawproject, MIT licence):

- ``Channel``: ``Devices``, ``Mute``, ``Pan``, ``Sends``, ``Volume`` in that order; ``Volume`` in unit
  ``linear`` (1.0 = 0 dB), ``Pan`` in unit ``normalized`` (0 left, 0.5 centre, 1 right); channel roles
  ``regular``, ``effect`` (a return track) and ``master``; ``destination`` routes to the master.
- ``Send``: ``Volume`` in ``linear``, ``type="post"`` (post-fader, as gradmix's sends are).
- ``Equalizer`` bands (``bell``, ``lowShelf``, ``highShelf``, ``lowPass``, ``highPass``, ``bandPass``,
  ``notch``) with ``Freq`` in ``hertz``, ``Gain`` in ``decibel``, ``Q`` in ``linear``; ``Compressor``
  (``Threshold`` dB, ``Ratio`` linear, ``Attack``/``Release`` seconds, ``OutputGain`` dB, ``AutoMakeup``);
  ``NoiseGate`` (``Threshold`` dB, ``Ratio``, ``Range`` dB <= 0, ``Attack``/``Release`` s); ``Limiter``
  (``Threshold``, ``InputGain`` dB, ``Attack``/``Release`` s).
- ``Arrangement`` > ``Lanes`` (``timeUnit="seconds"``) > one ``Lanes`` per track > ``Clips`` > ``Clip`` >
  ``Audio`` (``duration`` in seconds, ``sampleRate``, ``channels``) > ``File`` (``path``; ``external="true"``:
  relative to the ``.dawproject`` file, else a path inside the container).
"""

from __future__ import annotations

import zipfile
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from gradmix.console.setting import ConsoleSetting, Entry
from gradmix.daw import StemFile, relative_path
from gradmix.daw._chain import Step, Strip, analyse, db_to_linear, describe, fmt

VERSION = "1.0"
"""The DAWproject format version written."""

BAND_TYPES = {
    "peak": "bell",
    "low_shelf": "lowShelf",
    "high_shelf": "highShelf",
    "lowpass": "lowPass",
    "highpass": "highPass",
    "bandpass": "bandPass",
    "notch": "notch",
}
"""gradmix EQ shape -> DAWproject ``eqBandType``."""

GAIN_SHAPES = ("peak", "low_shelf", "high_shelf")
"""Shapes whose gain means something (the others get no ``Gain`` element)."""

TEMPO_BPM = 120.0
"""The project tempo (stems carry no tempo; clips are placed in seconds, so it changes nothing)."""


def pan_to_normalized(pan: float) -> float:
    """gradmix pan -1 (left) .. 1 (right) -> DAWproject ``normalized`` pan 0 .. 1 (0.5 centre)."""
    return (pan + 1.0) / 2.0


def _num(value: float) -> str:
    """A double exactly as Python round-trips it."""
    return repr(float(value))


class _Ids:
    """``id0``, ``id1``, ... (``xs:ID`` values must not start with a digit)."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self) -> str:
        self.n += 1
        return f"id{self.n - 1}"


class _Builder:
    def __init__(self, setting: ConsoleSetting) -> None:
        self.setting = setting
        self.ids = _Ids()

    # ---- parameters ---------------------------------------------------------------------------------

    def real(self, parent: ET.Element, tag: str, value: float, unit: str, name: str | None = None) -> ET.Element:
        attrs = {"unit": unit, "value": _num(value), "id": self.ids()}
        if name:
            attrs["name"] = name
        return ET.SubElement(parent, tag, attrs)

    def boolean(self, parent: ET.Element, tag: str, value: bool, name: str | None = None) -> ET.Element:
        attrs = {"value": "true" if value else "false", "id": self.ids()}
        if name:
            attrs["name"] = name
        return ET.SubElement(parent, tag, attrs)

    # ---- devices ------------------------------------------------------------------------------------

    def device(self, devices: ET.Element, tag: str, name: str) -> ET.Element:
        el = ET.SubElement(
            devices,
            tag,
            {"deviceName": name, "deviceRole": "audioFX", "loaded": "true", "id": self.ids(), "name": name},
        )
        self.boolean(el, "Enabled", True, "On/Off")
        return el

    def band(self, eq: ET.Element, shape: str, freq_hz: float, gain_db: float, q: float) -> None:
        attrs = {"type": BAND_TYPES[shape]}
        if shape in ("lowpass", "highpass"):
            attrs["order"] = "2"  # an RBJ biquad: 12 dB per octave
        band = ET.SubElement(eq, "Band", attrs)
        self.real(band, "Freq", freq_hz, "hertz")
        if shape in GAIN_SHAPES:
            self.real(band, "Gain", gain_db, "decibel")
        self.real(band, "Q", q, "linear")
        self.boolean(band, "Enabled", True)

    def insert(self, devices: ET.Element, step: Step) -> list[str]:
        """Write one insert as a built-in device; returns what the device cannot hold (comment lines)."""
        e, p, where = step.entry, step.entry.params, f"chain[{step.index}]"
        kind = step.type
        if kind == "eq":
            eq = self.device(devices, "Equalizer", "EQ")
            for shape, f, g, q in zip(e.effect.shapes, p["freq_hz"], p["gain_db"], p["q"]):
                self.band(eq, shape, f, g, q)
            return []
        if kind == "graphic_eq":
            from gradmix.daw._graphic import bell_bands

            eq = self.device(devices, "Equalizer", "Graphic EQ")
            for f, g, q in bell_bands(p["gain_db"], self.setting.sample_rate):
                self.band(eq, "peak", f, g, q)
            return [
                f"{where} {describe(e)} (the requested band gains; written as {len(p['gain_db'])} bell bands "
                "whose RBJ cascade realises them)"
            ]
        if kind == "compressor":
            comp = self.device(devices, "Compressor", "Compressor")
            self.real(comp, "Attack", p["attack_ms"] / 1000.0, "seconds")
            self.boolean(comp, "AutoMakeup", False)
            self.real(comp, "OutputGain", p["makeup_db"], "decibel")
            self.real(comp, "Ratio", p["ratio"], "linear")
            self.real(comp, "Release", p["release_ms"] / 1000.0, "seconds")
            self.real(comp, "Threshold", step.threshold_on_fader(), "decibel")
            return [f"{where} compressor: knee_db={fmt(p['knee_db'])} dB (DAWproject has no knee)"]
        if kind in ("expander", "gate"):
            from gradmix.dsp.dynamics import GATE_RATIO

            gate = self.device(devices, "NoiseGate", "Expander" if kind == "expander" else "Gate")
            self.real(gate, "Attack", p["attack_ms"] / 1000.0, "seconds")
            self.real(gate, "Range", -float(p["range_db"]), "decibel")
            self.real(gate, "Ratio", p["ratio"] if kind == "expander" else GATE_RATIO, "linear")
            self.real(gate, "Release", p["release_ms"] / 1000.0, "seconds")
            self.real(gate, "Threshold", step.threshold_on_fader(), "decibel")
            extra = f"knee_db={fmt(p['knee_db'])} dB"
            if kind == "expander":
                extra += f", makeup_db={fmt(p['makeup_db'])} dB"
            return [f"{where} {kind}: {extra} (DAWproject's NoiseGate has no field for these)"]
        if kind == "limiter":
            lim = self.device(devices, "Limiter", "Limiter")
            self.real(lim, "Attack", e.effect.lookahead_ms / 1000.0, "seconds")
            self.real(lim, "InputGain", p["gain_db"], "decibel")
            self.real(lim, "Release", p["release_ms"] / 1000.0, "seconds")
            self.real(lim, "Threshold", step.threshold_on_fader(), "decibel")
            return [
                f"{where} limiter: Threshold is gradmix's output ceiling (ceiling_db), Attack its look-ahead "
                f"({fmt(e.effect.lookahead_ms)} ms)"
            ]
        return [f"{where} {describe(e)}"]  # reverb, delay, distortion, width, balance, a second pan

    # ---- tracks -------------------------------------------------------------------------------------

    def channel(
        self,
        track: ET.Element,
        chain: list[Entry],
        role: str,
        destination: str | None,
        sends: list[tuple[str, str, float]] = (),
    ) -> tuple[ET.Element, list[str]]:
        """A ``Channel`` for a chain; ``sends`` are ``(bus name, bus channel id, level dB)``."""
        strip: Strip = analyse(chain)
        attrs = {"audioChannels": "2", "role": role, "solo": "false", "id": self.ids()}
        if destination:
            attrs["destination"] = destination
        ch = ET.SubElement(track, "Channel", attrs)
        notes: list[str] = []
        inserts = strip.inserts
        if inserts:
            devices = ET.SubElement(ch, "Devices")
            for step in inserts:
                notes += self.insert(devices, step)
                moved = step.threshold_on_fader()
                if moved is not None and step.gain_before_db != 0.0:
                    param = "ceiling_db" if step.type == "limiter" else "threshold_db"
                    notes.append(
                        f"chain[{step.index}] {step.type}: {param}={fmt(step.param(param))} dB in gradmix, "
                        f"written as {fmt(moved)} dB because the {fmt(step.gain_before_db)} dB of gain "
                        "before it is on the fader"
                    )
            if not len(devices):  # nothing but effects the format has no device for
                ch.remove(devices)
        self.boolean(ch, "Mute", False, "Mute")
        self.real(ch, "Pan", pan_to_normalized(strip.pan or 0.0), "normalized", "Pan")
        if sends:
            wrap = ET.SubElement(ch, "Sends")
            for bus, dest, level_db in sends:
                send = ET.SubElement(wrap, "Send", {"destination": dest, "type": "post", "id": self.ids(), "name": bus})
                self.boolean(send, "Enable", True)
                self.real(send, "Volume", db_to_linear(level_db), "linear", "Volume")
        self.real(ch, "Volume", db_to_linear(strip.fader_db), "linear", "Volume")
        gains = [s for s in strip.steps if s.type == "gain"]
        if len(gains) > 1:
            notes.append(
                "fader = the sum of the chain's gain effects: "
                + " + ".join(f"{fmt(s.param('gain_db'))}" for s in gains)
                + f" = {fmt(strip.fader_db)} dB"
            )
        return ch, notes

    def track(
        self,
        structure: ET.Element,
        name: str,
        chain: list[Entry],
        role: str,
        destination: str | None,
        sends: list[tuple[str, str, float]] = (),
        header: str = "",
    ) -> tuple[str, str]:
        """A ``Track`` with its channel; returns ``(track id, channel id)``."""
        tid = self.ids()
        track = ET.SubElement(structure, "Track", {"contentType": "audio", "loaded": "true", "id": tid, "name": name})
        ch, notes = self.channel(track, chain, role, destination, sends)
        if notes:
            track.set("comment", "\n".join(["gradmix: what DAWproject cannot hold" + header + ":", *notes]))
        return tid, ch.get("id")

    def project(self, stems: list[StemFile], paths: list[tuple[str, bool]]) -> ET.Element:
        from gradmix import __version__

        s = self.setting
        root = ET.Element("Project", {"version": VERSION})
        ET.SubElement(root, "Application", {"name": "gradmix", "version": __version__})
        transport = ET.SubElement(root, "Transport")
        self.real(transport, "Tempo", TEMPO_BPM, "bpm", "Tempo")
        ET.SubElement(transport, "TimeSignature", {"denominator": "4", "numerator": "4", "id": self.ids()})
        structure = ET.SubElement(root, "Structure")
        # ids are handed out in document order; the master's channel id is needed first, so reserve it
        master_track = ET.Element("held")
        master_ids = self.track(master_track, "Master", s.master, "master", None)
        bus_ids: dict[str, str] = {}
        bus_tracks = ET.Element("held")
        for bus in s.buses:
            bus_ids[bus.name] = self.track(
                bus_tracks, bus.name, bus.chain, "effect", master_ids[1], header=f" (return track of bus {bus.name!r})"
            )[1]
        track_ids = []
        for t in s.tracks:
            sends = [(b, bus_ids[b], level) for b, level in t.sends.items()]
            track_ids.append(self.track(structure, t.name, t.chain, "regular", master_ids[1], sends)[0])
        structure.extend(list(bus_tracks))
        structure.extend(list(master_track))
        arrangement = ET.SubElement(root, "Arrangement", {"id": self.ids()})
        lanes = ET.SubElement(arrangement, "Lanes", {"timeUnit": "seconds", "id": self.ids()})
        for t, tid, stem, (path, external) in zip(s.tracks, track_ids, stems, paths):
            lane = ET.SubElement(lanes, "Lanes", {"track": tid, "id": self.ids()})
            clips = ET.SubElement(lane, "Clips", {"id": self.ids()})
            clip = ET.SubElement(
                clips,
                "Clip",
                {
                    "time": "0.0",
                    "duration": _num(stem.seconds),
                    "contentTimeUnit": "seconds",
                    "playStart": "0.0",
                    "name": Path(stem.file).name,
                },
            )
            audio = ET.SubElement(
                clip,
                "Audio",
                {
                    "channels": str(stem.channels),
                    "duration": _num(stem.seconds),
                    "sampleRate": str(stem.sample_rate),
                    "timeUnit": "seconds",
                    "id": self.ids(),
                    "name": t.name,
                },
            )
            ET.SubElement(audio, "File", {"path": path, "external": "true" if external else "false"})
        return root


def _xml(root: ET.Element) -> bytes:
    ET.indent(root, space="  ")
    return b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n' + ET.tostring(root, encoding="utf-8") + b"\n"


def metadata(title: str, setting: ConsoleSetting) -> ET.Element:
    from gradmix import __version__

    root = ET.Element("MetaData")
    ET.SubElement(root, "Title").text = title
    ET.SubElement(root, "Comment").text = (
        f"Exported by gradmix {__version__} from a console at {setting.sample_rate} Hz. Settings DAWproject "
        "cannot hold are written in each track's comment."
    )
    return root


def embedded_names(stems: list[StemFile]) -> dict[Path, str]:
    """Each distinct stem file's path inside the container: ``audio/NAME`` (``audio/K_NAME`` on a clash)."""
    names: dict[Path, str] = {}
    used: set[str] = set()
    for k, stem in enumerate(stems):
        key = stem.path.resolve()
        if key in names:
            continue
        name = f"audio/{stem.path.name}"
        if name in used:
            name = f"audio/{k}_{stem.path.name}"
        used.add(name)
        names[key] = name
    return names


def project_xml(setting: ConsoleSetting, stems: list[StemFile], output: Path, *, embed: bool = False) -> bytes:
    """``project.xml`` of the session (``output``: where the ``.dawproject`` goes, for relative paths)."""
    inside = embedded_names(stems)
    paths = [
        (inside[s.path.resolve()], False) if embed else (relative_path(s.path, output.parent), True) for s in stems
    ]
    return _xml(_Builder(setting).project(stems, paths))


def write_dawproject(
    setting: ConsoleSetting, stems: list[StemFile], output: Path, *, embed: bool = False
) -> Callable[[BinaryIO], None]:
    """A function that writes the ``.dawproject`` container to a binary file (built before any writing)."""
    project = project_xml(setting, stems, output, embed=embed)
    meta = _xml(metadata(output.stem, setting))
    audio = list(embedded_names(stems).items()) if embed else []

    def write(f: BinaryIO) -> None:
        with zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("metadata.xml", meta)
            z.writestr("project.xml", project)
            for path, name in audio:
                z.write(path, name, compress_type=zipfile.ZIP_STORED)  # audio barely deflates

    return write


__all__ = ["BAND_TYPES", "VERSION", "pan_to_normalized", "project_xml", "write_dawproject"]
