"""Dataset loaders on synthetic songs of every layout; segments, silence skipping, batching."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import require_tool
from gradmix.console import Layout
from gradmix.errors import GradmixError
from gradmix.data import DatasetError, SegmentDataset, collate, detect_layout, find_songs, random_example, read_example
from gradmix.data.songs import song_written_whole

SR = 44100


def write(
    path: Path,
    seconds: float,
    channels: int = 1,
    seed: int = 0,
    rate: int = SR,
    level: float = 0.1,
    silent_until: float = 0.0,
) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    x = np.random.default_rng(seed).standard_normal((int(seconds * rate), channels)).astype(np.float32) * level
    x[: int(silent_until * rate)] = 0
    sf.write(path, x, rate, subtype="FLOAT" if path.suffix == ".wav" else None)
    return x


def test_folder_layout_with_mix_and_labels(tmp_path):
    for s in ("b_song", "a_song"):
        write(tmp_path / s / "kick.wav", 2.0, seed=1)
        write(tmp_path / s / "bass.flac", 2.0, 2, seed=2)
        write(tmp_path / s / "mix.wav", 2.0, 2, seed=3)
    (tmp_path / "a_song" / "metadata.json").write_text(json.dumps({"labels": {"kick": "drums"}, "bpm": 120}))
    assert detect_layout(tmp_path) == "folder"
    songs = find_songs(tmp_path)
    assert [s.name for s in songs] == ["a_song", "b_song"]
    a = songs[0]
    assert [r.name for r in a.stems] == ["bass", "kick"] and a.mix.name == "mix"
    assert [r.label for r in a.stems] == [None, "drums"] and a.meta["bpm"] == 120
    ex = read_example(a, sample_rate=SR)
    assert ex.tracks.shape == (2, 2, 2 * SR) and ex.mono.tolist() == [False, True]
    assert torch.equal(ex.tracks[1, 0], ex.tracks[1, 1])  # mono duplicated
    assert ex.mix.shape == (2, 2 * SR)


def test_musdb_hq_layout(tmp_path):
    for split, song in (("train", "A"), ("test", "B")):
        for stem in ("mixture", "drums", "bass", "other", "vocals"):
            write(tmp_path / split / song / f"{stem}.wav", 1.0, 2)
    assert detect_layout(tmp_path) == "musdb-hq"
    songs = find_songs(tmp_path)
    assert [(s.name, s.split) for s in songs] == [("A", "train"), ("B", "test")]
    assert [r.label for r in songs[0].stems] == ["drums", "bass", "other", "vocals"]


def test_musdb_stem_mp4_layout(tmp_path):
    ffmpeg = require_tool("ffmpeg")
    require_tool("ffprobe")
    waves = [tmp_path / f"s{k}.wav" for k in range(5)]
    for k, w in enumerate(waves):
        write(w, 1.0, 2, seed=k)
    (tmp_path / "db" / "train").mkdir(parents=True)
    cmd = [ffmpeg, "-v", "error", "-y", *sum((["-i", str(w)] for w in waves), [])]
    cmd += sum((["-map", f"{k}:a"] for k in range(5)), []) + [
        "-c:a",
        "flac",
        "-strict",
        "-2",
        str(tmp_path / "db" / "train" / "x.stem.mp4"),
    ]
    subprocess.run(cmd, check=True)
    assert detect_layout(tmp_path / "db") == "musdb"
    song = find_songs(tmp_path / "db")[0]
    ex = read_example(song, offset_s=0.25, seconds=0.5, sample_rate=SR)
    ref, _ = sf.read(waves[4], always_2d=True)  # vocals
    np.testing.assert_allclose(ex.tracks[3].numpy(), ref[int(0.25 * SR) : int(0.75 * SR)].T, atol=1e-4)
    assert ex.mix is not None


def test_medleydb_layout_and_missing_stem(tmp_path):
    song = tmp_path / "Artist_Song"
    write(song / "Artist_Song_STEMS" / "Artist_Song_STEM_01.wav", 1.0)
    write(song / "Artist_Song_STEMS" / "Artist_Song_STEM_02.wav", 1.0, 2)
    write(song / "Artist_Song_MIX.wav", 1.0, 2)
    meta = (
        "artist: Artist\ntitle: Song\nstems:\n"
        "  S01: {filename: Artist_Song_STEM_01.wav, instrument: electric bass}\n"
        "  S02: {filename: Artist_Song_STEM_02.wav, instrument: piano}\n"
    )
    (song / "Artist_Song_METADATA.yaml").write_text(meta)
    assert detect_layout(tmp_path) == "medleydb"
    s = find_songs(tmp_path)[0]
    assert [r.label for r in s.stems] == ["electric bass", "piano"] and s.meta["artist"] == "Artist"
    assert s.mix is not None
    (song / "Artist_Song_METADATA.yaml").write_text(meta.replace("STEM_02", "STEM_03"))
    with pytest.raises(DatasetError, match="stems.S02 names Artist_Song_STEM_03.wav, which is missing"):
        find_songs(tmp_path)


def test_csv_manifest(tmp_path):
    write(tmp_path / "audio" / "a1.wav", 1.0)
    write(tmp_path / "audio" / "a2.wav", 1.0)
    write(tmp_path / "audio" / "b1.wav", 1.0)
    write(tmp_path / "audio" / "amix.wav", 1.0, 2)
    manifest = tmp_path / "list.csv"
    manifest.write_text(
        "song,stem,label,mix\nA,audio/a1.wav,vox,audio/amix.wav\nA,audio/a2.wav,,\nB,audio/b1.wav,gtr,\n"
    )
    assert detect_layout(manifest) == "csv"
    songs = find_songs(manifest)
    assert [(s.name, len(s.stems)) for s in songs] == [("A", 2), ("B", 1)]
    assert songs[0].mix is not None and songs[0].stems[0].label == "vox"
    manifest.write_text("song,path\nA,audio/a1.wav\n")
    with pytest.raises(DatasetError, match="missing column"):
        find_songs(manifest)
    manifest.write_text("song,stem\nA,audio/nope.wav\n")
    with pytest.raises(DatasetError, match="list.csv:2: stem audio/nope.wav is missing"):
        find_songs(manifest)


def test_random_segments_skip_silence_are_seeded_and_resample(tmp_path):
    write(tmp_path / "s" / "a.wav", 10.0, silent_until=8.0)
    write(tmp_path / "s" / "b.wav", 10.0, 2, rate=48000, silent_until=8.0)
    song = find_songs(tmp_path)[0]
    for seed in range(5):
        ex = random_example(song, seconds=1.0, sample_rate=SR, generator=torch.Generator().manual_seed(seed), tries=50)
        assert ex.offset_s > 7.0 and ex.tracks.shape == (2, 2, SR)
        assert 10 * np.log10(ex.tracks.sum(0).square().mean().item()) > -50
    a = random_example(song, seconds=1.0, generator=torch.Generator().manual_seed(3))
    b = random_example(song, seconds=1.0, generator=torch.Generator().manual_seed(3))
    assert a.offset_s == b.offset_s and torch.equal(a.tracks, b.tracks)


def test_batches_of_songs_with_different_track_counts_render_through_the_console(tmp_path):
    for k, n in enumerate((3, 1, 2)):
        for i in range(n):
            write(tmp_path / f"song{k}" / f"t{i}.wav", 2.0, 1 + i % 2, seed=10 * k + i)
    songs = find_songs(tmp_path)
    ds = SegmentDataset(songs, seconds=0.5, seed=1)
    loader = torch.utils.data.DataLoader(ds, batch_size=3, collate_fn=collate)
    batch = next(iter(loader))
    assert batch.tracks.shape == (3, 3, 2, SR // 2)
    assert batch.mask.tolist() == [[True] * 3, [True, False, False], [True, True, False]]
    assert batch.tracks[1, 1:].abs().max() == 0 and not batch.has_mix.any()
    layout = Layout.default()
    mix, _ = layout.render_normalized(
        batch.tracks,
        layout.random_controls(3, 3, torch.Generator().manual_seed(0)),
        sample_rate=SR,
        mask=batch.mask,
        mono=batch.mono,
    )
    assert mix.shape == (3, 2, SR // 2) and torch.isfinite(mix).all()
    again = next(iter(torch.utils.data.DataLoader(ds, batch_size=3, collate_fn=collate)))
    assert torch.equal(again.tracks, batch.tracks)
    ds.set_epoch(1)
    assert not torch.equal(
        next(iter(torch.utils.data.DataLoader(ds, batch_size=3, collate_fn=collate))).tracks, batch.tracks
    )


def test_bad_roots(tmp_path):
    with pytest.raises(DatasetError, match="no such dataset folder"):
        find_songs(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no songs found"):
        find_songs(tmp_path / "empty")


def test_wet_stems_are_read_beside_their_dry_stems_and_batched_with_a_mask(tmp_path):
    """``<song>/wet/<stem file>`` is that stem's wet version; tracks without one are masked out."""
    dry_a = write(tmp_path / "one" / "a.wav", 2.0, seed=1)
    write(tmp_path / "one" / "b.wav", 2.0, 2, seed=2)
    wet_a = write(tmp_path / "one" / "wet" / "a.wav", 2.0, 2, seed=3)  # a stereo wet of a mono dry
    write(tmp_path / "two" / "c.wav", 2.0, seed=4)
    songs = find_songs(tmp_path)
    assert [s.name for s in songs] == ["one", "two"]  # wet/ is no song and no stem
    assert [r.name for r in songs[0].stems] == ["a", "b"]
    assert songs[0].stems[0].wet == tmp_path / "one" / "wet" / "a.wav" and songs[0].stems[1].wet is None
    ex = read_example(songs[0], offset_s=0.5, seconds=1.0, sample_rate=SR)
    assert ex.has_wet.tolist() == [True, False] and ex.wet.shape == ex.tracks.shape == (2, 2, SR)
    assert np.array_equal(ex.wet[0].numpy().T, wet_a[SR // 2 : SR // 2 + SR])
    assert np.array_equal(ex.tracks[0, 0].numpy(), dry_a[SR // 2 : SR // 2 + SR, 0]) and ex.wet[1].abs().max() == 0
    plain = read_example(songs[1], seconds=1.0)
    assert plain.wet is None and plain.has_wet is None
    batch = collate([plain, ex])
    assert batch.wet.shape == (2, 2, 2, SR) and batch.has_wet.tolist() == [[False, False], [True, False]]
    assert torch.equal(batch.wet[1, 0], ex.wet[0]) and batch.wet[0].abs().max() == 0
    assert collate([plain]).wet is None


def test_csv_manifest_with_wet_stems(tmp_path):
    write(tmp_path / "a1.wav", 1.0)
    write(tmp_path / "a1_wet.wav", 1.0, 2)
    write(tmp_path / "a2.wav", 1.0)
    manifest = tmp_path / "list.csv"
    manifest.write_text("song,stem,label,mix,wet\nA,a1.wav,,,a1_wet.wav\nA,a2.wav,,,\n")
    song = find_songs(manifest)[0]
    assert [r.wet for r in song.stems] == [tmp_path / "a1_wet.wav", None]
    manifest.write_text("song,stem,wet\nA,a1.wav,gone.wav\n")
    with pytest.raises(DatasetError, match="list.csv:2: wet stem gone.wav is missing"):
        find_songs(manifest)


def test_a_wet_stem_with_nan_is_one_error_naming_it(tmp_path):
    write(tmp_path / "s" / "a.wav", 1.0)
    bad = tmp_path / "s" / "wet" / "a.wav"
    bad.parent.mkdir()
    sf.write(bad, np.full((SR, 2), np.nan, np.float32), SR, subtype="FLOAT")
    with pytest.raises(GradmixError, match=f"{bad}: contains NaN or Inf samples"):
        read_example(find_songs(tmp_path)[0], offset_s=0.1, seconds=0.5)


def test_a_song_folder_is_written_whole_with_the_umask_permissions(tmp_path):
    (tmp_path / ".song.0badcafe").mkdir()  # left by a run killed mid-song
    (tmp_path / ".song.v2.0badcafe").mkdir()  # song "song.v2" being written by another process
    umask = os.umask(0o022)
    try:
        with song_written_whole(tmp_path, "song", ".done") as tmp:
            (tmp / "a.wav").write_bytes(b"x")
        with pytest.raises(RuntimeError), song_written_whole(tmp_path, "other", ".done") as tmp:
            raise RuntimeError("a render failed")
    finally:
        os.umask(umask)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".song.v2.0badcafe", "song"]
    assert sorted(p.name for p in (tmp_path / "song").iterdir()) == [".done", "a.wav"]
    assert (tmp_path / "song").stat().st_mode & 0o777 == 0o755  # a temporary folder's 0700 would hide it
