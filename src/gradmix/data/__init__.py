"""Datasets: songs in every supported layout, random segments, batches of songs with track masks."""

from gradmix.data.segments import (
    Batch,
    Example,
    SegmentDataset,
    collate,
    random_example,
    read_example,
    read_segment,
    read_song_tracks,
    song_seconds,
)
from gradmix.data.songs import LAYOUTS, DatasetError, Song, StemRef, detect_layout, find_songs, select_shard

__all__ = [
    "LAYOUTS",
    "Batch",
    "DatasetError",
    "Example",
    "SegmentDataset",
    "Song",
    "StemRef",
    "collate",
    "detect_layout",
    "find_songs",
    "random_example",
    "read_example",
    "read_segment",
    "read_song_tracks",
    "select_shard",
    "song_seconds",
]
