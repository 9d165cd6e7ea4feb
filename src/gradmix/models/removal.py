"""The effect estimator of effect removal: which effects a wet stem went through, and their settings.

:class:`EffectEstimator` hears a stereo stem brought to a peak of -1 dBFS (:mod:`gradmix.removal.chains`) and
returns one presence logit per removable effect and the estimated parameters as 0..1 controls
(:func:`gradmix.removal.chains.estimated_specs`). Two views of the sound feed it:

- a log-mel spectrogram of mid and side through a small CNN, pooled over time by mean, standard deviation
  and maximum (timbre, dynamics, decay);
- the normalised autocorrelation of the onsets (the rise of the log energy envelope) at lags up to
  :attr:`RemovalConfig.max_lag_s` (echoes: a delay shows as a peak at its time and its multiples);
- the histogram of the envelope's peak levels, 1 dB bins below the window's peak (dynamics: a compressor
  piles the levels up under its threshold).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
from torch import Tensor

from gradmix.errors import GradmixError
from gradmix.models.controller import mel_filterbank


DEFAULT_THRESHOLD = 0.5
"""The presence threshold of an estimator whose thresholds were not calibrated."""


@dataclass
class RemovalConfig:
    """Sizes of :class:`EffectEstimator`."""

    sample_rate: int = 44100
    mels: int = 64
    channels: list[int] = field(default_factory=lambda: [16, 32, 64, 128])
    dim: int = 256
    envelope_hop_ms: float = 5.0
    max_lag_s: float = 1.0
    level_bins: int = 48
    effects: int = 5
    controls: int = 22

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RemovalConfig:
        return cls(**d)


class EffectEstimator(nn.Module):
    """``(batch, 2, samples)`` at :attr:`RemovalConfig.sample_rate`, peaking at -1 dBFS -> presence logits
    ``(batch, effects)`` and 0..1 controls ``(batch, controls)``."""

    def __init__(self, cfg: RemovalConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or RemovalConfig()
        layers, c_in = [], 2
        for c in cfg.channels:
            layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.GroupNorm(1, c), nn.GELU(), nn.MaxPool2d((2, 2))]
            c_in = c
        self.cnn = nn.Sequential(*layers)
        spectral = 3 * c_in * (cfg.mels // 2 ** len(cfg.channels))
        self.lags = int(cfg.max_lag_s * 1000 / cfg.envelope_hop_ms)
        self.echo = nn.Sequential(nn.Linear(self.lags, cfg.dim), nn.GELU())
        self.dynamics = nn.Sequential(nn.Linear(cfg.level_bins, cfg.dim), nn.GELU())
        self.trunk = nn.Sequential(
            nn.Linear(spectral + 2 * cfg.dim, cfg.dim), nn.GELU(), nn.Linear(cfg.dim, cfg.dim), nn.GELU()
        )
        self.presence = nn.Linear(cfg.dim, cfg.effects)
        self.settings = nn.Linear(cfg.dim, cfg.controls)
        n_fft = 1 << round(math.log2(cfg.sample_rate * 0.046))
        self.n_fft = n_fft
        self.register_buffer("filterbank", mel_filterbank(cfg.sample_rate, n_fft, cfg.mels), persistent=False)
        self.register_buffer("thresholds", torch.full((cfg.effects,), DEFAULT_THRESHOLD))
        """``(effects,)``: the presence probability at which each effect counts as present, chosen after training
        on fresh training pairs (:func:`gradmix.removal.train.calibrate_thresholds`) and raised so that few dry
        windows of the training songs reach it (:func:`gradmix.removal.train.false_alarm_thresholds`)."""
        self.register_buffer("careful_thresholds", torch.full((cfg.effects,), DEFAULT_THRESHOLD))
        """``(effects,)``: the thresholds of ``gradmix dry --careful``, for stems that may have no effect at all:
        each raised so that few dry windows of the training songs reach it
        (:func:`gradmix.removal.train.false_alarm_thresholds`)."""

    def spectrogram(self, x: Tensor) -> Tensor:
        """Log-mel of mid and side, ``(batch, 2, mels, frames)``, about zero-mean and unit range."""
        ms = torch.stack([x[:, 0] + x[:, 1], x[:, 0] - x[:, 1]], 1).flatten(0, 1) * 0.5
        window = torch.hann_window(self.n_fft, device=x.device, dtype=x.dtype)
        spec = torch.stft(ms, self.n_fft, self.n_fft // 2, window=window, return_complex=True, center=False)
        mel = torch.log10(self.filterbank.to(x) @ spec.abs().square() + 1e-8)
        return ((mel + 4.0) / 4.0).unflatten(0, (x.shape[0], 2))

    def echoes(self, x: Tensor) -> Tensor:
        """The normalised autocorrelation ``(batch, lags)`` of the onsets (the rise of the log energy envelope,
        one value per :attr:`RemovalConfig.envelope_hop_ms`), at lags 1 .. :attr:`lags` hops: each echo repeats
        the onsets, a peak at its lag, where the envelope's own slow decay would hide it."""
        hop = max(1, int(self.cfg.sample_rate * self.cfg.envelope_hop_ms / 1000))
        frames = x.shape[-1] // hop
        env = torch.log10(x[..., : frames * hop].square().mean(1).unflatten(-1, (frames, hop)).mean(-1) + 1e-8)
        onsets = torch.diff(env, dim=-1).clamp_min(0)
        onsets = onsets - onsets.mean(-1, keepdim=True)
        size = 1 << (2 * onsets.shape[-1] - 1).bit_length()
        spec = torch.fft.rfft(onsets, size)
        ac = torch.fft.irfft(spec.abs().square(), size)[:, : self.lags + 1]
        ac = ac / ac[:, :1].clamp_min(1e-8)
        out = ac[:, 1:]
        if out.shape[-1] < self.lags:
            out = nn.functional.pad(out, (0, self.lags - out.shape[-1]))
        return out

    def levels(self, x: Tensor) -> Tensor:
        """The share of envelope frames (peak level per :attr:`RemovalConfig.envelope_hop_ms`) in each 1 dB bin below
        the window's peak, ``(batch, level_bins)`` (frames lower still are not counted)."""
        hop = max(1, int(self.cfg.sample_rate * self.cfg.envelope_hop_ms / 1000))
        frames = x.shape[-1] // hop
        peak = x[..., : frames * hop].abs().amax(1).unflatten(-1, (frames, hop)).amax(-1)
        below = 20 * torch.log10(peak.amax(-1, keepdim=True).clamp_min(1e-8) / peak.clamp_min(1e-8))
        bins = torch.arange(self.cfg.level_bins, device=x.device, dtype=x.dtype)
        inside = (below[..., None] >= bins) & (below[..., None] < bins + 1)
        return inside.to(x.dtype).mean(1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.cnn(self.spectrogram(x)).flatten(1, 2)  # (batch, channels * freqs, frames)
        pooled = torch.cat([h.mean(-1), h.std(-1, unbiased=False), h.amax(-1)], -1)
        h = self.trunk(torch.cat([pooled, self.echo(self.echoes(x)), self.dynamics(self.levels(x) * 10)], -1))
        return self.presence(h), torch.sigmoid(self.settings(h))

    def load_weights(self, state: dict[str, Tensor]) -> None:
        """Load a state dict of this class; one saved before the thresholds existed keeps the defaults, and one
        saved before the careful thresholds existed decides as carefully as by its thresholds."""
        thresholds = state.get("thresholds", self.thresholds)
        self.load_state_dict({"thresholds": thresholds, "careful_thresholds": thresholds, **state})

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


SHIPPED = Path(__file__).with_name("removal_model.pt")
"""The effect estimator shipped in the package (``make removal-model`` trains it)."""


def load_estimator(path: str | Path | None = None, device: str | torch.device = "cpu") -> EffectEstimator:
    """An effect estimator from a ``model.pt`` of :func:`gradmix.removal.train.train_removal` (default: the
    shipped one), in eval mode."""
    path = Path(path) if path is not None else SHIPPED
    if not path.is_file():
        hint = " (train one with `make removal-model`)" if path == SHIPPED else ""
        raise GradmixError(f"{path}: no such effect-removal model{hint}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model = EffectEstimator(RemovalConfig.from_dict(state["config"]))
        model.load_weights(state["state"])
    except Exception as exc:  # a foreign or truncated file can fail in many ways
        raise GradmixError(f"{path}: not an effect-removal model ({type(exc).__name__}: {exc})") from None
    return model.eval().to(device)
