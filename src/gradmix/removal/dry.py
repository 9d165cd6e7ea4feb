"""``gradmix dry``: estimate the effects of a wet stem as an editable chain, and undo them.

1. **Hear.** The stem, at the estimator's rate and brought to a peak of -1 dBFS, is cut into windows of
   :data:`WINDOW_S` (at most :data:`MAX_WINDOWS`, spread over the whole stem); the estimator's presence
   probabilities and settings are averaged over them, weighted by each window's energy.
2. **Decide.** An effect whose probability reaches the estimator's threshold for it is in the chain (the
   thresholds are chosen after training, :func:`gradmix.removal.train.calibrate_thresholds`; with ``careful``,
   the higher ones few dry stems reach, :func:`gradmix.removal.train.false_alarm_thresholds`). The delay is
   decided with its cepstral fit (step 3): one the estimator gives at least :data:`ECHO_PROBABILITY` is in
   the chain if the fit finds a mix of :data:`ECHO_MIX` or more, or if it passed the threshold and the fit
   confirms an echo (mix :data:`ECHO_CONFIRM_MIX` or more), unless the fit's feedback says it is a loop
   (:data:`LOOP_FEEDBACK`).
3. **Refine.** The compressor's ratio is brought halfway to 1 (:data:`RATIO_SHRINK`). Undoing a delay needs
   its time to the sample and its feedback and mix to a few hundredths, better than the estimator hears them;
   a delay shows in the stem's power cepstrum as spikes at its time and its multiples, whose heights follow
   from the feedback and the mix. So the time is moved to the strongest spike near the estimate
   (:func:`echo_lag`), and the feedback and mix are fitted to the spikes' heights (:func:`fit_echo`).
4. **Undo**, in reverse order, at the stem's own rate (:mod:`gradmix.dsp.inverse`): the reverb's late energy,
   the delay, the distortion, the compressor (undoing at most :data:`MAX_EXPANSION_DB` of gain reduction),
   the EQ (its gains negated).

The chain comes back at the file's level (:func:`gradmix.removal.chains.rescaled`), as console-file chain
entries: the dry stem rendered through them gives the wet one back (``gradmix render``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from gradmix.audio import check_output_path, read_audio, resample, write_audio
from gradmix.console.setting import ConsoleSetting, Entry, TrackSetting
from gradmix.dsp import parametric_eq
from gradmix.dsp.inverse import dereverberate, uncompress, undelay, undistort
from gradmix.models.removal import EffectEstimator, load_estimator
from gradmix.removal.chains import EFFECTS, ESTIMATED, REMOVABLE, ChainBatch, from_controls, peak_gain_db, rescaled

WINDOW_S = 3.0
"""Length of the windows the estimator hears, in seconds (what it was trained on)."""
MAX_WINDOWS = 24
"""At most this many windows of a long stem are heard, evenly spread."""
DELAY_SEARCH = 4.0
"""A delay's time is searched between the estimate divided and multiplied by this."""
DELAY_PRIOR_WIDTH = 1.0
"""Width (standard deviation of the natural log of the ratio) of the prior around the estimated delay time."""
DELAY_RANGE_MS = (10.0, 2000.0)
"""The delay times searched, in ms (the delay's own range)."""
ECHO_SECONDS = 30.0
"""At most this much of a stem (from its start) is analysed for a delay's time, feedback and mix."""
ECHO_REPEATS = 4
"""The cepstral spikes (of the echo and its repeats) the delay's feedback and mix are fitted to."""
ECHO_ITERATIONS = 10
"""At most this many rounds of the fit of a delay's feedback and mix (:func:`fit_echo`)."""
ECHO_PROBABILITY = 0.3
"""A delay the estimator gives at least this probability is looked for in the stem's cepstrum."""
ECHO_MIX = 0.2
"""A delay found there with at least this mix is removed, whatever the estimator's threshold."""
ECHO_CONFIRM_MIX = 0.05
"""A delay the estimator is sure of is kept only if the cepstrum finds it with at least this mix."""
LOOP_FEEDBACK = 0.7
"""A repeat whose fitted feedback reaches this is the music's own loop, not a delay: a pattern repeated exactly
reads as a feedback of 1, and the delays the estimator was trained on reach 0.6."""
MAX_EXPANSION_DB = 30.0
"""At most this much of a compressor's gain reduction is undone at any sample."""
RATIO_SHRINK = 0.5
"""The compressor undone has the estimated ratio brought this far from 1 (the rest of the way back to 1): the
estimator hears the ratio only to about 3:1, and expanding too much costs more than too little."""
SILENCE_DBFS = -90.0
"""A stem whose peak is below this is silent: returned unchanged, with an empty chain."""


@dataclass
class Removal:
    """What :func:`remove_effects` found and did.

    Attributes:
        dry: the dry stem ``(channels, samples)``, at the wet stem's rate and channels.
        chain: the estimated effects in the order they were applied, at the file's level.
        probabilities: each removable effect's presence probability.
        notes: anything the user should know (silence, a limit that was reached).
    """

    dry: Tensor
    chain: list[Entry]
    probabilities: dict[str, float]
    notes: list[str] = field(default_factory=list)


def windows(x: Tensor, length: int, most: int) -> Tensor:
    """Up to ``most`` windows ``(n, channels, length)`` of ``x`` ``(channels, samples)``, evenly spread (one,
    zero-padded, when ``x`` is shorter)."""
    n = x.shape[-1]
    if n <= length:
        return torch.nn.functional.pad(x, (0, length - n))[None]
    count = min(most, n // length)
    starts = torch.linspace(0, n - length, count).round().long().tolist()
    return torch.stack([x[:, s : s + length] for s in starts])


def hear(model: EffectEstimator, wet: Tensor, sample_rate: int) -> tuple[Tensor, Tensor]:
    """The estimator's presence probabilities ``(effects,)`` and 0..1 settings ``(controls,)`` for a stem
    ``(channels, samples)`` already at a peak of -1 dBFS, averaged over its windows by energy."""
    rate = model.cfg.sample_rate
    x = wet if wet.shape[0] == 2 else wet.expand(2, -1)
    if sample_rate != rate:
        x = torch.from_numpy(resample(x.numpy(), sample_rate, rate))
    raw = windows(x, int(WINDOW_S * rate), MAX_WINDOWS)
    gain = peak_gain_db(raw)  # each window at -1 dBFS, as the estimator was trained
    with torch.no_grad():
        weights = next(model.parameters())
        logits, controls = model((raw * torch.pow(10.0, gain / 20)[:, None, None]).to(weights))
    everything = torch.ones(raw.shape[0], len(REMOVABLE), dtype=torch.bool)
    at_stem = rescaled(from_controls(everything, controls.cpu().double()), gain).controls()  # the stem's level
    energy = raw.double().square().mean((1, 2))
    weight = (energy / energy.sum().clamp_min(1e-30)).float()[:, None]
    return (torch.sigmoid(logits.cpu()) * weight).sum(0), (at_stem * weight).sum(0)


def power_cepstrum(x: Tensor, sample_rate: int) -> Tensor:
    """The power cepstrum ``(samples,)`` (float64) of the mono sum of ``x`` ``(channels, samples)`` (at most its
    first :data:`ECHO_SECONDS`), zero-padded so that no lag wraps: an echo of lag ``D`` and a feedback delay add
    the same spikes at ``D, 2D, ...`` whatever the signal's own spectrum, since their log spectra add."""
    mono = x.double().mean(0)[: int(ECHO_SECONDS * sample_rate)]
    n = mono.shape[-1]
    size = 1 << (2 * n - 1).bit_length()
    power = torch.fft.rfft(mono, size).abs().square()
    return torch.fft.irfft(torch.log(power + 1e-12 * power.max()), size)[:n]


def spike_at(cepstrum: Tensor, lag: float) -> float:
    """The height of a band-limited spike centred at the fractional ``lag`` (samples) of ``cepstrum``: the
    least-squares amplitude of a sinc there, over the 10 nearest lags (0 beyond the cepstrum's end)."""
    first = int(math.floor(lag)) - 4
    if first < 0 or first + 10 > cepstrum.shape[-1]:
        return 0.0
    taps = torch.arange(first, first + 10)
    kernel = torch.sinc(taps.double() - lag)
    return float((cepstrum[taps] * kernel).sum() / kernel.square().sum())


def echo_lag(x: Tensor, sample_rate: int, around_ms: float) -> float:
    """The lag in samples, to a twentieth of a sample, of the strongest echo of ``x`` ``(channels, samples)``
    within ``around_ms`` times or divided by :data:`DELAY_SEARCH`: the peak of its power cepstrum weighted by a
    log-normal prior around the estimate (a loop's own repeats can stand as high as the echo: the nearer to the
    estimate wins), then the sinc that fits the spike best."""
    cepstrum = power_cepstrum(x, sample_rate)
    n = cepstrum.shape[-1]
    around = around_ms * sample_rate / 1000
    lo = max(1, int(min(DELAY_RANGE_MS) * sample_rate / 1000), int(around / DELAY_SEARCH))
    hi = min(n - 6, int(max(DELAY_RANGE_MS) * sample_rate / 1000), int(math.ceil(around * DELAY_SEARCH)))
    if hi <= lo:
        return around
    lags = torch.arange(lo, hi + 1, dtype=torch.float64)
    prior = torch.exp(-0.5 * (torch.log(lags / around) / DELAY_PRIOR_WIDTH) ** 2)
    peak = lo + int(torch.argmax(cepstrum[lo : hi + 1].clamp_min(0) * prior))
    candidates = peak + torch.linspace(-1.0, 1.0, 41, dtype=torch.float64)
    return float(max(candidates.tolist(), key=lambda lag: spike_at(cepstrum, lag)))


def delay_spikes(feedback: Tensor, mix: Tensor, repeats: int) -> Tensor:
    """The cepstral spikes ``(..., repeats)`` a feedback delay (:func:`gradmix.dsp.delay`) adds at ``D, 2D,
    ...``: with ``H = (1 - mix) (1 - q P) / (1 - feedback P)``, ``q = feedback - mix / (1 - mix)``,
    ``P = z^-D``, the ``k``-th is ``(feedback^k - q^k) / k`` while ``|q| <= 1``. A zero outside the unit circle
    has the log magnitude of its mirror image ``1 / q``, so a mostly wet delay (``|q| > 1``) cannot be told
    from a mostly dry one by its spikes; its entries are ``inf`` here, and the fit takes the mostly dry one."""
    q = feedback - mix / (1 - mix)
    k = torch.arange(1, repeats + 1, dtype=feedback.dtype)
    spikes = (feedback[..., None] ** k - q[..., None] ** k) / k
    return torch.where(q.abs()[..., None] > 1, math.inf, spikes)


def fit_echo(x: Tensor, sample_rate: int, lag: float) -> tuple[float, float]:
    """The feedback and mix of a delay of ``lag`` samples in ``x`` ``(channels, samples)``: the settings whose
    cepstral spikes (:func:`delay_spikes`) are those of ``x`` at ``lag, 2 lag, ...``, refined by nulling:
    undo the delay found, measure the spikes left, add them to the target, fit again (the cut-off end of a
    segment and the interpolated delay line make the first reading low; what is left after undoing is not)."""
    mono = x.double().mean(0, keepdim=True)[None, :, : int(ECHO_SECONDS * sample_rate)]
    time_ms = 1000.0 * lag / sample_rate
    grid_fb, grid_mix = torch.meshgrid(
        torch.linspace(0.0, 0.9, 361, dtype=torch.float64),
        torch.linspace(0.0, 0.95, 381, dtype=torch.float64),
        indexing="ij",
    )
    grid_fb, grid_mix = grid_fb.flatten(), grid_mix.flatten()
    spikes = delay_spikes(grid_fb, grid_mix, ECHO_REPEATS)

    def heights(y: Tensor) -> Tensor:
        cepstrum = power_cepstrum(y[0], sample_rate)
        return torch.tensor([spike_at(cepstrum, k * lag) for k in range(1, ECHO_REPEATS + 1)], dtype=torch.float64)

    target = heights(mono)
    feedback = mix = 0.0
    for _ in range(ECHO_ITERATIONS):
        best = int((spikes - target).square().sum(-1).argmin())
        feedback, mix = float(grid_fb[best]), float(grid_mix[best])
        left = heights(undelay(mono, sample_rate=sample_rate, time_ms=time_ms, feedback=feedback, mix=mix))
        if float(left.abs().max()) < 1e-3:
            break
        target = target + left
    return feedback, mix


def undo(y: Tensor, chains: ChainBatch, sample_rate: int) -> Tensor:
    """``y`` ``(1, channels, samples)`` with the present effects of ``chains`` (one item) undone in reverse order."""
    p = {name: {k: v.to(y.dtype) for k, v in chains.params[name].items()} for name in REMOVABLE}
    on = {name: bool(chains.present[0, k]) for k, name in enumerate(REMOVABLE)}
    if on["reverb"]:
        r = p["reverb"]
        y = dereverberate(y, sample_rate=sample_rate, decay_s=r["decay_s"], predelay_ms=r["predelay_ms"], mix=r["mix"])
    if on["delay"]:
        d = p["delay"]
        y = undelay(y, sample_rate=sample_rate, time_ms=d["time_ms"], feedback=d["feedback"], mix=d["mix"])
    if on["distortion"]:
        d = p["distortion"]
        y = undistort(y, sample_rate=sample_rate, drive_db=d["drive_db"], tone_db=d["tone_db"], mix=d["mix"])
    if on["compressor"]:
        y = uncompress(y, sample_rate=sample_rate, max_expansion_db=MAX_EXPANSION_DB, **p["compressor"])
    if on["eq"]:
        e = dict(p["eq"])
        e["gain_db"] = -e["gain_db"]
        y = parametric_eq(y, sample_rate=sample_rate, shapes=EFFECTS["eq"].shapes, **e)
    return y


def decide_delay(
    heard: Tensor, sample_rate: int, around_ms: float, *, sure: bool
) -> tuple[tuple[float, float, float] | None, str | None]:
    """Whether the stem ``heard`` ``(channels, samples)`` went through a delay, from its cepstrum (step 2 of the
    module docstring), given the estimator's time ``around_ms`` and whether its probability passed the
    threshold (``sure``). Returns the delay's ``(time_ms, feedback, mix)``, or ``None`` if none is to be
    removed, and a note for the user (or ``None``)."""
    lag = echo_lag(heard, sample_rate, around_ms)
    feedback, mix = fit_echo(heard, sample_rate, lag)
    time_ms = 1000.0 * lag / sample_rate
    if not (mix >= ECHO_MIX or (sure and mix >= ECHO_CONFIRM_MIX)):
        return None, None
    if feedback >= LOOP_FEEDBACK:
        return None, f"a repeat every {time_ms:.1f} ms was taken for the music's own loop, not a delay"
    return (time_ms, feedback, mix), None


def remove_effects(model: EffectEstimator, wet: Tensor, sample_rate: int, *, careful: bool = False) -> Removal:
    """Estimate and undo the effects of one stem ``(channels, samples)`` (mono or stereo, any rate); ``careful``
    decides by the estimator's careful thresholds (for stems that may have no effect at all)."""
    peak = float(wet.abs().max()) if wet.numel() else 0.0
    if peak <= 10 ** (SILENCE_DBFS / 20):
        return Removal(wet.clone(), [], dict.fromkeys(REMOVABLE, 0.0), ["the stem is silent: nothing to remove"])
    gain = peak_gain_db(wet[None])
    heard = wet * torch.pow(10.0, gain / 20)
    probabilities, controls = hear(model, heard, sample_rate)
    present = probabilities[None] >= (model.careful_thresholds if careful else model.thresholds).cpu()
    notes = []
    d = REMOVABLE.index("delay")
    echo = None
    if bool(present[0, d]) or float(probabilities[d]) >= ECHO_PROBABILITY:
        around_ms = float(from_controls(torch.ones_like(present), controls[None]).params["delay"]["time_ms"][0])
        echo, note = decide_delay(heard, sample_rate, around_ms, sure=bool(present[0, d]))
        present[0, d] = echo is not None
        notes += [note] if note else []
    chains = from_controls(present, controls[None])
    compressor = chains.params["compressor"]
    compressor["ratio"] = 1 + RATIO_SHRINK * (compressor["ratio"] - 1)
    if echo is not None:  # the delay is in the chain, with the settings its cepstrum gave
        for name, value in zip(("time_ms", "feedback", "mix"), echo):
            chains.params["delay"][name] = torch.tensor([value], dtype=torch.float64)
    eq_shapes_fit = sample_rate > 2 * 6000.0  # the EQ's top band (default 6 kHz) needs the rate
    if not eq_shapes_fit and bool(present[0, 0]):
        present[0, 0] = False
        chains = ChainBatch(present, chains.params)
        notes.append(f"no EQ removed: {sample_rate} Hz is too low a rate for its bands")
    dry = undo(heard[None].double(), chains, sample_rate)[0] * torch.pow(10.0, -gain.double() / 20)
    if not torch.isfinite(dry).all():
        return Removal(wet.clone(), [], _named(probabilities), ["the removal diverged: the stem is returned as it was"])
    found = rescaled(chains, gain)
    chain = [Entry(EFFECTS[name], params) for name, params in found.item(0)]
    return Removal(dry.to(wet.dtype), chain, _named(probabilities), notes)


def chain_lines(chain: list[Entry]) -> list[str]:
    """One line per effect of a found chain, its estimated settings with their units (3 significant digits):
    ``compressor: threshold_db -14.2 dB, ratio 2.5, attack_ms 5.1 ms, release_ms 120 ms``."""
    lines = []
    for entry in chain:
        name = entry.effect.type_name
        units = {spec.name: spec.unit for spec in entry.effect.specs}
        parts = []
        for key in ESTIMATED[name]:
            value = entry.params[key]
            unit = "" if units[key] in ("", "ratio") else f" {units[key]}"
            style = "+.3g" if units[key] == "dB" else ".3g"
            shown = " ".join(format(v, style) for v in value) if isinstance(value, list) else format(value, style)
            parts.append(f"{key} {shown}{unit}")
        lines.append(f"{name}: " + ", ".join(parts))
    return lines


def _named(probabilities: Tensor) -> dict[str, float]:
    return {name: round(float(v), 3) for name, v in zip(REMOVABLE, probabilities)}


def dry_file(
    wet_path: str | Path,
    output: str | Path,
    *,
    chain_out: str | Path | None = None,
    model_path: str | Path | None = None,
    subtype: str = "float",
    careful: bool = False,
) -> tuple[Removal, Path, Path]:
    """``gradmix dry``: write the dry stem of ``wet_path`` to ``output`` and its estimated chain as a console file
    (default: ``output`` with ``.console.json``) whose one track plays the dry stem through the chain, so that
    ``gradmix render`` of it gives the wet stem back. Both files are written whole, or neither.

    Returns the removal, and the paths of the dry stem and of the console file.
    """
    wet_path, output = Path(wet_path), Path(output)
    chain_path = Path(chain_out) if chain_out is not None else output.with_name(output.stem + ".console.json")
    check_output_path(output, [wet_path], audio=True)
    check_output_path(chain_path, [wet_path, output])
    audio, rate = read_audio(wet_path)
    removal = remove_effects(load_estimator(model_path), torch.from_numpy(audio), rate, careful=careful)
    setting = ConsoleSetting(
        sample_rate=rate,
        tracks=[TrackSetting(name=wet_path.stem, file=output.name, chain=removal.chain)],
        stems=output.parent.resolve(),
    )
    write_audio(output, removal.dry, rate, subtype=subtype)
    try:
        setting.save(chain_path)
    except BaseException:
        output.unlink(missing_ok=True)
        raise
    return removal, output, chain_path
