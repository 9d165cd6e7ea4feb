"""Benchmark ``gradmix fit``: reverse-engineer a mix rendered from the same stems by a known console.

8 tracks x 10 s (the built-in example's instruments, two of them twice, stereo and mono), the target rendered
by an engineer-like random console of the default effect set (gain, 6-band EQ, compressor, pan; reverb and
delay sends and buses; master EQ, compressor, limiter), then ``gradmix fit`` with its default 2-minute budget
on 2 CPU threads. Prints the residual (error energy relative to the target, dB), the time, and how far the
fitted console is from the true one, per control group (mean absolute difference of the 0..1 controls).
Goal: <= -30 dB within 2 minutes.

    python benchmarks/fit.py [--budget S] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

SR = 44100
GOAL_DB = -30.0


def make_case(folder: Path, seed: int) -> tuple[Path, Path, object]:
    from gradmix.console import ConsoleSetting, Layout
    from gradmix.example import example_multitrack
    from gradmix.models.engineer import engineer_controls

    stems = folder / "stems"
    stems.mkdir(parents=True)
    tracks = list(example_multitrack(10.0, SR, seed=seed).items())
    tracks += [(f"{n}2", torch.roll(x, 5000 * (k + 1), -1)) for k, (n, x) in enumerate(tracks[:2])]
    audio = []
    for k, (name, x) in enumerate(tracks):
        x = torch.cat([x, 0.8 * torch.roll(x, 300, -1)]) if k % 2 else x
        sf.write(stems / f"{name}.wav", x.T.numpy(), SR)
        audio.append(x)
    layout = Layout.default()
    controls = engineer_controls(layout, 1, len(tracks), torch.Generator().manual_seed(seed))
    params = layout.denormalize(controls)
    setting = ConsoleSetting.from_params(
        layout, params, names=[n for n, _ in tracks], files=[f"{n}.wav" for n, _ in tracks], sample_rate=SR
    )
    with torch.no_grad():
        mix, _ = setting.render(audio, keep_strips=False)
    target = folder / "target.wav"
    sf.write(target, mix.T.numpy(), SR, subtype="FLOAT")
    return stems, target, setting


def control_errors(true, fitted) -> dict[str, float]:
    """Mean |difference| of the 0..1 controls per effect type (strips), buses and master."""
    from gradmix.console import ConsoleSetting

    out: dict[str, list[float]] = {}

    def add(key, a, b):
        for name, va in a.params.items():
            specs = [s for s in a.effect.specs if s.name == name]
            va, vb = np.atleast_1d(va), np.atleast_1d(b.params[name])
            for spec, x, y in zip(specs, va, vb):  # one spec per band for banded parameters
                u = [
                    float(spec.normalize(torch.tensor(min(max(float(v), spec.min), spec.max), dtype=torch.float64)))
                    for v in (x, y)
                ]
                out.setdefault(f"{key}.{name}", []).append(abs(u[0] - u[1]))

    assert isinstance(true, ConsoleSetting)
    by_name = {t.name: t for t in fitted.tracks}  # the fit lists the stems in file-name order
    for ta in true.tracks:
        tb = by_name[ta.name]
        for ea, eb in zip(ta.chain, tb.chain):
            add(ea.effect.type_name, ea, eb)
        for bus, level in ta.sends.items():
            out.setdefault("sends.level_db", []).append(abs(level - tb.sends.get(bus, -60.0)) / 60.0)
    for ba, bb in zip(true.buses, fitted.buses):
        for ea, eb in zip(ba.chain, bb.chain):
            add(f"bus {ba.name}", ea, eb)
    for ea, eb in zip(true.master, fitted.master):
        add(f"master {ea.effect.type_name}", ea, eb)
    return {k: float(np.mean(v)) for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=120.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--details", action="store_true", help="print the control errors per parameter")
    args = parser.parse_args()
    torch.set_num_threads(2)
    from rich.console import Console
    from rich.table import Table

    from gradmix.console import ConsoleSetting
    from gradmix.fit import fit_folder

    table = Table(
        title=f"gradmix fit: 8 tracks x 10 s, engineer-like console with reverb + delay, budget {args.budget:.0f} s"
    )
    for col in ("seed", "residual", "steps", "wall", "goal"):
        table.add_column(col, justify="right")
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as tmp:
            stems, target, true = make_case(Path(tmp), seed)
            t = time.perf_counter()
            path, residual, steps = fit_folder(stems, target, Path(tmp) / "fit.console.json", budget_s=args.budget)
            wall = time.perf_counter() - t
            table.add_row(
                str(seed),
                f"{residual:.1f} dB",
                str(steps),
                f"{wall:.0f} s",
                "met" if residual <= GOAL_DB and wall <= args.budget + 30 else "not met",
            )
            if args.details:
                errors = control_errors(true, ConsoleSetting.load(path))
                for k, v in sorted(errors.items(), key=lambda kv: -kv[1]):
                    print(f"  seed {seed} {k:32s} {v:.3f}")
    Console().print(table)


if __name__ == "__main__":
    main()
