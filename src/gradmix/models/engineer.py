"""Engineer-like console settings: the targets of self-supervised training.

Applied to loudness-normalised tracks (each at -28 LUFS), these settings give mixes that a mixing engineer
might make; the network learns to recover such a mix from the tracks.

:func:`engineer_controls` given the tracks' audio sets each strip and send by *habits* that follow the
track's content, the way an engineer treats a kick, a hi-hat and a pad differently, plus a song's *taste*
(one draw per song, shared by its tracks, which the style latent can learn) and a little per-track
randomness. The content measures, per track (octave bands 31.25 Hz .. 16 kHz of
:func:`gradmix.metrics.tracks.octave_band_powers`):

- ``f_low`` / ``f_high``: the lowest / highest octave centre within 20 dB of the track's loudest band;
- ``centroid``: the power-weighted mean octave (log-frequency centroid); a track is *low* below 200 Hz;
- ``share(f)``: the track's share of the power of all sounding tracks of the song at ``f`` (interpolated
  over octaves), times the number of sounding tracks (1: an average contributor);
- ``peaky`` ``p``: ``(crest factor - 5 dB) / 6 dB`` within 0..1 (50 ms frames,
  :func:`gradmix.metrics.tracks.crest_factor_db`): 0 for a bass line or a pad, 0.3 .. 1 for drums (and for
  sparse notes);
- ``kick`` ``k``: for a low track ``clip((p - 0.1) / 0.2, 0, 1)`` (1 for a kick, 0 for a bass line), 0 for
  the others.

==========================  ==========================================================================
strip ``gain.gain_db``      +2 dB for a low track, -3 dB for a track whose centroid is above 4 kHz, plus
                            N(0, 2.5); within [-12, 9] dB
strip ``eq`` low shelf      at ``clamp(f_low / 2, 30, 500)`` Hz, Q 0.707, gain ``-9 dB * clip(log2(f_low /
                            62.5 Hz), 0, 1)``: the rumble under a track's content is cut, a kick keeps it
strip ``eq`` high shelf     at ``clamp(2 f_high, 1.5k, 16k)`` Hz, Q 0.707, gain from -6 dB (``f_high`` <=
                            2 kHz: dull tracks lose their hiss) to +2 dB (``f_high`` >= 8 kHz: air); a low
                            track's ``-8 (1 - k)`` dB (a bass line's top rolled off, a kick's click kept)
strip ``eq`` peaks          at each band's default frequency, Q 1, gain ``clip(4 log10(share(f)), -4, 3)``
                            dB: cut where others own the band, lift where the track does (masking); plus,
                            for a kick, ``-5 k`` dB at 250 .. 600 Hz (the box) and ``+4 k`` dB at
                            2.5 .. 8 kHz (the click)
EQ taste and noise          a song's tilt N(0, 1.5) dB within +-4 dB (low shelf minus, high shelf plus), N(0, 1) dB per
                            band and track; gains within [-12, 12] dB
strip ``compressor``        ratio ``2 + 2p``, attack ``5 * 4^p`` ms, release ``300 * (80/300)^p`` ms,
                            threshold ``depth`` dB below the track's sample peak, ``depth`` a song's
                            U(3, 9) plus N(0, 1) per track; knee 6 dB, no makeup
strip ``pan.pan``           low tracks N(0, 0.03); the others in order of centroid: the middle one (of an
                            odd number) centred, the rest in pairs, the darker of a pair left, the pairs
                            further out as they get brighter, to a song's width U(0.3, 0.8); plus N(0, 0.05)
reverb send                 off (-60 dB) for a low track; otherwise a song's U(-28, -16) dB plus
                            ``4 (1 - 2p)`` dB (a pad gets more than a drum) plus N(0, 2)
delay send                  in 35 % of songs, a song's U(-28, -18) dB for tracks with ``p < 0.5`` and
                            a centroid within 400 Hz .. 4 kHz; otherwise off
==========================  ==========================================================================

Every content-driven EQ move above (shelves and peaks) and its per-track noise is multiplied by
:data:`EQ_SCALE`, then *balanced*: every track's move in that band is lowered by what the moves add to the
power of the song's sounding tracks where the band acts (at a peak's frequency, below a low shelf's corner,
above a high shelf's), so the song's tone there is unchanged. An engineer carves each track against the
others; the overall tone is the song's taste and the master's. Every pan is multiplied by :data:`PAN_SCALE`.
Both scales bring the tracks' spread of EQ tilt and stereo position over a song to the LMMS authors'
(docs/experiments/2026-12-05-calibrated-habits.md).

A threshold a fixed depth under a track's peak compresses little: a drum's hits pass under a slow attack, and
a peak detector on a sustained track only touches the crests. An engineer sets a threshold by the gain
reduction meter instead. :func:`compressed_by_gain_reduction` does so (the EQ stage's targets with
``habit_eq.gain_reduction``): the table's ratio, attack, release and knee, the threshold where the compressor
takes :func:`wanted_gain_reduction_db` off the track (a song's U(:data:`REDUCTION_TASTE_DB`) dB of integrated
loudness, N(0, 0.5) per track, half for a track whose centroid is above 4 kHz), and the fader raised by what it
takes.

Without the audio (and for everything the habits do not name: the buses and the master) the settings are
drawn at random, the same for every track (``U`` uniform, ``logU`` log-uniform, ``N(mean, sd)`` clipped to
the range given):

============================  ====================================================================
strip ``gain.gain_db``        N(0, 4) in [-12, 9] dB (relative to the -28 LUFS track)
strip ``pan.pan``             half of the tracks N(0, 0.1), the others U(-0.8, 0.8)
strip ``eq`` band gains       N(0, 3) in [-9, 9] dB; frequencies logU over each band's range;
                              Q logU(0.5, 3) (within the band's range)
strip ``compressor``          threshold U(-35, -10) dB, ratio logU(1, 6), attack logU(1, 50) ms,
                              release logU(30, 500) ms, knee U(0, 6) dB, makeup U(0, 6) dB
sends                         reverb: 60 % of the tracks U(-30, -12) dB; delay: 25 % U(-30, -15) dB;
                              otherwise -60 dB (off)
reverb bus                    decay per band logU(0.5, 3) s, predelay U(0, 40) ms
delay bus                     time logU(100, 600) ms, feedback U(0.1, 0.5)
master ``eq`` band gains      N(0, 1.5) in [-4, 4] dB (frequencies and Q as on the strips)
master ``compressor``         threshold U(-20, -6) dB, ratio logU(1, 3), attack logU(5, 50) ms,
                              release logU(50, 500) ms, knee U(0, 6) dB, makeup 0 dB
master ``limiter``            ceiling U(-1.5, -0.3) dB, drive (gain) U(0, 8) dB
anything else                 the effect's neutral default
============================  ====================================================================
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from gradmix.console import Controls, Layout, pre_master, render_strips
from gradmix.console.layout import SEND_SPEC
from gradmix.dsp.biquad import frequency_response_db
from gradmix.dsp.eq import eq_coefficients
from gradmix.dsp.loudness import LOUDNESS_FLOOR_LUFS, integrated_loudness, k_weighting_coefficients
from gradmix.effects import ParamSpec
from gradmix.metrics.tracks import OCTAVE_BAND_CENTRES_HZ, crest_factor_db, octave_band_powers

LOW_CENTROID_HZ = 200.0
"""A track whose log-frequency centroid is below this is a *low* track (kick, bass) for the habits."""
SIGNIFICANT_DB = 20.0
"""An octave band counts towards ``f_low`` / ``f_high`` within this of the track's loudest band."""
EQ_SCALE = 0.5
"""The habits' EQ moves (content rules and per-track noise, not the song's taste) are multiplied by this: the
table's full moves spread the tracks' EQ tilt over a song about 3 times as widely as the LMMS authors' wet
stems do, half of them about as widely (docs/experiments/2026-12-05-calibrated-habits.md)."""
PAN_SCALE = 0.25
"""The habits' pans are multiplied by this: the table's full width spreads the tracks' stereo positions about
3 times as widely as the LMMS authors do, a quarter of it about as widely."""


def _uniform(g, n, lo, hi):
    return lo + (hi - lo) * torch.rand(n, generator=g, dtype=torch.float64)


def _log_uniform(g, n, lo, hi):
    return torch.exp(_uniform(g, n, math.log(lo), math.log(hi)))


def _normal(g, n, mean, sd, lo, hi):
    return (mean + sd * torch.randn(n, generator=g, dtype=torch.float64)).clamp(lo, hi)


def _sample(kind: str, effect: str, spec: ParamSpec, n: int, g: torch.Generator) -> Tensor:
    """``n`` physical values of ``spec`` for an effect of type ``effect`` in a ``kind`` chain."""
    name, master = spec.name, kind == "master"
    if effect == "gain" and name == "gain_db":
        return _normal(g, n, 0.0, 4.0, -12.0, 9.0)
    if effect == "pan" and name == "pan":
        centred = torch.rand(n, generator=g) < 0.5
        return torch.where(centred, _normal(g, n, 0.0, 0.1, -1.0, 1.0), _uniform(g, n, -0.8, 0.8))
    if effect == "eq":
        if name == "gain_db":
            return _normal(g, n, 0.0, 1.5, -4.0, 4.0) if master else _normal(g, n, 0.0, 3.0, -9.0, 9.0)
        if name == "freq_hz":
            return _log_uniform(g, n, spec.min, spec.max)
        if name == "q":
            return _log_uniform(g, n, max(0.5, spec.min), min(3.0, spec.max))
    if effect == "compressor":
        table = (
            {
                "threshold_db": (_uniform, -20, -6),
                "ratio": (_log_uniform, 1, 3),
                "attack_ms": (_log_uniform, 5, 50),
                "release_ms": (_log_uniform, 50, 500),
                "knee_db": (_uniform, 0, 6),
            }
            if master
            else {
                "threshold_db": (_uniform, -35, -10),
                "ratio": (_log_uniform, 1, 6),
                "attack_ms": (_log_uniform, 1, 50),
                "release_ms": (_log_uniform, 30, 500),
                "knee_db": (_uniform, 0, 6),
                "makeup_db": (_uniform, 0, 6),
            }
        )
        if name in table:
            fn, lo, hi = table[name]
            return fn(g, n, lo, hi)
    if effect == "limiter":
        if name == "ceiling_db":
            return _uniform(g, n, -1.5, -0.3)
        if name == "gain_db":
            return _uniform(g, n, 0.0, 8.0)
    if effect == "reverb":
        if name == "decay_s":
            return _log_uniform(g, n, 0.5, 3.0)
        if name == "predelay_ms":
            return _uniform(g, n, 0.0, 40.0)
    if effect == "delay":
        if name == "time_ms":
            return _log_uniform(g, n, 100.0, 600.0)
        if name == "feedback":
            return _uniform(g, n, 0.1, 0.5)
    return torch.full((n,), float(spec.default), dtype=torch.float64)


def _chain_controls(kind: str, slots, n: int, g: torch.Generator, habits: dict | None = None) -> Tensor:
    cols = []
    for slot in slots:
        for spec in slot.specs:
            value = _habit(habits, slot.effect, spec) if habits else None
            if value is None:
                value = _sample(kind, slot.effect.type_name, spec, n, g)
            cols.append(spec.normalize(value.clamp(spec.min, spec.max)))
    return torch.stack(cols, -1) if cols else torch.zeros(n, 0, dtype=torch.float64)


def _habit(habits: dict, effect, spec: ParamSpec) -> Tensor | None:
    """The habit's value of one parameter ``(n,)``, or ``None`` where the habits do not set it."""
    if effect.type_name != "eq":
        return habits.get((effect.type_name, spec.name))
    shape = effect.shapes[spec.band]
    if shape in ("low_shelf", "high_shelf"):
        return habits.get(("eq", shape, spec.name))
    if shape != "peak":
        return None
    centre = _peak_centre(effect, spec.band)
    if spec.name == "freq_hz":
        return torch.full_like(habits["eq", "peak", "q"], centre)
    return habits["peak_gain"](centre) if spec.name == "gain_db" else habits.get(("eq", "peak", spec.name))


def _peak_centre(effect, band: int) -> float:
    return next(float(s.default) for s in effect.specs if s.name == "freq_hz" and s.band == band)


def _interp_octaves(values: Tensor, freq_hz: float) -> Tensor:
    """``values (..., 10)`` over the octave centres, linearly interpolated in log-frequency at ``freq_hz``."""
    pos = min(max(math.log2(freq_hz / OCTAVE_BAND_CENTRES_HZ[0]), 0.0), len(OCTAVE_BAND_CENTRES_HZ) - 1.0)
    k = min(int(pos), len(OCTAVE_BAND_CENTRES_HZ) - 2)
    w = pos - k
    return values[..., k] * (1 - w) + values[..., k + 1] * w


def log_frequency_centroid_hz(bands: Tensor) -> Tensor:
    """The power-weighted mean octave, as a frequency in Hz, of octave-band powers ``(..., 10)`` (bands of
    :data:`~gradmix.metrics.tracks.OCTAVE_BAND_CENTRES_HZ`) -> ``(...)``."""
    octave = torch.log2(torch.tensor(OCTAVE_BAND_CENTRES_HZ, dtype=bands.dtype, device=bands.device))
    return torch.exp2((bands * octave).sum(-1) / bands.sum(-1).clamp_min(1e-30))


def arrangement_sides(centroid_hz: Tensor, sounding: Tensor) -> Tensor:
    """Each track's place in the stereo field by the habits' rule, -1 (left) .. 1 (right), ``(batch, tracks)``.

    The sounding tracks whose centroid is at least :data:`LOW_CENTROID_HZ` in order of centroid: the middle one
    (of an odd number) centred, the rest in pairs, the darker of a pair left, the pairs further out as they get
    brighter (the brightest pair at +-1); low tracks, silent tracks and padding at 0.

    Args:
        centroid_hz: ``(batch, tracks)`` log-frequency centroids (:func:`log_frequency_centroid_hz`).
        sounding: ``(batch, tracks)`` bool, the tracks that sound.
    """
    centroid = centroid_hz.detach().double()
    bright = sounding.to(device=centroid.device, dtype=torch.bool) & (centroid >= LOW_CENTROID_HZ)
    order = torch.argsort(torch.where(bright, centroid, torch.inf), dim=1, stable=True)
    rank = torch.argsort(order, dim=1)  # each track's place in the order of centroid (bright ones first)
    count = bright.sum(1, keepdim=True)
    middle = torch.where(count % 2 == 1, count // 2, -1)  # the middle one (of an odd number) stays in the centre
    placed = bright & (rank != middle)
    rank = rank - ((rank > middle) & (middle >= 0)).long()
    pairs = (count // 2).clamp_min(1)
    place = (rank // 2 + 1).double() / pairs * torch.where(rank % 2 == 1, 1.0, -1.0).double()
    return torch.where(placed, place, 0.0)


def track_habits(audio: Tensor, mask: Tensor | None, sample_rate: float, g: torch.Generator) -> dict:
    """The habits of the module's table for loudness-normalised tracks ``(batch, tracks, channels, samples)``.

    Args:
        audio: the tracks ``(batch, tracks, channels, samples)``.
        mask: ``(batch, tracks)``, 1 for real tracks (padding does not count in a song's shares and order).
        sample_rate: Hz.
        g: the generator of the song's taste and the per-track noise (on the CPU).

    Returns physical values ``(batch * tracks,)`` keyed ``(effect type, parameter)`` (the EQ's
    ``("eq", "low_shelf" | "high_shelf" | "peak", parameter)``, with ``"peak_gain"`` a function of a peak's
    frequency in Hz), and ``"sends"``: ``{bus name: (batch * tracks,)}`` dB; float64 on the CPU.
    """
    b, n = audio.shape[:2]
    with torch.no_grad():
        flat = audio.detach().flatten(0, 1).double()
        bands = octave_band_powers(flat, sample_rate=sample_rate).view(b, n, -1).cpu()
        crest = crest_factor_db(flat, sample_rate=sample_rate).view(b, n).cpu()
        peak_db = (20 * torch.log10(flat.abs().amax((1, 2)) + 1e-30)).view(b, n).cpu()
    real = torch.ones(b, n, dtype=torch.bool) if mask is None else mask.detach().cpu().to(torch.bool)
    sounding = real & (bands.sum(-1) > 1e-20)
    centres = torch.tensor(OCTAVE_BAND_CENTRES_HZ, dtype=torch.float64)
    level = 10 * torch.log10(bands + 1e-30)
    significant = level >= level.amax(-1, keepdim=True) - SIGNIFICANT_DB
    octave = torch.log2(centres)
    f_low = torch.exp2(torch.where(significant, octave, torch.inf).amin(-1))
    f_high = torch.exp2(torch.where(significant, octave, -torch.inf).amax(-1))
    centroid = log_frequency_centroid_hz(bands)
    total = (bands * sounding[..., None]).sum(1, keepdim=True)
    share = bands / total.clamp_min(1e-30) * sounding.sum(1).clamp_min(1)[:, None, None]
    percussive = ((crest - 5.0) / 6.0).clamp(0, 1)
    low = centroid < LOW_CENTROID_HZ
    kick = torch.where(low, ((percussive - 0.1) / 0.2).clamp(0, 1), 0.0)

    def per_song(fn, *args):
        return fn(g, b, *args)[:, None].expand(b, n)

    def per_track(sd):
        return sd * torch.randn(b, n, generator=g, dtype=torch.float64)

    tilt = per_song(_normal, 0.0, 1.5, -4.0, 4.0)
    gain = torch.where(low, 2.0, torch.where(centroid > 4000.0, -3.0, 0.0)) + per_track(2.5)

    def balanced(move: Tensor, power: Tensor) -> Tensor:
        """``move`` (dB) less what it adds to the song's power where it acts (``power``: each track's there): an
        engineer carves each track against the others, the overall tone is the song's taste and the master's."""
        weight = power * sounding
        added = (weight * torch.pow(10.0, move / 10)).sum(1, keepdim=True) / weight.sum(1, keepdim=True)
        return move - 10 * torch.log10(added.clamp_min(1e-30)).nan_to_num(0.0)

    low_corner = (f_low / 2).clamp(30.0, 500.0)
    high_corner = (2 * f_high).clamp(1500.0, 16000.0)
    below = (bands * (centres <= low_corner[..., None] * math.sqrt(2))).sum(-1)
    above = (bands * (centres >= high_corner[..., None] / math.sqrt(2))).sum(-1)
    low_gain = (-9.0 * torch.log2(f_low / 62.5).clamp(0, 1) + per_track(1.0)) * EQ_SCALE
    low_gain = balanced(low_gain, below) - tilt
    high_gain = torch.where(low, -8.0 * (1 - kick), -6.0 + 8.0 * (torch.log2(f_high / 2000.0) / 2).clamp(0, 1))
    high_gain = balanced((high_gain + per_track(1.0)) * EQ_SCALE, above) + tilt
    noise = {}

    def peak_gain(freq_hz: float) -> Tensor:
        if freq_hz not in noise:
            noise[freq_hz] = per_track(1.0)
        lift = (4 * torch.log10(_interp_octaves(share, freq_hz).clamp_min(1e-6))).clamp(-4.0, 3.0)
        if 250.0 <= freq_hz <= 600.0:
            lift = lift - 5.0 * kick
        elif 2500.0 <= freq_hz <= 8000.0:
            lift = lift + 4.0 * kick
        move = balanced((lift + noise[freq_hz]) * EQ_SCALE, _interp_octaves(bands, freq_hz))
        return move.clamp(-12.0, 12.0).flatten()

    depth = per_song(_uniform, 3.0, 9.0) + per_track(1.0)
    place = arrangement_sides(centroid, sounding)
    width = per_song(_uniform, 0.3, 0.8)
    pan = torch.where(low, per_track(0.03), width * place + per_track(0.05)) * PAN_SCALE
    reverb = torch.where(low, -60.0, per_song(_uniform, -28.0, -16.0) + 4.0 * (1 - 2 * percussive) + per_track(2.0))
    delay_on = per_song(lambda g_, k: (torch.rand(k, generator=g_) < 0.35).double()) > 0
    lead = (percussive < 0.5) & (centroid >= 400.0) & (centroid <= 4000.0)
    delay = torch.where(delay_on & lead, per_song(_uniform, -28.0, -18.0), -60.0)
    settings = {
        ("gain", "gain_db"): gain.clamp(-12.0, 9.0),
        ("eq", "low_shelf", "freq_hz"): low_corner,
        ("eq", "low_shelf", "gain_db"): low_gain.clamp(-12.0, 12.0),
        ("eq", "low_shelf", "q"): torch.full((b, n), 0.707, dtype=torch.float64),
        ("eq", "high_shelf", "freq_hz"): high_corner,
        ("eq", "high_shelf", "gain_db"): high_gain.clamp(-12.0, 12.0),
        ("eq", "high_shelf", "q"): torch.full((b, n), 0.707, dtype=torch.float64),
        ("eq", "peak", "q"): torch.ones(b, n, dtype=torch.float64),
        ("compressor", "threshold_db"): (peak_db - depth).clamp(-60.0, 0.0),
        ("compressor", "ratio"): 2.0 + 2.0 * percussive,
        ("compressor", "attack_ms"): 5.0 * torch.pow(4.0, percussive),
        ("compressor", "release_ms"): 300.0 * torch.pow(80.0 / 300.0, percussive),
        ("compressor", "knee_db"): torch.full((b, n), 6.0, dtype=torch.float64),
        ("compressor", "makeup_db"): torch.zeros(b, n, dtype=torch.float64),
        ("pan", "pan"): pan.clamp(-1.0, 1.0),
    }
    habits = {k: v.flatten() for k, v in settings.items()}
    habits["peak_gain"] = peak_gain
    habits["sends"] = {"reverb": reverb.clamp(-60.0, 0.0).flatten(), "delay": delay.flatten()}
    return habits


def engineer_controls(
    layout: Layout,
    batch: int,
    tracks: int,
    generator: torch.Generator | None = None,
    dtype=torch.float32,
    *,
    audio: Tensor | None = None,
    mask: Tensor | None = None,
    sample_rate: float | None = None,
) -> Controls:
    """0..1 controls of ``layout`` for ``batch`` songs of ``tracks`` tracks: by the habits of the module's
    table where ``audio`` (the loudness-normalised tracks ``(batch, tracks, channels, samples)``, with their
    ``mask`` and ``sample_rate``) is given, drawn at random from the distributions above where it is not."""
    g = generator or torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, ())))
    habits = None
    if audio is not None:
        if sample_rate is None or tuple(audio.shape[:2]) != (batch, tracks):
            raise ValueError("engineer_controls: audio must be (batch, tracks, channels, samples) with a sample_rate")
        habits = track_habits(audio, mask, sample_rate, g)
    strip = _chain_controls("strip", layout.strip, batch * tracks, g, habits).view(batch, tracks, -1)
    sends = []
    for bus in layout.bus_names:
        if habits is not None and bus in habits["sends"]:
            sends.append(SEND_SPEC.normalize(habits["sends"][bus].clamp(SEND_SPEC.min, SEND_SPEC.max)))
            continue
        p, lo, hi = (0.6, -30.0, -12.0) if bus == "reverb" else (0.25, -30.0, -15.0)
        on = torch.rand(batch * tracks, generator=g) < p
        level = torch.where(
            on, _uniform(g, batch * tracks, lo, hi), torch.full((batch * tracks,), -60.0, dtype=torch.float64)
        )
        sends.append(SEND_SPEC.normalize(level))
    sends_t = torch.stack(sends, -1).view(batch, tracks, -1) if sends else torch.zeros(batch, tracks, 0)
    buses = (
        torch.cat([_chain_controls(name, chain, batch, g) for name, chain in layout.buses], -1)
        if layout.buses
        else torch.zeros(batch, 0)
    )
    master = _chain_controls("master", layout.master, batch, g)
    return Controls(strip.to(dtype), sends_t.to(dtype), buses.to(dtype), master.to(dtype))


def eq_gain_columns(layout: Layout) -> list[int]:
    """Columns of ``Controls.strip`` that hold the strip EQ's band gains (dB, linear 0..1 scale)."""
    start, cols = 0, []
    for slot in layout.strip:
        if slot.effect.type_name == "eq":
            for i, spec in enumerate(slot.specs):
                if spec.name == "gain_db":
                    if spec.scale != "linear":  # carve_on adds dB as 0..1 steps
                        raise ValueError(f"the strip EQ's {spec.label} is not on a linear scale")
                    cols.append(start + i)
        start += len(slot.specs)
    return cols


def carve_on(habits: Controls, tone: Controls, layout: Layout) -> Controls:
    """``habits``' strip EQ moves carved on top of ``tone``'s EQ gains (both ``(batch, tracks, params)`` 0..1
    controls of ``layout``): the habits' dB in each band added to ``tone``'s (within the band's range), the rest
    of ``habits`` kept. With ``tone`` the song's own EQ as another head decides it, an engineer-like target keeps
    that tone and only tells the tracks apart (the habits' moves are balanced, so they add nothing to it)."""
    cols = eq_gain_columns(layout)
    specs = [s for slot in layout.strip for s in slot.specs]
    strip = habits.strip.clone()
    zero_db = torch.tensor(  # 0 dB on each gain's linear 0..1 scale, made where the controls are
        [-specs[c].min / (specs[c].max - specs[c].min) for c in cols], dtype=strip.dtype, device=strip.device
    )
    moved = habits.strip[..., cols] + tone.strip[..., cols].to(strip) - zero_db
    strip[..., cols] = moved.clamp(0.0, 1.0)
    return Controls(strip, habits.sends, habits.buses, habits.master)


def eq_loudness_change_db(
    layout: Layout, before: Tensor, after: Tensor, band_shares_db: Tensor, sample_rate: float
) -> Tensor:
    """How much louder (K-weighted, dB) a track gets when its strip EQ goes from ``before``'s to ``after``'s
    (``(batch, tracks, params)`` 0..1 strip controls of ``layout``), from its octave-band power shares in dB
    ``(batch, tracks, 10)`` (bands of :data:`~gradmix.metrics.tracks.OCTAVE_BAND_CENTRES_HZ`): each band's
    power times the K-weighted EQ's mean power gain over the octave (8 points). ``(batch, tracks)``."""
    start = next(i for i, s in enumerate(layout.strip) if s.effect.type_name == "eq")
    first = sum(len(s.specs) for s in layout.strip[:start])
    slot = layout.strip[start]
    freqs = [c * 2 ** ((k + 0.5) / 8 - 0.5) for c in OCTAVE_BAND_CENTRES_HZ for k in range(8)]
    kb, ka = (c.to(before.device) for c in k_weighting_coefficients(sample_rate))
    k_db = frequency_response_db(kb, ka, freqs, sample_rate)

    def power(strip: Tensor) -> Tensor:
        p = slot.denormalize(strip[..., first : first + len(slot.specs)].flatten(0, 1).double())
        b, a = eq_coefficients(
            slot.effect.shapes, sample_rate=sample_rate, **{k: p[k] for k in ("freq_hz", "gain_db", "q")}
        )
        db = frequency_response_db(b, a, freqs, sample_rate) + k_db
        return torch.pow(10.0, db / 10).view(*strip.shape[:2], len(OCTAVE_BAND_CENTRES_HZ), 8).mean(-1)

    share = torch.pow(10.0, band_shares_db.double() / 10)
    change = 10 * torch.log10((power(after) * share).sum(-1) / (power(before) * share).sum(-1))
    return change.to(before)


def level_matched_eq(
    layout: Layout, own: Controls, habits: Controls, band_shares_db: Tensor, sample_rate: float
) -> Controls:
    """``own`` (a model's controls, ``(batch, tracks, params)``) with its strip EQ gains taken from ``habits``
    and each fader lowered by the loudness the change of EQ adds (:func:`eq_loudness_change_db`), so that a
    track keeps its place in ``own``'s balance: an engineer matches the level of an EQ move before judging it.
    Everything else (EQ frequencies and Q, compressor, pan, sends) stays ``own``'s."""
    cols = eq_gain_columns(layout)
    strip = own.strip.clone()
    strip[..., cols] = habits.strip[..., cols].to(strip)
    if layout.strip[0].effect.type_name != "gain" or len(layout.strip[0].specs) != 1:
        raise ValueError("the strips must start with their fader (gain) to keep the tracks' levels")
    fader = layout.strip[0].specs[0]
    change = eq_loudness_change_db(layout, own.strip, strip, band_shares_db, sample_rate)
    strip[..., 0] = (strip[..., 0] - change.to(strip) / (fader.max - fader.min)).clamp(0.0, 1.0)
    return Controls(strip, own.sends, own.buses, own.master)


def level_moved(layout: Layout, controls: Controls, move_db: Tensor) -> Controls:
    """``controls`` ``(batch, tracks, params)`` with the level of every track of song ``i`` moved by ``move_db[i]``
    dB: a rise on the strip compressor's makeup gain, after the compressor, so that it changes neither what the
    compressor does nor the balance of the tracks (an engineer's makeup gain); a cut, which the makeup gain
    (0 dB at least) cannot make, on the fader. Both within their ranges."""
    specs = [spec for slot in layout.strip for spec in slot.specs]
    owners = [slot.effect.type_name for slot in layout.strip for _ in slot.specs]
    makeup = [i for i, (s, owner) in enumerate(zip(specs, owners)) if (owner, s.name) == ("compressor", "makeup_db")]
    if owners[0] != "gain" or len(makeup) != 1 or any(specs[i].scale != "linear" for i in (0, *makeup)):
        raise ValueError("the strips must start with a fader and have one compressor with a makeup gain, in dB")
    strip = controls.strip.clone()
    for col, move in ((makeup[0], move_db.clamp_min(0.0)), (0, move_db.clamp_max(0.0))):
        step = (move / (specs[col].max - specs[col].min))[:, None].to(strip)
        strip[..., col] = (strip[..., col] + step).clamp(0.0, 1.0)
    return Controls(strip, controls.sends, controls.buses, controls.master)


def song_level_db(
    layout: Layout,
    controls: Controls,
    reference: Controls,
    tracks: Tensor,
    sample_rate: float,
    mask: Tensor | None = None,
    mono: Tensor | None = None,
    rounds: int = 2,
) -> Tensor:
    """The level move in dB ``(batch,)`` (:func:`level_moved`), the same for every track of a song, that makes what
    the master receives with ``controls`` as loud (integrated K-weighted loudness) as with ``reference``, for the
    loudness-normalised ``tracks`` ``(batch, tracks, channels, samples)``. A rise is exact in one round; a cut
    moves the faders, before the compressors, and further ``rounds`` of rendering refine it. 0 for a song that
    is silent either way."""

    def level(c: Controls) -> Tensor:  # the strips and the buses only: the master's output is not needed
        params = layout.denormalize(c)
        strips = render_strips(layout.strip, tracks, params.strip, sample_rate=sample_rate, mono=mono)
        if mask is not None:
            strips = strips * mask.to(strips)[..., None, None]
        return integrated_loudness(pre_master(layout, strips, params, sample_rate=sample_rate), sample_rate=sample_rate)

    goal, move = level(reference), torch.zeros(tracks.shape[0], dtype=torch.float64, device=tracks.device)
    for _ in range(rounds):
        gap = goal - level(level_moved(layout, controls, move))
        move = move + torch.where(gap.isfinite(), gap, torch.zeros_like(gap)).double()
    return move


REDUCTION_TASTE_DB = (0.5, 2.0)
"""The range (dB) of a song's draw of how hard its tracks are compressed (:func:`wanted_gain_reduction_db`)."""
BRIGHT_CENTROID_HZ = 4000.0
"""A track whose log-frequency centroid is above this (hi-hats, cymbals) is compressed half as hard."""


def wanted_gain_reduction_db(audio: Tensor, mask: Tensor | None, sample_rate: float, g: torch.Generator) -> Tensor:
    """How much an engineer's strip compressor takes off each loudness-normalised track ``(batch, tracks,
    channels, samples)``, in dB of integrated loudness, ``(batch, tracks)`` float64: a song's taste
    U(:data:`REDUCTION_TASTE_DB`) plus N(0, 0.5) per track, half of it for a bright track (centroid above
    :data:`BRIGHT_CENTROID_HZ`: a hi-hat keeps its life), within 0..6 dB; 0 for padding (``mask`` 0) and silence.
    ``g`` (a CPU generator) draws the taste and the noise."""
    b, n = audio.shape[:2]
    with torch.no_grad():
        bands = octave_band_powers(audio.detach().flatten(0, 1).double(), sample_rate=sample_rate).view(b, n, -1).cpu()
    centroid = log_frequency_centroid_hz(bands)
    taste = _uniform(g, b, *REDUCTION_TASTE_DB)[:, None] + 0.5 * torch.randn(b, n, generator=g, dtype=torch.float64)
    wanted = (taste * torch.where(centroid > BRIGHT_CENTROID_HZ, 0.5, 1.0)).clamp(0.0, 6.0)
    real = bands.sum(-1) > 1e-20
    if mask is not None:
        real &= mask.detach().cpu().to(torch.bool)
    return torch.where(real, wanted, 0.0)


def compressed_by_gain_reduction(
    layout: Layout,
    controls: Controls,
    habits: Controls,
    tracks: Tensor,
    wanted_db: Tensor,
    sample_rate: float,
    iterations: int = 9,
) -> tuple[Controls, Tensor]:
    """``controls`` with each strip compressor set as an engineer sets one by its meter: ratio, attack, release and
    knee from ``habits``, the threshold where the compressor (without makeup) takes ``wanted_db`` ``(batch,
    tracks)`` of integrated loudness off the track as the fader and EQ of ``controls`` deliver it, and then the
    fader and the threshold both raised by the reduction it takes, so that each track keeps its loudness and the
    compression stays the same (a compressor acts on the level relative to its threshold). The threshold is found
    by bisection between its lowest value and the track's peak (``iterations`` halvings), on the side that takes
    no more than wanted; where even the lowest threshold takes less, it stays there. Tracks that want no
    reduction or are too quiet to measure keep ``controls``' compressor and fader.

    Args:
        controls, habits: 0..1 controls of ``layout``, ``(batch, tracks, params)`` strips; the strips must start
            with the fader and hold only linear effects before their compressor.
        tracks: the loudness-normalised tracks ``(batch, tracks, channels, samples)``, channels 1 or 2.
        wanted_db: dB of integrated loudness, e.g. :func:`wanted_gain_reduction_db`.

    Returns:
        ``(controls, taken_db)``: the new controls and the reduction each compressor takes ``(batch, tracks)``.
    """
    kinds = [slot.effect.type_name for slot in layout.strip]
    if kinds[0] != "gain" or "compressor" not in kinds:
        raise ValueError("the strips must start with a fader and have a compressor")
    k = kinds.index("compressor")
    if not all(slot.effect.linear for slot in layout.strip[:k]):
        raise ValueError("only linear effects may sit between the fader and the compressor")
    slot = layout.strip[k]
    dynamics = [layout.strip_control_index(k, name) for name in ("ratio", "attack_ms", "release_ms", "knee_db")]
    threshold_col, fader_col = layout.strip_control_index(k, "threshold_db"), layout.strip_control_index(0, "gain_db")
    b, n = controls.strip.shape[:2]
    trial = controls.strip.clone()
    trial[..., dynamics] = habits.strip[..., dynamics].to(trial)
    params = layout.denormalize(Controls(trial, controls.sends, controls.buses, controls.master))
    if tracks.shape[2] == 1:
        tracks = tracks.expand(-1, -1, 2, -1)
    spec = slot.specs[[s.name for s in slot.specs].index("threshold_db")]
    with torch.no_grad():
        x = render_strips(layout.strip[:k], tracks, params.strip[:k], sample_rate=sample_rate).flatten(0, 1)
        before = integrated_loudness(x, sample_rate=sample_rate).double()
        wanted = wanted_db.reshape(-1).to(before)
        act = ((wanted > 0) & (before > LOUDNESS_FLOOR_LUFS)).nonzero()[:, 0]
        x, before, wanted = x[act], before[act], wanted[act]
        comp = {name: v.flatten(0, 1)[act] for name, v in params.strip[k].items()}
        comp["makeup_db"] = torch.zeros_like(comp["makeup_db"])

        def reduction(at_db: Tensor) -> Tensor:
            y = slot.effect(x, {**comp, "threshold_db": at_db.to(x)}, sample_rate=sample_rate)
            return before - integrated_loudness(y, sample_rate=sample_rate).double()

        peak_db = 20 * torch.log10(x.abs().amax((1, 2)).double().clamp_min(1e-12))
        low = torch.full_like(before, float(spec.min))
        high = peak_db.clamp(float(spec.min), float(spec.max))  # above its peak a compressor takes nothing
        for _ in range(iterations):
            middle = (low + high) / 2
            more = reduction(middle) > wanted
            low, high = torch.where(more, middle, low), torch.where(more, high, middle)
        took = reduction(high).clamp_min(0.0).nan_to_num(0.0)
    fader = layout.strip[0].specs[0]
    flat = controls.strip.flatten(0, 1).clone()  # the tracks it leaves keep their strips exactly
    flat[act] = trial.flatten(0, 1)[act]
    flat[act, threshold_col] = spec.normalize((high + took).clamp(spec.min, spec.max)).to(flat)
    flat[act, fader_col] = (flat[act, fader_col] + (took / (fader.max - fader.min)).to(flat)).clamp(0, 1)
    taken = torch.zeros(b * n, dtype=torch.float64, device=before.device)
    taken[act] = took
    strip = flat.view(b, n, -1)
    return Controls(strip, controls.sends, controls.buses, controls.master), taken.view(b, n)
