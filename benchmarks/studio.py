"""Benchmark ``gradmix studio`` in a real browser (Debian's chromium driven by Playwright).

- edit-to-audible latency: from the moment a control moves in the page to the moment the re-rendered loop
  region is decoded and playing (the page records it in ``studio.latencies``), for one fader move and one EQ
  band change, 8 stereo tracks, 30 s loop region. Goal: <= 1 s.
- page load: from navigation until every version's loop region is rendered, decoded and ready to play, with
  8 and with 64 tracks (the server has already analysed the song; its start-up time is printed apart).

Stems: the built-in example's instruments (stereo, 45 s), repeated to the track count.

    python benchmarks/studio.py [--repeats N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

SR = 44100
GOAL_S = 1.0
CHROMIUM = "/usr/bin/chromium"


def write_stems(folder: Path, tracks: int, seconds: float) -> Path:
    from gradmix.example import example_multitrack

    folder.mkdir(parents=True)
    stems = list(example_multitrack(seconds, SR).values())
    for i in range(tracks):
        x = stems[i % len(stems)][0].numpy() * (0.5 + 0.5 * ((i * 7) % 5) / 4)
        delayed = np.roll(x, 200 + 37 * i)
        sf.write(folder / f"track{i:02d}.wav", np.stack([x, delayed], 1).astype(np.float32), SR)
    return folder


def measure(browser, stems: Path, out: Path, repeats: int, edits: bool) -> dict[str, float]:
    from gradmix.studio import Session
    from gradmix.studio.server import Studio

    t = time.perf_counter()
    session = Session(stems, out)
    startup = time.perf_counter() - t
    row = {"startup_s": startup}
    with Studio(session, port=0) as studio:
        page = browser.new_page(viewport={"width": 1600, "height": 900})
        t = time.perf_counter()
        page.goto(studio.url)
        page.wait_for_function("window.studio && window.studio.ready", timeout=300_000)
        row["load_s"] = time.perf_counter() - t
        if edits:
            page.click("#play")
            page.wait_for_function("studio.playingVersion === 'edited'")
            fader = page.locator(".strip[data-track='3'] .fader-input")
            for k in range(repeats):
                n = page.evaluate("studio.latencies.length")
                fader.fill(str(-6.0 - k))
                page.wait_for_function(f"studio.latencies.length > {n}", timeout=60_000)
            lat = page.evaluate("studio.latencies")
            row["fader_s"] = statistics.median(lat[-repeats:]) / 1000
            gain = page.locator(".strip[data-track='3'] .band-editor input[data-key='gain_db']")
            for k in range(repeats):
                n = page.evaluate("studio.latencies.length")
                gain.fill(str(3.0 + k))
                gain.dispatch_event("change")
                page.wait_for_function(f"studio.latencies.length > {n}", timeout=60_000)
            lat = page.evaluate("studio.latencies")
            row["eq_s"] = statistics.median(lat[-repeats:]) / 1000
        page.close()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(2)
    from playwright.sync_api import sync_playwright
    from rich.console import Console
    from rich.table import Table

    rows = {}
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--autoplay-policy=no-user-gesture-required",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        for tracks in (8, 64):
            stems = write_stems(Path(tmp) / f"s{tracks}", tracks, 45.0)
            rows[tracks] = measure(browser, stems, Path(tmp) / f"o{tracks}", args.repeats, edits=tracks == 8)
        browser.close()
    table = Table(title="gradmix studio: 45 s stereo stems, 30 s loop region, 2 CPU threads, headless chromium")
    for col in (
        "tracks",
        "server start-up (mix + analysis)",
        "page load (all versions playable)",
        "fader move -> audible (median)",
        "EQ band change -> audible (median)",
    ):
        table.add_column(col, justify="right")
    fmt = lambda v: "–" if v is None else f"{v:.2f} s"  # noqa: E731
    for tracks, r in rows.items():
        table.add_row(str(tracks), fmt(r["startup_s"]), fmt(r["load_s"]), fmt(r.get("fader_s")), fmt(r.get("eq_s")))
    Console().print(table)
    worst = max(rows[8]["fader_s"], rows[8]["eq_s"])
    print(
        f"edit-to-audible goal <= {GOAL_S:.1f} s for 8 tracks: {'met' if worst <= GOAL_S else 'NOT met'} "
        f"(worst median {worst:.2f} s)"
    )


if __name__ == "__main__":
    main()
