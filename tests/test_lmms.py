"""Real multitracks from LMMS projects: project editing, and one shipped demo song rendered for real."""

from __future__ import annotations

import json
import subprocess
from xml.etree import ElementTree as ET

import numpy as np
import pytest
import soundfile as sf

from conftest import require_tool
from gradmix.cli.main import main
from gradmix.data import find_songs, lmms
from gradmix.data.lmms import (
    PROJECTS_DIR,
    isolate,
    licence_of,
    read_project,
    route,
    shared_nonlinear,
    silent_by_design,
    stem_tracks,
)
from gradmix.errors import GradmixError

SONG = PROJECTS_DIR / "shorties" / "Greshz-CoolSnip.mmpz"


def test_isolate_keeps_one_track_with_neutral_mixing():
    require_tool("lmms")
    root = read_project(PROJECTS_DIR / "shorties" / "DirtyLove.mmpz")
    refs = stem_tracks(root)
    assert len(refs) > 5 and any(r.inside_bb for r in refs) and any(not r.inside_bb for r in refs)
    for ref in (next(r for r in refs if r.inside_bb), next(r for r in refs if not r.inside_bb)):
        edited = isolate(root, ref)
        playing = [t for t in edited.iter("track") if t.get("type") in ("0", "2")]
        assert [t.get("name") for t in playing] == [ref.name]
        node = playing[0].find("instrumenttrack")
        assert (node.get("vol"), node.get("pan"), node.get("fxch")) == ("100", "0", "0")
        assert all(c.get("enabled") == "0" for c in edited.iter("fxchain"))
        bb_tracks = [t for t in edited.find("song/trackcontainer").findall("track") if t.get("type") == "1"]
        assert bool(bb_tracks) == ref.inside_bb  # Beat+Bassline triggers kept only for their own tracks


def test_wet_copy_keeps_the_authors_mixing_and_neutralises_the_master_only():
    require_tool("lmms")
    root = read_project(PROJECTS_DIR / "shorties" / "DirtyLove.mmpz")
    refs = stem_tracks(root)
    ref = next(r for r in refs if r.name == "Bass")
    original = next(t for t in root.iter("track") if t.get("name") == "Bass").find("instrumenttrack")
    assert original.get("fxch") == "2" and original.get("vol") != "100"
    edited = isolate(root, ref, wet=True)
    playing = [t for t in edited.iter("track") if t.get("type") in ("0", "2")]
    assert [t.get("name") for t in playing] == ["Bass"]
    node = playing[0].find("instrumenttrack")
    assert (node.get("vol"), node.get("pan"), node.get("fxch")) == (original.get("vol"), original.get("pan"), "2")
    channels = {c.get("num"): c for c in edited.iter("fxchannel")}
    assert channels["0"].get("volume") == "1" and channels["0"].find("fxchain").get("enabled") == "0"
    authors = {c.get("num"): c for c in root.iter("fxchannel")}
    assert channels["1"].find("fxchain").get("enabled") == authors["1"].find("fxchain").get("enabled") == "1"
    assert authors["0"].find("fxchain").get("enabled") == "1"  # the author's master chain (amplifier, limiter)


def test_routes_and_shared_nonlinear_channels_of_a_real_project():
    """DirtyLove: the drums go through channel 1 ("Beat", which clips) into channel 2, shared by 8 tracks;
    the bass goes through channel 2 only, whose chain is empty."""
    require_tool("lmms")
    root = read_project(PROJECTS_DIR / "shorties" / "DirtyLove.mmpz")
    every = stem_tracks(root)
    refs = {r.name: r for r in every}
    assert route(root, refs["Clap"]) == ["1", "2"] and route(root, refs["Bass"]) == ["2"]
    assert route(root, refs["Pad"]) == []
    shared = shared_nonlinear(root, every)
    assert shared[refs["Clap"].index] == ["1 Beat: Clip"]
    assert refs["Bass"].index not in shared and refs["Pad"].index not in shared
    assert sum(1 for r in every if r.index in shared) == 8
    assert all(silent_by_design(root, r) is None for r in every)
    track = next(t for t in root.iter("track") if t.get("name") == "Bass").find("instrumenttrack")
    track.set("vol", "0")
    assert silent_by_design(root, refs["Bass"]) == "its volume is 0 %"
    track.set("vol", "80")
    next(c for c in root.iter("fxchannel") if c.get("num") == "2").set("muted", "1")
    assert silent_by_design(root, refs["Bass"]) == "its mixer channel is muted or at volume 0"
    jousboxx = read_project(PROJECTS_DIR / "demos" / "Jousboxx-BuzzerBeater.mmpz")
    sidechain = next(r for r in stem_tracks(jousboxx) if r.name == "Sidechain")  # drives the pumping, unheard
    assert "sidechain source" in silent_by_design(jousboxx, sidechain)


def test_licence_from_debian_copyright():
    require_tool("lmms")
    assert licence_of(SONG)["licence"] == "Artistic-2"
    assert licence_of(PROJECTS_DIR / "demos" / "Saber-FinalStep.mmpz")["licence"] == "BSD-2-clause"


def test_render_a_real_demo_song(tmp_path):
    require_tool("lmms")
    out = tmp_path / "lmms"
    assert main(["dataset", "lmms", str(out), "--projects", str(SONG)]) == 0
    song_dir = out / "Greshz-CoolSnip"
    meta = json.loads((song_dir / "metadata.json").read_text())
    assert meta["licence"] == "Artistic-2" and meta["author"] == "Greshz" and len(meta["stems"]) == 2
    assert meta["same_every_run"] is (lmms.fixed_seed_library() is not None)
    songs = find_songs(out)
    assert len(songs) == 1 and songs[0].mix is not None and len(songs[0].stems) == 2
    for ref in songs[0].stems + [songs[0].mix]:
        x, sr = sf.read(ref.path, always_2d=True)
        assert sr == 44100 and np.isfinite(x).all() and np.abs(x).max() > 1e-3, ref.path
    # the wet stems are the tracks as the author mixed them: their sum is the author's mix (this song has no
    # master effects and its instruments draw no noise; measured -240 dB)
    assert all(ref.wet is not None and ref.wet.parent == song_dir / "wet" for ref in songs[0].stems)
    wet = sum(sf.read(ref.wet, always_2d=True)[0] for ref in songs[0].stems)
    mix = sf.read(songs[0].mix.path, always_2d=True)[0]
    n = min(len(wet), len(mix))
    assert 10 * np.log10(np.sum((wet[:n] - mix[:n]) ** 2) / np.sum(mix**2)) < -100
    assert meta["wet_vs_mix_residual_db"] < -100 and meta["wet_skipped"] == {}
    assert all(info["wet"]["shared_nonlinear"] == [] for info in meta["stems"].values())
    (out / ".Greshz-CoolSnip.0badcafe").mkdir()  # what a killed run leaves behind
    import shutil

    shutil.rmtree(song_dir)
    assert main(["dataset", "lmms", str(out), "--projects", str(SONG)]) == 0  # redoes the missing song only
    assert (song_dir / "metadata.json").is_file()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_skipped_tracks_leave_no_work_files(tmp_path, monkeypatch):
    """A track that renders silent or unreadable is recorded as skipped; its work files never reach the song."""
    require_tool("lmms")
    from gradmix.data import lmms

    def fake_render(project, out_wav, timeout_s=600.0):
        name = str(out_wav)
        if name.endswith("wet2.wav"):
            raise lmms.LmmsError(f"{project}: lmms render failed 2 times (crash)")
        if name.endswith("stem0.wav"):
            sf.write(out_wav, np.zeros((4410, 2), np.float32), 44100)  # silent
        elif name.endswith("stem1.wav"):
            open(out_wav, "wb").write(b"garbage")  # unreadable
        else:
            sf.write(out_wav, (0.1 * np.random.default_rng(0).standard_normal((4410, 2))).astype(np.float32), 44100)

    monkeypatch.setattr(lmms, "render", fake_render)
    project = PROJECTS_DIR / "shorties" / "Surrender-Main.mmpz"
    tracks = len(stem_tracks(read_project(project)))
    song = lmms.render_song(project, tmp_path)
    meta = json.loads((song / "metadata.json").read_text())
    assert len(meta["skipped"]) == 2 and len(meta["stems"]) == tracks - 2
    assert "silent" in meta["skipped"].values()
    assert not list(song.glob("stem*")), sorted(p.name for p in song.iterdir())
    # the track whose wet render failed keeps its dry stem, without a wet one, and is named once
    third = stem_tracks(read_project(project))[2].name
    assert list(meta["wet_skipped"]) == [third] and "crash" in meta["wet_skipped"][third]
    assert len(list((song / "wet").iterdir())) == tracks - 3 and not list(song.glob("wet/wet*"))


@pytest.mark.parametrize("bad", ["nan", "silent"])
def test_a_wet_stem_with_nan_or_silent_where_its_dry_stem_is_not_fails_the_song(tmp_path, monkeypatch, bad):
    """One line naming the project and the track; no song folder and no work files are left."""
    require_tool("lmms")

    def fake_render(project, out_wav, timeout_s=600.0):
        x = (0.1 * np.random.default_rng(0).standard_normal((4410, 2))).astype(np.float32)
        if str(out_wav).endswith("wet1.wav"):
            x = x * np.nan if bad == "nan" else x * 0
        sf.write(out_wav, x, 44100, subtype="FLOAT")

    monkeypatch.setattr(lmms, "render", fake_render)
    project = PROJECTS_DIR / "shorties" / "Surrender-Main.mmpz"
    second = stem_tracks(read_project(project))[1].name
    why = "has NaN or Inf samples" if bad == "nan" else "is silent, its dry stem is not"
    with pytest.raises(GradmixError, match=f"the wet stem of track '{second}' {why}"):
        lmms.render_song(project, tmp_path)
    assert not any(tmp_path.iterdir())
    summary = lmms.build_dataset(tmp_path / "set", [project], workers=1)
    assert summary["done"] == [] and "Surrender-Main" in next(iter(summary["failed"].values()))
    assert not any((tmp_path / "set").iterdir())


def test_a_song_rendered_before_wet_stems_existed_is_rendered_again(tmp_path, monkeypatch):
    require_tool("lmms")
    project = PROJECTS_DIR / "shorties" / "Surrender-Main.mmpz"
    old = tmp_path / "Surrender-Main"
    old.mkdir()
    (old / lmms.DONE).write_text("ok\n")
    (old / "metadata.json").write_text(json.dumps({"wet_skipped": {}}))
    rendered = []

    def fake_render_song(p, out_dir):
        rendered.append(p)
        return old

    monkeypatch.setattr(lmms, "render_song", fake_render_song)
    summary = lmms.build_dataset(tmp_path, [project], workers=1)
    assert rendered == [project] and summary["skipped"] == 0  # done, but without wet stems: rendered again
    (old / "wet").mkdir()
    summary = lmms.build_dataset(tmp_path, [project], workers=1)
    assert rendered == [project] and summary["skipped"] == 1  # complete: left alone


def test_a_missing_project_or_a_file_for_the_output_folder_is_one_line(tmp_path, capsys):
    out = tmp_path / "lmms"
    assert main(["dataset", "lmms", str(out), "--projects", str(tmp_path / "nope.mmpz")]) == 2
    assert capsys.readouterr().err == f"gradmix: error: {tmp_path / 'nope.mmpz'}: no such LMMS project\n"
    assert not any(tmp_path.iterdir())
    require_tool("lmms")
    out.write_text("not a folder")
    assert main(["dataset", "lmms", str(out), "--projects", str(SONG)]) == 2
    assert capsys.readouterr().err == f"gradmix: error: {out}: cannot create the output folder (File exists)\n"
    assert [p.name for p in tmp_path.iterdir()] == ["lmms"] and out.read_text() == "not a folder"


def test_a_render_that_crashes_once_is_tried_again(tmp_path, monkeypatch):
    """lmms now and then exits non-zero part of the way through; the render is tried once more, and a
    second failure is one error naming the project, with no partial file left."""
    monkeypatch.setattr(lmms.shutil, "which", lambda name: "/usr/bin/lmms")
    monkeypatch.setattr(lmms, "fixed_seed_library", lambda: None)
    calls = []

    def run(cmd, **kwargs):  # the first call crashes after writing part of the file, the others per `ok`
        out = cmd[cmd.index("-o") + 1]
        calls.append(out)
        with open(out, "wb") as f:
            f.write(b"partial")
        code = 0 if len(calls) > 1 and ok else 139
        return subprocess.CompletedProcess(cmd, code, stdout="", stderr="LMMS banner")

    monkeypatch.setattr(lmms.subprocess, "run", run)
    ok = True
    lmms.render(tmp_path / "song.mmpz", tmp_path / "out.wav")
    assert len(calls) == 2
    calls.clear()
    ok = False
    with pytest.raises(GradmixError, match="song.mmpz: lmms render failed 2 times"):
        lmms.render(tmp_path / "song.mmpz", tmp_path / "out.wav")
    assert len(calls) == 2 and not (tmp_path / "out.wav").exists()  # no partial render left behind


def test_a_render_is_the_same_in_every_run(tmp_path):
    """Organic draws its noise from lmms's clock-seeded rand(): without the preloaded seed two renders of this
    pad differ by +3 dB of residual (measured), with it they are bit-identical; so is the whole song, whose
    instruments draw from the mixer's threads in turn."""
    require_tool("lmms")
    if lmms.fixed_seed_library() is None:
        pytest.skip("no C compiler to build lmms_fixed_seed.c")
    song = PROJECTS_DIR / "shorties" / "DirtyLove.mmpz"
    root = read_project(song)
    pad = next(ref for ref in stem_tracks(root) if ref.instrument == "organic")
    (tmp_path / "pad.mmp").write_bytes(ET.tostring(isolate(root, pad)))
    for project in (tmp_path / "pad.mmp", song):
        renders = []
        for k in range(2):
            lmms.render(project, tmp_path / f"{k}.wav")
            renders.append(sf.read(tmp_path / f"{k}.wav", always_2d=True)[0])
        assert renders[0].shape == renders[1].shape and np.abs(renders[0]).max() > 0.01
        assert np.array_equal(renders[0], renders[1]), project.name
