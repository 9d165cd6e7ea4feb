"""``gradmix dataset dry ROOT -o OUT``: every stem of a dataset through effect removal, then (optionally) FxNorm.

Each song becomes ``OUT/dry/<song>/``: its dry stems (same names), its mix copied when it has one, and
``chains.json``: per stem the estimated chain (console-file chain entries, at the file's level), each
effect's presence probability and the notes. Songs are written whole or not at all and a finished song is
skipped on the next run (resumable); ``shard=(i, n)`` takes songs ``i, i + n, ...``. With ``normalize`` the
result is FxNorm-ed into ``OUT/normalized`` (:func:`gradmix.data.fxnorm.normalize_dataset`; not with a shard,
whose class statistics would miss the other shards' songs).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from gradmix.audio import read_audio, safe_file_name, write_audio
from gradmix.data import find_songs
from gradmix.data.songs import select_shard, song_written_whole
from gradmix.errors import GradmixError
from gradmix.models.removal import load_estimator
from gradmix.progress import progress as show_progress
from gradmix.removal.dry import remove_effects

DONE = ".dry-done"


def dry_dataset(
    root: str | Path,
    out_dir: str | Path,
    *,
    model_path: str | Path | None = None,
    normalize: bool = False,
    progress: bool = False,
    shard: tuple[int, int] | None = None,
    careful: bool = False,
) -> dict[str, Any]:
    """Remove the effects of every stem under ``root`` into ``out_dir/dry`` (see the module docstring; ``careful``:
    by the estimator's careful thresholds, :func:`gradmix.removal.dry.remove_effects`); returns a summary: songs
    done and skipped, the effects found (how many stems had each), and FxNorm's summary."""
    root, out_dir = Path(root), Path(out_dir)
    if out_dir.resolve() == root.resolve() or root.resolve() in out_dir.resolve().parents:
        raise GradmixError(f"{out_dir}: the output must not be the dataset or lie inside it")
    songs = select_shard(find_songs(root), shard)
    if not songs:
        raise GradmixError(f"{root}: no songs found")
    model = load_estimator(model_path)
    dry_dir = out_dir / "dry"
    dry_dir.mkdir(parents=True, exist_ok=True)
    done, skipped, found = [], 0, dict.fromkeys(("eq", "compressor", "distortion", "delay", "reverb"), 0)
    for song in show_progress(songs, "removing effects", progress):
        name = safe_file_name(song.name)
        if (dry_dir / name / DONE).is_file():
            skipped += 1
            continue
        with song_written_whole(dry_dir, name, DONE) as tmp:
            chains = {}
            for ref in song.stems:
                audio, rate = read_audio(ref.path)
                removal = remove_effects(model, torch.from_numpy(audio), rate, careful=careful)
                file = f"{safe_file_name(ref.name)}.wav"
                write_audio(tmp / file, removal.dry, rate)
                chains[file] = {
                    "label": ref.label,
                    "chain": [e.to_json() for e in removal.chain],
                    "probabilities": removal.probabilities,
                    "notes": removal.notes,
                }
                for e in removal.chain:
                    found[e.effect.type_name] += 1
            if song.mix is not None and song.mix.path.suffix.lower() in (".wav", ".flac"):
                shutil.copy2(song.mix.path, tmp / f"mix{song.mix.path.suffix.lower()}")
            (tmp / "chains.json").write_text(json.dumps({"source": str(root / song.name), "stems": chains}, indent=1))
            labels = {Path(f).stem: c["label"] for f, c in chains.items() if c["label"]}
            if labels:
                (tmp / "metadata.json").write_text(json.dumps({**song.meta, "labels": labels}, indent=1))
        done.append(song.name)
    summary: dict[str, Any] = {"done": done, "skipped": skipped, "effects_found": found}
    if normalize and shard is None:
        from gradmix.data.fxnorm import normalize_dataset

        summary["normalized"] = normalize_dataset(dry_dir, out_dir / "normalized", layout="folder", progress=progress)
    return summary
