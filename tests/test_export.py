"""``gradmix export``: a console as a DAWproject 1.0 or REAPER session, read back and checked value by value."""

from __future__ import annotations

import math
import re
import zipfile
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import require
from gradmix.cli.main import main
from gradmix.console import ConsoleSetting, Entry
from gradmix.daw import export_session
from gradmix.dsp.biquad import biquad_coefficients, frequency_response_db
from gradmix.dsp.dynamics import GATE_RATIO, compressor, limiter
from gradmix.dsp.eq import graphic_eq_centres_hz
from gradmix.effects import ParametricEQ, create
from gradmix.errors import GradmixError

SR = 44100
SCHEMAS = Path(__file__).parent / "data" / "dawproject"
STEMS = [("kick.wav", SR, 1, 1.0, "FLOAT"), ("gtr.wav", 48000, 2, 0.75, "FLOAT"), ("vox.flac", SR, 1, 0.5, "PCM_16")]
GRAPHIC = [3.0, -2.0, 0.0, 4.5, -6.0, 1.0, 2.5, -1.5, 0.5, 6.0]


def entry(type_name: str, config: dict | None = None, **params) -> Entry:
    effect = create(type_name, **(config or {}))
    return Entry(effect, effect.complete(params))


def make_session(folder: Path) -> Path:
    """Three stems (mono wav, stereo wav at 48 kHz, mono flac) and a console that uses every kind of entry."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, rate, ch, sec, subtype in STEMS:
        sf.write(
            folder / name, (rng.standard_normal((int(sec * rate), ch)) * 0.1).astype(np.float32), rate, subtype=subtype
        )
    s = ConsoleSetting.neutral(["kick", "gtr", "vox"], [n for n, *_ in STEMS], sample_rate=SR)
    kick = s.tracks[0]
    kick.chain[0].params["gain_db"] = -6.0
    kick.chain[1].params.update(
        freq_hz=[80.0, 200.0, 900.0, 2500.0, 5000.0, 9000.0],
        gain_db=[3.0, -2.5, 1.0, 0.0, -4.0, 2.0],
        q=[0.7, 1.5, 2.0, 1.0, 3.0, 0.9],
    )
    kick.chain[2].params.update(
        threshold_db=-20.0, ratio=4.0, attack_ms=5.0, release_ms=80.0, knee_db=3.0, makeup_db=2.0
    )
    kick.chain[3].params["pan"] = -0.5
    kick.sends = {"reverb": -12.0, "delay": -20.0}
    shapes = ["highpass", "low_shelf", "peak", "notch", "bandpass", "high_shelf", "lowpass"]
    eq = ParametricEQ(shapes)
    s.tracks[1].chain = [
        entry("gain", gain_db=3.0),
        Entry(
            eq,
            eq.complete(
                {
                    "freq_hz": [40.0, 120.0, 700.0, 1000.0, 3000.0, 8000.0, 16000.0],
                    "gain_db": [0.0, 2.0, -3.0, 0.0, 0.0, 1.5, 0.0],
                    "q": [0.707, 0.8, 1.2, 8.0, 2.0, 0.707, 0.6],
                }
            ),
        ),
        entry("distortion", {"shape": "soft_clip"}, drive_db=9.0, tone_db=-2.0, mix=0.4),
        entry("gain", gain_db=-1.5),
        entry("width", width=1.4),
        entry("balance", pan=0.3),
        entry(
            "expander",
            threshold_db=-45.0,
            ratio=2.5,
            attack_ms=2.0,
            release_ms=150.0,
            knee_db=4.0,
            range_db=30.0,
            makeup_db=1.0,
        ),
        entry("pan", pan=0.25),
    ]
    s.tracks[1].sends = {"delay": -9.0}
    s.tracks[2].chain = [
        entry("graphic_eq", {"bands": 10}, gain_db=GRAPHIC),
        entry("gate", threshold_db=-55.0, attack_ms=0.5, release_ms=200.0, range_db=40.0, knee_db=2.0),
        entry("limiter", {"lookahead_ms": 3.0}, ceiling_db=-3.0, release_ms=60.0, gain_db=4.0),
        entry("gain", gain_db=-2.0),
    ]
    s.tracks[2].sends = {"reverb": -18.0}
    s.buses[0].chain[0].params.update(decay_s=[2.5, 2.0, 1.5, 1.0], predelay_ms=25.0)
    s.buses[1].chain[0].params.update(time_ms=375.0, feedback=0.45)
    s.master.insert(0, entry("gain", gain_db=1.5))
    s.master[2].params.update(threshold_db=-10.0, ratio=2.0, attack_ms=30.0, release_ms=250.0)
    s.master[3].params.update(ceiling_db=-1.0, release_ms=120.0, gain_db=2.0)
    return s.save(folder / "console.json")


@pytest.fixture
def song(tmp_path) -> Path:
    return make_session(tmp_path / "song")


def close(written: str, expected: float, rel: float = 1e-9) -> bool:
    return math.isclose(float(written), float(expected), rel_tol=rel, abs_tol=1e-12)


# ---- DAWproject -------------------------------------------------------------------------------------------


def read_dawproject(path: Path) -> tuple[ET.Element, ET.Element, zipfile.ZipFile]:
    z = zipfile.ZipFile(path)
    return ET.fromstring(z.read("project.xml")), ET.fromstring(z.read("metadata.xml")), z


def param(parent: ET.Element, tag: str, unit: str) -> float:
    el = parent.find(tag)
    assert el is not None, f"{parent.tag} has no {tag}"
    assert el.get("unit") == unit, (tag, el.get("unit"), unit)
    return float(el.get("value"))


def gains(chain: list[Entry]) -> float:
    return sum(e.params["gain_db"] for e in chain if e.effect.type_name == "gain")


def test_dawproject_holds_every_value_of_the_console(song, tmp_path):
    setting = ConsoleSetting.load(song)
    out = tmp_path / "out" / "session.dawproject"
    out.parent.mkdir()
    assert export_session(setting, "dawproject", out, stems_dir=song.parent) == out
    root, meta, z = read_dawproject(out)
    assert sorted(z.namelist()) == ["metadata.xml", "project.xml"]
    assert root.tag == "Project" and root.get("version") == "1.0"
    assert root.find("Application").get("name") == "gradmix"
    assert meta.find("Title").text == "session"

    tracks = root.findall("Structure/Track")
    assert [t.get("name") for t in tracks] == ["kick", "gtr", "vox", "reverb", "delay", "Master"]
    channels = [t.find("Channel") for t in tracks]
    assert [c.get("role") for c in channels] == ["regular"] * 3 + ["effect"] * 2 + ["master"]
    master_id = channels[-1].get("id")
    assert all(c.get("destination") == master_id for c in channels[:-1]) and channels[-1].get("destination") is None
    by_id = {c.get("id"): t.get("name") for t, c in zip(tracks, channels)}

    for t, ch in zip(setting.tracks + setting.buses, channels):  # fader, pan, sends
        assert close(param(ch, "Volume", "linear"), 10 ** (gains(t.chain) / 20))
        pans = [e.params["pan"] for e in t.chain if e.effect.type_name == "pan"]
        assert close(param(ch, "Pan", "normalized"), (pans[0] + 1) / 2 if pans else 0.5)
        sends = {by_id[s.get("destination")]: s for s in ch.findall("Sends/Send")}
        assert sorted(sends) == sorted(getattr(t, "sends", {}))
        for bus, level_db in getattr(t, "sends", {}).items():
            assert sends[bus].get("type") == "post"
            assert close(param(sends[bus], "Volume", "linear"), 10 ** (level_db / 20))
    assert close(param(channels[0], "Volume", "linear"), 10 ** (-6 / 20))
    assert close(param(channels[0], "Pan", "normalized"), 0.25)
    assert close(param(channels[1], "Volume", "linear"), 10 ** (1.5 / 20))
    assert close(param(channels[-1], "Volume", "linear"), 10 ** (1.5 / 20))

    # kick: EQ bands, compressor (threshold moved by the -6 dB of gain before it, now on the fader)
    kick = setting.tracks[0]
    devices = list(channels[0].find("Devices"))
    assert [d.tag for d in devices] == ["Equalizer", "Compressor"]
    bands = devices[0].findall("Band")
    eq = kick.chain[1]
    assert [b.get("type") for b in bands] == ["lowShelf", "bell", "bell", "bell", "bell", "highShelf"]
    for k, b in enumerate(bands):
        assert close(param(b, "Freq", "hertz"), eq.params["freq_hz"][k])
        assert close(param(b, "Gain", "decibel"), eq.params["gain_db"][k])
        assert close(param(b, "Q", "linear"), eq.params["q"][k])
    comp = devices[1]
    assert close(param(comp, "Threshold", "decibel"), -20.0 - (-6.0))
    assert close(param(comp, "Ratio", "linear"), 4.0)
    assert close(param(comp, "Attack", "seconds"), 0.005)
    assert close(param(comp, "Release", "seconds"), 0.080)
    assert close(param(comp, "OutputGain", "decibel"), 2.0)
    assert comp.find("AutoMakeup").get("value") == "false"
    assert comp.get("deviceRole") == "audioFX"
    comment = tracks[0].get("comment")
    assert "knee_db=3 dB" in comment and "threshold_db=-20 dB in gradmix, written as -14 dB" in comment

    # gtr: every shape, expander as a NoiseGate, the unexpressible effects named with their values
    devices = list(channels[1].find("Devices"))
    assert [d.tag for d in devices] == ["Equalizer", "NoiseGate"]
    bands = devices[0].findall("Band")
    assert [b.get("type") for b in bands] == [
        "highPass",
        "lowShelf",
        "bell",
        "notch",
        "bandPass",
        "highShelf",
        "lowPass",
    ]
    for b, shape in zip(bands, setting.tracks[1].chain[1].effect.shapes):
        assert (b.find("Gain") is None) == (shape not in ("peak", "low_shelf", "high_shelf"))
        assert b.get("order") == ("2" if shape in ("highpass", "lowpass") else None)
    assert close(param(bands[3], "Freq", "hertz"), 1000.0) and close(param(bands[3], "Q", "linear"), 8.0)
    gate = devices[1]
    assert close(param(gate, "Threshold", "decibel"), -45.0 - 1.5)  # +3 dB and -1.5 dB of gain before it
    assert close(param(gate, "Ratio", "linear"), 2.5)
    assert close(param(gate, "Range", "decibel"), -30.0)
    assert close(param(gate, "Attack", "seconds"), 0.002) and close(param(gate, "Release", "seconds"), 0.15)
    comment = tracks[1].get("comment")
    for text in (
        "chain[2] distortion(shape=soft_clip): drive_db=9 dB, tone_db=-2 dB, mix=0.4",
        "chain[4] width: width=1.4",
        "chain[5] balance: pan=0.3",
        "knee_db=4 dB, makeup_db=1 dB",
        "fader = the sum of the chain's gain effects: 3 + -1.5 = 1.5 dB",
    ):
        assert text in comment, (text, comment)

    # vox: the graphic EQ as bell bands that realise its gains, the gate, the limiter, the gain after them
    devices = list(channels[2].find("Devices"))
    assert [d.tag for d in devices] == ["Equalizer", "NoiseGate", "Limiter"]
    bands = devices[0].findall("Band")
    assert len(bands) == 10 and {b.get("type") for b in bands} == {"bell"}
    f = torch.tensor([param(b, "Freq", "hertz") for b in bands], dtype=torch.float64)
    g = torch.tensor([param(b, "Gain", "decibel") for b in bands], dtype=torch.float64)
    q = torch.tensor([param(b, "Q", "linear") for b in bands], dtype=torch.float64)
    assert torch.allclose(f, torch.tensor(graphic_eq_centres_hz(10), dtype=torch.float64))
    centres = graphic_eq_centres_hz(10)
    response = frequency_response_db(
        *biquad_coefficients("peak", sample_rate=SR, freq_hz=f, gain_db=g, q=q), centres, SR
    )
    assert (response - torch.tensor(GRAPHIC, dtype=torch.float64)).abs().max() < 0.2  # dB, the EQ's own tolerance
    assert close(param(devices[1], "Ratio", "linear"), GATE_RATIO)
    assert close(param(devices[1], "Threshold", "decibel"), -55.0)  # the gain comes after it
    assert close(param(devices[1], "Range", "decibel"), -40.0)
    lim = devices[2]
    assert close(param(lim, "Threshold", "decibel"), -3.0) and close(param(lim, "InputGain", "decibel"), 4.0)
    assert close(param(lim, "Attack", "seconds"), 0.003) and close(param(lim, "Release", "seconds"), 0.06)
    assert close(param(channels[2], "Volume", "linear"), 10 ** (-2 / 20))
    assert close(param(channels[2], "Pan", "normalized"), 0.5)
    assert "graphic_eq(bands=10): gain_db=[3, -2, 0, 4.5, -6, 1, 2.5, -1.5, 0.5, 6] dB" in tracks[2].get("comment")

    # buses: their effects in the comment; master: its chain as devices, thresholds after its gain moved
    assert "reverb(seed=0): decay_s=[2.5, 2, 1.5, 1] s, predelay_ms=25 ms, mix=1" in tracks[3].get("comment")
    assert "delay: time_ms=375 ms, feedback=0.45, mix=1" in tracks[4].get("comment")
    assert channels[3].find("Devices") is None and channels[4].find("Devices") is None
    devices = list(channels[-1].find("Devices"))
    assert [d.tag for d in devices] == ["Equalizer", "Compressor", "Limiter"]
    assert close(param(devices[1], "Threshold", "decibel"), -10.0 - 1.5)
    assert close(param(devices[2], "Threshold", "decibel"), -1.0 - 1.5)
    assert close(param(devices[2], "InputGain", "decibel"), 2.0)

    # arrangement: one clip per stem at 0 s, as long as the file, referring to it relative to the project
    lanes = root.find("Arrangement/Lanes")
    assert lanes.get("timeUnit") == "seconds"
    track_lanes = lanes.findall("Lanes")
    assert [tracks_by_lane.get("track") for tracks_by_lane in track_lanes] == [t.get("id") for t in tracks[:3]]
    for lane, (name, rate, ch, sec, _) in zip(track_lanes, STEMS):
        clips = lane.findall("Clips/Clip")
        assert len(clips) == 1
        clip, audio = clips[0], clips[0].find("Audio")
        assert float(clip.get("time")) == 0.0
        assert close(clip.get("duration"), int(sec * rate) / rate) and close(audio.get("duration"), sec)
        assert int(audio.get("sampleRate")) == rate and int(audio.get("channels")) == ch
        assert audio.get("timeUnit") == "seconds"
        file = audio.find("File")
        assert file.get("external") == "true" and file.get("path") == f"../song/{name}"
        assert (out.parent / file.get("path")).resolve() == (song.parent / name).resolve()


def test_dawproject_follows_the_format_schema(song, tmp_path):
    xmlschema = require("xmlschema")
    out = tmp_path / "s.dawproject"
    export_session(ConsoleSetting.load(song), "dawproject", out, stems_dir=song.parent, embed=True)
    root, _, z = read_dawproject(out)
    project = xmlschema.XMLSchema(SCHEMAS / "Project.xsd")
    project.validate(z.read("project.xml").decode())  # element names and order, units, ids and references
    xmlschema.XMLSchema(SCHEMAS / "MetaData.xsd").validate(z.read("metadata.xml").decode())
    broken = z.read("project.xml").decode().replace('unit="hertz"', 'unit="Hz"', 1)
    assert not project.is_valid(broken)  # the check can fail


def test_dawproject_embeds_the_stems(song, tmp_path, capsys):
    out = tmp_path / "embedded.dawproject"
    assert main(["export", str(song), "--format", "dawproject", "-o", str(out), "--embed"]) == 0
    assert "with the stems inside" in capsys.readouterr().out
    root, _, z = read_dawproject(out)
    files = root.findall(".//Audio/File")
    assert [f.get("path") for f in files] == [f"audio/{name}" for name, *_ in STEMS]
    assert {f.get("external") for f in files} == {"false"}
    for name, *_ in STEMS:
        assert z.read(f"audio/{name}") == (song.parent / name).read_bytes()


def test_same_console_same_files(song, tmp_path):
    setting = ConsoleSetting.load(song)
    for fmt, name in (("dawproject", "a.dawproject"), ("reaper", "a.RPP")):
        a, b = tmp_path / name, tmp_path / f"b-{name}"
        export_session(setting, fmt, a, stems_dir=song.parent)
        export_session(setting, fmt, b, stems_dir=song.parent)
        if fmt == "dawproject":
            assert zipfile.ZipFile(a).read("project.xml") == zipfile.ZipFile(b).read("project.xml")
        else:
            assert a.read_text() == b.read_text()


# ---- REAPER -----------------------------------------------------------------------------------------------

_TOKEN = re.compile(r'"([^"]*)"|\'([^\']*)\'|`([^`]*)`|(\S+)')


def tokens(line: str) -> list[str]:
    return [next(g for g in m.groups() if g is not None) for m in _TOKEN.finditer(line)]


def parse_rpp(text: str) -> dict:
    """A tiny RPP reader: ``{"tag", "params", "lines" (token lists; notes lines kept whole), "children"}``."""
    top = {"tag": None, "params": [], "lines": [], "children": []}
    stack = [top]
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("<"):
            toks = tokens(line[1:])
            node = {"tag": toks[0], "params": toks[1:], "lines": [], "children": []}
            stack[-1]["children"].append(node)
            stack.append(node)
        elif line == ">":
            stack.pop()
        elif line.startswith("|"):
            stack[-1]["lines"].append([line])
        elif line:
            stack[-1]["lines"].append(tokens(line))
    assert len(stack) == 1 and len(top["children"]) == 1, "unbalanced chunks"
    return top["children"][0]


def values(node: dict, key: str) -> list[list[str]]:
    return [line[1:] for line in node["lines"] if line[0] == key]


def child(node: dict, tag: str) -> list[dict]:
    return [c for c in node["children"] if c["tag"] == tag]


def notes(node: dict) -> str:
    return "\n".join(line[0][1:] for line in node["lines"])


def test_reaper_holds_every_value_of_the_console(song, tmp_path, capsys):
    setting = ConsoleSetting.load(song)
    out = tmp_path / "session.RPP"
    assert main(["export", str(song), "--format", "reaper", "-o", str(out)]) == 0  # stems: the console's folder
    assert f"wrote {out}" in capsys.readouterr().out
    project = parse_rpp(out.read_text())
    assert project["tag"] == "REAPER_PROJECT"
    assert values(project, "SAMPLERATE")[0][0] == str(SR)
    tracks = child(project, "TRACK")
    assert [values(t, "NAME")[0][0] for t in tracks] == ["kick", "gtr", "vox", "reverb", "delay"]
    for t, strip in zip(tracks, setting.tracks + setting.buses):
        vol, pan = values(t, "VOLPAN")[0][:2]
        assert close(vol, 10 ** (gains(strip.chain) / 20), 1e-9)
        pans = [e.params["pan"] for e in strip.chain if e.effect.type_name == "pan"]
        assert close(pan, pans[0] if pans else 0.0, 1e-9)
        assert values(t, "MAINSEND")[0][0] == "1"
        assert values(t, "TRACKID")[0][0] == t["params"][0]
    for t, (name, rate, ch, sec, _) in zip(tracks, STEMS):
        (item,) = child(t, "ITEM")
        assert values(item, "POSITION")[0] == ["0"]
        assert close(values(item, "LENGTH")[0][0], int(sec * rate) / rate, 1e-9)
        (source,) = child(item, "SOURCE")
        assert source["params"] == ["FLAC" if name.endswith(".flac") else "WAVE"]
        path = values(source, "FILE")[0][0]
        assert path == f"song/{name}" and (out.parent / path).resolve() == (song.parent / name).resolve()
    for t in tracks[3:]:
        assert child(t, "ITEM") == []
    # receives on the bus tracks: source index, post-fader mode 0, linear volume
    receives = {values(t, "NAME")[0][0]: values(t, "AUXRECV") for t in tracks[3:]}
    assert sorted((int(r[0]), r[1]) for r in receives["reverb"]) == [(0, "0"), (2, "0")]
    assert sorted((int(r[0]), r[1]) for r in receives["delay"]) == [(0, "0"), (1, "0")]
    for bus, rows in receives.items():
        for r in rows:
            assert close(r[2], 10 ** (setting.tracks[int(r[0])].sends[bus] / 20), 1e-9)
    assert close(values(project, "MASTER_VOLUME")[0][0], 10 ** (1.5 / 20), 1e-9)

    # everything else is in the notes: the project's, and each track's SWS notes keyed by its GUID
    (project_notes,) = child(project, "NOTES")
    text = notes(project_notes)
    for line in (
        "chain[2] compressor: threshold_db=-20 dB, ratio=4, attack_ms=5 ms, release_ms=80 ms, knee_db=3 dB, "
        "makeup_db=2 dB (with the gain on the fader before this plugin: -14 dB)",
        "eq: low_shelf 80 Hz +3 dB Q 0.7; peak 200 Hz -2.5 dB Q 1.5",
        "chain[2] distortion(shape=soft_clip): drive_db=9 dB, tone_db=-2 dB, mix=0.4",
        "chain[0] graphic_eq(bands=10): gain_db=[3, -2, 0, 4.5, -6, 1, 2.5, -1.5, 0.5, 6] dB",
        "limiter(lookahead_ms=3.0): ceiling_db=-3 dB, release_ms=60 ms, gain_db=4 dB",
        "chain[0] reverb(seed=0): decay_s=[2.5, 2, 1.5, 1] s, predelay_ms=25 ms, mix=1",
        "sends (post-fader; AUXRECV on the bus tracks): reverb -12 dB, delay -20 dB",
    ):
        assert line in text, line
    assert all(line[0].startswith("|") for line in project_notes["lines"])
    (extensions,) = child(project, "EXTENSIONS")
    track_notes = child(extensions, "S&M_TRACKNOTES")
    assert [n["params"][0] for n in track_notes] == [t["params"][0] for t in tracks]
    assert "chain[5] balance: pan=0.3" in notes(track_notes[1])
    assert "chain[0] delay: time_ms=375 ms, feedback=0.45, mix=1" in notes(track_notes[4])


def test_reaper_quotes_names_with_quotes(song, tmp_path):
    setting = ConsoleSetting.load(song)
    setting.tracks[0].name = 'the "big" kick'
    out = tmp_path / "q.RPP"
    export_session(setting, "reaper", out, stems_dir=song.parent)
    tracks = child(parse_rpp(out.read_text()), "TRACK")
    assert values(tracks[0], "NAME")[0] == ['the "big" kick']


# ---- the conversions are exact where the docs say so ---------------------------------------------------------


def test_moving_the_gain_behind_the_dynamics_changes_nothing():
    """A gain before a compressor or limiter equals the same gain after it with the threshold moved by it."""
    x = torch.randn(1, 2, 8000, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 0.3
    for g_db in (-13.8, 6.0):
        g = 10 ** (g_db / 20)
        kw = dict(sample_rate=SR, ratio=4.0, attack_ms=5.0, release_ms=80.0, knee_db=3.0, makeup_db=2.0)
        before = compressor(x * g, threshold_db=-20.0, **kw)
        after = compressor(x, threshold_db=-20.0 - g_db, **kw) * g
        assert (before - after).abs().max() < 1e-9
        before = limiter(x * g, sample_rate=SR, ceiling_db=-3.0, release_ms=60.0, gain_db=4.0)
        after = limiter(x, sample_rate=SR, ceiling_db=-3.0 - g_db, release_ms=60.0, gain_db=4.0) * g
        assert (before - after).abs().max() < 1e-9


# ---- bad input --------------------------------------------------------------------------------------------


def test_bad_inputs_give_one_line_and_write_nothing(song, tmp_path, capsys):
    folder = song.parent
    console_text = song.read_text()
    out = tmp_path / "s.dawproject"
    cases = [
        (["--format", "dawproject", "-o", str(song)], "would overwrite an input file"),
        (["--format", "reaper", "-o", str(folder / "kick.wav")], "would overwrite an input file"),
        (["--format", "dawproject", "-o", str(tmp_path / "nowhere" / "s.dawproject")], "output folder does not exist"),
        (["--format", "dawproject", "-o", str(out), "--stems", str(tmp_path / "nope")], "no such folder"),
        (["--format", "reaper", "-o", str(out), "--embed"], "--embed needs --format dawproject"),
    ]
    for args, message in cases:
        assert main(["export", str(song), *args]) == 2, args
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, (args, err)
    assert main(["export", str(tmp_path / "none.json"), "--format", "reaper", "-o", str(out)]) == 2
    assert "no such console file" in capsys.readouterr().err
    (folder / "gtr.wav").unlink()
    assert main(["export", str(song), "--format", "dawproject", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "gtr.wav: the console names this file, but it is missing" in err, err
    assert song.read_text() == console_text and not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["song"]  # no temp file left behind
    with pytest.raises(SystemExit) as exc:
        main(["export", str(song), "--format", "logic", "-o", str(out)])
    assert exc.value.code == 2 and "invalid choice: 'logic'" in capsys.readouterr().err


def _truncated(path: Path) -> str:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return "truncated"


def _nan(path: Path) -> str:
    x = np.full((SR, 2), 0.1, np.float32)
    x[100, 0] = np.nan
    sf.write(path, x, 48000, subtype="FLOAT")
    return "contains NaN or Inf samples"


def _three_channels(path: Path) -> str:
    sf.write(path, np.full((SR, 3), 0.1, np.float32), 48000, subtype="FLOAT")
    return "has 3 channels"


@pytest.mark.parametrize("spoil", [_truncated, _nan, _three_channels])
def test_embedding_refuses_stems_mix_would_refuse_in_one_line(song, tmp_path, capsys, spoil):
    message = spoil(song.parent / "gtr.wav")
    out = tmp_path / "s.dawproject"
    assert main(["export", str(song), "--format", "dawproject", "-o", str(out), "--embed"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"gradmix: error: {song.parent / 'gtr.wav'}: ") and message in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["song"]


@pytest.mark.parametrize(
    "fmt, name, message",
    [
        ("reaper", "s.dawproject", "a reaper session is a .rpp file, not '.dawproject'"),
        ("dawproject", "s.RPP", "a dawproject session is a .dawproject file, not '.RPP'"),
        ("dawproject", "session", "a dawproject session is a .dawproject file, not 'no suffix'"),
    ],
)
def test_a_suffix_that_is_not_the_formats_is_one_line(song, tmp_path, capsys, fmt, name, message):
    out = tmp_path / name
    assert main(["export", str(song), "--format", fmt, "-o", str(out)]) == 2
    assert capsys.readouterr().err == f"gradmix: error: {out}: {message}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["song"]


def test_export_session_refuses_what_a_daw_cannot_open(song, tmp_path):
    setting = ConsoleSetting.load(song)
    out = tmp_path / "s.RPP"
    with pytest.raises(GradmixError, match="format 'logic' is not one of dawproject, reaper"):
        export_session(setting, "logic", out, stems_dir=song.parent)
    setting.tracks[1].file = None
    with pytest.raises(GradmixError, match=r"tracks\[1\] \('gtr'\) names no file"):
        export_session(setting, "reaper", out, stems_dir=song.parent)
    setting.tracks[1].file = "song.stem.mp4#vocals"
    with pytest.raises(GradmixError, match="stream of a .stem.mp4"):
        export_session(setting, "reaper", out, stems_dir=song.parent)
    setting.tracks[1].file = "console.json"
    with pytest.raises(GradmixError, match="console.json: not a readable audio file"):
        export_session(setting, "reaper", out, stems_dir=song.parent)
    assert not out.exists()
