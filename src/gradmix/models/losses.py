"""Training losses: a predicted mix against a target mix, and each track's part against its wet stem; all
finite on silence.

``MixLoss = w_stft * MR-STFT(mono sum) + w_stereo * MR-STFT(sum and difference) + w_loudness * |dLUFS| / 10
+ w_features * mean feature error + w_balance * |d balance| / 3``

- MR-STFT terms are auraloss's (log-magnitude and linear-magnitude distances over FFT sizes 512, 2048 and
  8192). Spectral convergence is left out on purpose: it divides by the target's norm and is undefined on a
  silent target.
- Loudness uses the soft-gated BS.1770 loudness (finite and differentiable on silence).
- Balance: the left/right energy ratio in dB; 3 dB of difference costs 1. (The panning features are
  symmetric, so without it a network can buy "width" by shifting every track to one side.)
- Feature error: running means (1 s) of the frame features of :func:`gradmix.metrics.frame_features`
  (spectral centroid, bandwidth, flatness, roll-off, panning RMS per band, RMS), each as absolute error over
  ``max(|target|, floor)``: the evaluation's per-feature MAPE, made differentiable.

``TrackLoss`` compares each track's own part of the mix (:func:`gradmix.console.track_outputs`: strip output
plus its bus returns) with the track's wet stem, on tracks that have one and sound in the segment
(:func:`pick_tracks` draws up to ``tracks_per_song`` of them per song and step: each part costs a bus render):

``w_track_stft * MR-STFT(mono sum) + w_track_level * |d (L_track - L_mix)| / 10 + w_track_position * |d position|
+ w_track_width * |d width|``

- ``L_track - L_mix``: the track's soft-gated loudness relative to that of its mix (LU): on the estimate side
  what the master receives from the tracks that have a wet stem, on the target side the sum of their wet
  stems; a track's level is judged within its mix, not against an absolute scale.
- position ``(E_R - E_L) / (E_R + E_L)`` in -1..1 and width ``E_side / (E_mid + E_side)`` in 0..1, from the
  channel energies: bounded, so a hard-panned track costs at most 2 and a silent channel no infinity.
- ``track_weighting``: ``equal`` averages over tracks; ``loudness`` weights each track by its wet stem's share
  of the song's wet energy in the segment (quiet tracks matter less).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from gradmix.dsp import soft_integrated_loudness
from gradmix.metrics.distances import frame_feature_errors
from gradmix.metrics.tracks import SOUNDING_DBFS

FFT_SIZES = (512, 2048, 8192)


TRACK_WEIGHTINGS = ("equal", "loudness")


@dataclass
class LossWeights:
    stft: float = 1.0
    stereo: float = 1.0
    loudness: float = 1.0
    features: float = 1.0
    balance: float = 1.0
    track_stft: float = 1.0
    track_level: float = 1.0
    track_position: float = 1.0
    track_width: float = 1.0
    track_weighting: str = "equal"
    """How tracks are averaged in the per-track terms: ``equal`` or ``loudness`` (see :class:`TrackLoss`)."""
    tracks_per_song: int = 4
    """Tracks compared with their wet stems per song and step, drawn at random among those that sound (0: all)."""
    control: float = 0.0
    """Weight of :func:`control_loss` on the segments whose target an engineer-like console made (0: off)."""

    @property
    def per_track(self) -> bool:
        """Whether any per-track term has a weight."""
        return any((self.track_stft, self.track_level, self.track_position, self.track_width))


def control_loss(predicted, target, weight: Tensor) -> Tensor:
    """Mean squared error of the 0..1 strip controls and sends of two :class:`~gradmix.console.Controls`, over
    the tracks where ``weight`` ``(batch, tracks)`` is 1 (0 when there are none): the console's settings
    themselves, where the console that made the target is known."""
    w = weight.to(predicted.strip)
    err = torch.cat([predicted.strip - target.strip, predicted.sends - target.sends], -1).square().mean(-1)
    return (err * w).sum() / w.sum().clamp_min(1.0)


class MixLoss(nn.Module):
    """``loss(estimate, target) -> (scalar, {term: scalar})`` for ``(batch, 2, samples)`` mixes."""

    def __init__(self, sample_rate: float, weights: LossWeights | None = None) -> None:
        super().__init__()
        import auraloss

        self.sample_rate, self.w = sample_rate, weights or LossWeights()
        kw = dict(
            fft_sizes=list(FFT_SIZES),
            hop_sizes=[n // 4 for n in FFT_SIZES],
            win_lengths=list(FFT_SIZES),
            w_sc=0.0,
            w_log_mag=1.0,
            w_lin_mag=1.0,
        )
        self.mono = auraloss.freq.MultiResolutionSTFTLoss(**kw)
        self.stereo = auraloss.freq.SumAndDifferenceSTFTLoss(**kw)

    def forward(self, estimate: Tensor, target: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        terms = {}
        if self.w.stft:
            terms["stft"] = self.mono(estimate.sum(1, keepdim=True), target.sum(1, keepdim=True))
        if self.w.stereo:
            terms["stereo"] = self.stereo(estimate, target)
        if self.w.loudness:
            le = soft_integrated_loudness(estimate, sample_rate=self.sample_rate)
            lt = soft_integrated_loudness(target, sample_rate=self.sample_rate)
            terms["loudness"] = ((le - lt).abs() / 10).mean()
        if self.w.features:
            terms["features"] = feature_loss(estimate, target, self.sample_rate)
        if self.w.balance:
            terms["balance"] = ((balance_db(estimate) - balance_db(target)).abs() / 3).mean()
        total = sum(getattr(self.w, k) * v for k, v in terms.items())
        return total, {k: v.detach() for k, v in terms.items()}


def balance_db(x: Tensor) -> Tensor:
    """Right-to-left energy ratio in dB of ``(batch, 2, samples)``, ``(batch,)`` (0 for silence)."""
    e = x.square().mean(-1)
    return 10 * torch.log10((e[:, 1] + 1e-10) / (e[:, 0] + 1e-10))


def feature_loss(estimate: Tensor, target: Tensor, sample_rate: float, window_s: float = 1.0) -> Tensor:
    """Mean over frame features of the relative error of their running means (scalar)."""
    errors = frame_feature_errors(estimate, target.detach(), sample_rate, window_s)
    return torch.stack(list(errors.values())).mean()


class TrackLoss(nn.Module):
    """``loss(parts, wet, active, mix, wet_mix) -> (scalar, {term: scalar})``: each track's part of the mix
    against its wet stem.

    Args (of ``forward``):
        parts: ``(batch, tracks, 2, samples)`` the console's per-track outputs (strip + bus returns).
        wet: ``(batch, tracks, 2, samples)`` the wet stems, on the same scale as the target mix.
        active: ``(batch, tracks)`` bool, the tracks to compare.
        mix: ``(batch, 2, samples)`` the estimate's mix that each part's level is relative to.
        wet_mix: ``(batch, 2, samples)`` the target's mix that each wet stem's level is relative to.

    A batch without an active track gives 0 for every term.
    """

    def __init__(self, sample_rate: float, weights: LossWeights | None = None) -> None:
        super().__init__()
        import auraloss

        self.sample_rate, self.w = sample_rate, weights or LossWeights()
        if self.w.track_weighting not in TRACK_WEIGHTINGS:
            raise ValueError(f"track_weighting: {self.w.track_weighting!r} is not one of {', '.join(TRACK_WEIGHTINGS)}")
        self.stfts = nn.ModuleList(
            auraloss.freq.STFTLoss(
                fft_size=n, hop_size=n // 4, win_length=n, w_sc=0.0, w_log_mag=1.0, w_lin_mag=1.0, reduction="none"
            )
            for n in FFT_SIZES
        )

    def forward(
        self, parts: Tensor, wet: Tensor, active: Tensor, mix: Tensor, wet_mix: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        names = [k for k in ("stft", "level", "position", "width") if getattr(self.w, f"track_{k}")]
        if not bool(active.any()):
            zero = parts.sum() * 0.0
            return zero, {k: zero.detach() for k in names}
        weight = self._weights(wet, active)
        est, ref = parts[active], wet[active]  # (items, 2, samples)
        terms: dict[str, Tensor] = {}
        if self.w.track_stft:
            per_item = sum(f(est.sum(1, keepdim=True), ref.sum(1, keepdim=True)).mean((-2, -1)) for f in self.stfts)
            terms["stft"] = (weight * per_item / len(self.stfts)).sum()
        if self.w.track_level:
            song = active.nonzero()[:, 0]

            def relative(x: Tensor, whole: Tensor) -> Tensor:
                track = soft_integrated_loudness(x, sample_rate=self.sample_rate)
                return track - soft_integrated_loudness(whole, sample_rate=self.sample_rate)[song]

            terms["level"] = (weight * (relative(est, mix) - relative(ref, wet_mix)).abs() / 10).sum()
        if self.w.track_position or self.w.track_width:
            pe, we = stereo_image(est)
            pr, wr = stereo_image(ref)
            if self.w.track_position:
                terms["position"] = (weight * (pe - pr).abs()).sum()
            if self.w.track_width:
                terms["width"] = (weight * (we - wr).abs()).sum()
        total = sum(getattr(self.w, f"track_{k}") * v for k, v in terms.items())
        return total, {k: v.detach() for k, v in terms.items()}

    def _weights(self, wet: Tensor, active: Tensor) -> Tensor:
        """``(items,)`` weights of the active tracks, summing to 1 over the batch."""
        if self.w.track_weighting == "equal":
            w = active.to(wet.dtype)
        else:
            energy = wet.detach().square().mean((-2, -1)) * active
            w = energy / energy.sum(1, keepdim=True).clamp_min(1e-20)  # share within each song
        w = w / w.sum().clamp_min(1e-20)
        return w[active]


def pick_tracks(active: Tensor, count: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Up to ``count`` of each song's active tracks, drawn at random (all of them for ``count`` 0).

    Args:
        active: ``(batch, tracks)`` bool.
        count: tracks per song (0: every active track).
        generator: a CPU generator (the draw is moved to ``active``'s device).

    Returns:
        ``(index, valid)``, each ``(batch, k)`` with ``k = min(count, most active tracks of a song)``: the tracks'
        indices (any index where ``valid`` is false).
    """
    keys = torch.rand(active.shape, generator=generator).to(active.device)
    keys = torch.where(active, keys, torch.full_like(keys, 2.0))  # inactive tracks sort last
    k = int(active.sum(1).max())
    k = min(k, count) if count > 0 else k
    index = keys.argsort(1)[:, :k]
    return index, active.gather(1, index)


def stereo_image(x: Tensor, eps: float = 1e-10) -> tuple[Tensor, Tensor]:
    """Position and width of ``(items, 2, samples)`` audio, each ``(items,)``.

    position = ``(E_R - E_L) / (E_R + E_L)`` in -1 (left) .. 1 (right); width = ``E_S / (E_M + E_S)`` in 0 (mono)
    .. 1 (out of phase), with ``M = (L + R) / 2`` and ``S = (L - R) / 2``; both 0 for silence.
    """
    e = x.square().mean(-1)
    side = (0.5 * (x[:, 0] - x[:, 1])).square().mean(-1)
    mid = (0.5 * (x[:, 0] + x[:, 1])).square().mean(-1)
    return (e[:, 1] - e[:, 0]) / (e.sum(-1) + eps), side / (mid + side + eps)


def active_tracks(tracks: Tensor, wet: Tensor, has_wet: Tensor, floor_db: float = SOUNDING_DBFS) -> Tensor:
    """``(batch, tracks)`` bool: a wet stem exists, and both the dry input and the wet stem
    ``(batch, tracks, 2, samples)`` are louder than ``floor_db`` RMS (dBFS) in this segment: the rule by which
    ``gradmix eval --tracks`` measures a track (:func:`gradmix.metrics.tracks.measured_tracks`), in the
    batch's own dtype."""
    floor = 10 ** (floor_db / 10)
    return has_wet & (tracks.square().mean((-2, -1)) > floor) & (wet.square().mean((-2, -1)) > floor)
