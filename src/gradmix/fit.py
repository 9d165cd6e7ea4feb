"""``gradmix fit``: reverse-engineer a mix of known stems — the console whose render equals it.

Gradient descent (Adam) on every control of the console, from the model's guess for the target's style, with
two closed-form moves where gradients are weak: the track levels, pans and sends by least squares
(:func:`_solve_levels`: the console is linear in them once the master's dynamics are held), and the delay's
time and the reverb's pre-delay by the peaks of cross-correlations (:func:`_search_time`: the error
oscillates with them).
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import torch
from torch import Tensor

from gradmix.audio import check_output_path
from gradmix.console import Controls
from gradmix.console.layout import SEND_SPEC, add_buses, bus_inputs, finish, render_strips
from gradmix.console.setting import CHUNK_SAMPLES
from gradmix.defaults import FIT_BUDGET_S, FIT_MAX_STEPS
from gradmix.errors import GradmixError
from gradmix.generate import read_reference, song_excerpt
from gradmix.mix import analyse, load_song, setting_from_controls
from gradmix.models import MixController
from gradmix.progress import progress as show_progress

FIT_WINDOW_S, FIT_WARMUP_S, FIT_CHECK_EVERY = 2.5, 1.0, 10
FIT_MOVES = ((0.0, "levels"),) + tuple((share, move) for share in (0.25, 0.6) for move in ("delay", "reverb", "levels"))
"""Closed-form moves of :func:`fit_folder` and the share of the budget (time or steps) after which each is made."""


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
) -> tuple[Path, float, int]:
    """Find the console that turns the stems into ``target`` by gradient descent on every control.

    Starts from the model's guess for the target's style. Each step renders a random 2.5-s window (after 1 s
    of warm-up, so that envelopes and tails are in place) and minimises a multi-resolution spectral distance
    plus the log waveform error there (Adam; the learning rate decays over the steps the budget allows,
    cosine). Between the steps, at the shares of the way in :data:`FIT_MOVES`, closed-form moves: every
    track's level, pan and sends by least squares (:func:`_solve_levels`), and the delay's time and the
    reverb's pre-delay, which gradients cannot find (the error oscillates with them; :func:`_search_time`;
    once searched, they are held). After a move Adam's momentum is cleared (it was for the old controls; a
    new Adam would take a full step on every control at once). Every 10 steps the whole song
    is rendered and the best console so far kept. Stops at ``stop_db`` residual, ``max_steps`` or
    ``budget_s`` seconds.

    Returns:
        ``(console file, residual in dB (error energy / target energy over the whole song), steps)``.
    """
    if max_steps < 1:
        raise GradmixError(f"--steps: {max_steps} is not at least 1")
    if not 0 < budget_s < math.inf:  # also refuses NaN
        raise GradmixError(f"--budget: {budget_s:g} is not a positive number of seconds")
    song = load_song(stems_dir, model_path, progress=progress)
    model, sr = song.model, song.sample_rate
    ref = read_reference(target, sr)
    output = check_output_path(output, [*song.inputs, Path(target)])
    n = song.audio[0].shape[-1]
    length = ref.shape[-1]
    ref, lag, (start, stop) = align_to_stems(ref, song.audio, sr, name=str(target))
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
    energy = ref.square().sum()
    if energy <= 0:
        raise GradmixError(f"{target}: silent; nothing to fit")
    _check_memory(len(song.audio), n / sr)
    analysis = analyse(model, song.audio, sr)
    whole = song_excerpt(song.audio, analysis, sr, seconds=None, preroll_s=0.0)
    x, mono = whole.x, whole.mono
    with torch.no_grad():
        z = model.encode_style(ref[None], sample_rate=sr)[0] if model.cfg.style_dim else None
        start = model.decide(analysis.embeddings, None, z)
    logits = start.logits()
    opt = torch.optim.Adam(logits, lr=lr)
    mrstft = _spectral_loss()
    gen = torch.Generator().manual_seed(seed)
    seg, warm = min(n, int(FIT_WINDOW_S * sr)), int(FIT_WARMUP_S * sr)

    def residual_db() -> float:
        return 10 * math.log10(max(_song_error(model, x, mono, logits, ref, sr) / float(energy), 1e-30))

    best, best_db, steps, planned, moves = [v.detach().clone() for v in logits], math.inf, 0, max_steps, list(FIT_MOVES)
    held: dict[int, float] = {}  # bus controls that gradient steps must not move once searched
    t0 = time.perf_counter()
    bar = show_progress(range(max_steps + 1), "fitting", progress, total=max_steps)
    for steps in bar:
        if steps % FIT_CHECK_EVERY == 0 or steps == max_steps:
            while moves and max((time.perf_counter() - t0) / budget_s, steps / max_steps) >= moves[0][0]:
                move = moves.pop(0)[1]
                if move in BUS_TIMES:
                    hold, moved = _search_time(model, x, mono, logits, ref, sr, move)
                    held.update(hold)
                else:
                    moved = _solve_levels(model, x, mono, logits, ref, sr)
                if moved:  # the momentum was for the old controls; the gradient scales still hold
                    for state in opt.state.values():
                        state["exp_avg"].zero_()
            r = residual_db()
            if r < best_db:
                best, best_db = [v.detach().clone() for v in logits], r
            elapsed = time.perf_counter() - t0
            if steps and elapsed > 0:  # the cosine spans the steps the budget allows
                planned = min(max_steps, max(steps + 1, int(budget_s / (elapsed / steps))))
            if best_db <= stop_db or elapsed > budget_s or steps == max_steps:
                break
        for group in opt.param_groups:
            group["lr"] = lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, steps / planned))))
        s0 = int(torch.randint(0, max(1, n - seg + 1), (), generator=gen))
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
                logits[2][0, j] = value
    setting = setting_from_controls(model, Controls.from_logits(best), analysis, song.names, song.files, sr)
    setting.save(output, stems_dir=stems_dir)
    return output, best_db, steps


ALIGN_MAX_S, ALIGN_MIN_OVERLAP, ALIGN_WINDOW_S = 2.0, 0.9, 60.0
"""A target is moved by at most this many seconds against the stems, and must then cover this share of them;
the lag is found over the stems' first ``ALIGN_WINDOW_S`` seconds."""


def align_to_stems(
    ref: Tensor, stems: list[Tensor], sample_rate: int, name: str = "target"
) -> tuple[Tensor, int | None, tuple[int, int]]:
    """A mix bounced from a DAW, aligned to its stems: the lag (within :data:`ALIGN_MAX_S`) at which its mono
    sum correlates best with the stems' plain mono sum over the first :data:`ALIGN_WINDOW_S`, then cut to the
    part of the stems it covers.

    Args:
        ref: the mix ``(2, m)``.
        stems: the tracks ``(channels, n)`` each, all ``n`` long.
        sample_rate: Hz.
        name: what error messages call the mix.

    Returns:
        ``(aligned (2, stop - start), lag, (start, stop))``: the mix over the samples ``start:stop`` of the stems
        that it covers (all ``n`` unless it starts late or ends early); ``lag`` in samples, positive where the
        mix starts later than the stems; ``None`` where the mix has the stems' length to within 1 ms, which is
        taken as aligned (a shortfall under 1 ms is padded with zeros) and not searched.

    Raises:
        GradmixError: when less than :data:`ALIGN_MIN_OVERLAP` of the stems' length overlaps the mix.
    """
    n, m = stems[0].shape[-1], ref.shape[-1]
    if abs(m - n) <= sample_rate // 1000:  # the stems' length: a mix of them as they are (periodic material
        return torch.nn.functional.pad(ref, (0, max(0, n - m)))[:, :n], None, (0, n)  # could fool a search)
    reach, window = int(ALIGN_MAX_S * sample_rate), int(ALIGN_WINDOW_S * sample_rate)
    guide = sum(t[..., :window].mean(0) for t in stems)
    mono = ref[:, : window + reach].mean(0)
    size = 1 << (guide.shape[-1] + mono.shape[-1] - 1).bit_length()
    corr = torch.fft.irfft(torch.fft.rfft(mono.float(), size) * torch.fft.rfft(guide.float(), size).conj(), size)
    lags = torch.cat([torch.arange(0, min(reach, m - 1) + 1), torch.arange(-min(reach, n - 1), 0)])
    lag = int(lags[int(corr[lags % size].argmax())])
    start, stop = max(0, -lag), min(n, m - lag)
    overlap = max(0, stop - start)
    if overlap < ALIGN_MIN_OVERLAP * n:
        raise GradmixError(
            f"{name}: {m / sample_rate:.2f} s long, the stems {n / sample_rate:.2f} s; aligned at its "
            f"best lag ({1000 * lag / sample_rate:+.0f} ms) it covers {100 * overlap / n:.0f} % of them: "
            "fit needs a mix of these stems"
        )
    return ref[:, start + lag : stop + lag], lag, (start, stop)


FIT_BYTES_PER_TRACK_SECOND, FIT_BYTES_PER_SEARCHED_TRACK_SECOND = 0.7e6, 4e6
"""Memory fit needs besides the loaded stems and the model: per second of each track (the tracks at the model's
level, 0.35 MB/s, and the song's render), and besides per second of each track within the first
:data:`SEARCH_S` (the time search's and the level solve's renders and spectra). Measured peak resident sizes
of ``gradmix fit``: 2.2 GB for 8 tracks x 30 s, 5.2 GB for 32 x 30 s, 2.3 GB for 8 x 90 s, of which about 1.2 GB
is the model's and the libraries' own (the estimate: 1.1, 4.5 and 1.5 GB besides)."""


def _check_memory(tracks: int, seconds: float) -> None:
    """Refuse in one line a song fit could not hold in the memory this machine has available."""
    need = tracks * (
        FIT_BYTES_PER_TRACK_SECOND * seconds + FIT_BYTES_PER_SEARCHED_TRACK_SECOND * min(seconds, SEARCH_S)
    )
    have = _available_memory()
    if have is not None and need > have:
        raise GradmixError(
            f"fit: {tracks} tracks x {seconds:.0f} s need about {need / 2**30:.1f} GiB of memory, "
            f"{have / 2**30:.1f} GiB is available: fit an excerpt (the same seconds of the stems and "
            "of the target) or fewer stems"
        )


def _available_memory() -> int | None:
    """Bytes the system can give without swapping (Linux's ``MemAvailable``), or None where it does not say."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _song_error(
    model: MixController, x: Tensor, mono: Tensor, logits: list[Tensor], ref: Tensor, sample_rate: int
) -> float:
    """Sum of squares of the whole song's render with ``logits`` minus ``ref (2, samples)``."""
    return float((_render_song(model, x, mono, logits, sample_rate) - ref).square().sum())


def _render_song(model: MixController, x: Tensor, mono: Tensor, logits: list[Tensor], sample_rate: int) -> Tensor:
    """The render ``(2, samples)`` of ``x (1, N, 2, samples)`` with ``logits``, without gradients; the strips in
    chunks of tracks of at most :data:`CHUNK_SAMPLES` samples, summed as they come, so that memory grows with
    the song's length, not with its tracks x length."""
    layout = model.layout
    with torch.no_grad():
        params = layout.denormalize(Controls.from_logits(logits))
        n, length = x.shape[1], x.shape[-1]
        mix = x.new_zeros(1, 2, length)
        buses = x.new_zeros(1, len(layout.buses), 2, length)
        per = max(1, CHUNK_SAMPLES // (2 * length))
        for a in range(0, n, per):
            part = slice(a, a + per)
            strips = render_strips(
                layout.strip,
                x[:, part],
                [{k: v[:, part] for k, v in p.items()} for p in params.strip],
                sample_rate=sample_rate,
                mono=mono[:, part],
            )
            mix += strips.sum(1)
            buses += bus_inputs(strips, params.sends_db[:, part])
            del strips
        return finish(layout, mix, list(buses.unbind(1)), params, sample_rate=sample_rate)[0]


BUS_TIMES = {"delay": ("time_ms", "feedback"), "reverb": ("predelay_ms", "decay_s")}
"""Bus effects whose time :func:`_search_time` finds: effect -> (its time, the parameter judged on a grid)."""
SEARCH_S = 30.0
"""Seconds of the song (from its start) whose cross-correlations give :func:`_search_time` its candidates."""
JUDGE_S = 10.0
"""Seconds of the song (from its start) on which :func:`_search_time` judges its candidates."""
FINE_MS = 10.0
"""How far (ms) :func:`_search_time` moves its chosen time to the peak of the high band's cross-correlation."""


def _search_time(
    model: MixController, x: Tensor, mono: Tensor, logits: list[Tensor], ref: Tensor, sample_rate: int, effect: str
) -> tuple[dict[int, float], bool]:
    """Set the time of the bus effect ``effect`` (a delay's time, a reverb's pre-delay; to a fraction of a
    sample), the sends to its bus and the parameter judged on a grid (a delay's feedback, a reverb's decay
    times) in ``logits`` (in place) where the waveform error is least; and the tracks' levels, pans and sends
    by :func:`_solve_levels` where the choice needs them to lower the error.

    The bus adds, at lag ``time``, what it would add at time 0 (the input for a delay's first echo, the
    reverberation without pre-delay): time candidates are the peaks of the cross-correlations of that
    (channel by channel) with what the console leaves unexplained without the bus (the target minus that
    output), less its least-squares fit by the tracks' strip outputs as the output hears them (through the
    master, its envelopes held; one level per track and channel: a
    wrong dry level correlates with its track at every lag where the music repeats, and with a copy of the
    track in another stem at the copy's lag). Track by track, scored by the energy that each track's copy
    would explain at its best level (``sum_i xc_i(lag)^2 / |b_i|^2``), so that a lag is found even while the
    sends to the bus are wrong (a candidate of this kind comes with those levels as its sends); the same
    whitened (PHAT: each frequency weighs alike, so that the combs of peaks of tonal tracks do not hide the
    true lag); and of the bus's current input.
    Each candidate, at a few values of the grid parameter, is judged by the console's error over the first
    :data:`JUDGE_S` seconds with the bus at its best overall level and the dry parts' levels free (the
    candidates' levels ignore the master's gain; for a reverb, measured on first differences: its decay
    times, wrong while searched, blur the low band, and its pre-delay shows in the high one). The best one's lag moves,
    within :data:`FINE_MS`, to the peak of the cross-correlation weighted by frequency squared (a bass's broad
    peaks shift with every misfit of the strips), then the grid parameter is set on its full grid. It is
    kept if the whole song's error falls, at once or after the levels are solved again
    (:func:`_solve_levels`), since it was judged with them free.

    Returns:
        ``({index in the bus controls: logit}`` of the time, to be held: its gradient only sees the nearest
        ripple of the error; whether any control moved), or ``({}, False)`` without such a bus.
    """
    layout = model.layout
    found = [
        (k, i) for k, (_, chain) in enumerate(layout.buses) for i, s in enumerate(chain) if s.effect.type_name == effect
    ]
    if not found:
        return {}, False
    k, i = found[0]
    slot = layout.buses[k][1][i]
    time_name, grid_name = BUS_TIMES[effect]
    names = [s.name for s in slot.specs]
    if i != 0 or time_name not in names or grid_name not in names:
        return {}, False
    columns = {name: layout.bus_control_index(k, i, name) for name in (time_name, grid_name)}
    time_spec, grid_specs = slot.spec(time_name), [s for s in slot.specs if s.name == grid_name]
    span = min(ref.shape[-1], int(SEARCH_S * sample_rate))
    judged = min(ref.shape[-1], int(JUDGE_S * sample_rate))
    reach = max(span, judged)  # every effect is causal: the song's start alone is rendered
    lo, hi = int(time_spec.min * sample_rate / 1000), min(int(time_spec.max * sample_rate / 1000), span - 2)
    if hi <= lo:
        return {}, False
    with torch.no_grad():
        params = layout.denormalize(Controls.from_logits(logits))
        strips = render_strips(layout.strip, x[..., :reach], params.strip, sample_rate=sample_rate, mono=mono)
        buses_in = list(bus_inputs(strips, params.sends_db).unbind(1))
        others = [None if b == k else y for b, y in enumerate(buses_in)]  # left alone by the search
        rest = add_buses(layout, strips.sum(1), others, params, sample_rate=sample_rate)

        def set_values(target: list[Tensor], values: dict[str, Tensor]) -> None:
            for name, value in values.items():
                for band, spec in enumerate(s for s in slot.specs if s.name == name):
                    target[2][0, columns[name] + band] = _to_logit(spec, value.reshape(-1)[band].double())

        def output(
            values: dict[str, Tensor], sends_db: Tensor | None = None, mute: bool = False, samples: int | None = None
        ) -> Tensor:  # the first `samples` (the effects are causal)
            trial = [v.detach().clone() for v in logits]
            set_values(trial, values)
            inputs: list[Tensor | None] = [None] * len(buses_in)
            if not mute:
                inputs[k] = (
                    buses_in[k][..., :samples]
                    if sends_db is None
                    else torch.einsum("bnct,n->bct", strips[..., :samples], torch.pow(10.0, sends_db / 20))
                )
            trial_params = layout.denormalize(Controls.from_logits(trial))
            return finish(layout, rest[..., :samples], inputs, trial_params, sample_rate=sample_rate)[0]

        def at_time_zero(y: Tensor) -> Tensor:  # (m, 2, t): what the bus adds at lag `time`, moved back to 0
            if effect == "delay":
                return y
            p = {name: v.expand(y.shape[0], *v.shape[1:]) for name, v in params.buses[k][i].items()}
            return slot.effect(y, {**p, time_name: y.new_zeros(y.shape[0])}, sample_rate=sample_rate)

        current = {name: params.buses[k][i][name][0] for name in (time_name, grid_name)}
        muted = output(current, mute=True)
        miss = ref[:, :reach] - muted  # what the console leaves unexplained without the bus
        dry = strips[0]  # the dry parts as the output hears them: through the master, envelopes held
        if _linear_console(layout):
            dry = _linearised(layout, params, dry, sample_rate, reach)[1](dry)
        unexplained = _without(dry[..., :span])(miss[:, :span])
        size = 1 << (2 * span - 1).bit_length()
        spectrum = torch.fft.rfft(unexplained, size)

        def cross(y: Tensor) -> Tensor:  # (m, 2, span) -> (m, size // 2 + 1) cross-spectra, summed over channels
            return (spectrum * torch.fft.rfft(y, size).conj()).sum(-2)

        on_bus = torch.fft.irfft(cross(at_time_zero(buses_in[k][:, :, :span])), size)[0]
        explained, whitened = unexplained.new_zeros(size), unexplained.new_zeros(size)
        per_track, energy = [], []  # per track: its cross-correlation up to the longest lag, its energy
        per = max(1, CHUNK_SAMPLES // (2 * size))  # tracks at a time: their spectra are twice the span each
        for a in range(0, strips.shape[1], per):
            basis = at_time_zero(strips[0, a : a + per, :, :span])  # (m, 2, span)
            xc = cross(basis)  # (m, size // 2 + 1)
            magnitude = xc.abs()
            floor = 1e-3 * magnitude.amax(-1, keepdim=True) + 1e-30  # a silent track's row stays zero, not NaN
            whitened += torch.fft.irfft(xc / (magnitude + floor), size).square().sum(0)
            xc = torch.fft.irfft(xc, size)  # (m, size)
            energy.append(basis.square().sum((-2, -1)).clamp_min(1e-12))
            explained += (xc.square() / energy[-1][:, None]).sum(0)
            per_track.append(xc[:, : hi + 2])
            del basis, magnitude, xc
        per_track, energy = torch.cat(per_track), torch.cat(energy)
        candidates = []
        for curve, levels, count in ((explained, True, 12), (whitened, True, 8), (on_bus.abs(), False, 8)):
            window = curve[max(lo, 1) : hi + 1]
            peaks = torch.topk(
                torch.nn.functional.max_pool1d(window[None, None], 41, 1, 20)[0, 0].eq(window) * window,
                min(count, window.numel()),
            ).indices + max(lo, 1)
            for lag in peaks.tolist():
                frac = _between_samples(curve, lag)
                db = (
                    (20 * torch.log10((per_track[:, lag] / energy).clamp_min(1e-6)))
                    .clamp(SEND_SPEC.min, SEND_SPEC.max)
                    .to(strips.dtype)
                    if levels
                    else None
                )
                if all(abs(lag + frac - seen) > 1 for seen, _ in candidates):  # the curves share many peaks
                    candidates.append((lag + frac, db))
        # judged at the bus's best overall level: the candidates' own levels ignore the master's gain
        now_db = params.sends_db[0, :, k].to(strips.dtype)

        without_dry = _without(dry[..., :judged])
        del dry

        def high(y: Tensor) -> Tensor:  # for the reverb's time, the error (the dry levels fitted on the full
            # band) measured on first differences (see refined): its decays, wrong while searched, blur the
            # low band, not the high one
            return torch.diff(y, dim=-1) if effect == "reverb" else y

        judged_miss = without_dry(miss[:, :judged])
        judged_high = high(judged_miss)

        def judge(values: dict[str, Tensor], sends_db: Tensor, band: str = "high") -> tuple[float, Tensor]:
            added = without_dry(output(values, sends_db, samples=judged) - muted[:, :judged])
            want = judged_high if band == "high" else judged_miss
            added = high(added) if band == "high" else added
            scale = max(0.0, float((want * added).sum()) / max(float(added.square().sum()), 1e-30))
            at_level = float((want - scale * added).square().sum())
            return at_level, (sends_db + 20 * math.log10(max(scale, 1e-6))).clamp(SEND_SPEC.min, SEND_SPEC.max)

        def grid(value: Tensor) -> list[Tensor]:
            if effect == "delay":
                return [torch.tensor(v) for v in torch.linspace(grid_specs[0].min, grid_specs[0].max, 19).tolist()]
            # the decay times scaled together, and alike in every band: a band the gradient steps shrank to
            # nothing while the pre-delay was wrong comes back
            return [value * f for f in (0.5, 0.7, 0.85, 1.0, 1.2, 1.4, 2.0)] + [
                torch.full_like(value, d) for d in (0.3, 0.6, 1.0, 1.6, 2.5)
            ]

        emphasis = 2 - 2 * torch.cos(torch.linspace(0, math.pi, size // 2 + 1, dtype=spectrum.real.dtype))

        def refined(lag: float, sends_db: Tensor) -> float:  # the peak within FINE_MS of `lag` of the
            # cross-correlation with what the bus adds at these sends, weighted by frequency squared (first
            # differences): a bass's broad peaks move with every misfit; the high band pins the lag down
            bus = at_time_zero(torch.einsum("nct,n->ct", strips[0, :, :, :span], torch.pow(10.0, sends_db / 20))[None])
            curve = torch.fft.irfft((spectrum * emphasis * torch.fft.rfft(bus, size).conj()).sum(-2), size)[0]
            width = int(FINE_MS * sample_rate / 1000)
            a, b = max(lo, 1, round(lag) - width), min(hi, round(lag) + width)
            if b <= a:
                return lag
            peak = a + int(curve[a : b + 1].argmax())
            return peak + _between_samples(curve, peak)

        coarse = (
            [torch.tensor(v) for v in (0.0, 0.25, 0.5)]
            if effect == "delay"
            else [current[grid_name] * f for f in (0.6, 1.0, 1.6)]
        )
        best_judged, choice = judge(current, now_db)[0], None
        for lag, db in candidates:
            for value in coarse:
                trial = {time_name: torch.tensor(max(0.0, lag) * 1000.0 / sample_rate), grid_name: value}
                e, levels = judge(trial, now_db if db is None else db)
                if e < best_judged:
                    best_judged, choice = e, (trial, levels)
        if choice is not None:  # the lag to a fraction of a millisecond, then the grid
            lag = refined(float(choice[0][time_name]) * sample_rate / 1000, choice[1])
            choice = ({**choice[0], time_name: torch.tensor(lag * 1000.0 / sample_rate)}, choice[1])
            best_judged = judge(*choice, band="full")[0]
            for value in grid(choice[0][grid_name]):
                trial = {**choice[0], grid_name: value}
                e, levels = judge(trial, choice[1], band="full")
                if e < best_judged:
                    best_judged, choice = e, (trial, levels)
        moved = False
        if choice is not None:
            trial = [v.detach().clone() for v in logits]
            set_values(trial, choice[0])
            trial[1][0, :, k] = _to_logit(SEND_SPEC, choice[1])
            before = _song_error(model, x, mono, logits, ref, sample_rate)
            # judged with the dry parts' levels free, so it may need them moved to pay
            moved = _song_error(model, x, mono, trial, ref, sample_rate) < before or (
                _solve_levels(model, x, mono, trial, ref, sample_rate)
                and _song_error(model, x, mono, trial, ref, sample_rate) < before
            )
            if moved:
                for v, t in zip(logits, trial):
                    v.data.copy_(t)
    j = columns[time_name]
    return {j: float(logits[2][0, j].detach())}, moved


def _between_samples(curve: Tensor, peak: int) -> float:
    """Where between samples (-0.5..0.5, relative to ``peak``) the peak of ``curve`` at index ``peak`` lies, by a
    parabola through it and its neighbours."""
    a, b, c = (float(curve[peak + d]) for d in (-1, 0, 1))
    bend = a - 2 * b + c
    return max(-0.5, min(0.5, 0.5 * (a - c) / bend)) if bend != 0 else 0.0


def _without(dry: Tensor):
    """``project(y)``: ``y (2, samples)`` or ``(m, 2, samples)`` less its least-squares fit by ``dry (N, 2,
    samples)``, channel by channel (one coefficient per track and channel): what no change of the tracks'
    levels and pans explains.
    A wrong dry level correlates with the track at every lag where the music repeats (and a track with a
    copy of another, at the copy's lag); without it, a bus's true lag stands out."""
    dry = dry.double()
    gram = torch.einsum("nct,mct->cnm", dry, dry)
    gram = gram + 1e-9 * gram.diagonal(dim1=-2, dim2=-1).mean(-1).clamp_min(1e-30)[:, None, None] * torch.eye(
        len(dry), dtype=dry.dtype
    )

    def project(y: Tensor) -> Tensor:
        coef = torch.linalg.solve(gram, torch.einsum("nct,...ct->cn...", dry, y.double()))
        return (y.double() - torch.einsum("cn...,nct->...ct", coef, dry)).to(y.dtype)

    return project


def _spectral_loss():
    import auraloss

    return auraloss.freq.MultiResolutionSTFTLoss(
        fft_sizes=[256, 1024, 4096],
        hop_sizes=[64, 256, 1024],
        win_lengths=[256, 1024, 4096],
        w_sc=0.0,
        w_log_mag=1.0,
        w_lin_mag=1.0,
    )


LEVEL_SOLVE_S = 15.0
"""Seconds of the song (from its start) that the least-squares fit of levels, pans and sends looks at."""


def _side_gains(pan: Tensor, mono: Tensor) -> Tensor:
    """``(tracks, 2)`` left/right gains of the console's pan slot: constant-power law for mono tracks, balance
    for stereo ones (see :func:`gradmix.dsp.pan`, :func:`gradmix.dsp.balance`)."""
    theta = (pan + 1) * (math.pi / 4)
    fade = torch.cos(pan.abs() * (math.pi / 2))
    one = torch.ones_like(fade)
    stereo = torch.stack([torch.where(pan > 0, fade, one), torch.where(pan < 0, fade, one)], -1)
    return torch.where(mono[:, None], torch.stack([torch.cos(theta), torch.sin(theta)], -1), stereo)


def _pan_and_level(gains: Tensor, mono: Tensor) -> tuple[Tensor, Tensor]:
    """The inverse of :func:`_side_gains` up to a level: ``(tracks, 2)`` gains >= 0 -> pan ``(tracks,)`` and the
    level in dB that the track needs besides."""
    left, right = gains.unbind(-1)
    theta = torch.atan2(right, left)
    loud = torch.maximum(left, right).clamp_min(1e-12)
    side = 2 / math.pi * torch.acos((torch.minimum(left, right) / loud).clamp(0, 1))
    pan = torch.where(mono, 4 / math.pi * theta - 1, torch.where(right < left, -side, side))
    level = torch.where(mono, torch.hypot(left, right), loud)
    return pan.clamp(-1, 1), 20 * torch.log10(level.clamp_min(1e-12))


def _held_envelope(before: Tensor, after: Tensor) -> Tensor:
    """``(batch, 1, samples)`` gain with ``after = before * gain`` (a linked envelope), read from the channel
    with the larger magnitude; 0 where the input is silent."""
    pick = before.abs().argmax(1, keepdim=True)
    b, a = before.gather(1, pick), after.gather(1, pick)
    return torch.where(b != 0, a / torch.where(b != 0, b, torch.ones_like(b)), torch.zeros_like(b))


def _linearised(layout, params, strips: Tensor, sample_rate: int, span: int):
    """``(run, master)`` for the console at ``params`` whose strips give ``strips (N, 2, samples)``:
    ``run(chain, chain_params, y)`` applies a chain to a batch ``(m, 2, span)``; ``master(y)`` applies the
    master chain with each dynamics effect's gain envelope held at the current mix's (a linear map of the
    first ``span`` samples)."""
    stage = add_buses(
        layout,
        strips.sum(0, keepdim=True),
        bus_inputs(strips[None], params.sends_db).unbind(1),
        params,
        sample_rate=sample_rate,
    )
    envelopes = []
    for slot, p in zip(layout.master, params.master):
        out = slot.effect(stage, p, sample_rate=sample_rate)
        envelopes.append(_held_envelope(stage, out)[..., :span] if slot.effect.envelope else None)
        stage = out

    def run(chain, chain_params, y: Tensor) -> Tensor:
        m = y.shape[0]
        for slot, p in zip(chain, chain_params):
            y = slot.effect(y, {k: v.expand(m, *v.shape[1:]) for k, v in p.items()}, sample_rate=sample_rate)
        return y

    def master(y: Tensor) -> Tensor:
        for slot, p, env in zip(layout.master, params.master, envelopes):
            y = y * env if env is not None else run([slot], [p], y)
        return y

    return run, master


def _linear_console(layout) -> bool:
    """Whether ``layout`` is one the closed-form moves understand: strips of linear and dynamics effects ending
    in a pan, linear buses, a master of linear and dynamics effects."""
    strip = [s.effect for s in layout.strip]
    master = [s.effect for s in layout.master]
    buses = [s.effect for _, chain in layout.buses for s in chain]
    return (
        strip[-1].type_name == "pan"
        and all(e.linear or e.envelope for e in strip[:-1] + master)
        and all(e.linear for e in buses)
    )


def _solve_levels(
    model: MixController,
    x: Tensor,
    mono: Tensor,
    logits: list[Tensor],
    ref: Tensor,
    sample_rate: int,
    *,
    rounds: int = 4,
) -> bool:
    """Set every track's level, pan and sends in ``logits`` (in place) by least squares on the waveform error
    (``x (1, N, 2, samples)``, ``ref (2, samples)``), every other control held.

    With each master effect either linear or a gain envelope held at the current mix's, the output is linear
    in each track's left and right gains and, for fixed gains, in its send levels: alternating least squares
    on the first :data:`LEVEL_SOLVE_S` seconds (every effect is causal, so the song's start alone is rendered);
    a track silent there keeps its level, pan and sends. A track's new level goes to its compressor's make-up
    gain (exact: after the dynamics), beyond that range to its input gain with the thresholds moved by as
    much (exact too while they stay in range: the dynamics see the same level relative to threshold). Kept
    only if the whole song's error falls.

    Returns:
        whether the controls changed.
    """
    layout = model.layout
    if not _linear_console(layout) or "gain" not in [s.effect.type_name for s in layout.strip]:
        return False
    n_tracks, n_buses = x.shape[1], len(layout.buses)
    span = min(x.shape[-1], int(LEVEL_SOLVE_S * sample_rate))
    with torch.no_grad():

        def error(trial: list[Tensor]) -> float:
            return _song_error(model, x, mono, trial, ref, sample_rate)

        params = layout.denormalize(Controls.from_logits(logits))
        pre = render_strips(layout.strip[:-1], x[..., :span], params.strip[:-1], sample_rate=sample_rate, mono=mono)[0]
        gains = _side_gains(params.strip[-1]["pan"][0], mono[0])
        sends = torch.pow(10.0, params.sends_db[0] / 20)  # (N, buses)
        run, master = _linearised(layout, params, pre * gains[:, :, None], sample_rate, span)

        basis = torch.zeros(n_tracks, 2, 2, span, dtype=x.dtype)  # (track, side, channel, samples)
        basis[:, 0, 0], basis[:, 1, 1] = pre[:, 0], pre[:, 1]
        flat = basis.flatten(0, 1)
        del basis, pre
        F = x.new_empty(n_tracks * 2, 1 + n_buses, 2, span)  # (track x side, 1 + bus, channel, samples)
        F[:, 0] = master(flat)
        for k, (_, chain) in enumerate(layout.buses):
            F[:, 1 + k] = master(run(chain, params.buses[k], flat))
        del flat
        J = F.reshape(n_tracks * 2 * (1 + n_buses), 2 * span)  # rows: (track, side, 1 + bus)
        target = ref[:, :span].reshape(-1)
        Q = J.new_zeros(len(J), len(J), dtype=torch.float64)
        r = J.new_zeros(len(J), dtype=torch.float64)
        block_samples = 1 << 16  # in double, a block of samples at a time: no double copy of J
        for a in range(0, J.shape[1], block_samples):
            block = J[:, a : a + block_samples].double()
            Q += block @ block.T
            r += block @ target[a : a + block_samples].double()
        del F, J, block
        ridge = 1e-9 * Q.diagonal().mean().clamp_min(1e-30)
        g, s = gains.double(), sends.double()
        heard = Q.diagonal().reshape(n_tracks, 2 * (1 + n_buses)).amax(1) > 1e-12 * float(Q.diagonal().max())

        def solve(A: Tensor, b: Tensor) -> Tensor:
            return torch.linalg.solve(A + ridge * torch.eye(len(A), dtype=A.dtype), b)

        for _ in range(rounds):
            # gains: coefficient of column (track, side, j) = g[track, side] * (1, sends[track])[j]
            W = torch.zeros(n_tracks, 2, 1 + n_buses, n_tracks, 2, dtype=torch.float64)
            idx = torch.arange(n_tracks)
            for side in range(2):
                W[idx, side, :, idx, side] = torch.cat([torch.ones(n_tracks, 1, dtype=torch.float64), s], 1)
            W = W.reshape(-1, 2 * n_tracks)
            g = solve(W.T @ Q @ W, W.T @ r).reshape(n_tracks, 2).clamp_min(0)
            if n_buses:
                a0 = torch.zeros(n_tracks, 2, 1 + n_buses, dtype=torch.float64)
                a0[:, :, 0] = g
                V = torch.zeros(n_tracks, 2, 1 + n_buses, n_tracks, n_buses, dtype=torch.float64)
                for b in range(n_buses):
                    V[idx, :, 1 + b, idx, b] = g
                V = V.reshape(-1, n_tracks * n_buses)
                a0 = a0.reshape(-1)
                s = solve(V.T @ Q @ V, V.T @ (r - Q @ a0)).reshape(n_tracks, n_buses)
                s = s.clamp(10 ** (SEND_SPEC.min / 20), 10 ** (SEND_SPEC.max / 20))

        g = torch.where(heard[:, None], g, gains.double())
        s = torch.where(heard[:, None], s, sends.double())
        pan, level_db = _pan_and_level(g.to(x.dtype), mono[0])
        j_pan = layout.strip_control_index(len(layout.strip) - 1, "pan")
        pan_spec = layout.strip[-1].spec("pan")

        def with_offset(offset_db: float) -> list[Tensor]:
            trial = [v.detach().clone() for v in logits]
            _set_level(layout, trial, params, level_db + offset_db)
            trial[0][0, :, j_pan] = _to_logit(pan_spec, pan)
            if n_buses:
                trial[1][0] = _to_logit(SEND_SPEC, 20 * torch.log10(s.to(x.dtype)))
            return trial

        # the held envelopes do not see the master's dynamics answer a change of the overall level: that one
        # number is searched on the real console (a parabola through three levels, twice)
        tried = {c: error(with_offset(c)) for c in (-1.0, 0.0, 1.0)}
        for width in (1.0, 0.25):
            centre = min(tried, key=tried.get)
            for d in (-width, width):
                if centre + d not in tried:
                    tried[centre + d] = error(with_offset(centre + d))
            a, b, c = (tried[centre + d] for d in (-width, 0.0, width))
            bend = a - 2 * b + c
            if bend > 0:
                best = centre + max(-2.0, min(2.0, 0.5 * width * (a - c) / bend))
                if best not in tried:
                    tried[best] = error(with_offset(best))
        best = min(tried, key=tried.get)
        if tried[best] >= error(logits):
            return False
        for v, t in zip(logits, with_offset(best)):
            v.data.copy_(t)
    return True


def _to_logit(spec, value: Tensor) -> Tensor:
    u = spec.normalize(value.clamp(spec.min, spec.max)).clamp(1e-4, 1 - 1e-4)
    return torch.logit(u)


def _set_level(layout, logits: list[Tensor], params, level_db: Tensor) -> None:
    """Add ``level_db (tracks,)`` to each track: make-up gain of the strip's last dynamics slot first, then
    its gain slot with every threshold after it moved by as much."""
    types = [s.effect.type_name for s in layout.strip]
    rest = level_db
    dynamics = [i for i, s in enumerate(layout.strip) if "makeup_db" in [p.name for p in s.specs]]
    if dynamics:
        i = dynamics[-1]
        spec = layout.strip[i].spec("makeup_db")
        now = params.strip[i]["makeup_db"][0]
        new = (now + rest).clamp(spec.min, spec.max)
        logits[0][0, :, layout.strip_control_index(i, "makeup_db")] = _to_logit(spec, new)
        rest = rest - (new - now)
    g = types.index("gain")
    spec = layout.strip[g].spec("gain_db")
    now = params.strip[g]["gain_db"][0]
    new = (now + rest).clamp(spec.min, spec.max)
    moved = new - now
    logits[0][0, :, layout.strip_control_index(g, "gain_db")] = _to_logit(spec, new)
    for i in range(g + 1, len(layout.strip)):
        if "threshold_db" in [p.name for p in layout.strip[i].specs]:
            spec = layout.strip[i].spec("threshold_db")
            t = params.strip[i]["threshold_db"][0]
            logits[0][0, :, layout.strip_control_index(i, "threshold_db")] = _to_logit(spec, t + moved)
