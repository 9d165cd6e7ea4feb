"""``gradmix render``: a folder of stems through a console file into a mix file."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from gradmix import dsp
from gradmix.audio import check_output_path, load_stems, safe_file_name, write_audio
from gradmix.console import ConsoleSetting
from gradmix.defaults import DEVICE
from gradmix.errors import GradmixError


@dataclass
class RenderReport:
    output: Path
    peak_dbfs: float
    loudness_lufs: float
    seconds: float
    stems_out: list[Path]
    timings: dict[str, float] = field(default_factory=dict)
    """Wall seconds of each stage: ``read`` (stems, checks), ``render`` (console), ``measure`` (peak,
    loudness), ``write``."""

    @property
    def clips(self) -> bool:
        return self.peak_dbfs > 0.0


def render_folder(
    stems_dir: str | Path | None,
    console_file: str | Path,
    output: str | Path,
    *,
    strict: bool = False,
    subtype: str = "float",
    stems_out: str | Path | None = None,
    progress: bool = False,
    device: torch.device | str = DEVICE,
) -> RenderReport:
    """Render the stems of ``stems_dir`` named by ``console_file`` into ``output``.

    Everything is read and checked before anything is written; outputs are written atomically and
    never over an input. ``stems_dir`` ``None``: the folder the console file records, else its own folder.
    The console runs on ``device``.
    """
    clock = time.perf_counter()
    setting = ConsoleSetting.load(console_file)
    stems_dir = setting.stems_folder(console_file) if stems_dir is None else stems_dir
    missing = [i for i, t in enumerate(setting.tracks) if not t.file]
    if missing:
        raise GradmixError(f"{console_file}: tracks[{missing[0]}] ({setting.tracks[missing[0]].name!r}) names no file")
    warm_up = threading.Thread(target=_load_kernels, name="gradmix-kernels")
    warm_up.start()  # numba's start-up (about 0.7 s) runs while the files are read (libsndfile frees the GIL)
    try:
        stems, sr = load_stems(
            stems_dir,
            files=[t.file for t in setting.tracks],
            sample_rate=setting.sample_rate,
            strict=strict,
            progress=progress,
        )
    finally:
        warm_up.join()
    inputs = [s.path for s in stems] + [Path(console_file), Path(stems_dir)]
    output = check_output_path(output, inputs, audio=True)
    stem_paths: list[Path] = []
    if stems_out is not None:
        out_dir = Path(stems_out)
        if out_dir.exists() and not out_dir.is_dir():
            raise GradmixError(f"{out_dir}: --stems-out must be a folder")
        out_dir.mkdir(parents=True, exist_ok=True)
        stem_paths = [check_output_path(out_dir / f"{safe_file_name(t.name)}.wav", inputs) for t in setting.tracks]

    def write_strip(i: int, strip: torch.Tensor) -> None:
        write_audio(stem_paths[i], strip.cpu(), sr, subtype)

    timings = {"read": time.perf_counter() - clock}
    audio = [s.audio for s in stems]
    del stems  # render releases each track once it is through its strip
    with torch.no_grad():
        mix, _ = setting.render(
            audio, keep_strips=False, on_strip=write_strip if stem_paths else None, release=True, device=device
        )
        mix = mix.cpu()
    timings["render"] = time.perf_counter() - clock - sum(timings.values())
    low, high = torch.aminmax(mix)  # no song-long |mix| temporary
    peak = max(high.item(), -low.item())
    loud = dsp.integrated_loudness(mix[None], sample_rate=sr).item()
    timings["measure"] = time.perf_counter() - clock - sum(timings.values())
    write_audio(output, mix, sr, subtype)
    timings["write"] = time.perf_counter() - clock - sum(timings.values())
    return RenderReport(output, 20 * math.log10(max(peak, 1e-12)), loud, mix.shape[-1] / sr, stem_paths, timings)


def _load_kernels() -> None:
    """Run the compiled kernels of a render (filters, dynamics; numba, cached on disk) once on a tiny signal."""
    x = torch.zeros(1, 2, 16)
    with torch.no_grad():
        dsp.limiter(
            dsp.compressor(x, sample_rate=44100, threshold_db=-20.0, ratio=2.0, attack_ms=1.0, release_ms=10.0),
            sample_rate=44100,
        )
        dsp.integrated_loudness(x, sample_rate=44100)
