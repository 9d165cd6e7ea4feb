"""gradmix on a CUDA device beside the same machine's CPU cores, and dasp-pytorch and torchcomp on the device
where they are installed.

Rows, each forward + backward (the gradient of ``y.square().mean()`` with respect to the input and every
parameter), the median of several runs after a warm-up, in **seconds per track-second**:

- 6-band parametric EQ and the compressor (attack and release), 16 mono tracks x 10 s, one setting per track;
- the default console (strips, reverb and delay sends, master bus) on 16 stereo tracks x 10 s, engineer-like
  random settings with the reverb on;
- a training step of the default recipe's sizes (batch 4 x 16 stereo tracks x 3 s: the controller, the
  console, the mix loss, the backward and an AdamW step), in seconds per step.

On the CPU torch uses every core (the numba kernels too); on CUDA the effects take the block-parallel path of
:mod:`gradmix.dsp.linear_scan`. ``benchmarks/gpu_check.sh`` runs this and the ``cuda`` tests in one call.

    python benchmarks/gpu.py [--quick] [--markdown] [--out FILE.json] [--devices all|cuda|cpu]

A peer that fails on the machine (an import that works but a kernel that does not build) gets its row with
the error as a note.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch
from effects import EQ_FREQS_HZ, EQ_SHAPES, SR, dasp_peq, torchcomp_compressor

import gradmix.dsp as gd
from gradmix.console import Layout
from gradmix.models import MixController, MixLoss, ModelConfig
from gradmix.models.engineer import engineer_controls


def timed(fn: Callable[[], None], device: torch.device, runs: int) -> float:
    """Median wall seconds of ``fn`` over ``runs`` runs after one warm-up run."""
    fn()
    times = []
    for _ in range(runs):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def backward_of(apply: Callable[[torch.Tensor, dict], torch.Tensor], x: torch.Tensor, params: dict):
    """A closure running ``apply`` forward and backward with fresh leaves of ``x`` and ``params``."""

    def run() -> None:
        leaves = {k: v.detach().requires_grad_() for k, v in params.items()}
        y = apply(x.detach().requires_grad_(), leaves)
        y.square().mean().backward()

    return run


def peq(tracks: int, seconds: float, device: torch.device) -> tuple[torch.Tensor, dict]:
    g = torch.Generator().manual_seed(0)
    params = {
        "freq_hz": torch.tensor(EQ_FREQS_HZ).expand(tracks, -1)
        * (1 + 0.15 * (2 * torch.rand(tracks, 6, generator=g) - 1)),
        "gain_db": 9.0 * (2 * torch.rand(tracks, 6, generator=g) - 1),
        "q": torch.full((tracks, 6), 0.9),
    }
    x = torch.randn(tracks, 1, int(seconds * SR), generator=g) * 0.1
    return x.to(device), {k: v.to(device) for k, v in params.items()}


def compressor_params(tracks: int, device: torch.device) -> dict:
    values = {
        "threshold_db": -30.0,
        "ratio": 4.0,
        "attack_ms": 5.0,
        "release_ms": 100.0,
        "knee_db": 6.0,
        "makeup_db": 0.0,
    }
    return {k: torch.full((tracks,), v, device=device) for k, v in values.items()}


def effect_rows(device: torch.device, tracks: int, seconds: float, runs: int) -> list[dict]:
    x, eq = peq(tracks, seconds, device)
    bursts = x * (torch.arange(x.shape[-1], device=device) % SR < SR // 4)  # notes: every compressor acts
    comp = compressor_params(tracks, device)
    impls = [
        (
            "6-band EQ",
            "gradmix",
            lambda v, p: gd.parametric_eq(v, sample_rate=SR, shapes=EQ_SHAPES, **p),
            x,
            eq,
        ),
        ("compressor", "gradmix", lambda v, p: gd.compressor(v, sample_rate=SR, **p), bursts, comp),
    ]
    try:
        import dasp_pytorch.functional as dasp

        def dasp_compressor(v, p):
            t, r, a, k = p["threshold_db"], p["ratio"], p["attack_ms"], p["knee_db"]
            return dasp.compressor(v, SR, t, r, a, a, k, p["makeup_db"])

        impls += [
            ("6-band EQ", "dasp-pytorch", dasp_peq, x, eq),
            ("compressor", "dasp-pytorch", dasp_compressor, bursts, comp),
        ]
    except ImportError:
        pass
    try:
        import torchcomp  # noqa: F401  (torchcomp_compressor imports it)

        impls.append(("compressor", "torchcomp", torchcomp_compressor, bursts, comp))
    except ImportError:
        pass
    rows = []
    for job, lib, fn, sig, params in impls:
        try:
            rows.append({"job": job, "library": lib, "s": timed(backward_of(fn, sig, params), device, runs)})
        except Exception as exc:  # a peer that does not run here is a note in the table, not the end of the run
            rows.append({"job": job, "library": lib, "s": float("nan"), "note": f"failed: {exc!r}"[:120]})
    return [{**r, "s": r["s"] / (tracks * seconds)} for r in rows]


def console_row(device: torch.device, tracks: int, seconds: float, runs: int) -> dict:
    layout = Layout.default()
    g = torch.Generator().manual_seed(1)
    controls = engineer_controls(layout, 1, tracks, g)
    sends = controls.sends.clone()
    sends[..., layout.bus_names.index("reverb")] = 0.8  # every track to the reverb
    x = (torch.randn(1, tracks, 2, int(seconds * SR), generator=g) * 0.1).to(device)
    strip, sends = controls.strip.to(device), sends.to(device)

    def run() -> None:
        s = strip.detach().requires_grad_()
        c = type(controls)(s, sends, controls.buses.to(device), controls.master.to(device))
        mix, _ = layout.render(x.detach().requires_grad_(), layout.denormalize(c), sample_rate=SR)
        mix.square().mean().backward()

    return {"job": "console, reverb on", "library": "gradmix", "s": timed(run, device, runs) / (tracks * seconds)}


def training_row(device: torch.device, runs: int) -> dict:
    layout = Layout.default()
    model = MixController(layout, ModelConfig(style_dim=16, track_contrast=True)).to(device)
    loss = MixLoss(SR).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(2)
    x = (torch.randn(4, 16, 2, 3 * SR, generator=g) * 0.05).to(device)
    target = (torch.randn(4, 2, 3 * SR, generator=g) * 0.1).to(device)

    def run() -> None:
        mu, logvar = model.encode_style(target, sample_rate=SR)
        controls = model(x, sample_rate=SR, z=mu + torch.randn_like(mu) * torch.exp(0.5 * logvar))
        estimate, _ = layout.render(x, layout.denormalize(controls), sample_rate=SR)
        value, _ = loss(estimate, target)
        opt.zero_grad()
        value.backward()
        opt.step()

    return {
        "job": "training step (4 x 16 x 3 s)",
        "library": "gradmix",
        "s": timed(run, device, runs),
        "unit": "s/step",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 s signals and 2 runs: a smoke test")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument("--out", help="also write the rows as JSON")
    parser.add_argument("--devices", choices=("all", "cuda", "cpu"), default="all", help="where to measure")
    args = parser.parse_args()
    seconds, runs = (2.0, 2) if args.quick else (10.0, 5)
    torch.set_num_threads(os.cpu_count() or 1)
    devices = [torch.device("cuda")] if torch.cuda.is_available() and args.devices != "cpu" else []
    devices += [torch.device("cpu")] if args.devices != "cuda" else []
    rows = []
    for device in devices:
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {os.cpu_count()} threads"
        found = effect_rows(device, 16, seconds, runs) + [
            console_row(device, 16, seconds, runs),
            training_row(device, runs),
        ]
        rows += [{**r, "device": name, "unit": r.get("unit", "s per track-second")} for r in found]
    header = f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {time.strftime('%Y-%m-%d')}"
    print(header)
    if args.markdown:
        print("| job | library | device | time | unit | note |\n|---|---|---|---:|---|---|")
    for r in rows:
        line = (r["job"], r["library"], r["device"], f"{r['s']:.6f}", r["unit"], r.get("note", ""))
        print("| " + " | ".join(line) + " |" if args.markdown else "  ".join(line))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"header": header, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
