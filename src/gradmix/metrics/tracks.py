"""Per-track mixing measures: each track's part of a mix against the authors' wet stem of that track.

A track's *part* is what it contributes to the mix before the master chain (its strip plus what the buses
make of its sends, :meth:`gradmix.console.ConsoleSetting.track_outputs`); its *wet stem* is the same track
as the human mix hears it. Every measure here is independent of the level of the dry input (the measures
compare levels within a mix, ratios and shapes), so normalised and raw stems give the same numbers.

Errors (part against wet stem, per track)
    level error (dB): ``|(L(part_n) - L(sum of parts)) - (L(wet_n) - L(sum of wet stems))|``, ``L`` the
    ungated K-weighted level ``10 log10(mean K-weighted power)`` (BS.1770 filter, both channels summed, no
    gate so that sparse tracks count); the sums run over the tracks that have a wet stem.
    position error: ``|p(part) - p(wet)|`` with the position ``p = (E_R - E_L) / (E_R + E_L)`` in -1 (left)
    .. 1 (right) from the channel energies; a centred mix would have ``|p(wet)|``; a track is *off-centre*
    where ``|p(wet)| >= 0.1``.
    octave-band error (dB): mean over the 10 octave bands (31.5 Hz .. 16 kHz) of ``|s(part) - s(wet)|``, ``s``
    the tonal shape: each band's level of the mono sum relative to the level of all ten bands, floored at
    -40 dB.

Descriptors (of a part, or of a wet stem, relative to the dry input of the same track)
    position: ``p`` as above (where the listener hears the track; a mono dry is centred).
    EQ tilt (dB/octave): the least-squares slope of ``10 log10(band power of the part / band power of the
    dry)`` against the octave index, over the bands where the dry is within 40 dB of its loudest band.
    compression (dB): the dry's crest factor minus the part's (positive: squashed), the crest factor being
    ``10 log10(max frame power / mean power)`` over 50 ms frames of the channel-summed power. Frame levels
    rather than sample peaks, so that an EQ's phase shifts do not count as dynamics; reverb filling the gaps
    between notes also lowers it.
    ambience (dB): the share of the part's energy in the frames (50 ms) where the dry is more than 30 dB below
    its loudest frame (what reverb and delay tails put into the gaps), minus the same share of the dry itself,
    each share floored at -60 dB: 0 for a part that adds no tails, whatever the material; 0 also for a dry
    without gaps (nothing to measure there).

The *spread* of a descriptor over a song is its standard deviation over the song's measured tracks; the
spread ratio ``spread(system) / spread(authors)`` says whether a system differentiates its tracks as much as
the authors did (1) or treats them all alike (0).

Only tracks that have a wet stem and *sound* (wet and dry RMS above -60 dBFS over the excerpt) are measured.
Every function computes in float64 (the STFT of :func:`octave_band_powers` in the input's precision) and returns
float64.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from gradmix.dsp.loudness import block_powers
from gradmix.errors import ShapeError

OCTAVE_BAND_CENTRES_HZ = tuple(1000.0 * 2.0**k for k in range(-5, 5))
"""Exact base-2 centres of the 10 octave bands (31.25 Hz .. 16 kHz; nominally 31.5 Hz .. 16 kHz); each band
spans ``centre / sqrt(2) .. centre * sqrt(2)`` (capped at Nyquist)."""
BAND_FLOOR_DB = -40.0
"""Lowest tonal-shape value of a band (dB re. all ten bands)."""
TILT_RANGE_DB = 40.0
"""Bands where the dry is more than this below its loudest band do not enter the EQ tilt."""
FRAME_S = 0.05
"""Frame length (s) of the compression and ambience descriptors."""
GAP_DB = 30.0
"""A frame is a gap of the dry when it is more than this below the dry's loudest frame."""
AMBIENCE_FLOOR_DB = -60.0
"""Lowest share of energy in the gaps (dB): no energy there, or no gaps."""
SOUNDING_DBFS = -60.0
"""A wet stem or dry track sounds when its RMS over the excerpt is above this."""
OFF_CENTRE = 0.1
"""A track is off-centre when ``|position of its wet stem| >=`` this."""
LEVEL_FLOOR_DB = -200.0
"""Level of digital silence (dB), so that nothing is ``-inf``."""
DESCRIPTORS = ("position", "tilt_db_per_octave", "compression_db", "ambience_db")
"""Names of the spread descriptors (keys of :func:`track_descriptors`)."""
SPREAD_FLOORS = {"position": 0.02, "tilt_db_per_octave": 0.1, "compression_db": 0.1, "ambience_db": 0.5}
"""Below these authors' spreads (units of the descriptor) a song's spread ratio is not defined."""

_TINY = 1e-30


def _audio(x: Tensor, name: str, channels: int | None = 2) -> Tensor:
    return _checked(x, name, channels).double()


def _checked(x: Tensor, name: str, channels: int | None = 2) -> Tensor:
    if not isinstance(x, Tensor) or x.dim() != 3 or not x.is_floating_point() or x.shape[-1] == 0:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ShapeError(f"{name}: expected floating-point audio (batch, channels, samples), got {shape}")
    if channels is not None and x.shape[1] != channels:
        raise ShapeError(f"{name}: expected {channels} channels, got shape {tuple(x.shape)}")
    return x


def _same(x: Tensor, dry: Tensor) -> None:
    if x.shape[0] != dry.shape[0] or x.shape[-1] != dry.shape[-1]:
        raise ShapeError(
            f"dry: shape {tuple(dry.shape)} does not match the measured audio {tuple(x.shape)} "
            "(same batch and length expected)"
        )


def k_weighted_level_db(x: Tensor, *, sample_rate: float) -> Tensor:
    """Ungated K-weighted level: ``10 log10`` of the mean K-weighted power over the whole signal (both
    channels summed, BS.1770 weights), floored at :data:`LEVEL_FLOOR_DB`.

    Args:
        x: audio ``(batch, channels, samples)``, full scale 1.
        sample_rate: Hz.

    Returns:
        ``(batch,)`` dB (LUFS + 0.691).
    """
    x = _audio(x, "x", None)
    seconds = x.shape[-1] / sample_rate
    power = block_powers(x, sample_rate=sample_rate, block_s=seconds, step_s=seconds)[:, 0]
    return 10 * torch.log10(power.clamp_min(10 ** (LEVEL_FLOOR_DB / 10)))


def relative_levels_db(x: Tensor, in_mix: Tensor, *, sample_rate: float) -> Tensor:
    """Each track's level relative to the sum of the tracks ``in_mix``: ``L(x_n) - L(sum_{in_mix} x)``.

    Args:
        x: the tracks of one song ``(tracks, 2, samples)``.
        in_mix: ``(tracks,)`` bool, the tracks the reference mix sums.
        sample_rate: Hz.

    Returns:
        ``(tracks,)`` dB; independent of a gain common to all tracks.
    """
    x = _audio(x, "x")
    mix = (x * in_mix.to(x)[:, None, None]).sum(0, keepdim=True)
    return k_weighted_level_db(x, sample_rate=sample_rate) - k_weighted_level_db(mix, sample_rate=sample_rate)


def stereo_position(x: Tensor) -> Tensor:
    """``(E_R - E_L) / (E_R + E_L)`` from the channel energies: -1 hard left, 0 centre, 1 hard right.

    Args:
        x: stereo audio ``(batch, 2, samples)``.

    Returns:
        ``(batch,)`` in -1..1; 0 for silence.
    """
    e = _audio(x, "x").square().sum(-1)
    return (e[:, 1] - e[:, 0]) / (e.sum(-1) + _TINY)


def octave_band_powers(x: Tensor, *, sample_rate: float) -> Tensor:
    """Mean power of the mono sum (channels added) in each octave band of :data:`OCTAVE_BAND_CENTRES_HZ`.

    Welch estimate: Hann frames of about 0.19 s (8192 samples at 44.1 kHz, a power of two), half-overlapping,
    zero-padded at the ends; bins are summed over ``centre / sqrt(2) <= f < centre * sqrt(2)``. The STFT runs
    in the input's precision (float32 input: three times faster, its rounding about 130 dB below the loudest
    bin, far under the -40 dB floor of the shapes built on it); the powers are averaged in float64.

    Args:
        x: audio ``(batch, channels, samples)``.
        sample_rate: Hz.

    Returns:
        ``(batch, 10)`` float64 power (linear, arbitrary but common scale); bands above Nyquist are 0.
    """
    x = _checked(x, "x", None)
    mono = x.sum(1) if x.dtype in (torch.float32, torch.float64) else x.double().sum(1)
    n_fft = 1 << max(8, math.ceil(math.log2(sample_rate * 0.18)))
    window = torch.hann_window(n_fft, dtype=mono.dtype, device=mono.device)
    spec = torch.view_as_real(
        torch.stft(mono, n_fft, n_fft // 2, window=window, center=True, pad_mode="constant", return_complex=True)
    )
    power = spec.square().sum(-1).double().mean(-1)  # (batch, bins)
    freqs = torch.fft.rfftfreq(n_fft, 1 / sample_rate).to(power)
    bands = [power[:, (freqs >= c / math.sqrt(2)) & (freqs < c * math.sqrt(2))].sum(1) for c in OCTAVE_BAND_CENTRES_HZ]
    return torch.stack(bands, -1)


def tonal_shape_db(x: Tensor, *, sample_rate: float) -> Tensor:
    """Each octave band's level relative to the level of all ten bands, floored at :data:`BAND_FLOOR_DB`.

    Args:
        x: audio ``(batch, channels, samples)``.
        sample_rate: Hz.

    Returns:
        ``(batch, 10)`` dB (<= 0).
    """
    bands = octave_band_powers(x, sample_rate=sample_rate)
    share = bands / (bands.sum(-1, keepdim=True) + _TINY)
    return (10 * torch.log10(share + _TINY)).clamp_min(BAND_FLOOR_DB)


def eq_tilt_db_per_octave(x: Tensor, dry: Tensor, *, sample_rate: float) -> Tensor:
    """Least-squares slope (dB/octave) of the octave-band level ratio ``x / dry`` against the octave index,
    over the bands where the dry is within :data:`TILT_RANGE_DB` of its loudest band (0 when fewer than two
    bands qualify). Ratios are taken of each signal's band shares, so levels do not matter.

    Args:
        x: the processed track ``(batch, channels, samples)``.
        dry: its dry input ``(batch, channels, samples)``, the same length.
        sample_rate: Hz.

    Returns:
        ``(batch,)`` dB/octave; positive: brighter than the dry.
    """
    _same(x, dry)
    px, pd = octave_band_powers(x, sample_rate=sample_rate), octave_band_powers(dry, sample_rate=sample_rate)
    sx = px / (px.sum(-1, keepdim=True) + _TINY)
    sd = pd / (pd.sum(-1, keepdim=True) + _TINY)
    ratio = 10 * torch.log10(sx.clamp_min(1e-10)) - 10 * torch.log10(sd.clamp_min(1e-10))
    dry_db = 10 * torch.log10(pd + _TINY)
    use = ((dry_db >= dry_db.amax(-1, keepdim=True) - TILT_RANGE_DB) & (pd > 0)).to(ratio)
    octave = torch.arange(len(OCTAVE_BAND_CENTRES_HZ), dtype=ratio.dtype, device=ratio.device)
    count = use.sum(-1, keepdim=True)
    mean_o = (use * octave).sum(-1, keepdim=True) / count.clamp_min(1)
    mean_r = (use * ratio).sum(-1, keepdim=True) / count.clamp_min(1)
    num = (use * (octave - mean_o) * (ratio - mean_r)).sum(-1)
    den = (use * (octave - mean_o).square()).sum(-1)
    return torch.where(count[:, 0] >= 2, num / den.clamp_min(1e-12), torch.zeros_like(num))


def _frame_powers(x: Tensor, sample_rate: float) -> Tensor:
    """Channel-summed mean power of consecutive :data:`FRAME_S` frames ``(batch, frames)`` (one frame for a
    shorter signal; a trailing partial frame is dropped)."""
    power = x.square().sum(1)
    frame = max(1, round(FRAME_S * sample_rate))
    if power.shape[-1] < frame:
        return power.mean(-1, keepdim=True)
    return power.unfold(-1, frame, frame).mean(-1)


def crest_factor_db(x: Tensor, *, sample_rate: float) -> Tensor:
    """``10 log10(max frame power / mean frame power)`` over :data:`FRAME_S` frames of the channel-summed power.

    Args:
        x: audio ``(batch, channels, samples)``.
        sample_rate: Hz.

    Returns:
        ``(batch,)`` dB, >= 0 (0 for silence and for a steady signal).
    """
    frames = _frame_powers(_audio(x, "x", None), sample_rate)
    return 10 * torch.log10((frames.amax(-1) + _TINY) / (frames.mean(-1) + _TINY))


def compression_db(x: Tensor, dry: Tensor, *, sample_rate: float) -> Tensor:
    """How much less dynamic ``x`` is than its dry input: ``crest(dry) - crest(x)`` (:func:`crest_factor_db`).

    Args:
        x: the processed track ``(batch, channels, samples)``.
        dry: its dry input ``(batch, channels, samples)``, the same length.
        sample_rate: Hz.

    Returns:
        ``(batch,)`` dB; positive: squashed, negative: expanded.
    """
    _same(x, dry)
    return crest_factor_db(dry, sample_rate=sample_rate) - crest_factor_db(x, sample_rate=sample_rate)


def gap_share_db(x: Tensor, dry: Tensor, *, sample_rate: float) -> Tensor:
    """Share of ``x``'s energy in the frames where the dry is more than :data:`GAP_DB` below its loudest frame
    (:data:`FRAME_S` frames), floored at :data:`AMBIENCE_FLOOR_DB` (also the value where the dry has no gaps).

    Args:
        x: audio ``(batch, channels, samples)``.
        dry: the dry input that decides the gaps ``(batch, channels, samples)``, the same length.
        sample_rate: Hz.

    Returns:
        ``(batch,)`` dB, in :data:`AMBIENCE_FLOOR_DB` .. 0.
    """
    _same(x, dry)
    fx = _frame_powers(_audio(x, "x", None), sample_rate)
    fd = _frame_powers(_audio(dry, "dry", None), sample_rate)
    gaps = (fd < fd.amax(-1, keepdim=True) * 10 ** (-GAP_DB / 10)).to(fx)
    share = (fx * gaps).sum(-1) / (fx.sum(-1) + _TINY)
    return (10 * torch.log10(share + _TINY)).clamp_min(AMBIENCE_FLOOR_DB)


def ambience_db(x: Tensor, dry: Tensor, *, sample_rate: float) -> Tensor:
    """The ambience ``x`` adds to its dry input: ``gap_share_db(x) - gap_share_db(dry)``
    (:func:`gap_share_db`): how much more of the energy lies in the dry's gaps, where reverb and delay tails go.

    Args:
        x: the processed track ``(batch, channels, samples)``.
        dry: its dry input ``(batch, channels, samples)``, the same length.
        sample_rate: Hz.

    Returns:
        ``(batch,)`` dB; 0 for a part without tails (or a dry without gaps), up to 60 dB.
    """
    return gap_share_db(x, dry, sample_rate=sample_rate) - gap_share_db(dry, dry, sample_rate=sample_rate)


def rms_dbfs(x: Tensor) -> Tensor:
    """RMS over channels and time, ``(batch, channels, samples) -> (batch,)`` dBFS (floored at
    :data:`LEVEL_FLOOR_DB`)."""
    power = _audio(x, "x", None).square().mean((1, 2))
    return 10 * torch.log10(power.clamp_min(10 ** (LEVEL_FLOOR_DB / 10)))


def track_descriptors(x: Tensor, dry: Tensor, *, sample_rate: float) -> dict[str, Tensor]:
    """The spread descriptors (:data:`DESCRIPTORS`) of processed tracks relative to their dry inputs.

    Args:
        x: a system's parts or the authors' wet stems ``(tracks, 2, samples)``.
        dry: the dry inputs ``(tracks, channels, samples)`` (mono tracks may be 1 channel).
        sample_rate: Hz.

    Returns:
        ``{name: (tracks,)}``: position (-1..1), ``tilt_db_per_octave``, ``compression_db``, ``ambience_db``.
    """
    return {
        "position": stereo_position(x),
        "tilt_db_per_octave": eq_tilt_db_per_octave(x, dry, sample_rate=sample_rate),
        "compression_db": compression_db(x, dry, sample_rate=sample_rate),
        "ambience_db": ambience_db(x, dry, sample_rate=sample_rate),
    }


def measured_tracks(wet: Tensor, dry: Tensor, has_wet: Tensor) -> Tensor:
    """The tracks that are measured: they have a wet stem, and wet and dry sound (RMS above
    :data:`SOUNDING_DBFS`).

    Args:
        wet: ``(tracks, 2, samples)`` wet stems (anything where ``has_wet`` is false).
        dry: ``(tracks, channels, samples)`` dry inputs.
        has_wet: ``(tracks,)`` bool.

    Returns:
        ``(tracks,)`` bool.
    """
    return has_wet.to(torch.bool) & (rms_dbfs(wet) > SOUNDING_DBFS) & (rms_dbfs(dry) > SOUNDING_DBFS)


def track_errors(parts: Tensor, wet: Tensor, dry: Tensor, has_wet: Tensor, *, sample_rate: float) -> dict[str, Tensor]:
    """Each track's part of a mix against its wet stem (see the module docstring for the definitions).

    Args:
        parts: a system's parts ``(tracks, 2, samples)`` (their sum is the mix before the master chain).
        wet: the authors' wet stems ``(tracks, 2, samples)``.
        dry: the dry inputs ``(tracks, channels, samples)`` (only decide which tracks sound).
        has_wet: ``(tracks,)`` bool: which tracks have a wet stem (the others are outside both mixes).
        sample_rate: Hz.

    Returns:
        ``{name: (tracks,)}``: ``measured`` and ``off_centre`` (bool); ``level_error_db`` (dB),
        ``position_error`` and ``centred_position_error`` (0..2), ``octave_band_error_db`` (dB). Values of
        tracks that are not measured are computed but mean nothing.
    """
    parts, wet = _audio(parts, "parts"), _audio(wet, "wet")
    if parts.shape != wet.shape or has_wet.shape != parts.shape[:1]:
        raise ShapeError(
            f"parts {tuple(parts.shape)}, wet {tuple(wet.shape)} and has_wet {tuple(has_wet.shape)} do not match"
        )
    _same(parts, dry)
    in_mix = has_wet.to(torch.bool)
    level = relative_levels_db(parts, in_mix, sample_rate=sample_rate)
    wet_level = relative_levels_db(wet, in_mix, sample_rate=sample_rate)
    pos, wet_pos = stereo_position(parts), stereo_position(wet)
    shape = tonal_shape_db(parts, sample_rate=sample_rate) - tonal_shape_db(wet, sample_rate=sample_rate)
    return {
        "measured": measured_tracks(wet, dry, in_mix),
        "off_centre": wet_pos.abs() >= OFF_CENTRE,
        "level_db": level,
        "wet_level_db": wet_level,
        "level_error_db": (level - wet_level).abs(),
        "position_error": (pos - wet_pos).abs(),
        "centred_position_error": wet_pos.abs(),
        "octave_band_error_db": shape.abs().mean(-1),
    }


def descriptor_spread(
    system: dict[str, Tensor], authors: dict[str, Tensor], measured: Tensor
) -> dict[str, tuple[float, float, float]]:
    """Per descriptor, the spread over a song's measured tracks for a system and for the authors, and their ratio.

    Args:
        system: :func:`track_descriptors` of a system's parts, ``{name: (tracks,)}``.
        authors: :func:`track_descriptors` of the wet stems, ``{name: (tracks,)}``.
        measured: ``(tracks,)`` bool, the tracks that count.

    Returns:
        ``{name: (std_system, std_authors, ratio)}``: population standard deviations in the descriptor's unit;
        the ratio is NaN (not defined) with fewer than two measured tracks or an authors' spread below
        :data:`SPREAD_FLOORS`.
    """
    m = measured.to(torch.bool)
    out = {}
    for name in DESCRIPTORS:
        if int(m.sum()) < 2:
            out[name] = (math.nan, math.nan, math.nan)
            continue
        s = float(system[name][m].double().std(correction=0))
        a = float(authors[name][m].double().std(correction=0))
        out[name] = (s, a, s / a if a >= SPREAD_FLOORS[name] else math.nan)
    return out
