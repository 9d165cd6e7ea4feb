"""Dry stems of LMMS's own sounds: the library's folders, the seeded patterns, neutral mixing, and a real build."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np
import pytest
import soundfile as sf

from conftest import require_tool
from gradmix.cli.main import main
from gradmix.data import find_songs
from gradmix.data.sounds import (
    BASE_NOTE,
    PENTATONIC,
    TICKS_PER_BAR,
    build_dataset,
    is_percussive,
    library_sounds,
    pattern,
    sound_project,
    zyn_track,
)

PRESET = """<?xml version="1.0"?>
<!DOCTYPE lmms-project>
<lmms-project version="1.0" type="instrumenttracksettings">
  <head/>
  <instrumenttracksettings name="Clap" type="0">
    <instrumenttrack pan="-40" fxch="3" basenote="57" vol="150">
      <instrument name="kicker"><kicker decay="300" startfreq="150" endfreq="40" gain="1" noise="1"/></instrument>
      <fxchain enabled="1" numofeffects="0"/>
    </instrumenttrack>
  </instrumenttracksettings>
</lmms-project>
"""

ZYN = """<?xml version="1.0" encoding="UTF-8"?>
<ZynAddSubFX-data version-major="1" version-minor="0">
<INSTRUMENT><INFO><string name="name">Echo pad</string></INFO>
<INSTRUMENT_KIT><par name="kit_mode" value="0"/></INSTRUMENT_KIT>
<INSTRUMENT_EFFECTS><INSTRUMENT_EFFECT id="0"><EFFECT><par name="type" value="4"/></EFFECT></INSTRUMENT_EFFECT>
</INSTRUMENT_EFFECTS></INSTRUMENT>
</ZynAddSubFX-data>
"""


def fake_library(root: Path) -> Path:
    """An LMMS data folder: two samples (one silent, one corrupt), a shape (not a sound), a DrumSynth kit,
    a Kicker preset and a ZynAddSubFX bank."""
    rate = 44100
    t = np.arange(int(0.3 * rate)) / rate
    hit = (np.sin(2 * np.pi * 220 * t) * np.exp(-t / 0.05)).astype(np.float32)
    (root / "samples" / "drums").mkdir(parents=True)
    sf.write(root / "samples" / "drums" / "tom.wav", hit, rate)
    sf.write(root / "samples" / "drums" / "silence.wav", np.zeros_like(hit), rate)
    (root / "samples" / "drums" / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    (root / "samples" / "shapes").mkdir()
    sf.write(root / "samples" / "shapes" / "cycle.wav", hit[:100], rate)
    (root / "samples" / "drumsynth" / "kit").mkdir(parents=True)
    (root / "samples" / "drumsynth" / "kit" / "snare.ds").write_text("[General]\n")
    (root / "presets" / "Kicker").mkdir(parents=True)
    (root / "presets" / "Kicker" / "Clap.xpf").write_text(PRESET)
    (root / "presets" / "ZynAddSubFX" / "Pads").mkdir(parents=True)
    (root / "presets" / "ZynAddSubFX" / "Pads" / "0001-Echo pad.xiz").write_bytes(gzip.compress(ZYN.encode()))
    return root


def test_library_folders_become_songs(tmp_path):
    lib = fake_library(tmp_path)
    groups = library_sounds(lib)
    assert {k: [p.name for p in v] for k, v in groups.items()} == {
        "samples-drums": ["broken.wav", "silence.wav", "tom.wav"],
        "drumsynth-kit": ["snare.ds"],
        "presets-Kicker": ["Clap.xpf"],
        "zynaddsubfx-Pads": ["0001-Echo pad.xiz"],
    }
    assert [is_percussive(g) for g in groups] == [True, True, True, False]


@pytest.mark.parametrize("percussive", [True, False])
def test_patterns_are_seeded_fill_the_length_and_keep_to_their_rules(percussive):
    bpm, notes = pattern(percussive, 8.0, np.random.default_rng(3))
    assert (bpm, notes) == pattern(percussive, 8.0, np.random.default_rng(3))
    assert pattern(percussive, 8.0, np.random.default_rng(4))[1] != notes
    ticks = 8.0 * bpm / 60 * TICKS_PER_BAR / 4
    assert notes[0]["pos"] == 0 and max(n["pos"] for n in notes) >= 0.75 * ticks
    assert all(0 <= n["pos"] < ticks and n["len"] > 0 and 60 <= n["vol"] <= 100 for n in notes)
    if percussive:
        assert {n["key"] for n in notes} == {BASE_NOTE}
        assert all(n["pos"] % (TICKS_PER_BAR // 16) == 0 for n in notes)
    else:
        tops = {(n["pos"], n["key"]) for n in notes}
        lowest = {}
        for pos, key in tops:
            lowest[pos] = min(lowest.get(pos, key), key)
        roots = {key for pos, key in tops if key == lowest[pos]}
        assert len(roots) >= 3  # a phrase, not one note repeated
        base = min(roots)
        # every melody note is a pentatonic step of one root (the walk's), its companions a third or fifth up
        assert any(all((k - r) % 12 in PENTATONIC for k in roots) for r in range(base - 12, base + 1))


def test_the_sound_plays_with_neutral_mixing_and_its_effects_off(tmp_path):
    lib = fake_library(tmp_path)
    project = sound_project(lib / "presets" / "Kicker" / "Clap.xpf", lib, 4.0, 0)
    tracks = project.findall("song/trackcontainer/track")
    assert len(tracks) == 1
    node = tracks[0].find("instrumenttrack")
    assert (node.get("vol"), node.get("pan"), node.get("fxch")) == ("100", "0", "0")
    assert node.find("instrument").get("name") == "kicker"
    assert all(c.get("enabled") == "0" for c in project.iter("fxchain"))
    assert project.find("head").get("mastervol") == "100"
    assert len(tracks[0].findall("pattern/note")) >= 1
    sample = sound_project(lib / "samples" / "drums" / "tom.wav", lib, 4.0, 0)
    player = sample.find(".//audiofileprocessor")
    assert Path(player.get("src")) == (lib / "samples" / "drums" / "tom.wav").resolve()
    other = sound_project(lib / "samples" / "drums" / "silence.wav", lib, 4.0, 0)
    assert ET.tostring(other.find(".//pattern")) != ET.tostring(sample.find(".//pattern"))  # seeded by the path


def test_zynaddsubfx_presets_lose_every_effect_unit(tmp_path):
    lib = fake_library(tmp_path)
    track = zyn_track(lib / "presets" / "ZynAddSubFX" / "Pads" / "0001-Echo pad.xiz")
    master = track.find("instrument/zynaddsubfx/ZynAddSubFX-data/MASTER")
    assert master.find("PART/INSTRUMENT/INFO/string").text == "Echo pad"
    types = [p.get("value") for e in master.iter("EFFECT") for p in e.findall("par[@name='type']")]
    assert len(types) == 1 + 4 + 8 and set(types) == {"0"}  # the preset's unit, the master's system and insertion
    plain = tmp_path / "plain.xiz"
    plain.write_text("\n" + ZYN)  # some banks store plain XML, after a blank line
    assert zyn_track(plain).find(".//INSTRUMENT/INFO/string").text == "Echo pad"


def test_build_renders_each_sound_leaves_out_the_bad_ones_and_resumes(tmp_path, capsys):
    require_tool("lmms")
    lib = fake_library(tmp_path / "lmms")
    shutil.rmtree(lib / "presets" / "ZynAddSubFX")  # ZynAddSubFX renders are covered by the real library's
    (lib / "samples" / "drumsynth" / "kit" / "snare.ds").unlink()
    shutil.rmtree(lib / "samples" / "drumsynth")
    out = tmp_path / "sounds"
    assert main(["dataset", "sounds", str(out), "--library", str(lib), "--seconds", "2", "--workers", "1"]) == 0
    err = capsys.readouterr().err
    assert "silence.wav left out (rendered silent)" in err and "broken.wav left out" in err
    songs = {s.name: s for s in find_songs(out)}
    assert set(songs) == {"samples-drums", "presets-Kicker"}
    for song in songs.values():
        assert len(song.stems) == 1
        audio, rate = sf.read(song.stems[0].path, always_2d=True)
        assert rate == 44100 and audio.shape == (2 * 44100, 2) and np.isfinite(audio).all()
        assert np.abs(audio).max() > 0.01
    meta = json.loads((out / "samples-drums" / "metadata.json").read_text())
    assert meta["stems"]["003-tom"]["source"] == str(lib / "samples" / "drums" / "tom.wav")
    assert set(meta["skipped"]) == {str(lib / "samples" / "drums" / n) for n in ("broken.wav", "silence.wav")}
    summary = build_dataset(out, lib, seconds=2.0)
    assert summary["done"] == [] and summary["skipped"] == 2


def test_a_library_without_sounds_is_one_error_line(tmp_path, capsys):
    assert main(["dataset", "sounds", str(tmp_path / "out"), "--library", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no LMMS samples or presets found" in err
