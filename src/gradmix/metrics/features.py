"""Mix features, in the family used by automix-toolkit and FxNorm-automix evaluations.

Every function takes a stereo mix ``(batch, 2, samples)`` (mono ``(batch, 1, samples)`` where stated) and
returns ``(batch,)`` values (frame-level features are also available as ``(batch, frames)`` for running
means). STFT: Hann window of 2048 samples, hop 512, on the mid signal ``(L + R) / 2`` unless stated.

Loudness
    integrated loudness (BS.1770-4, LUFS); loudness range (EBU Tech 3342: short-term 3 s loudness every
    0.1 s, absolute gate -70 LUFS, relative gate -20 LU, LRA = P95 - P10 in LU); sample peak (dBFS); true peak
    (dBTP, 4x oversampled by polyphase interpolation, as BS.1770-4 Annex 2).
Spectral (per frame, magnitude ``|X[k]|`` at frequencies ``f[k]``)
    centroid ``sum f |X| / sum |X|`` (Hz); bandwidth ``sqrt(sum (f - centroid)^2 |X| / sum |X|)`` (Hz);
    flatness ``exp(mean log |X|^2) / mean |X|^2``; roll-off: the frequency below which 85 % of the energy
    lies (Hz); contrast: mean over octave bands of (peak - valley) in dB, peak/valley the means of the top and
    bottom 20 % of a band's bins.
Panning
    stereo panning spectrum (Avendano 2003): per bin, similarity ``psi = 2 |L R*| / (|L|^2 + |R|^2)`` and
    ``SPS = (1 - psi) * sign(|R| - |L|)`` in -1 (left) .. 1 (right); reported as its RMS over frames and bins in
    low (< 250 Hz), mid (250 Hz - 2.5 kHz) and high (> 2.5 kHz) bands, and its energy-weighted mean (the
    panning index).
Dynamics
    RMS (dBFS); dynamic spread: mean absolute deviation (dB) of 50 ms frame RMS levels above -70 dBFS from
    their mean; crest factor ``20 log10(peak / RMS)`` (dB; a sine gives 3.01 dB); peak-to-loudness ratio
    ``true peak - integrated loudness`` (dB).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from gradmix.dsp import integrated_loudness
from gradmix.dsp.loudness import block_powers
from gradmix.dsp._params import check_audio, check_sample_rate

N_FFT, HOP = 2048, 512
EPS = 1e-12
BANDS_HZ = {"low": (0.0, 250.0), "mid": (250.0, 2500.0), "high": (2500.0, math.inf)}


def complex_stft(x: Tensor) -> Tensor:
    """``(batch, channels, samples)`` -> complex ``(batch, channels, bins, frames)``."""
    b, c, n = x.shape
    win = torch.hann_window(N_FFT, dtype=x.dtype, device=x.device)
    pad = max(0, N_FFT - n)
    spec = torch.stft(F.pad(x, (0, pad)).reshape(b * c, -1), N_FFT, HOP, window=win, return_complex=True)
    return spec.reshape(b, c, spec.shape[-2], spec.shape[-1])


def bin_frequencies(sample_rate: float, like: Tensor) -> Tensor:
    return torch.fft.rfftfreq(N_FFT, 1 / sample_rate).to(
        like.device, like.real.dtype if like.is_complex() else like.dtype
    )


def mid_magnitude(x: Tensor) -> Tensor:
    mid = x.mean(1, keepdim=True)
    return complex_stft(mid)[:, 0].abs()  # (batch, bins, frames)


def weighted_mean(values: Tensor, weights: Tensor) -> Tensor:
    return (values * weights).sum(-1) / weights.sum(-1).clamp_min(EPS)


def spectral_frames(mag: Tensor, sample_rate: float) -> dict[str, Tensor]:
    """Per-frame centroid, bandwidth, flatness and roll-off ``{name: (batch, frames)}`` of a magnitude
    spectrogram ``(batch, bins, frames)`` on this module's STFT grid."""
    power = mag.square()
    freqs = bin_frequencies(sample_rate, mag)
    f = freqs[:, None]
    total = mag.sum(1).clamp_min(EPS)
    centroid = (f * mag).sum(1) / total
    return {
        "centroid_hz": centroid,
        "bandwidth_hz": torch.sqrt((((f - centroid[:, None]).square() * mag).sum(1) / total).clamp_min(EPS)),
        "flatness": torch.exp(torch.log(power + EPS).mean(1)) / (power.mean(1) + EPS),
        "rolloff_hz": _rolloff(power, freqs),
    }


def _rolloff(power: Tensor, freqs: Tensor, share: float = 0.85) -> Tensor:
    """``(batch, frames)`` frequency of the first bin at which the cumulative power of ``power`` ``(batch, bins,
    frames)`` reaches ``share`` of the frame's total. The value is that bin's; the gradient is that of the
    crossing point interpolated within the bin (a bin index alone passes none): moving as much power as the bin
    holds from above the crossing to below it moves the crossing down by one bin width."""
    cumulative = power.cumsum(1)
    level = share * cumulative[:, -1:]
    k = (cumulative < level).sum(1, keepdim=True).clamp(max=power.shape[1] - 1)
    width = freqs[1] - freqs[0]
    inside = power.gather(1, k).clamp_min(EPS)
    crossing = -(cumulative.gather(1, k) - level) / inside * width  # from the bin's frequency, in (-width, 0]
    return (freqs[k] + crossing - crossing.detach())[:, 0]


def spectral_features(x: Tensor, sample_rate: float) -> dict[str, Tensor]:
    """Centroid, bandwidth, flatness, roll-off, contrast, averaged over frames weighted by frame energy."""
    check_audio(x)
    mag = mid_magnitude(x)
    power = mag.square()
    frames = {**spectral_frames(mag, sample_rate), "contrast_db": _contrast(power, bin_frequencies(sample_rate, mag))}
    weight = power.sum(1)  # frames weighted by energy: silence does not pull the averages
    return {name: weighted_mean(v, weight) for name, v in frames.items()}


def _contrast(power: Tensor, freqs: Tensor) -> Tensor:
    edges = [0.0, 200.0, 400.0, 800.0, 1600.0, 3200.0, 6400.0, math.inf]
    out = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (freqs >= lo) & (freqs < hi)
        if int(sel.sum()) < 5:
            continue
        band = torch.sort(power[:, sel], dim=1).values
        k = max(1, int(round(0.2 * band.shape[1])))
        valley = band[:, :k].mean(1)
        peak = band[:, -k:].mean(1)
        out.append(10 * torch.log10((peak + EPS) / (valley + EPS)))
    return torch.stack(out).mean(0)


def stereo_panning_spectrum(spec: Tensor) -> tuple[Tensor, Tensor]:
    """Avendano's stereo panning spectrum of a stereo STFT ``(batch, 2, bins, frames)``.

    Returns:
        ``(sps, energy)``, each ``(batch, bins, frames)``: -1 (left) .. 1 (right), and ``|L|^2 + |R|^2``.
    """
    left, right = spec[:, 0], spec[:, 1]
    energy = left.abs().square() + right.abs().square()
    psi = 2 * (left * right.conj()).abs() / energy.clamp_min(EPS)
    return (1 - psi) * torch.sign(right.abs() - left.abs()), energy


def panning_band_rms(sps: Tensor, energy: Tensor, sample_rate: float, dims: tuple[int, ...]) -> dict[str, Tensor]:
    """Energy-weighted RMS of the panning spectrum in the low/mid/high bands, reduced over ``dims``
    (``(1, 2)``: bins and frames; ``(1,)``: bins, keeping frames)."""
    freqs = bin_frequencies(sample_rate, energy)
    out = {}
    for name, (lo, hi) in BANDS_HZ.items():
        sel = (freqs >= lo) & (freqs < hi)
        w = energy[:, sel]
        out[f"panning_rms_{name}"] = torch.sqrt(
            ((sps[:, sel].square() * w).sum(dims) / w.sum(dims).clamp_min(EPS)).clamp_min(EPS)
        )
    return out


def panning_features(x: Tensor, sample_rate: float) -> dict[str, Tensor]:
    """Stereo panning spectrum: RMS in low/mid/high bands and the energy-weighted panning index."""
    check_audio(x, channels=2)
    sps, energy = stereo_panning_spectrum(complex_stft(x))
    out = panning_band_rms(sps, energy, sample_rate, (1, 2))
    out["panning_index"] = (sps * energy).sum((1, 2)) / energy.sum((1, 2)).clamp_min(EPS)
    return out


def true_peak_dbtp(x: Tensor) -> Tensor:
    """4x oversampled peak in dBTP (BS.1770-4 Annex 2 style polyphase interpolation)."""
    import scipy.signal

    up = torch.as_tensor(scipy.signal.resample_poly(x.detach().cpu().double().numpy(), 4, 1, axis=-1))
    return 20 * torch.log10(up.abs().amax((-1, -2)).clamp_min(EPS)).to(x.device, x.dtype)


def loudness_features(x: Tensor, sample_rate: float) -> dict[str, Tensor]:
    """Integrated loudness, loudness range, sample peak and true peak."""
    check_audio(x)
    sample_rate = check_sample_rate(sample_rate)
    return {
        "loudness_lufs": integrated_loudness(x, sample_rate=sample_rate),
        "loudness_range_lu": loudness_range(x, sample_rate),
        "sample_peak_dbfs": 20 * torch.log10(x.abs().amax((-1, -2)).clamp_min(EPS)),
        "true_peak_dbtp": true_peak_dbtp(x),
    }


def loudness_range(x: Tensor, sample_rate: float) -> Tensor:
    """EBU Tech 3342 loudness range in LU (0 for signals shorter than 3 s or gated to nothing)."""
    batch = x.shape[0]
    out = torch.zeros(batch, dtype=x.dtype, device=x.device)
    if x.shape[-1] < int(3 * sample_rate):
        return out
    st = -0.691 + 10 * torch.log10(block_powers(x, sample_rate=sample_rate, block_s=3.0, step_s=0.1).double() + 1e-30)
    for i in range(batch):
        v = st[i][st[i] > -70]
        if v.numel() == 0:
            continue
        rel = -0.691 + 10 * math.log10(float((10 ** ((v.detach() + 0.691) / 10)).mean())) - 20
        v = v[v > rel]
        if v.numel():
            out[i] = torch.quantile(v, 0.95) - torch.quantile(v, 0.10)
    return out


def crest_factor_db(x: Tensor) -> Tensor:
    """``20 log10(peak / RMS)`` over channels and time, ``(batch,)`` dB (differentiable)."""
    x64 = x.double()
    rms = x64.square().mean((1, 2)).sqrt()
    return (20 * torch.log10((x64.abs().amax((-1, -2)) + EPS) / (rms + EPS))).to(x.dtype)


def dynamics_features(x: Tensor, sample_rate: float) -> dict[str, Tensor]:
    """RMS, dynamic spread, crest factor, peak-to-loudness ratio."""
    check_audio(x)
    sq = x.double().square().mean(1)
    rms = sq.mean(-1).sqrt()
    frame, hop = max(1, int(0.05 * sample_rate)), max(1, int(0.025 * sample_rate))
    levels = (
        10 * torch.log10(sq.unfold(-1, frame, hop).mean(-1) + EPS)
        if sq.shape[-1] >= frame
        else 10 * torch.log10(sq.mean(-1, keepdim=True) + EPS)
    )
    gate = levels > -70
    mean = (levels * gate).sum(-1) / gate.sum(-1).clamp_min(1)
    spread = ((levels - mean[:, None]).abs() * gate).sum(-1) / gate.sum(-1).clamp_min(1)
    return {
        "rms_dbfs": (20 * torch.log10(rms + EPS)).to(x.dtype),
        "dynamic_spread_db": spread.to(x.dtype),
        "crest_factor_db": crest_factor_db(x),
        "plr_db": true_peak_dbtp(x) - integrated_loudness(x, sample_rate=sample_rate),
    }


def mix_features(x: Tensor, sample_rate: float) -> dict[str, Tensor]:
    """Every feature of this module for a stereo mix ``(batch, 2, samples)``: ``{name: (batch,)}``."""
    check_audio(x, channels=2)
    return {
        **loudness_features(x, sample_rate),
        **spectral_features(x, sample_rate),
        **panning_features(x, sample_rate),
        **dynamics_features(x, sample_rate),
    }
