"""``gradmix dataset midi``: scores rendered part by part into five or more dry stems."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from conftest import require, require_tool
from gradmix.data.midi import DRUMS, Note, arrange, drum_sources, program_family


def test_the_drum_rule_in_four_and_in_three():
    four = {s.name: [round(n.start, 6) for n in s.notes] for s in drum_sources(0.5, 4, 4.0)}  # 2 bars of 4/4
    assert four["kick"] == [0.0, 1.0, 2.0, 3.0] and four["snare"] == [0.5, 1.5, 2.5, 3.5]
    assert four["hihat"] == [round(0.25 * k, 6) for k in range(16)]
    three = {s.name: [round(n.start, 6) for n in s.notes] for s in drum_sources(0.5, 3, 1.5)}  # 1 bar of 3/4
    assert three["kick"] == [0.0] and three["snare"] == [0.5, 1.0] and len(three["hihat"]) == 6
    assert {s.notes[0].pitch for s in drum_sources(0.5, 4, 1.0)} == set(DRUMS.values())


def test_one_high_melody_becomes_six_sources_with_a_bass_line_below_e3():
    melody = [Note(0.5 * k, 0.5, 72 + (k % 5), 0) for k in range(16)]
    sources = arrange([melody], 0.5, 4, 8.0, np.random.default_rng(0))
    names = [s.name for s in sources]
    assert len(sources) >= 5 and len(set(names)) == len(names)
    bass = next(s for s in sources if s.name.startswith("bassline"))
    assert float(np.median([n.pitch for n in bass.notes])) <= 52
    pad = next(s for s in sources if s.name.startswith("pad"))
    assert [n.pitch for n in pad.notes] == [n.pitch for n in melody]  # the doubling
    starts = np.array([n.start for n in sources[0].notes]) - np.array([n.start for n in melody])
    assert 0 < np.abs(starts).max() <= 0.02  # humanised, within 20 ms
    assert len({n.velocity for n in sources[0].notes}) > 1
    again = arrange([list(melody)], 0.5, 4, 8.0, np.random.default_rng(0))
    assert [(s.name, [n.start for n in s.notes]) for s in again] == [
        (s.name, [n.start for n in s.notes]) for s in sources
    ]


def test_four_parts_get_instruments_of_several_families():
    parts = [[Note(0.5 * k, 0.5, base + (k % 3), 0) for k in range(8)] for base in (43, 55, 62, 70)]
    sources = arrange(parts, 0.5, 4, 4.0, np.random.default_rng(3))
    played = [s for s in sources if s.program is not None and s.rule.startswith("score part")]
    assert len(played) == 4 and len({program_family(s.program) for s in played}) == 4
    assert next(s for s in played if s.rule == "score part 1").label == "bass"  # the lowest part
    assert next(s for s in played if s.rule == "score part 4").label == "lead"
    assert not any(s.name.startswith("bassline") for s in sources)  # the score has a bass


def test_a_folder_of_midi_files_renders_resumably_into_a_dataset(tmp_path):
    require("mido")
    require("music21")
    require_tool("fluidsynth")
    import mido

    from gradmix.cli.main import main
    from gradmix.data.songs import find_songs

    scores = tmp_path / "scores"
    scores.mkdir()
    midi = mido.MidiFile(ticks_per_beat=480)
    for channel, base in ((0, 48), (1, 67)):
        track = mido.MidiTrack()
        track.append(mido.Message("program_change", channel=channel, program=0, time=0))
        for k in range(8):
            track.append(mido.Message("note_on", channel=channel, note=base + k % 4, velocity=80, time=0))
            track.append(mido.Message("note_off", channel=channel, note=base + k % 4, time=240))
        midi.tracks.append(track)
    midi.save(str(scores / "tune.mid"))
    (scores / "broken.mid").write_bytes(b"not a midi file")
    out = tmp_path / "data"
    assert main(["dataset", "midi", str(out), "--source", str(scores), "--seconds", "3", "--workers", "1"]) == 0
    song = out / "0001-tune"
    meta = json.loads((song / "metadata.json").read_text())
    assert len(meta["stems"]) >= 5 and meta["licence"] and meta["source"].endswith("tune.mid")
    for name in meta["stems"]:
        audio, rate = sf.read(song / f"{name}.wav")
        assert rate == 44100 and audio.shape == (3 * 44100, 2)
        assert np.isfinite(audio).all() and np.abs(audio).max() > 1e-4, name
    assert not list(out.glob(".*"))  # no temporary folder left, the broken score wrote nothing
    (found,) = find_songs(out)
    assert len(found.stems) == len(meta["stems"]) and {"kick", "snare", "hihat", "bass"} <= {
        s.label for s in found.stems
    }
    before = (song / "metadata.json").stat().st_mtime_ns
    assert main(["dataset", "midi", str(out), "--source", str(scores), "--seconds", "3"]) == 0
    assert (song / "metadata.json").stat().st_mtime_ns == before  # resumed: nothing redone


@pytest.mark.parametrize(
    "args,message", [(["--seconds", "0"], "is not positive"), (["--source", "/nonexistent"], "no such folder")]
)
def test_bad_arguments_get_one_line(tmp_path, capsys, args, message):
    from gradmix.cli.main import main

    assert main(["dataset", "midi", str(tmp_path / "out"), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
