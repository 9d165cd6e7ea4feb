"""A mix report: one HTML page with the console drawn (fader and pan per track, EQ curves, compressor curves,
sends, master) and the loudness before and after. Figures are PNGs embedded in the page, so it is one file."""

from __future__ import annotations

import base64
import html
import io
import math
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from gradmix import dsp
from gradmix.audio import write_text_atomically
from gradmix.console import ConsoleSetting
from gradmix.dsp import integrated_loudness


def find_entry(chain, type_name: str):
    """The first entry of ``type_name`` in a chain of console entries, or ``None``."""
    return next((e for e in chain if e.effect.type_name == type_name), None)


def eq_response_db(entry, freqs: np.ndarray, sample_rate: int) -> np.ndarray:
    """Magnitude response (dB) of a parametric-EQ entry at ``freqs`` (Hz)."""
    p = {k: torch.tensor([entry.params[k]], dtype=torch.float64) for k in ("freq_hz", "gain_db", "q")}
    b, a = dsp.eq.eq_coefficients(entry.effect.shapes, sample_rate=sample_rate, **p)
    return dsp.frequency_response_db(b, a, freqs, sample_rate)[0].numpy()


def _compressor_curve(entry, level: np.ndarray) -> np.ndarray:
    p = {k: torch.tensor([float(entry.params[k])], dtype=torch.float64) for k in ("threshold_db", "ratio", "knee_db")}
    lv = torch.tensor(level, dtype=torch.float64)[None]
    return (lv + dsp.dynamics.compressor_gain_db(lv, **p) + float(entry.params.get("makeup_db", 0.0)))[0].numpy()


def _short_term_lufs(x: Tensor, sample_rate: int) -> np.ndarray:
    power = dsp.loudness.block_powers(x[None].double(), sample_rate=sample_rate, block_s=3.0, step_s=1.0)[0]
    return (-0.691 + 10 * torch.log10(power.clamp_min(1e-12))).numpy()


def console_figure(setting: ConsoleSetting, before: Tensor | None, after: Tensor | None):
    """A matplotlib figure of the console (and of the loudness over time when audio is given)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sr, names = setting.sample_rate, [t.name for t in setting.tracks]
    n = len(names)
    fig, axes = plt.subplots(3, 2, figsize=(13, 12))
    y = np.arange(n)
    gains = [
        float(find_entry(t.chain, "gain").params["gain_db"]) if find_entry(t.chain, "gain") else 0.0
        for t in setting.tracks
    ]
    pans = [
        float(find_entry(t.chain, "pan").params["pan"]) if find_entry(t.chain, "pan") else 0.0 for t in setting.tracks
    ]
    ax = axes[0, 0]
    ax.barh(y, gains, color="tab:blue")
    ax.set(yticks=y, yticklabels=names, xlabel="dB", title="Fader (gain) per track")
    ax.invert_yaxis()
    ax.grid(axis="x", alpha=0.3)
    ax = axes[0, 1]
    ax.scatter(pans, y, color="tab:orange", zorder=3)
    ax.set(yticks=y, yticklabels=names, xlim=(-1.05, 1.05), xlabel="L  <-  pan  ->  R", title="Pan per track")
    ax.axvline(0, color="k", lw=0.8)
    ax.invert_yaxis()
    ax.grid(alpha=0.3)
    freqs = np.geomspace(20, min(20000, sr / 2 * 0.99), 300)
    ax = axes[1, 0]
    for t in setting.tracks:
        eq = find_entry(t.chain, "eq")
        if eq is not None:
            ax.semilogx(freqs, eq_response_db(eq, freqs, sr), lw=1, label=t.name)
    master_eq = find_entry(setting.master, "eq")
    if master_eq is not None:
        ax.semilogx(freqs, eq_response_db(master_eq, freqs, sr), "k", lw=2.5, label="master")
    ax.set(title="EQ curves", xlabel="Hz", ylabel="dB", ylim=(-15, 15))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    ax = axes[1, 1]
    level = np.linspace(-60, 0, 200)
    for t in setting.tracks:
        comp = find_entry(t.chain, "compressor")
        if comp is not None:
            ax.plot(level, _compressor_curve(comp, level), lw=1, label=t.name)
    master_comp = find_entry(setting.master, "compressor")
    if master_comp is not None:
        ax.plot(level, _compressor_curve(master_comp, level), "k", lw=2.5, label="master")
    ax.plot(level, level, "k:", lw=1)
    ax.set(title="Compressor curves (input -> output level)", xlabel="input dB", ylabel="output dB")
    ax.grid(alpha=0.3)
    ax = axes[2, 0]
    buses = [b.name for b in setting.buses]
    width = 0.8 / max(1, len(buses))
    for k, bus in enumerate(buses):
        levels = [t.sends.get(bus, -math.inf) for t in setting.tracks]
        ax.barh(y + k * width, [60 + v if v > -60 else 0 for v in levels], width, left=-60, label=bus)
    ax.set(yticks=y, yticklabels=names, xlim=(-60, 0), xlabel="send level, dB", title="Sends to buses")
    ax.invert_yaxis()
    ax.legend(fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    ax = axes[2, 1]
    if before is not None and after is not None:
        for sig, label in ((before, "before (plain sum)"), (after, "after (mix)")):
            st = _short_term_lufs(sig, sr)
            ax.plot(
                np.arange(len(st)),
                st,
                label=f"{label}: {integrated_loudness(sig[None], sample_rate=sr).item():.1f} LUFS",
            )
        ax.set(title="Short-term loudness (3 s blocks)", xlabel="s", ylabel="LUFS")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    else:
        ax.axis("off")
    fig.tight_layout()
    return fig


def write_report(
    path: str | os.PathLike,
    setting: ConsoleSetting,
    *,
    before: Tensor | None = None,
    after: Tensor | None = None,
    mix_file: str | os.PathLike | None = None,
) -> Path:
    """Write the report page to ``path`` (atomically)."""
    import matplotlib.pyplot as plt

    path = Path(path)
    fig = console_figure(setting, before, after)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    png = base64.b64encode(buf.getvalue()).decode()
    rows = []
    for t in setting.tracks:
        cells = [html.escape(t.name)]
        for type_name, keys in (("gain", ("gain_db",)), ("pan", ("pan",)), ("compressor", ("threshold_db", "ratio"))):
            e = find_entry(t.chain, type_name)
            cells.append(", ".join(f"{float(e.params[k]):.2f}" for k in keys) if e else "")
        cells.append(", ".join(f"{b} {v:.1f} dB" for b, v in t.sends.items()) or "none")
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    loud = ""
    if before is not None and after is not None:
        lb = integrated_loudness(before[None], sample_rate=setting.sample_rate).item()
        la = integrated_loudness(after[None], sample_rate=setting.sample_rate).item()
        pa = 20 * math.log10(max(after.abs().max().item(), 1e-12))
        loud = f"<p>Loudness: plain sum {lb:.1f} LUFS &rarr; mix {la:.1f} LUFS, peak {pa:.1f} dBFS.</p>"
    player = ""
    if mix_file is not None:
        rel = os.path.relpath(Path(mix_file).resolve(), path.resolve().parent)
        player = f'<p><audio controls src="{html.escape(rel)}"></audio> {html.escape(Path(mix_file).name)}</p>'
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>gradmix mix report</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:auto}}td,th{{padding:2px 10px;text-align:right}}
td:first-child{{text-align:left}}</style></head><body>
<h1>gradmix mix report</h1>{loud}{player}
<table><tr><th>track</th><th>gain dB</th><th>pan</th><th>comp. threshold dB, ratio</th><th>sends</th></tr>
{"".join(rows)}</table>
<img alt="the console" style="width:100%" src="data:image/png;base64,{png}">
<p>The console file beside the mix holds every setting; edit it and run <code>gradmix render</code>.</p>
</body></html>"""
    write_text_atomically(path, page)
    return path


def comparison_page(path: Path, settings: list[ConsoleSetting], results: list) -> None:
    """``gradmix sample``'s page: one row per mix (gain/pan map, EQ curves, loudness, a player); ``results`` hold
    each mix's ``mix`` and ``console`` paths, ``loudness_lufs`` and ``peak_dbfs``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = []
    for k, (setting, r) in enumerate(zip(settings, results)):
        fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3))
        for t in setting.tracks:
            g, p = find_entry(t.chain, "gain"), find_entry(t.chain, "pan")
            x, y = (float(p.params["pan"]) if p else 0.0), (float(g.params["gain_db"]) if g else 0.0)
            a.scatter([x], [y])
            a.annotate(t.name, (x, y), fontsize=7)
        a.set(xlim=(-1.1, 1.1), xlabel="pan", ylabel="fader dB", title="gain / pan map")
        a.grid(alpha=0.3)
        freqs = np.geomspace(20, min(20000, setting.sample_rate * 0.49), 200)
        for t in setting.tracks:
            eq = find_entry(t.chain, "eq")
            if eq is not None:
                b.semilogx(freqs, eq_response_db(eq, freqs, setting.sample_rate), lw=0.8)
        master = find_entry(setting.master, "eq")
        if master is not None:
            b.semilogx(freqs, eq_response_db(master, freqs, setting.sample_rate), "k", lw=2)
        b.set(ylim=(-15, 15), xlabel="Hz", ylabel="dB", title="EQ curves (black: master)")
        b.grid(alpha=0.3, which="both")
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=80)
        plt.close(fig)
        png = base64.b64encode(buf.getvalue()).decode()
        rows.append(
            f"<h2>{html.escape(r.mix.name)}: {r.loudness_lufs:.1f} LUFS, peak {r.peak_dbfs:.1f} dBFS</h2>"
            f'<audio controls src="{html.escape(r.mix.name)}"></audio> '
            f'<a href="{html.escape(r.console.name)}">console file</a><br>'
            f'<img alt="console of {html.escape(r.mix.name)}" src="data:image/png;base64,{png}">'
        )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>gradmix samples</title></head>"
        "<body style='font-family:sans-serif;max-width:1000px;margin:auto'><h1>gradmix: sampled mixes</h1>"
        "<p>Each mix is an editable console file: pick one, edit it, render it with <code>gradmix render</code>."
        "</p>" + "".join(rows) + "</body></html>"
    )
    write_text_atomically(path, page)
