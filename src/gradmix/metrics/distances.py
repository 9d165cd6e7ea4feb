"""Distances between a mix and a target mix, and set-level metrics for generated mixes.

Per-feature error (after FxNorm-automix's evaluation): frame-level features (spectral centroid,
bandwidth, flatness, roll-off; panning-spectrum RMS in low/mid/high bands; RMS level) are smoothed by a
running mean over ``window_s`` seconds, and the error is the mean absolute percentage error (MAPE) of the
estimate's running mean against the target's, ``mean_t |e_t - r_t| / max(|r_t|, floor)`` (``floor``, in
:data:`FLOORS`, keeps near-zero targets such as a centred mix's panning from exploding); song-level features
(integrated loudness, loudness range, crest factor, PLR) use the absolute percentage error of their values.
Features are grouped (loudness, spectral, panning, dynamics); the aggregate score is the mean of the
groups' mean errors (0 for identical mixes). The multi-resolution STFT distance uses auraloss on the mono
sum and on the stereo sum/difference.

Set-level: the Fréchet distance between Gaussian fits of two sets of feature vectors (plausibility of a set
of mixes against human mixes), the kernel maximum mean discrepancy (:func:`mmd`, with a permutation test in
:func:`mmd_test`), which compares the two sets' whole distributions without a Gaussian assumption, and
diversity, the mean pairwise distance between feature vectors of mixes of one song divided by the mean
pairwise distance between mixes of different songs.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from gradmix.metrics import features as F

GROUPS = {
    "loudness": ("loudness_lufs", "loudness_range_lu"),
    "spectral": ("centroid_hz", "bandwidth_hz", "flatness", "rolloff_hz"),
    "panning": ("panning_rms_low", "panning_rms_mid", "panning_rms_high"),
    "dynamics": ("rms", "crest_factor_db", "plr_db"),
}
EPS = 1e-8


def frame_features(x: Tensor, sample_rate: float) -> dict[str, Tensor]:
    """Frame-level features ``{name: (batch, frames)}`` on the STFT grid of :mod:`gradmix.metrics.features`."""
    spec = F.complex_stft(x)
    mag = ((spec[:, 0] + spec[:, 1]) / 2).abs()  # the mid signal's STFT
    sps, energy = F.stereo_panning_spectrum(spec)
    return {
        **F.spectral_frames(mag, sample_rate),
        "rms": torch.sqrt(mag.square().mean(1).clamp_min(EPS)),
        **F.panning_band_rms(sps, energy, sample_rate, (1,)),
    }


def running_mean(v: Tensor, frames: int) -> Tensor:
    """Moving average over ``frames`` frames along the last axis (valid part only; whole signal if shorter)."""
    if v.shape[-1] <= frames:
        return v.mean(-1, keepdim=True)
    c = torch.nn.functional.pad(v.double().cumsum(-1), (1, 0))
    return ((c[..., frames:] - c[..., :-frames]) / frames).to(v.dtype)


def frame_feature_errors(
    estimate: Tensor, target: Tensor, sample_rate: float, window_s: float = 1.0
) -> dict[str, Tensor]:
    """MAPE ``{name: (batch,)}`` of the running means of the frame features (differentiable in ``estimate``)."""
    frames = max(1, int(round(window_s * sample_rate / F.N_FFT * 4)))  # hop = N_FFT / 4
    est, ref = frame_features(estimate, sample_rate), frame_features(target, sample_rate)
    errors = {}
    for name in est:
        e, r = running_mean(est[name], frames), running_mean(ref[name], frames)
        errors[name] = ((e - r).abs() / r.abs().clamp_min(_floor(name))).mean(-1)
    return errors


def feature_errors(estimate: Tensor, target: Tensor, sample_rate: float, window_s: float = 1.0) -> dict[str, Tensor]:
    """Per-feature MAPE ``{name: (batch,)}`` of ``estimate`` against ``target`` (both ``(batch, 2, samples)``)."""
    errors = frame_feature_errors(estimate, target, sample_rate, window_s)
    song_est = {**F.loudness_features(estimate, sample_rate), **F.dynamics_features(estimate, sample_rate)}
    song_ref = {**F.loudness_features(target, sample_rate), **F.dynamics_features(target, sample_rate)}
    for name in ("loudness_lufs", "loudness_range_lu", "crest_factor_db", "plr_db"):
        errors[name] = (song_est[name] - song_ref[name]).abs() / song_ref[name].abs().clamp_min(_floor(name))
    return errors


# Smallest denominators of the percentage errors: a target value near zero (a centred mix's panning RMS, a
# tonal mix's flatness) would otherwise turn a tiny absolute difference into an error of thousands of percent.
FLOORS = {
    "panning_rms": 0.1,
    "flatness": 0.01,
    "rms": 1e-3,
    "loudness_range_lu": 1.0,
    "crest_factor_db": 1.0,
    "plr_db": 1.0,
    "centroid_hz": 50.0,
    "bandwidth_hz": 50.0,
    "rolloff_hz": 50.0,
    "loudness_lufs": 1.0,
}


def _floor(name: str) -> float:
    return next((v for k, v in FLOORS.items() if name.startswith(k)), EPS)


def aggregate_score(errors: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
    """Mean of the groups' mean errors, and the group errors ``{group: (batch,)}``."""
    groups = {g: torch.stack([errors[n] for n in names]).mean(0) for g, names in GROUPS.items()}
    return torch.stack(list(groups.values())).mean(0), groups


def mrstft_distance(estimate: Tensor, target: Tensor, sample_rate: float) -> dict[str, Tensor]:
    """Multi-resolution STFT distance (auraloss, FFT sizes 512-2048-8192): mono sum and stereo sum/diff."""
    try:
        import auraloss
    except ImportError:
        from gradmix.errors import GradmixError

        raise GradmixError("the MR-STFT distance needs auraloss: pip install -e '.[eval]'") from None
    mono = auraloss.freq.MultiResolutionSTFTLoss(
        fft_sizes=[512, 2048, 8192], hop_sizes=[128, 512, 2048], win_lengths=[512, 2048, 8192]
    )
    stereo = auraloss.freq.SumAndDifferenceSTFTLoss(
        fft_sizes=[512, 2048, 8192], hop_sizes=[128, 512, 2048], win_lengths=[512, 2048, 8192]
    )
    with torch.no_grad():
        m = torch.stack(
            [
                mono(estimate[i : i + 1].sum(1, keepdim=True), target[i : i + 1].sum(1, keepdim=True))
                for i in range(estimate.shape[0])
            ]
        )
        s = torch.stack([stereo(estimate[i : i + 1], target[i : i + 1]) for i in range(estimate.shape[0])])
    return {"mrstft_mono": m, "mrstft_stereo": s}


STYLE_FEATURES = (
    "loudness_lufs",
    "loudness_range_lu",
    "centroid_hz",
    "bandwidth_hz",
    "flatness",
    "rolloff_hz",
    "panning_rms_low",
    "panning_rms_mid",
    "panning_rms_high",
    "crest_factor_db",
)


def style_features(x: Tensor, sample_rate: float) -> dict[str, Tensor]:
    """The song-level :data:`STYLE_FEATURES` of stereo mixes ``(batch, 2, samples)``, ``{name: (batch,)}``: the
    same values as :func:`gradmix.metrics.mix_features` (one STFT for the spectral and panning features), and
    differentiable in ``x`` (hard loudness gates and peaks pass gradients to the blocks and samples they keep),
    so that ``gradmix match --refine`` optimises the measured distance itself."""
    F.check_audio(x, channels=2)
    spec = F.complex_stft(x)
    mag = ((spec[:, 0] + spec[:, 1]) / 2).abs()
    weight = mag.square().sum(1)
    feats = {k: F.weighted_mean(v, weight) for k, v in F.spectral_frames(mag, sample_rate).items()}
    sps, energy = F.stereo_panning_spectrum(spec)
    feats.update(F.panning_band_rms(sps, energy, sample_rate, (1, 2)))
    feats["loudness_lufs"] = F.integrated_loudness(x, sample_rate=sample_rate)
    feats["loudness_range_lu"] = F.loudness_range(x, sample_rate)
    feats["crest_factor_db"] = F.crest_factor_db(x)
    return {k: feats[k] for k in STYLE_FEATURES}


TONE_CENTRES_HZ = tuple(31.25 * 2.0**k for k in range(10))
"""Centres of the octave bands of a mix's tonal balance (31.25 Hz to 16 kHz)."""
TONE_FLOOR_DB = -60.0
"""Lowest band share (dB) of :func:`tonal_balance`: an empty band is not infinitely far from a quiet one."""


def tonal_balance(x: Tensor, sample_rate: float) -> Tensor:
    """``(batch, bands)`` dB: each octave band's share of the energy of stereo mixes ``(batch, 2, samples)``
    (mid signal; bands centred on :data:`TONE_CENTRES_HZ`, the outer ones reaching 0 Hz and Nyquist). A tonal
    offset between two mixes is the EQ curve that turns one's balance into the other's."""
    power = F.mid_magnitude(x).square().sum(-1)
    freqs = F.bin_frequencies(sample_rate, power)
    edges = [0.0, *(c * math.sqrt(2) for c in TONE_CENTRES_HZ[:-1]), math.inf]
    bands = torch.stack([power[:, (freqs >= lo) & (freqs < hi)].sum(1) for lo, hi in zip(edges[:-1], edges[1:])], -1)
    share = bands / power.sum(1, keepdim=True).clamp_min(1e-20)
    return (10 * torch.log10(share.clamp_min(1e-20))).clamp_min(TONE_FLOOR_DB)


def style_distance(
    estimate: Tensor | dict[str, Tensor], reference: Tensor | dict[str, Tensor], sample_rate: float
) -> Tensor:
    """Distance in mix style between stereo mixes of *any* content and length ``(batch, 2, samples)`` (or their
    :func:`style_features`): the mean over :data:`STYLE_FEATURES` of ``|e - r| / max(|r|, floor)``.
    ``(batch,)``; 0 for mixes with the same features; differentiable in ``estimate``."""
    e = estimate if isinstance(estimate, dict) else style_features(estimate, sample_rate)
    r = reference if isinstance(reference, dict) else style_features(reference, sample_rate)
    return torch.stack([(e[k] - r[k]).abs() / r[k].abs().clamp_min(_floor(k)) for k in STYLE_FEATURES]).mean(0)


def feature_vector(feats: dict[str, Tensor]) -> Tensor:
    """``(batch, features)`` from a :func:`gradmix.metrics.mix_features` dict, in sorted name order."""
    return torch.stack([feats[k].double() for k in sorted(feats)], -1)


def frechet_distance(a: Tensor | np.ndarray, b: Tensor | np.ndarray) -> float:
    """Fréchet distance between Gaussian fits of two sets of vectors ``(n, d)`` (features standardised by
    the pooled mean and standard deviation, so units do not weigh)."""
    import scipy.linalg

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    both = np.concatenate([a, b])
    mu, sd = both.mean(0), both.std(0) + 1e-12
    a, b = (a - mu) / sd, (b - mu) / sd
    ma, mb = a.mean(0), b.mean(0)
    ca, cb = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    covmean = scipy.linalg.sqrtm(ca @ cb)
    covmean = covmean.real if np.iscomplexobj(covmean) else covmean
    return float(max(((ma - mb) ** 2).sum() + np.trace(ca + cb - 2 * covmean), 0.0))


def diversity(per_song: list[Tensor | np.ndarray]) -> float:
    """Mean pairwise distance among mixes of the same song over the mean distance between different songs.

    Args:
        per_song: for each song, ``(mixes, d)`` feature vectors of several mixes of it (standardised jointly).
    """
    sets = [np.asarray(s, dtype=np.float64) for s in per_song]
    allv = np.concatenate(sets)
    mu, sd = allv.mean(0), allv.std(0) + 1e-12
    sets = [(s - mu) / sd for s in sets]

    def mean_pairwise(v: np.ndarray) -> float:
        d = np.sqrt(((v[:, None] - v[None]) ** 2).sum(-1))
        n = len(v)
        return float(d.sum() / max(n * (n - 1), 1))

    within = np.mean([mean_pairwise(s) for s in sets if len(s) > 1])
    centres = np.stack([s.mean(0) for s in sets])
    between = mean_pairwise(centres)
    return float(within / max(between, 1e-12)) if math.isfinite(within) else 0.0


def _vector_sets(a: Tensor | np.ndarray, b: Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``a`` and ``b`` as float64 arrays ``(n, features)``, ``(m, features)``, checked for the MMD."""
    from gradmix.errors import GradmixError

    out = []
    for name, x in (("a", a), ("b", b)):
        x = np.asarray(x.detach().cpu() if isinstance(x, Tensor) else x, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] < 2:
            raise GradmixError(f"mmd: {name} has shape {x.shape}; expected (vectors >= 2, features)")
        if not np.isfinite(x).all():
            raise GradmixError(f"mmd: {name} holds {int((~np.isfinite(x)).sum())} non-finite value(s); expected finite")
        out.append(x)
    if out[0].shape[1] != out[1].shape[1]:
        raise GradmixError(f"mmd: a has {out[0].shape[1]} features and b {out[1].shape[1]}; expected the same")
    return out[0], out[1]


def _squared_distances(x: np.ndarray) -> np.ndarray:
    """``(n, n)`` squared Euclidean distances between the rows of ``x`` ``(n, features)`` (exactly 0 on the
    diagonal, never negative)."""
    g = x @ x.T
    sq = np.diag(g)
    d2 = np.maximum(sq[:, None] + sq[None] - 2 * g, 0.0)
    np.fill_diagonal(d2, 0.0)
    return d2


def median_bandwidth(x: Tensor | np.ndarray) -> float:
    """The median heuristic: the median Euclidean distance between distinct rows of ``x`` ``(n >= 2, features)``
    (1.0 if that median is 0, e.g. when more than half the pairs are equal vectors), the bandwidth ``sigma`` of
    :func:`mmd`'s Gaussian kernel. It adapts the kernel to the data's own scale (Gretton et al. 2012, sec. 8)."""
    x = np.asarray(x.detach().cpu() if isinstance(x, Tensor) else x, dtype=np.float64)
    d = np.sqrt(_squared_distances(x)[np.triu_indices(len(x), 1)])
    med = float(np.median(d)) if d.size else 0.0
    return med if med > 0 and math.isfinite(med) else 1.0


def _labelled_mmd2(k: np.ndarray, members: np.ndarray) -> np.ndarray:
    """MMD²_u for each labelling of the pooled set: ``k`` ``(N, N)`` the pooled kernel matrix, ``members``
    ``(labellings, N)`` 1.0 where a vector belongs to set a, 0.0 where to set b. ``(labellings,)``."""
    n = members[0].sum()
    m = k.shape[0] - n
    diag = np.diag(k)
    total, rows = k.sum(), k.sum(1)
    s_aa = ((members @ k) * members).sum(1)  # sum over a x a, diagonal included
    s_ab = members @ rows - s_aa
    s_bb = total - s_aa - 2 * s_ab
    d_a = members @ diag
    d_b = diag.sum() - d_a
    return (s_aa - d_a) / (n * (n - 1)) + (s_bb - d_b) / (m * (m - 1)) - 2 * s_ab / (n * m)


def _pooled_kernel(a: np.ndarray, b: np.ndarray, bandwidth: float | None) -> np.ndarray:
    from gradmix.errors import GradmixError

    pooled = np.concatenate([a, b])
    if bandwidth is None:
        bandwidth = median_bandwidth(pooled)
    elif not (math.isfinite(bandwidth) and bandwidth > 0):
        raise GradmixError(f"mmd: bandwidth {bandwidth!r}; expected a positive finite number")
    return np.exp(-_squared_distances(pooled) / (2 * bandwidth**2))


def mmd(a: Tensor | np.ndarray, b: Tensor | np.ndarray, *, bandwidth: float | None = None) -> float:
    """Squared maximum mean discrepancy between two sets of vectors, unbiased estimator MMD²_u (Gretton et al.
    2012, "A kernel two-sample test", JMLR 13, eq. 3), with the Gaussian kernel
    ``k(x, y) = exp(-|x - y|² / (2 bandwidth²))``::

        MMD²_u = 1/(n(n-1)) sum_{i != j} k(a_i, a_j) + 1/(m(m-1)) sum_{i != j} k(b_i, b_j)
                 - 2/(nm) sum_{i, j} k(a_i, b_j)

    0 in expectation when both sets come from the same distribution (an estimate can then be slightly
    negative), positive when they differ; at most 2. Symmetric in ``a`` and ``b``, independent of the order of
    the rows.

    Args:
        a: ``(n >= 2, features)`` vectors, in the units the caller chose (standardise features of different
            units first, or the largest unit dominates the distance).
        b: ``(m >= 2, features)`` vectors, same features.
        bandwidth: ``sigma`` of the kernel, in the vectors' units; ``None``: :func:`median_bandwidth` of the
            pooled set ``a`` + ``b``.
    """
    a, b = _vector_sets(a, b)
    members = np.zeros((1, len(a) + len(b)))
    members[0, : len(a)] = 1.0
    return float(_labelled_mmd2(_pooled_kernel(a, b, bandwidth), members)[0])


def mmd_test(
    a: Tensor | np.ndarray,
    b: Tensor | np.ndarray,
    *,
    bandwidth: float | None = None,
    permutations: int = 1000,
    seed: int | np.random.Generator = 0,
) -> tuple[float, float]:
    """:func:`mmd` of ``a`` and ``b`` and its permutation p-value: the pooled vectors are split at random into
    sets of sizes ``n`` and ``m``, ``permutations`` times, and ``p = (1 + #{MMD²_u of a split >= observed}) /
    (1 + permutations)`` (the observed split counts as one, so p is never 0; the smallest is
    ``1 / (1 + permutations)``). Under the null hypothesis (one distribution) p is uniform on its grid. The
    kernel (and a median-heuristic bandwidth, taken on the pooled set) is the same for every split.

    Args:
        a, b, bandwidth: as :func:`mmd`.
        permutations: number of random splits, >= 1.
        seed: seed (or ``numpy.random.Generator``) of the splits; same seed, same p-value.

    Returns:
        ``(MMD²_u, p_value)``.
    """
    from gradmix.errors import GradmixError

    if isinstance(permutations, bool) or not isinstance(permutations, (int, np.integer)) or permutations < 1:
        raise GradmixError(f"mmd_test: permutations {permutations!r}; expected an integer >= 1")
    a, b = _vector_sets(a, b)
    k = _pooled_kernel(a, b, bandwidth)
    total = len(a) + len(b)
    observed_members = np.zeros((1, total))
    observed_members[0, : len(a)] = 1.0
    observed = float(_labelled_mmd2(k, observed_members)[0])
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    exceed, chunk = 0, 256
    for start in range(0, permutations, chunk):
        count = min(chunk, permutations - start)
        picks = np.argsort(rng.random((count, total)), axis=1)[:, : len(a)]
        members = np.zeros((count, total))
        np.put_along_axis(members, picks, 1.0, axis=1)
        # a split equal to the observed one must count, whatever the rounding of the sums in another order
        exceed += int((_labelled_mmd2(k, members) >= observed - 1e-12).sum())
    return observed, (1 + exceed) / (1 + permutations)
