"""Separation-built data: split full mixes into stems with a source-separation model, then normalise them.

The model is a Demucs checkpoint on local disk (a ``demucs`` package dict with ``klass``, ``args``,
``kwargs`` and ``state``, as Demucs saves them), run with ``demucs-infer`` (extra ``separate``); nothing is
downloaded. Each mix becomes a song folder with one stem per model source (labelled by source name, so the
effect normalisation that follows has one class per source) and the original mix.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from gradmix.audio import list_audio_files, read_audio, resample, write_audio
from gradmix.data.songs import select_shard, song_written_whole
from gradmix.defaults import STEM_LUFS
from gradmix.errors import GradmixError
from gradmix.progress import progress as show_progress

DONE = ".separate-done"


def load_separator(path: str | Path) -> torch.nn.Module:
    """A Demucs model from a local checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise GradmixError(f"{path}: no such separation model (give a local Demucs checkpoint; nothing is downloaded)")
    try:
        from demucs_infer.states import load_model
    except ImportError:
        raise GradmixError("source separation needs demucs-infer: pip install -e '.[separate]'") from None
    try:
        model = load_model(str(path))
    except Exception as exc:  # a foreign pickle can raise anything
        raise GradmixError(f"{path}: not a Demucs checkpoint ({type(exc).__name__}: {exc})") from None
    return model.eval()


def separate_mix(model: torch.nn.Module, mix: torch.Tensor, sample_rate: int) -> tuple[torch.Tensor, int]:
    """``(channels, samples)`` mix -> ``(sources, 2, samples)`` stems at the model's rate."""
    from demucs_infer.apply import apply_model

    x = mix if mix.shape[0] == 2 else mix.repeat(2, 1)
    rate = int(getattr(model, "samplerate", sample_rate))
    if rate != sample_rate:
        x = torch.from_numpy(resample(x.numpy(), sample_rate, rate))
    with torch.no_grad():
        stems = apply_model(model, x[None], split=True, overlap=0.25, progress=False, device="cpu")[0]
    return stems, rate


def separate_dataset(
    mixes_dir: str | Path,
    out_dir: str | Path,
    *,
    model_path: str | Path,
    normalize: bool = True,
    target_lufs: float = STEM_LUFS,
    workers: int | None = None,
    progress: bool = False,
    shard: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Separate every mix in ``mixes_dir`` into ``out_dir/stems`` (and FxNorm it into ``out_dir/normalized``).

    Resumable: songs already separated are skipped. The input folder is never written to. With
    ``shard=(i, n)`` only mixes ``i, i + n, ...`` are separated and normalisation is left to a later
    ``gradmix dataset normalize`` over ``out_dir/stems`` (class statistics need every song).
    """
    mixes_dir, out_dir = Path(mixes_dir), Path(out_dir)
    if out_dir.resolve() == mixes_dir.resolve() or mixes_dir.resolve() in out_dir.resolve().parents:
        raise GradmixError(f"{out_dir}: the output must not be the input folder or lie inside it")
    files = select_shard(list_audio_files(mixes_dir), shard)
    model = load_separator(model_path)
    sources = list(getattr(model, "sources", []))
    stems_dir = out_dir / "stems"
    stems_dir.mkdir(parents=True, exist_ok=True)
    done, skipped = [], 0
    for path in show_progress(files, "separating", progress):
        song = path.name.split(".")[0]
        if (stems_dir / song / DONE).is_file():
            skipped += 1
            continue
        audio, rate = read_audio(path)
        stems, model_rate = separate_mix(model, torch.from_numpy(audio), rate)
        with song_written_whole(stems_dir, song, DONE) as tmp:
            for name, stem in zip(sources, stems):
                write_audio(tmp / f"{name}.wav", stem, model_rate)
            write_audio(tmp / "mix.wav", torch.from_numpy(audio), rate)
            (tmp / "metadata.json").write_text(
                json.dumps(
                    {"labels": {s: s for s in sources}, "source": str(path), "separated_by": str(model_path)}, indent=1
                )
            )
        done.append(song)
    summary: dict[str, Any] = {"done": done, "skipped": skipped, "sources": sources}
    if normalize and shard is None:
        from gradmix.data.fxnorm import normalize_dataset

        summary["normalized"] = normalize_dataset(
            stems_dir,
            out_dir / "normalized",
            layout="folder",
            target_lufs=target_lufs,
            workers=workers,
            progress=progress,
        )
    return summary
