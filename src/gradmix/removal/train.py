"""Training the effect estimator on pairs the console makes: dry stems through random removal chains.

The dry material is every stem of the given dataset roots (``gradmix dataset lmms`` and ``gradmix dataset
midi`` folders, or any dataset gradmix reads) except the held-out songs (:func:`held_out`), cut into
segments that sound, each brought to a peak of -1 dBFS; the pool of segments is drawn anew every
:attr:`RemovalTraining.refresh_every` steps, so that the estimator hears most of the stems rather than learn
one pool's segments by heart. Every step draws a batch of segments and of chains
(:func:`gradmix.removal.chains.draw_chains`), renders the wet signals, and fits the estimator to the chains:
binary cross-entropy on which effects are present, plus the squared error of the 0..1 settings of the
present ones (a compressor's threshold and a distortion's drive as they are at the level the estimator
hears, :func:`gradmix.removal.chains.rescaled`). After the last step each effect's presence threshold is
the one with the best F-beta on fresh pairs (:func:`calibrate_thresholds`), raised where needed so that at
most :data:`FALSE_ALARMS` of dry windows of the training songs reach it, and the careful one the same with
:data:`CAREFUL_FALSE_ALARMS` (:func:`false_alarm_thresholds`); both are stored with the weights.

A run writes ``OUT/last.pt`` every :attr:`RemovalTraining.checkpoint_every` steps and resumes from it; at
the end, ``OUT/model.pt`` (the estimator's weights and config) and ``OUT/log.csv``.
"""

from __future__ import annotations

import csv
import random
import time
import zlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gradmix.audio import read_audio, resample, write_atomically
from gradmix.data import find_songs
from gradmix.defaults import REMOVAL_STEPS
from gradmix.errors import GradmixError
from gradmix.models.removal import EffectEstimator, RemovalConfig, load_estimator
from gradmix.progress import progress as show_progress
from gradmix.removal.chains import REMOVABLE, PEAK_DBFS, draw_chains, peak_gain_db, render_chains, rescaled

HELD_OUT_EVERY = 7
"""A song is held out of training when the CRC-32 of its name is a multiple of this (about 1 song in 7)."""


def held_out(song_name: str) -> bool:
    """Whether a song is kept for evaluation (``gradmix eval --removal``), never trained on."""
    return zlib.crc32(song_name.encode()) % HELD_OUT_EVERY == 0


@dataclass
class RemovalTraining:
    """A training run of the effect estimator (``segments``: the size of the pool of dry segments, drawn anew
    every ``refresh_every`` steps; ``init``: a ``model.pt`` whose weights a new run starts from, and whose
    config it takes; ``stems_per_song``: root -> the most stems each of its songs gives a pool, see
    :func:`segment_pool`)."""

    roots: list[str]
    out: str
    steps: int = REMOVAL_STEPS
    batch_size: int = 16
    seconds: float = 3.0
    lr: float = 1e-3
    settings_weight: float = 4.0
    segments: int = 3000
    refresh_every: int = 2000
    seed: int = 0
    checkpoint_every: int = 100
    init: str | None = None
    stems_per_song: dict[str, int] = field(default_factory=dict)
    model: RemovalConfig = field(default_factory=RemovalConfig)


def pool_seed(run: RemovalTraining, step: int) -> int:
    """The seed of the segment pool training draws from at ``step``: ``run.seed`` for the first
    :attr:`RemovalTraining.refresh_every` steps, then one of its own per refresh (none is ``run.seed + 2``,
    the pool of dry windows the thresholds are bounded on)."""
    refresh = step // run.refresh_every
    return run.seed if refresh == 0 else run.seed + 1000 * refresh


def segment_pool(
    roots: list[str],
    *,
    seconds: float,
    sample_rate: int,
    limit: int,
    seed: int,
    held: bool = False,
    stems_per_song: Mapping[str, int] | None = None,
    show: bool = False,
) -> torch.Tensor:
    """Up to ``limit`` stereo segments ``(n, 2, samples)`` of the stems under ``roots`` that sound (peak above
    -40 dBFS, RMS above -50 dBFS), each at a peak of :data:`PEAK_DBFS`; from the training songs, or from the
    held-out ones with ``held``. ``stems_per_song`` maps a root to the most stems each of its songs gives (the
    same ones for every seed, drawn by the song's name), so that a dataset of many stems takes a set share of
    the pool. Deterministic for a seed."""
    caps = stems_per_song or {}
    refs = []
    for root in roots:
        for song in find_songs(root):
            if held_out(song.name) == held:
                stems = list(song.stems)
                if root in caps and len(stems) > caps[root]:
                    by_name = sorted(stems, key=lambda r: r.path.name)
                    stems = sorted(random.Random(song.name).sample(by_name, caps[root]), key=lambda r: r.path.name)
                refs += stems
    if not refs:
        raise GradmixError(f"no {'held-out' if held else 'training'} stems under {', '.join(roots)}")
    rng = np.random.default_rng(seed)
    rng.shuffle(refs)
    per_stem = max(1, -(-limit // len(refs)))
    n = int(seconds * sample_rate)
    out: list[np.ndarray] = []
    for ref in show_progress(refs, "reading dry stems", show):
        if len(out) >= limit:
            break
        audio, rate = read_audio(ref.path)
        if rate != sample_rate:
            audio = resample(audio, rate, sample_rate)
        if audio.shape[0] == 1:
            audio = np.repeat(audio, 2, 0)
        starts = np.arange(0, audio.shape[1] - n + 1, n)
        rng.shuffle(starts)
        taken = 0
        for s in starts:
            seg = audio[:2, s : s + n]
            peak = float(np.abs(seg).max())
            if peak < 0.01 or float(np.sqrt(np.mean(seg**2))) < 10 ** (-50 / 20):
                continue
            out.append(seg * (10 ** (PEAK_DBFS / 20) / peak))
            taken += 1
            if taken >= per_stem or len(out) >= limit:
                break
    if not out:
        raise GradmixError(f"no sounding {seconds:g} s segments in the stems under {', '.join(roots)}")
    return torch.from_numpy(np.stack(out)).float()


def run_pool(run: RemovalTraining, seed: int, limit: int, sample_rate: int, show: bool = False) -> torch.Tensor:
    """:func:`segment_pool` of a run's roots, segment length and stem caps."""
    return segment_pool(
        run.roots,
        seconds=run.seconds,
        sample_rate=sample_rate,
        limit=limit,
        seed=seed,
        stems_per_song=run.stems_per_song,
        show=show,
    )


def removal_loss(
    logits: torch.Tensor, controls: torch.Tensor, present: torch.Tensor, targets: torch.Tensor, weight: float
) -> tuple[torch.Tensor, dict[str, float]]:
    """BCE of presence plus ``weight`` times the mean squared error of the present effects' settings."""
    from gradmix.removal.chains import estimated_specs

    detection = F.binary_cross_entropy_with_logits(logits, present.float())
    columns = torch.tensor([REMOVABLE.index(name) for name, _ in estimated_specs()], device=logits.device)
    mask = present[:, columns].float()
    settings = ((controls - targets) ** 2 * mask).sum() / mask.sum().clamp_min(1.0)
    return detection + weight * settings, {"detection": float(detection.detach()), "settings": float(settings.detach())}


def training_batch(
    pool: torch.Tensor, batch_size: int, sample_rate: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A batch of estimator inputs (wet segments at -1 dBFS peak), which effects they have and the 0..1 settings
    at that level."""
    index = torch.randint(0, pool.shape[0], (batch_size,), generator=generator)
    chains = draw_chains(batch_size, generator)
    wet = render_chains(pool[index], chains, sample_rate)
    gain = peak_gain_db(wet)
    wet = wet * torch.pow(10.0, gain / 20)[:, None, None].to(wet)
    heard = rescaled(chains, -gain)
    return wet, chains.present, heard.controls()


CALIBRATION_PAIRS = 1024
"""Fresh training pairs on which :func:`calibrate_thresholds` chooses the presence thresholds."""


def calibrate_thresholds(
    model: EffectEstimator,
    pool: torch.Tensor,
    sample_rate: int,
    generator: torch.Generator,
    pairs: int = CALIBRATION_PAIRS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The presence threshold of each effect that gives the best F-beta (:data:`PRECISION_BETA`) of its detection
    on ``pairs`` fresh pairs drawn as in training (segments of ``pool`` through
    :func:`gradmix.removal.chains.draw_chains`), by :func:`best_thresholds`.

    Returns the thresholds and the F-beta each reaches, ``(effects,)`` each."""
    probabilities, truth = [], []
    model.eval()
    with torch.no_grad():
        for start in range(0, pairs, 16):
            wet, present, _ = training_batch(pool, min(16, pairs - start), sample_rate, generator)
            probabilities.append(torch.sigmoid(model(wet)[0]))
            truth.append(present)
    return best_thresholds(torch.cat(probabilities), torch.cat(truth))


PRECISION_BETA = 0.5
"""The thresholds maximise F-beta with this beta: precision counts twice as much as recall, since removing an
effect that is not there damages a stem that was fine (measured against F1 in
docs/experiments/2026-12-05-removal-model.md)."""


def best_thresholds(
    probabilities: torch.Tensor, present: torch.Tensor, beta: float = PRECISION_BETA
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per effect, the threshold of 0.05 .. 0.95 (steps of 0.01) at which ``probabilities`` ``(pairs, effects)``
    detect ``present`` ``(pairs, effects)`` bool with the best F-beta, the highest of a tie; and that F-beta."""
    grid = torch.arange(95, 4, -1, dtype=probabilities.dtype) / 100  # high to low: argmax keeps the first
    found = probabilities[None] >= grid[:, None, None]  # (grid, pairs, effects)
    tp = (found & present).sum(1)
    b2 = beta**2
    score = (1 + b2) * tp / (found.sum(1) + b2 * present.sum(0)).clamp_min(1)
    best = score.argmax(0)
    return grid[best], score[best, torch.arange(probabilities.shape[1])]


FALSE_ALARMS = 0.005
"""The presence thresholds let at most this share of the training songs' dry windows read as each effect:
removing an effect that is not there costs a stem far more than leaving one in (measured in
docs/experiments/2026-12-06-removal-dry-input.md)."""
CAREFUL_FALSE_ALARMS = 0.002
"""The same share for the careful thresholds (``gradmix dry --careful``), for stems that may be dry."""
DRY_WINDOWS = 1024
"""Dry windows of the training songs the false-alarm bounds are measured on: a pool of their own (seed
``run.seed + 2``)."""


def dry_probabilities(model: EffectEstimator, pool: torch.Tensor) -> torch.Tensor:
    """The presence probabilities ``(windows, effects)`` the estimator gives the segments of ``pool``
    ``(windows, 2, samples)`` as they are, no effect applied (they are at :data:`PEAK_DBFS`, as it hears)."""
    model.eval()
    with torch.no_grad():
        return torch.cat([torch.sigmoid(model(pool[s : s + 16])[0]) for s in range(0, pool.shape[0], 16)])


def false_alarm_thresholds(probabilities: torch.Tensor, floor: torch.Tensor, share: float) -> torch.Tensor:
    """Per effect, the threshold ``(effects,)`` that at most ``share`` of the dry windows' ``probabilities``
    ``(windows, effects)`` exceed (their ``1 - share`` quantile), or ``floor`` ``(effects,)`` where that is
    higher."""
    return torch.maximum(torch.quantile(probabilities.double(), 1 - share, dim=0).to(floor), floor)


def train_removal(run: RemovalTraining, show: bool = True, max_minutes: float | None = None) -> Path:
    """Train (or resume) the estimator; returns the path of ``OUT/model.pt``."""
    out = Path(run.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(run.seed)
    start_from = load_estimator(run.init) if run.init is not None else None
    cfg = start_from.cfg if start_from is not None else run.model
    sr = cfg.sample_rate
    model = EffectEstimator(cfg)
    if start_from is not None:
        model.load_state_dict(start_from.state_dict())
    optim = torch.optim.AdamW(model.parameters(), lr=run.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(optim, max_lr=run.lr, total_steps=run.steps, pct_start=0.05)
    gen = torch.Generator().manual_seed(run.seed)
    step = 0
    last = out / "last.pt"
    if last.is_file():
        state = torch.load(last, weights_only=False)
        model.load_weights(state["model"])  # the thresholds are chosen at the end
        optim.load_state_dict(state["optim"])
        sched.load_state_dict(state["sched"])
        gen.set_state(state["generator"])
        step = state["step"]
    seed = pool_seed(run, min(step, run.steps - 1))  # a finished run recalibrates on its last pool
    pool = run_pool(run, seed, run.segments, sr, show=show)
    log_path = out / "log.csv"
    new_log = not log_path.is_file() or step == 0
    start = time.monotonic()
    with open(log_path, "w" if new_log else "a", newline="") as log:
        writer = csv.writer(log)
        if new_log:
            writer.writerow(["step", "loss", "detection", "settings", "seconds"])
        steps = range(step, run.steps)
        for step in show_progress(steps, "training the effect estimator", show, total=len(steps)):
            if pool_seed(run, step) != seed:
                seed = pool_seed(run, step)
                pool = run_pool(run, seed, run.segments, sr)
            model.train()
            wet, present, targets = training_batch(pool, run.batch_size, sr, gen)
            logits, controls = model(wet)
            loss, terms = removal_loss(logits, controls, present, targets, run.settings_weight)
            optim.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optim.step()
            sched.step()
            writer.writerow(
                [step, float(loss.detach()), terms["detection"], terms["settings"], round(time.monotonic() - start, 1)]
            )
            done = step + 1
            timed_out = max_minutes is not None and time.monotonic() - start > 60 * max_minutes
            if done % run.checkpoint_every == 0 or done == run.steps or timed_out:
                log.flush()
                state = {
                    "model": model.state_dict(),
                    "optim": optim.state_dict(),
                    "sched": sched.state_dict(),
                    "generator": gen.get_state(),
                    "step": done,
                }
                write_atomically(last, lambda f, s=state: torch.save(s, f))
            if timed_out:
                break
    best, score = calibrate_thresholds(model, pool, sr, torch.Generator().manual_seed(run.seed + 1))
    dry = run_pool(run, run.seed + 2, DRY_WINDOWS, sr)
    probabilities = dry_probabilities(model, dry)
    model.thresholds.copy_(false_alarm_thresholds(probabilities, best, FALSE_ALARMS))
    model.careful_thresholds.copy_(false_alarm_thresholds(probabilities, model.thresholds, CAREFUL_FALSE_ALARMS))
    calibration = {
        name: {
            f"best_f{PRECISION_BETA:g}_threshold": float(b),
            f"f{PRECISION_BETA:g}": float(f),
            "threshold": float(t),
            "careful_threshold": float(c),
        }
        for name, b, f, t, c in zip(REMOVABLE, best, score, model.thresholds, model.careful_thresholds)
    }
    path = out / "model.pt"
    blob = {"config": cfg.to_dict(), "state": model.state_dict(), "run": asdict(run), "calibration": calibration}
    write_atomically(path, lambda f: torch.save(blob, f))
    return path
