"""Benchmark ``gradmix mix`` (analysis by the model + render) beside ``gradmix render`` of the console it wrote.

8 stereo tracks x 3 minutes (band-limited noise bursts, 44.1 kHz float WAV), each command in a new process
(imports included), 2 CPU threads: wall time and peak memory (max RSS of the child). Goal: mix <= 20 s.

    python benchmarks/mix.py [--quick] [--model PATH]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 44100
GOAL_MIX_S = 20.0


def write_stems(folder: Path, tracks: int, minutes: float) -> None:
    folder.mkdir()
    n = int(minutes * 60 * SR)
    rng = np.random.default_rng(0)
    for i in range(tracks):
        with sf.SoundFile(folder / f"t{i}.wav", "w", SR, 2, "FLOAT") as f:
            for start in range(0, n, SR * 30):
                m = min(SR * 30, n - start)
                x = rng.standard_normal((m, 2)).cumsum(0) * 1e-3 if i % 2 else rng.standard_normal((m, 2)) * 0.05
                f.write((x - x.mean(0)).astype(np.float32))


def timed(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak GB of ``cmd`` run from a small wrapper process (so the RSS is the command's own)."""
    wrapper = (
        "import resource, subprocess, sys, time; t = time.perf_counter(); "
        f"subprocess.run({cmd!r}, check=True, stdout=subprocess.DEVNULL); "
        "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    out = subprocess.run(
        [sys.executable, "-c", wrapper],
        check=True,
        capture_output=True,
        text=True,
        env={"OMP_NUM_THREADS": "2", **os.environ},
    ).stdout
    wall, peak_kb = (float(v) for v in out.split())
    return wall, peak_kb / 1024**2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="30 s tracks instead of 3 min")
    ap.add_argument("--model", help="model file (default: the shipped model)")
    args = ap.parse_args()
    minutes = 0.5 if args.quick else 3.0
    cli = [sys.executable, "-m", "gradmix.cli.main"]
    with tempfile.TemporaryDirectory() as tmp:
        stems = Path(tmp) / "stems"
        write_stems(stems, 8, minutes)
        mix_cmd = [*cli, "mix", str(stems), "-o", str(Path(tmp) / "mix.wav")] + (
            ["--model", args.model] if args.model else []
        )
        rows = [("gradmix mix (analysis + render)", *timed(mix_cmd))]
        rows.append(
            (
                "gradmix render of its console",
                *timed(
                    [
                        *cli,
                        "render",
                        str(stems),
                        str(Path(tmp) / "mix.console.json"),
                        "-o",
                        str(Path(tmp) / "again.wav"),
                    ]
                ),
            )
        )
    print(f"8 stereo tracks x {minutes:g} min, {SR} Hz, new process each, 2 threads")
    print("command | wall s | peak GB")
    print("--- | ---: | ---:")
    for name, wall, peak in rows:
        print(f"{name} | {wall:.1f} | {peak:.2f}")
    if not args.quick:
        wall = rows[0][1]
        print(
            f"\nGoal: {'MET' if wall <= GOAL_MIX_S else 'NOT MET'}: "
            f"mix 8 stereo x 3 min <= {GOAL_MIX_S:g} s: {wall:.1f} s"
        )


if __name__ == "__main__":
    main()
