"""``gradmix demo``: the main job on a built-in example. The example multitrack (synthesised by
:mod:`gradmix.example`) is written as stems, mixed by the default model exactly as ``gradmix mix`` does, and
the results are listed: stems, the plain sum, the mix, its console file and the report page."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from gradmix import dsp
from gradmix.audio import make_output_folder, write_audio
from gradmix.defaults import DEMO_SECONDS, DEVICE
from gradmix.errors import GradmixError
from gradmix.example import EXAMPLE_TRACKS, example_multitrack

SAMPLE_RATE = 44100


def run_demo(
    out_dir: str | Path,
    seconds: float = DEMO_SECONDS,
    model_path: str | Path | None = None,
    device: str = DEVICE,
) -> dict[str, Path]:
    """Write the example's stems to ``out_dir/stems`` and mix them; returns the written files by role."""
    from gradmix.mix import mix_folder

    if not 1.0 <= seconds <= 600.0:  # also refuses NaN
        raise GradmixError(f"--seconds: {seconds:g} is not between 1 and 600")
    out = Path(out_dir)
    make_output_folder(out / "stems")
    tracks = example_multitrack(seconds, SAMPLE_RATE)
    for name in EXAMPLE_TRACKS:
        write_audio(out / "stems" / f"{name}.wav", tracks[name], SAMPLE_RATE)
    plain = dsp.pan(torch.stack([tracks[n] for n in EXAMPLE_TRACKS]), pan=0.0).sum(0)  # centred, the console's law
    write_audio(out / "sum.wav", plain, SAMPLE_RATE)
    report = mix_folder(out / "stems", out / "mix.wav", model_path=model_path, report=True, device=device)
    files = {
        "stems": out / "stems",
        "sum": out / "sum.wav",
        "mix": report.output,
        "console": report.console,
        "report": report.report,
    }
    _print_summary(files, report, plain)
    return files


def _print_summary(files: dict[str, Path], report, plain: torch.Tensor) -> None:
    from rich.console import Console
    from rich.table import Table

    from gradmix.dsp import integrated_loudness

    lufs = integrated_loudness(plain[None], sample_rate=SAMPLE_RATE).item()
    peak = 20 * np.log10(plain.abs().max().item())
    table = Table(title="gradmix demo: the built-in example mixed by the default model")
    for col in ("output", "file", "loudness", "peak"):
        table.add_column(col, justify="right" if col in ("loudness", "peak") else "left")
    table.add_row("dry stems", str(files["stems"]), "", "")
    table.add_row("plain sum", str(files["sum"]), f"{lufs:.1f} LUFS", f"{peak:.1f} dBFS")
    table.add_row("mix", str(files["mix"]), f"{report.loudness_lufs:.1f} LUFS", f"{report.peak_dbfs:.1f} dBFS")
    table.add_row("console file", str(files["console"]), "", "")
    table.add_row("report page", str(files["report"]), "", "")
    Console().print(table)
    print(
        f"open {files['report']} in a browser; edit {files['console']} and run "
        f"`gradmix render {files['stems']} {files['console']} -o my_mix.wav` to change the mix"
    )
