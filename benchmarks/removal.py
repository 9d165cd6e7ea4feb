"""Benchmark ``gradmix dry`` on a 3-minute stereo stem, with every effect of a removal chain applied.

The stem is the built-in example's chords and lead, repeated to 3 minutes, through an EQ, a compressor, a
distortion, a delay and a reverb (the estimator decides which it hears); the command runs in a new process
(imports included), 2 CPU threads: wall time and peak memory (max RSS of the child). Goal: <= 30 s.

    python benchmarks/removal.py [--quick] [--model PATH]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import soundfile as sf
import torch

from gradmix.example import example_multitrack
from gradmix.removal.chains import REMOVABLE, draw_chains, peak_gain_db, render_chains
from mix import timed

SR = 44100
GOAL_S = 30.0


def write_wet(path: Path, minutes: float) -> None:
    tracks = example_multitrack(8.0, SR)
    x = (tracks["chords"] + tracks["lead"]).expand(2, -1)
    x = x.repeat(1, int(minutes * 60 / 8) + 1)[:, : int(minutes * 60 * SR)][None].double()
    x = x * torch.pow(10.0, peak_gain_db(x) / 20)[:, None, None]
    every = torch.ones(1, len(REMOVABLE), dtype=torch.bool)
    wet = render_chains(x, draw_chains(1, torch.Generator().manual_seed(0), present=every), SR)[0]
    sf.write(path, wet.T.float().numpy(), SR, subtype="FLOAT")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="30 s instead of 3 min")
    ap.add_argument("--model", help="effect estimator (default: the shipped one)")
    args = ap.parse_args()
    minutes = 0.5 if args.quick else 3.0
    with tempfile.TemporaryDirectory() as tmp:
        wet = Path(tmp) / "wet.wav"
        write_wet(wet, minutes)
        cmd = [sys.executable, "-m", "gradmix.cli.main", "dry", str(wet), "-o", str(Path(tmp) / "dry.wav")]
        wall, peak = timed(cmd + (["--model", args.model] if args.model else []))
    print(f"1 stereo stem x {minutes:g} min, {SR} Hz, every removable effect applied, new process, 2 threads")
    print("command | wall s | peak GB")
    print("--- | ---: | ---:")
    print(f"gradmix dry | {wall:.1f} | {peak:.2f}")
    if not args.quick:
        print(f"\nGoal: {'MET' if wall <= GOAL_S else 'NOT MET'}: 3-min stereo stem <= {GOAL_S:g} s: {wall:.1f} s")


if __name__ == "__main__":
    main()
