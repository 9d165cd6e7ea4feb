"""The time search of ``gradmix fit``: a bus delay's time or a bus reverb's pre-delay, which gradients cannot
find (the error oscillates with them), by the peaks of cross-correlations.

:func:`search_time` runs its named steps: :meth:`TimeSearch.candidate_lags`, :meth:`TimeSearch.judge` of each
candidate, :meth:`TimeSearch.refine_lag` of the best one, the grid of :meth:`TimeSearch.grid`, then
:meth:`TimeSearch.keep_if_better`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from gradmix.console import SEND_SPEC, Controls, Logits, render_strips
from gradmix.console.render import add_buses, bus_inputs, finish
from gradmix.fit.levels import solve_levels
from gradmix.fit.song import FitProblem, linear_console, linearised, to_logit

BUS_TIMES = {"delay": ("time_ms", "feedback"), "reverb": ("predelay_ms", "decay_s")}
"""Bus effects whose time :func:`search_time` finds: effect -> (its time, the parameter judged on a grid)."""

Choice = tuple[dict[str, Tensor], Tensor]
"""A candidate setting: ``({time and grid parameter: physical value}, the sends to the bus in dB (tracks,))``."""


def search_time(problem: FitProblem, logits: Logits, effect: str) -> tuple[dict[int, float], bool]:
    """Set the time of the bus effect ``effect`` (a delay's time, a reverb's pre-delay; to a fraction of a
    sample), the sends to its bus and the parameter judged on a grid (a delay's feedback, a reverb's decay
    times) in ``logits`` (in place) where the waveform error is least; and the tracks' levels, pans and sends
    by :func:`~gradmix.fit.levels.solve_levels` where the choice needs them to lower the error.

    The steps (see :class:`TimeSearch`): candidate lags from cross-correlations; each candidate judged at a
    few values of the grid parameter over the song's first ``tuning.judge_s`` seconds; the best one's lag
    refined to a fraction of a sample, then its grid parameter set on the full grid; kept if the whole song's
    error falls, at once or after the levels are solved again (it was judged with them free).

    Args:
        problem: the song, the target and the console.
        logits: the console's controls, changed in place.
        effect: a key of :data:`BUS_TIMES`.

    Returns:
        ``({index in the bus controls: logit}`` of the time, to be held: its gradient only sees the nearest
        ripple of the error; whether any control moved), or ``({}, False)`` without such a bus.
    """
    layout, sample_rate, tuning = problem.layout, problem.sample_rate, problem.tuning
    found = [
        (k, i) for k, (_, chain) in enumerate(layout.buses) for i, s in enumerate(chain) if s.effect.type_name == effect
    ]
    if not found:
        return {}, False
    k, i = found[0]
    time_name, grid_name = BUS_TIMES[effect]
    names = [s.name for s in layout.buses[k][1][i].specs]
    if i != 0 or time_name not in names or grid_name not in names:
        return {}, False
    time_spec = layout.buses[k][1][i].spec(time_name)
    span = min(problem.ref.shape[-1], int(tuning.search_s * sample_rate))
    lo, hi = int(time_spec.min * sample_rate / 1000), min(int(time_spec.max * sample_rate / 1000), span - 2)
    if hi <= lo:
        return {}, False
    with torch.no_grad():
        search = TimeSearch(problem, logits, effect, k, (lo, hi))
        choice = search.choose(search.candidate_lags())
        moved = choice is not None and search.keep_if_better(choice)
    j = search.columns[time_name]
    return {j: float(logits.buses[0, j].detach())}, moved


class TimeSearch:
    """The state of one time search: the console's strips and bus inputs over the song's start, what it leaves
    unexplained without the bus, and that residual's spectrum.

    The bus adds, at lag ``time``, what it would add at time 0 (the input for a delay's first echo, the
    reverberation without pre-delay). Candidate lags are the peaks of the cross-correlations of that (channel
    by channel) with what the console leaves unexplained without the bus (the target minus that output), less
    its least-squares fit by the tracks' strip outputs as the output hears them (through the master, its
    envelopes held; one level per track and channel: a wrong dry level correlates with its track at every lag
    where the music repeats, and with a copy of the track in another stem at the copy's lag).

    Args:
        problem, logits, effect: as :func:`search_time`'s.
        bus: the index of the bus whose first slot is ``effect``.
        lags: the least and greatest lag searched, in samples.
    """

    def __init__(self, problem: FitProblem, logits: Logits, effect: str, bus: int, lags: tuple[int, int]):
        layout = self.layout = problem.layout
        x, mono, ref, sample_rate, tuning = problem.x, problem.mono, problem.ref, problem.sample_rate, problem.tuning
        self.problem, self.logits, self.effect, self.bus = problem, logits, effect, bus
        self.sample_rate, self.tuning = sample_rate, tuning
        self.lo, self.hi = lags
        self.slot = layout.buses[bus][1][0]
        self.time_name, self.grid_name = BUS_TIMES[effect]
        self.columns = {name: layout.bus_control_index(bus, 0, name) for name in (self.time_name, self.grid_name)}
        self.grid_specs = [s for s in self.slot.specs if s.name == self.grid_name]
        self.span = min(ref.shape[-1], int(tuning.search_s * sample_rate))
        self.judged = min(ref.shape[-1], int(tuning.judge_s * sample_rate))
        reach = max(self.span, self.judged)  # every effect is causal: the song's start alone is rendered
        self.params = params = layout.denormalize(Controls.from_logits(logits))
        self.strips = render_strips(layout.strip, x[..., :reach], params.strip, sample_rate=sample_rate, mono=mono)
        self.buses_in = list(bus_inputs(self.strips, params.sends_db).unbind(1))
        others = [None if b == bus else y for b, y in enumerate(self.buses_in)]  # left alone by the search
        self.rest = add_buses(layout, self.strips.sum(1), others, params, sample_rate=sample_rate)
        self.current = {name: params.buses[bus][0][name][0] for name in (self.time_name, self.grid_name)}
        self.muted = self.output(self.current, mute=True)
        self.miss = ref[:, :reach] - self.muted  # what the console leaves unexplained without the bus
        dry = self.strips[0]  # the dry parts as the output hears them: through the master, envelopes held
        if linear_console(layout):
            dry = linearised(layout, params, dry, sample_rate, reach)[1](dry)
        self.unexplained = without(dry[..., : self.span])(self.miss[:, : self.span])
        self.size = 1 << (2 * self.span - 1).bit_length()
        self.spectrum = torch.fft.rfft(self.unexplained, self.size)
        self.without_dry = without(dry[..., : self.judged])
        self.judged_miss = self.without_dry(self.miss[:, : self.judged])
        self.judged_high = self.high(self.judged_miss)

    def set_values(self, target: Logits, values: dict[str, Tensor]) -> None:
        """Write physical ``values`` of the bus effect's parameters into ``target`` (in place)."""
        for name, value in values.items():
            for band, spec in enumerate(s for s in self.slot.specs if s.name == name):
                target.buses[0, self.columns[name] + band] = to_logit(spec, value.reshape(-1)[band].double())

    def output(
        self,
        values: dict[str, Tensor],
        sends_db: Tensor | None = None,
        mute: bool = False,
        samples: int | None = None,
    ) -> Tensor:
        """The console's output ``(2, samples)`` over the first ``samples`` (the effects are causal) with the bus
        effect at ``values``, the sends to the bus at ``sends_db (tracks,)`` (default: as they are), or the bus
        muted."""
        trial = self.logits.copy()
        self.set_values(trial, values)
        inputs: list[Tensor | None] = [None] * len(self.buses_in)
        if not mute:
            inputs[self.bus] = (
                self.buses_in[self.bus][..., :samples]
                if sends_db is None
                else torch.einsum("bnct,n->bct", self.strips[..., :samples], torch.pow(10.0, sends_db / 20))
            )
        trial_params = self.layout.denormalize(Controls.from_logits(trial))
        return finish(self.layout, self.rest[..., :samples], inputs, trial_params, sample_rate=self.sample_rate)[0]

    def at_time_zero(self, y: Tensor) -> Tensor:
        """``(m, 2, t)``: what the bus adds at lag ``time``, moved back to 0."""
        if self.effect == "delay":
            return y
        p = {name: v.expand(y.shape[0], *v.shape[1:]) for name, v in self.params.buses[self.bus][0].items()}
        return self.slot.effect(y, {**p, self.time_name: y.new_zeros(y.shape[0])}, sample_rate=self.sample_rate)

    def cross(self, y: Tensor) -> Tensor:
        """``(m, 2, span)`` -> ``(m, size // 2 + 1)`` cross-spectra with the unexplained part, summed over
        channels."""
        return (self.spectrum * torch.fft.rfft(y, self.size).conj()).sum(-2)

    def candidate_lags(self) -> list[tuple[float, Tensor | None]]:
        """Candidate lags (samples, to a fraction) with the sends each implies (dB per track, or ``None``: the
        sends as they are), from the peaks of three curves. Track by track, scored by the energy that each
        track's copy would explain at its best level (``sum_i xc_i(lag)^2 / |b_i|^2``), so that a lag is found
        even while the sends to the bus are wrong (a candidate of this kind comes with those levels as its
        sends); the same whitened (PHAT: each frequency weighs alike, so that the combs of peaks of tonal
        tracks do not hide the true lag); and of the bus's current input."""
        span, size, hi = self.span, self.size, self.hi
        on_bus = torch.fft.irfft(self.cross(self.at_time_zero(self.buses_in[self.bus][:, :, :span])), size)[0]
        explained, whitened = self.unexplained.new_zeros(size), self.unexplained.new_zeros(size)
        per_track, energy = [], []  # per track: its cross-correlation up to the longest lag, its energy
        per = max(1, self.tuning.chunk_samples // (2 * size))  # tracks at a time: spectra twice the span each
        for a in range(0, self.strips.shape[1], per):
            basis = self.at_time_zero(self.strips[0, a : a + per, :, :span])  # (m, 2, span)
            xc = self.cross(basis)  # (m, size // 2 + 1)
            magnitude = xc.abs()
            floor = 1e-3 * magnitude.amax(-1, keepdim=True) + 1e-30  # a silent track's row stays zero, not NaN
            whitened += torch.fft.irfft(xc / (magnitude + floor), size).square().sum(0)
            xc = torch.fft.irfft(xc, size)  # (m, size)
            energy.append(basis.square().sum((-2, -1)).clamp_min(1e-12))
            explained += (xc.square() / energy[-1][:, None]).sum(0)
            per_track.append(xc[:, : hi + 2])
            del basis, magnitude, xc
        per_track, energy = torch.cat(per_track), torch.cat(energy)
        candidates: list[tuple[float, Tensor | None]] = []
        for curve, levels, count in ((explained, True, 12), (whitened, True, 8), (on_bus.abs(), False, 8)):
            window = curve[max(self.lo, 1) : hi + 1]
            peaks = torch.topk(
                torch.nn.functional.max_pool1d(window[None, None], 41, 1, 20)[0, 0].eq(window) * window,
                min(count, window.numel()),
            ).indices + max(self.lo, 1)
            for lag in peaks.tolist():
                frac = between_samples(curve, lag)
                db = (
                    (20 * torch.log10((per_track[:, lag] / energy).clamp_min(1e-6)))
                    .clamp(SEND_SPEC.min, SEND_SPEC.max)
                    .to(self.strips.dtype)
                    if levels
                    else None
                )
                if all(abs(lag + frac - seen) > 1 for seen, _ in candidates):  # the curves share many peaks
                    candidates.append((lag + frac, db))
        return candidates

    def high(self, y: Tensor) -> Tensor:
        """For the reverb's time, the error (the dry levels fitted on the full band) is measured on first
        differences: its decays, wrong while searched, blur the low band, not the high one."""
        return torch.diff(y, dim=-1) if self.effect == "reverb" else y

    def judge(self, values: dict[str, Tensor], sends_db: Tensor, band: str = "high") -> tuple[float, Tensor]:
        """The error over the first ``tuning.judge_s`` seconds with the bus effect at ``values``, the bus at its
        best overall level (a candidate's own levels ignore the master's gain) and the dry parts' levels free;
        on first differences for a reverb unless ``band`` is ``"full"``. Returns the error and the sends (dB)."""
        added = self.without_dry(self.output(values, sends_db, samples=self.judged) - self.muted[:, : self.judged])
        want = self.judged_high if band == "high" else self.judged_miss
        added = self.high(added) if band == "high" else added
        scale = max(0.0, float((want * added).sum()) / max(float(added.square().sum()), 1e-30))
        at_level = float((want - scale * added).square().sum())
        return at_level, (sends_db + 20 * math.log10(max(scale, 1e-6))).clamp(SEND_SPEC.min, SEND_SPEC.max)

    def grid(self, value: Tensor) -> list[Tensor]:
        """The full grid of the judged parameter around ``value``: a delay's feedback over its range; a reverb's
        decay times scaled together, and alike in every band (a band the gradient steps shrank to nothing while
        the pre-delay was wrong comes back)."""
        if self.effect == "delay":
            spec = self.grid_specs[0]
            steps = torch.linspace(spec.min, spec.max, 19, device="cpu").tolist()  # numbers, read at once
            return [torch.tensor(v, device=value.device) for v in steps]
        return [value * f for f in (0.5, 0.7, 0.85, 1.0, 1.2, 1.4, 2.0)] + [
            torch.full_like(value, d) for d in (0.3, 0.6, 1.0, 1.6, 2.5)
        ]

    def refine_lag(self, lag: float, sends_db: Tensor) -> float:
        """The peak within ``tuning.fine_ms`` of ``lag`` of the cross-correlation with what the bus adds at these
        sends, weighted by frequency squared (first differences): a bass's broad peaks move with every misfit of
        the strips; the high band pins the lag down."""
        size = self.size
        emphasis = 2 - 2 * torch.cos(
            torch.linspace(0, math.pi, size // 2 + 1, dtype=self.spectrum.real.dtype, device=self.spectrum.device)
        )
        sends = torch.pow(10.0, sends_db / 20)
        bus = self.at_time_zero(torch.einsum("nct,n->ct", self.strips[0, :, :, : self.span], sends)[None])
        curve = torch.fft.irfft((self.spectrum * emphasis * torch.fft.rfft(bus, size).conj()).sum(-2), size)[0]
        width = int(self.tuning.fine_ms * self.sample_rate / 1000)
        a, b = max(self.lo, 1, round(lag) - width), min(self.hi, round(lag) + width)
        if b <= a:
            return lag
        peak = a + int(curve[a : b + 1].argmax())
        return peak + between_samples(curve, peak)

    def choose(self, candidates: list[tuple[float, Tensor | None]]) -> Choice | None:
        """The best candidate, or ``None`` where none judges better than the console as it is: each judged at a
        few values of the grid parameter, the best one's lag refined (:meth:`refine_lag`), then its grid
        parameter set on the full grid (:meth:`grid`)."""
        sr, time_name, grid_name = self.sample_rate, self.time_name, self.grid_name
        now_db = self.params.sends_db[0, :, self.bus].to(self.strips.dtype)
        device = self.strips.device
        coarse = (
            [torch.tensor(v, device=device) for v in (0.0, 0.25, 0.5)]
            if self.effect == "delay"
            else [self.current[grid_name] * f for f in (0.6, 1.0, 1.6)]
        )
        best_judged, choice = self.judge(self.current, now_db)[0], None
        for lag, db in candidates:
            for value in coarse:
                trial = {time_name: torch.tensor(max(0.0, lag) * 1000.0 / sr, device=device), grid_name: value}
                e, levels = self.judge(trial, now_db if db is None else db)
                if e < best_judged:
                    best_judged, choice = e, (trial, levels)
        if choice is None:
            return None
        lag = self.refine_lag(float(choice[0][time_name]) * sr / 1000, choice[1])
        choice = ({**choice[0], time_name: torch.tensor(lag * 1000.0 / sr, device=device)}, choice[1])
        best_judged = self.judge(*choice, band="full")[0]
        for value in self.grid(choice[0][grid_name]):
            trial = {**choice[0], grid_name: value}
            e, levels = self.judge(trial, choice[1], band="full")
            if e < best_judged:
                best_judged, choice = e, (trial, levels)
        return choice

    def keep_if_better(self, choice: Choice) -> bool:
        """Set ``choice`` in the console's logits if the whole song's error falls, at once or after the levels
        are solved again (it was judged with the dry parts' levels free); whether it was set."""
        problem = self.problem
        trial = self.logits.copy()
        self.set_values(trial, choice[0])
        trial.sends[0, :, self.bus] = to_logit(SEND_SPEC, choice[1])
        before = problem.error(self.logits)
        moved = problem.error(trial) < before or (solve_levels(problem, trial) and problem.error(trial) < before)
        if moved:
            for v, t in zip(self.logits, trial):
                v.data.copy_(t)
        return moved


def between_samples(curve: Tensor, peak: int) -> float:
    """Where between samples (-0.5..0.5, relative to ``peak``) the peak of ``curve`` at index ``peak`` lies, by a
    parabola through it and its neighbours."""
    a, b, c = (float(curve[peak + d]) for d in (-1, 0, 1))
    bend = a - 2 * b + c
    return max(-0.5, min(0.5, 0.5 * (a - c) / bend)) if bend != 0 else 0.0


def without(dry: Tensor):
    """``project(y)``: ``y (2, samples)`` or ``(m, 2, samples)`` less its least-squares fit by ``dry (N, 2,
    samples)``, channel by channel (one coefficient per track and channel): what no change of the tracks'
    levels and pans explains.
    A wrong dry level correlates with the track at every lag where the music repeats (and a track with a
    copy of another, at the copy's lag); without it, a bus's true lag stands out."""
    dry = dry.double()
    gram = torch.einsum("nct,mct->cnm", dry, dry)
    gram = gram + 1e-9 * gram.diagonal(dim1=-2, dim2=-1).mean(-1).clamp_min(1e-30)[:, None, None] * torch.eye(
        len(dry), dtype=dry.dtype, device=dry.device
    )

    def project(y: Tensor) -> Tensor:
        coef = torch.linalg.solve(gram, torch.einsum("nct,...ct->cn...", dry, y.double()))
        return (y.double() - torch.einsum("cn...,nct->...ct", coef, dry)).to(y.dtype)

    return project
