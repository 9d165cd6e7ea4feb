"""``gradmix render``: a folder of stems through a console file into a mix file."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from gradmix.audio import check_output_path, load_stems, write_audio
from gradmix.console import ConsoleSetting
from gradmix.dsp import integrated_loudness
from gradmix.errors import GradmixError


@dataclass
class RenderReport:
    output: Path
    peak_dbfs: float
    loudness_lufs: float
    seconds: float
    stems_out: list[Path]

    @property
    def clips(self) -> bool:
        return self.peak_dbfs > 0.0


def render_folder(stems_dir: str | Path, console_file: str | Path, output: str | Path, *, strict: bool = False,
                  subtype: str = "float", stems_out: str | Path | None = None,
                  progress: bool = False) -> RenderReport:
    """Render the stems of ``stems_dir`` named by ``console_file`` into ``output``.

    Everything is read and checked before anything is written; outputs are written atomically and
    never over an input.
    """
    setting = ConsoleSetting.load(console_file)
    missing = [i for i, t in enumerate(setting.tracks) if not t.file]
    if missing:
        raise GradmixError(f"{console_file}: tracks[{missing[0]}] ({setting.tracks[missing[0]].name!r}) names no file")
    stems, sr = load_stems(stems_dir, files=[t.file for t in setting.tracks], sample_rate=setting.sample_rate,
                           strict=strict, progress=progress)
    inputs = [s.path for s in stems] + [Path(console_file)]
    output = check_output_path(output, inputs)
    stem_paths: list[Path] = []
    if stems_out is not None:
        out_dir = Path(stems_out)
        if out_dir.exists() and not out_dir.is_dir():
            raise GradmixError(f"{out_dir}: --stems-out must be a folder")
        out_dir.mkdir(parents=True, exist_ok=True)
        stem_paths = [check_output_path(out_dir / f"{_safe(t.name)}.wav", inputs) for t in setting.tracks]
    def write_strip(i: int, strip: torch.Tensor) -> None:
        write_audio(stem_paths[i], strip, sr, subtype)

    audio = [s.audio for s in stems]
    del stems  # render releases each track once it is through its strip
    with torch.no_grad():
        mix, _ = setting.render(audio, keep_strips=False, on_strip=write_strip if stem_paths else None,
                                release=True)
    peak = mix.abs().max().item()
    loud = integrated_loudness(mix[None], sample_rate=sr).item()
    write_audio(output, mix, sr, subtype)
    return RenderReport(output, 20 * math.log10(max(peak, 1e-12)), loud, mix.shape[-1] / sr, stem_paths)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
