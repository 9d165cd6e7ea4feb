"""Speed of the whole console, beside the same console built from dasp-pytorch, and of ``gradmix render``.

1. gradmix's full console on 16 mono tracks x 10 s at 44.1 kHz, 2 threads: per track gain -> 6-band EQ ->
   compressor -> pan -> reverb send; a reverb bus (3 s decay); master EQ -> compressor -> limiter.
   Forward and forward+backward (gradient of ``mix.square().mean()`` w.r.t. every parameter), seconds per
   track-second, median of several runs after a warm-up.
2. The same strips from dasp-pytorch (gain, parametric_eq, compressor, stereo_panner; master
   parametric_eq + compressor), with its reverb bus switched off (its direct convolution takes minutes).
3. ``gradmix render`` (a new process) of 8 stereo tracks x 5 min through two consoles (EQ flat, EQ in use), 3
   runs each: wall time, peak memory (max RSS), CPU time, where the time goes (``--timings``) and the
   machine's load average before each run. The goal holds for the slower console's median.

Run from the repository root: ``python benchmarks/console.py [--quick] [--markdown]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from gradmix.console import ConsoleSetting, Layout, Params, Slot
from gradmix.effects import create

SR = 44100
GOAL_CONSOLE = 0.010
GOAL_RENDER_S = 10.0
GOAL_RENDER_GB = 2.0


def signals(tracks: int, seconds: float) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    n = int(seconds * SR)
    env = torch.rand(1, tracks, 1, n // 2205 + 1, generator=gen).repeat_interleave(2205, -1)[..., :n]
    return torch.randn(1, tracks, 1, n, generator=gen) * 0.2 * env**2


def gradmix_console(x: torch.Tensor, grad: bool) -> float:
    layout = Layout.build(
        ["gain", "eq", "compressor", "pan"],
        {"reverb": [Slot(create("reverb"), {"mix": 1.0})]},
        ["eq", "compressor", "limiter"],
    )
    n = x.shape[1]

    def p(v, *shape):
        return (
            torch.full(shape, float(v)).requires_grad_(grad)
            if not isinstance(v, list)
            else torch.tensor(v).expand(*shape, len(v)).clone().requires_grad_(grad)
        )

    eq = {
        "freq_hz": [100.0, 300.0, 1000.0, 3000.0, 6000.0, 10000.0],
        "gain_db": [3.0, -2.0, 1.0, -3.0, 2.0, 1.0],
        "q": [0.707, 1.0, 1.5, 1.0, 2.0, 0.707],
    }
    comp = {
        "threshold_db": -30.0,
        "ratio": 4.0,
        "attack_ms": 5.0,
        "release_ms": 100.0,
        "knee_db": 6.0,
        "makeup_db": 3.0,
    }
    params = Params(
        strip=[
            {"gain_db": p(-3.0, 1, n)},
            {k: p(v, 1, n) for k, v in eq.items()},
            {k: p(v, 1, n) for k, v in comp.items()},
            {"pan": torch.linspace(-0.8, 0.8, n)[None].requires_grad_(grad)},
        ],
        sends_db=p(-12.0, 1, n, 1),
        buses=[[{"decay_s": p([3.0, 2.6, 2.2, 1.6], 1), "predelay_ms": p(20.0, 1), "mix": p(1.0, 1)}]],
        master=[
            {k: p(v, 1) for k, v in eq.items()},
            {**{k: p(v, 1) for k, v in comp.items()}, "threshold_db": p(-12.0, 1)},
            {"ceiling_db": p(-1.0, 1), "release_ms": p(100.0, 1), "gain_db": p(3.0, 1)},
        ],
    )
    t0 = time.perf_counter()
    with torch.set_grad_enabled(grad):
        mix, _ = layout.render(x, params, sample_rate=SR)
        if grad:
            mix.square().mean().backward()
    return time.perf_counter() - t0


def dasp_console(x: torch.Tensor, grad: bool) -> float:
    import dasp_pytorch.functional as F

    n, length = x.shape[1], x.shape[-1]
    xs = x[0]  # (tracks, 1, samples)

    def p(v, *shape):
        return torch.full(shape, float(v)).requires_grad_(grad)

    eq_args = dict(
        low_shelf_gain_db=p(3.0, n),
        low_shelf_cutoff_freq=p(100.0, n),
        low_shelf_q_factor=p(0.707, n),
        band0_gain_db=p(-2.0, n),
        band0_cutoff_freq=p(300.0, n),
        band0_q_factor=p(1.0, n),
        band1_gain_db=p(1.0, n),
        band1_cutoff_freq=p(1000.0, n),
        band1_q_factor=p(1.5, n),
        band2_gain_db=p(-3.0, n),
        band2_cutoff_freq=p(3000.0, n),
        band2_q_factor=p(1.0, n),
        band3_gain_db=p(2.0, n),
        band3_cutoff_freq=p(6000.0, n),
        band3_q_factor=p(2.0, n),
        high_shelf_gain_db=p(1.0, n),
        high_shelf_cutoff_freq=p(10000.0, n),
        high_shelf_q_factor=p(0.707, n),
    )
    comp_args = dict(
        threshold_db=p(-30.0, n),
        ratio=p(4.0, n),
        attack_ms=p(5.0, n),
        release_ms=p(100.0, n),
        knee_db=p(6.0, n),
        makeup_gain_db=p(3.0, n),
    )
    t0 = time.perf_counter()
    with torch.set_grad_enabled(grad):
        y = F.gain(xs, SR, p(-3.0, n))
        y = F.parametric_eq(y, SR, **eq_args)
        y = F.compressor(y, SR, **comp_args)
        y = F.stereo_panner(y.reshape(1, n, -1), SR, torch.linspace(0.1, 0.9, n)[None].requires_grad_(grad))
        mix = y.sum(2)  # (1, 2, tracks, samples) -> (1, 2, samples)
        mix = F.parametric_eq(mix, SR, **{k: v[:1] for k, v in eq_args.items()})
        mix = F.compressor(mix, SR, **{k: v[:1] for k, v in comp_args.items()})
        if grad:
            mix.square().mean().backward()
    del length
    return time.perf_counter() - t0


def median_time(fn, x, grad: bool, runs: int) -> float:
    fn(x[:, :2, :, :SR], grad)  # warm-up (numba JIT, caches)
    return statistics.median(fn(x, grad) for _ in range(runs))


def render_benchmark(minutes: float, tracks: int, runs: int) -> dict[str, list[dict]]:
    """``gradmix render`` of ``tracks`` stereo noise tracks x ``minutes`` through two consoles, ``runs`` times
    each (alternating), each a new process: per run wall seconds, peak GB (max RSS), user and system CPU
    seconds, the stages of ``--timings`` and the 1-minute load average before it started.

    Both consoles: gain, compressor (-30 dB, 4:1), pan and a -12 dB send per track; reverb bus (2.5 s); master
    EQ, compressor, limiter. "EQ at 0 dB": every EQ band flat (such sections are skipped: they are exact
    identities); "EQ in use": every band of every EQ at a non-zero gain.
    """
    import soundfile as sf

    results: dict[str, list[dict]] = {"EQ at 0 dB": [], "EQ in use": []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "song"
        folder.mkdir()
        n = int(minutes * 60 * SR)
        rng = np.random.default_rng(0)
        names = []
        for i in range(tracks):
            with sf.SoundFile(folder / f"t{i}.wav", "w", SR, 2, "FLOAT") as f:
                for start in range(0, n, SR * 30):
                    m = min(SR * 30, n - start)
                    f.write((rng.standard_normal((m, 2)) * 0.05).astype(np.float32))
            names.append(f"t{i}.wav")
        consoles = {}
        for name in results:
            setting = ConsoleSetting.neutral([Path(s).stem for s in names], names, sample_rate=SR)
            for t in setting.tracks:
                t.chain[2].params.update(threshold_db=-30.0, ratio=4.0)
                t.sends = {"reverb": -12.0}
            setting.buses[0].chain[0].params.update(mix=1.0, decay_s=[2.5, 2.0, 1.6, 1.0])
            if name == "EQ in use":
                for eq in [t.chain[1] for t in setting.tracks] + [setting.master[0]]:
                    eq.params["gain_db"] = [2.0, -3.0, 1.5, -2.0, 2.5, -1.0]
            consoles[name] = setting.save(Path(tmp) / f"console{len(consoles)}.json")
        for _ in range(runs):
            for name, console in consoles.items():
                # a small wrapper process starts render, so that the peak memory and CPU time reported are
                # render's own (a child forked straight from this large process would count its pages too)
                cmd = [
                    sys.executable,
                    "-m",
                    "gradmix.cli.main",
                    "render",
                    str(folder),
                    str(console),
                    "-o",
                    str(Path(tmp) / "mix.wav"),
                    "--timings",
                ]
                wrapper = (
                    "import json, resource, subprocess, time; t = time.perf_counter(); "
                    f"out = subprocess.run({cmd!r}, check=True, capture_output=True, text=True).stdout; "
                    "wall = time.perf_counter() - t; r = resource.getrusage(resource.RUSAGE_CHILDREN); "
                    "print(json.dumps(dict(wall=wall, peak_gb=r.ru_maxrss / 1024 ** 2, user=r.ru_utime, "
                    "sys=r.ru_stime, stages=out.split('timings: ')[-1].strip())))"
                )
                load = os.getloadavg()[0]
                out = subprocess.run([sys.executable, "-c", wrapper], check=True, capture_output=True, text=True).stdout
                results[name].append({**json.loads(out), "load": load})
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="shorter signals, fewer runs")
    ap.add_argument("--markdown", action="store_true", help="print Markdown instead of plain text")
    args = ap.parse_args()
    torch.set_num_threads(2)
    seconds, runs = (2.0, 2) if args.quick else (10.0, 5)
    x = signals(16, seconds)
    track_seconds = 16 * seconds
    rows = []
    for name, fn, note in (
        ("gradmix", gradmix_console, "reverb bus on"),
        ("dasp-pytorch", dasp_console, "reverb bus off (direct convolution: minutes)"),
    ):
        try:
            fwd = median_time(fn, x, False, runs) / track_seconds
            both = median_time(fn, x, True, runs) / track_seconds
        except ImportError:
            fwd = both = math.nan
            note = "not installed (pip install -e '.[bench]')"
        rows.append((name, fwd, both, note))
    minutes = 0.5 if args.quick else 5.0
    renders = render_benchmark(minutes, 8, 1 if args.quick else 3)
    walls = {name: statistics.median(r["wall"] for r in runs_) for name, runs_ in renders.items()}
    wall = max(walls.values())
    peak = max(r["peak_gb"] for runs_ in renders.values() for r in runs_)
    sep = " | "
    print(f"console: 16 mono tracks x {seconds:g} s, {SR} Hz, 2 threads, median of {runs}; seconds per track-second")
    print(sep.join(["implementation", "fwd", "fwd+bwd", "notes"]))
    if args.markdown:
        print(sep.join(["---"] * 4))
    for name, fwd, both, note in rows:
        print(sep.join([name, f"{fwd:.4f}", f"{both:.4f}", note]))
    for name, runs_ in renders.items():
        print(
            f"\ngradmix render, 8 stereo tracks x {minutes:g} min, {name} (new process each run): median "
            f"{walls[name]:.1f} s wall"
        )
        for r in runs_:
            print(
                f"  {r['wall']:.1f} s wall, CPU {r['user']:.1f} s user + {r['sys']:.1f} s system, "
                f"{r['peak_gb']:.2f} GB peak, load {r['load']:.1f} before; {r['stages']} (the rest: start-up, imports)"
            )
    g = rows[0]
    print("\nGoals:")
    print(f"  {'MET' if g[2] <= GOAL_CONSOLE else 'NOT MET'}: console fwd+bwd <= {GOAL_CONSOLE} s/track-s: {g[2]:.4f}")
    if not args.quick:
        print(
            f"  {'MET' if wall <= GOAL_RENDER_S else 'NOT MET'}: "
            f"render 8 stereo x 5 min <= {GOAL_RENDER_S:g} s: {wall:.1f} s"
        )
        print(
            f"  {'MET' if peak <= GOAL_RENDER_GB else 'NOT MET'}: "
            f"render peak memory <= {GOAL_RENDER_GB:g} GB: {peak:.2f} GB"
        )


if __name__ == "__main__":
    main()
