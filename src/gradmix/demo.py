"""The effects demo: a built-in multitrack through hand-set effect chains, with audio and a plot.

Until the console and the mixing model land, this is the main job behind ``make demo``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from gradmix import dsp
from gradmix.audio import write_audio
from gradmix.effects import create
from gradmix.errors import GradmixError
from gradmix.example import EXAMPLE_TRACKS, example_multitrack

SAMPLE_RATE = 44100

# One row per track of EXAMPLE_TRACKS: gain, 6-band EQ gains, compressor, pan, reverb send.
STRIPS = {
    #          gain_db  eq gains (low shelf, 4 peaks, high shelf)   thresh ratio attack release  pan   send_db
    "kick":   (-2.0, [4.0, 2.0, -4.0, 0.0, 2.0, 0.0], -24.0, 4.0, 10.0, 80.0, 0.0, -40.0),
    "snare":  (-4.0, [-6.0, 0.0, 2.0, 3.0, 0.0, 2.0], -22.0, 3.0, 5.0, 120.0, 0.1, -14.0),
    "hats":   (-12.0, [-12.0, -3.0, 0.0, 0.0, 2.0, 3.0], -30.0, 2.0, 1.0, 50.0, 0.45, -20.0),
    "bass":   (-3.0, [3.0, 0.0, -3.0, 1.0, 0.0, -6.0], -26.0, 5.0, 20.0, 200.0, 0.0, -60.0),
    "chords": (-10.0, [-9.0, -2.0, 0.0, 1.0, 0.0, 1.0], -30.0, 2.0, 15.0, 250.0, -0.4, -12.0),
    "lead":   (-7.0, [-9.0, 0.0, 2.0, 3.0, 1.0, 0.0], -24.0, 3.0, 5.0, 150.0, 0.25, -10.0),
}


def run_demo(out_dir: str | Path, seconds: float = 8.0) -> dict[str, Path]:
    """Render the demo into ``out_dir``: dry stems, the plain sum, the processed mix and a plot.

    Returns:
        the written files by role (``stems``, ``sum``, ``mix``, ``plot``).
    """
    out = Path(out_dir)
    try:
        (out / "stems").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GradmixError(f"{out}: cannot create the output folder ({exc.strerror})") from None
    tracks = example_multitrack(seconds, SAMPLE_RATE)
    for name, audio in tracks.items():
        write_audio(out / "stems" / f"{name}.wav", audio, SAMPLE_RATE)
    x = torch.stack([tracks[name] for name in EXAMPLE_TRACKS])  # (tracks, 1, samples): tracks batched
    rows = [STRIPS[name] for name in EXAMPLE_TRACKS]
    col = lambda i: torch.tensor([r[i] for r in rows])  # noqa: E731

    eq = create("eq")
    eq_params = {**{k: torch.tensor(v).expand(len(rows), -1) for k, v in eq.defaults().items()},
                 "gain_db": torch.tensor([r[1] for r in rows])}
    y = create("gain")(x, {"gain_db": col(0)}, sample_rate=SAMPLE_RATE)
    y = eq(y, eq_params, sample_rate=SAMPLE_RATE)
    y = create("compressor")(y, {"threshold_db": col(2), "ratio": col(3), "attack_ms": col(4), "release_ms": col(5),
                                 "makeup_db": (-col(2) * (1 - 1 / col(3))) * 0.5}, sample_rate=SAMPLE_RATE)
    strips = create("pan")(y, {"pan": col(6)}, sample_rate=SAMPLE_RATE)  # (tracks, 2, samples)
    send = (strips * dsp._params.bcast(torch.pow(10.0, col(7) / 20))).sum(0, keepdim=True)
    wet = create("reverb")(send, {"decay_s": [2.2, 1.8, 1.4, 0.9], "predelay_ms": 20.0, "mix": 1.0},
                           sample_rate=SAMPLE_RATE)
    bus = strips.sum(0, keepdim=True) + wet
    master = create("eq")(bus, {"gain_db": [1.0, 0.0, -1.0, 0.0, 0.5, 1.5]}, sample_rate=SAMPLE_RATE)
    master = create("compressor")(master, {"threshold_db": -16.0, "ratio": 2.0, "attack_ms": 30.0,
                                           "release_ms": 200.0, "makeup_db": 2.0}, sample_rate=SAMPLE_RATE)
    master = create("limiter")(master, {"ceiling_db": -1.0, "gain_db": 4.0}, sample_rate=SAMPLE_RATE)
    plain = dsp.pan(x, pan=0.0).sum(0, keepdim=True)

    files = {"stems": out / "stems", "sum": out / "sum.wav", "mix": out / "mix.wav", "plot": out / "demo.png"}
    write_audio(files["sum"], plain[0], SAMPLE_RATE)
    write_audio(files["mix"], master[0], SAMPLE_RATE)
    loud = dsp.integrated_loudness(torch.cat([plain, master]), sample_rate=SAMPLE_RATE)
    _plot(files["plot"], eq, eq_params, plain[0], master[0], loud.tolist())
    _print_summary(files, loud.tolist(), [plain[0].abs().max().item(), master[0].abs().max().item()])
    return files


def _plot(path: Path, eq, eq_params, plain: torch.Tensor, mix: torch.Tensor, loudness: list[float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 7))
    freqs = np.geomspace(20, 20000, 400)
    b, a = dsp.eq.eq_coefficients(eq.shapes, sample_rate=SAMPLE_RATE, freq_hz=eq_params["freq_hz"],
                                  gain_db=eq_params["gain_db"], q=eq_params["q"])
    resp = dsp.frequency_response_db(b, a, freqs, SAMPLE_RATE)
    ax = axes[0, 0]
    for name, r in zip(EXAMPLE_TRACKS, resp):
        ax.semilogx(freqs, r.numpy(), label=name)
    ax.set(title="Track EQ curves", xlabel="Hz", ylabel="dB", ylim=(-15, 15))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    ax = axes[0, 1]
    level = torch.linspace(-60, 0, 200)[None].double()
    for thresh, ratio in [(STRIPS[n][2], STRIPS[n][3]) for n in EXAMPLE_TRACKS]:
        g = dsp.dynamics.compressor_gain_db(level, threshold_db=torch.tensor([thresh]).double(),
                                            ratio=torch.tensor([ratio]).double(), knee_db=torch.tensor([6.0]).double())
        ax.plot(level[0], (level + g)[0])
    ax.plot([-60, 0], [-60, 0], "k:", lw=1)
    ax.set(title="Compressor curves (input -> output level)", xlabel="input dBFS", ylabel="output dBFS")
    ax.grid(alpha=0.3)
    t = np.arange(mix.shape[-1]) / SAMPLE_RATE
    for ax, sig, title, lufs in ((axes[1, 0], plain, "Plain sum", loudness[0]), (axes[1, 1], mix, "Processed mix",
                                                                                  loudness[1])):
        ax.plot(t, sig[0].numpy(), lw=0.3, label="L")
        ax.plot(t, sig[1].numpy(), lw=0.3, alpha=0.7, label="R")
        ax.set(title=f"{title}: {lufs:.1f} LUFS, peak {20 * np.log10(sig.abs().max().item()):.1f} dBFS",
               xlabel="s", ylim=(-1, 1))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _print_summary(files: dict[str, Path], loudness: list[float], peaks: list[float]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="gradmix effects demo")
    table.add_column("output")
    table.add_column("file")
    table.add_column("loudness", justify="right")
    table.add_column("peak", justify="right")
    table.add_row("dry stems", str(files["stems"]), "", "")
    table.add_row("plain sum", str(files["sum"]), f"{loudness[0]:.1f} LUFS", f"{20 * np.log10(peaks[0]):.1f} dBFS")
    table.add_row("processed mix", str(files["mix"]), f"{loudness[1]:.1f} LUFS", f"{20 * np.log10(peaks[1]):.1f} dBFS")
    table.add_row("plot", str(files["plot"]), "", "")
    Console().print(table)
