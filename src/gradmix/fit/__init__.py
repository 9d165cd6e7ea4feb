"""``gradmix fit``: reverse-engineer a mix of known stems — the console whose render equals it.

Gradient descent (Adam) on every control of the console, from the model's guess for the target's style, with
two closed-form moves where gradients are weak: the track levels, pans and sends by least squares
(:func:`gradmix.fit.levels.solve_levels`: the console is linear in them once the master's dynamics are held),
and the delay's time and the reverb's pre-delay by the peaks of cross-correlations
(:func:`gradmix.fit.time_search.search_time`: the error oscillates with them). Every constant is in
:class:`gradmix.fit.tuning.FitTuning`.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import torch

from gradmix.audio import check_output_path
from gradmix.console import Controls
from gradmix.defaults import DEVICE, FIT_BUDGET_S, FIT_MAX_STEPS
from gradmix.errors import GradmixError
from gradmix.fit.align import align_to_stems, check_memory
from gradmix.fit.levels import solve_levels
from gradmix.fit.song import FitProblem
from gradmix.fit.time_search import BUS_TIMES, search_time
from gradmix.fit.tuning import TUNING, FitTuning
from gradmix.generate import read_reference, song_excerpt
from gradmix.mix import analyse, load_song, setting_from_controls
from gradmix.progress import progress as show_progress

__all__ = ["TUNING", "FitProblem", "FitTuning", "align_to_stems", "fit_folder"]


def fit_folder(
    stems_dir: str | Path,
    target: str | Path,
    output: str | Path,
    *,
    max_steps: int = FIT_MAX_STEPS,
    budget_s: float = FIT_BUDGET_S,
    stop_db: float = -40.0,
    lr: float = 0.05,
    seed: int = 0,
    model_path: str | Path | None = None,
    progress: bool = False,
    tuning: FitTuning = TUNING,
    device: torch.device | str = DEVICE,
) -> tuple[Path, float, int]:
    """Find the console that turns the stems into ``target`` by gradient descent on every control.

    Starts from the model's guess for the target's style. Each step renders a random 2.5-s window (after 1 s
    of warm-up, so that envelopes and tails are in place) and minimises a multi-resolution spectral distance
    plus the log waveform error there (Adam; the learning rate decays over the steps the budget allows,
    cosine). Between the steps, at the shares of the way in ``tuning.moves``, closed-form moves: every track's
    level, pan and sends by least squares (:func:`~gradmix.fit.levels.solve_levels`), and the delay's time and
    the reverb's pre-delay, which gradients cannot find (the error oscillates with them; they are held once
    searched; :func:`~gradmix.fit.time_search.search_time`). After a move Adam's momentum is cleared (it was
    for the old controls; a new Adam would take a full step on every control at once). Every
    ``tuning.check_every`` steps the whole song is rendered and the best console so far kept. Stops at
    ``stop_db`` residual, ``max_steps`` or ``budget_s`` seconds.

    The model, the tracks, the target and every tensor of the optimisation live on ``device``; the target is
    read and aligned on the CPU before. The windows are drawn from a CPU generator (each start is read as a
    number at once), so that every device fits on the same windows for a given ``seed``.

    Returns:
        ``(console file, residual in dB (error energy / target energy over the whole song), steps)``.
    """
    if max_steps < 1:
        raise GradmixError(f"--steps: {max_steps} is not at least 1")
    if not 0 < budget_s < math.inf:  # also refuses NaN
        raise GradmixError(f"--budget: {budget_s:g} is not a positive number of seconds")
    device = torch.device(device)
    song = load_song(stems_dir, model_path, progress=progress, device=device)
    model, sr = song.model, song.sample_rate
    ref = read_reference(target, sr)
    output = check_output_path(output, [*song.inputs, Path(target)])
    n = song.audio[0].shape[-1]
    length = ref.shape[-1]
    ref, lag, (start, stop) = align_to_stems(ref, song.audio, sr, name=str(target), tuning=tuning)
    if lag is not None:
        where = "their length" if stop - start == n else f"the {(stop - start) / sr:.2f} s they share"
        print(
            f"note: {target}: {length / sr:.2f} s against the stems' {n / sr:.2f} s; it starts "
            f"{1000 * lag / sr:+.0f} ms from them (cross-correlation), and is fitted on {where}",
            file=sys.stderr,
        )
    if stop - start < n:  # the console is fitted where the mix has the stems, not against padding
        song.audio = [a[..., start:stop] for a in song.audio]
        n = stop - start
    energy = float(ref.square().sum())
    if energy <= 0:
        raise GradmixError(f"{target}: silent; nothing to fit")
    check_memory(len(song.audio), n / sr, tuning, device=device)
    ref = ref.to(device)
    analysis = analyse(model, song.audio, sr)
    whole = song_excerpt(song.audio, analysis, sr, seconds=None, preroll_s=0.0)
    x, mono = whole.x, whole.mono
    problem = FitProblem(model, x, mono, ref, sr, tuning)
    with torch.no_grad():
        z = model.encode_style(ref[None], sample_rate=sr)[0] if model.cfg.style_dim else None
        start = model.decide(analysis.embeddings, analysis.mask, z)
    logits = start.logits()
    opt = torch.optim.Adam(logits, lr=lr)
    mrstft = spectral_loss(device)
    gen = torch.Generator().manual_seed(seed)  # on the CPU: the same windows on every device
    seg, warm = min(n, int(tuning.window_s * sr)), int(tuning.warmup_s * sr)

    def residual_db() -> float:
        return 10 * math.log10(max(problem.error(logits) / energy, 1e-30))

    best, best_db, steps, planned, moves = logits.copy(), math.inf, 0, max_steps, list(tuning.moves)
    held: dict[int, float] = {}  # bus controls that gradient steps must not move once searched
    t0 = time.perf_counter()
    bar = show_progress(range(max_steps + 1), "fitting", progress, total=max_steps)
    for steps in bar:
        if steps % tuning.check_every == 0 or steps == max_steps:
            while moves and max((time.perf_counter() - t0) / budget_s, steps / max_steps) >= moves[0][0]:
                move = moves.pop(0)[1]
                if move in BUS_TIMES:
                    hold, moved = search_time(problem, logits, move)
                    held.update(hold)
                else:
                    moved = solve_levels(problem, logits)
                if moved:  # the momentum was for the old controls; the gradient scales still hold
                    for state in opt.state.values():
                        state["exp_avg"].zero_()
            r = residual_db()
            if r < best_db:
                best, best_db = logits.copy(), r
            elapsed = time.perf_counter() - t0
            if steps and elapsed > 0:  # the cosine spans the steps the budget allows
                planned = min(max_steps, max(steps + 1, int(budget_s / (elapsed / steps))))
            if best_db <= stop_db or elapsed > budget_s or steps == max_steps:
                break
        for group in opt.param_groups:
            group["lr"] = lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, steps / planned))))
        s0 = int(torch.randint(0, max(1, n - seg + 1), (), generator=gen, device="cpu"))
        a0 = max(0, s0 - warm)
        est, _ = model.layout.render_normalized(
            x[..., a0 : s0 + seg], Controls.from_logits(logits), sample_rate=sr, mono=mono
        )
        est, tgt = est[..., s0 - a0 :], ref[None, :, s0 : s0 + seg]
        err = (est - tgt).square().sum() / tgt.square().sum().clamp_min(1e-12)
        loss = mrstft(est, tgt) + torch.log10(err + 1e-12)
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            for j, value in held.items():
                logits.buses[0, j] = value
    setting = setting_from_controls(model, Controls.from_logits(best), analysis, song.names, song.files, sr)
    setting.save(output, stems_dir=stems_dir)
    return output, best_db, steps


def spectral_loss(device: torch.device | str = DEVICE):
    """The spectral part of a gradient step's loss: log and linear magnitudes at three resolutions, its windows
    made on ``device`` (auraloss keeps them as plain attributes, which ``Module.to`` does not move)."""
    import auraloss

    with torch.device(device):
        return auraloss.freq.MultiResolutionSTFTLoss(
            fft_sizes=[256, 1024, 4096],
            hop_sizes=[64, 256, 1024],
            win_lengths=[256, 1024, 4096],
            w_sc=0.0,
            w_log_mag=1.0,
            w_lin_mag=1.0,
        )
