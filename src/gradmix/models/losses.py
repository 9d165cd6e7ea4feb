"""Training losses between a predicted mix and a target mix, all finite on silence.

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
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from gradmix.dsp import soft_integrated_loudness
from gradmix.metrics.distances import frame_feature_errors

FFT_SIZES = (512, 2048, 8192)


@dataclass
class LossWeights:
    stft: float = 1.0
    stereo: float = 1.0
    loudness: float = 1.0
    features: float = 1.0
    balance: float = 1.0


class MixLoss(nn.Module):
    """``loss(estimate, target) -> (scalar, {term: scalar})`` for ``(batch, 2, samples)`` mixes."""

    def __init__(self, sample_rate: float, weights: LossWeights | None = None) -> None:
        super().__init__()
        import auraloss

        self.sample_rate, self.w = sample_rate, weights or LossWeights()
        kw = dict(fft_sizes=list(FFT_SIZES), hop_sizes=[n // 4 for n in FFT_SIZES], win_lengths=list(FFT_SIZES),
                  w_sc=0.0, w_log_mag=1.0, w_lin_mag=1.0)
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
