"""The mixing network: listens to any number of tracks and sets every control of a console :class:`Layout`.

``tracks -> loudness normalisation -> log-mel (mid, side) -> weight-shared CNN encoder -> mean/std pooling
over the whole song -> transformer over tracks plus a master token (no positional encoding, padding masked)
-> strip head per track (strip controls + sends) and master head (bus + master controls)``.

With ``track_contrast`` the strip head also reads each track's :func:`track_contrast`: its token minus the
song's mean token, scaled by the song's spread of tokens. What the tracks share (the style ``z``, added to every
token, and whatever the encoder finds in all of them) can be far larger than what sets them apart; the head's
layer norm would then scale the difference away, and every track would get one setting.

With ``engineer_switch`` a second strip head and master head decide the consoles meant to be engineer-like
(training segments whose target an engineer-like console made, and every command's mix); the first pair
decides those meant to be like the training songs' authors'.

The network never sees track order, so permuting the tracks permutes the strips it predicts and leaves the
mix unchanged. Every head starts at the layout's neutral values (bias = logit of the default), so an
untrained model renders the equal-loudness sum and training moves away from it.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from gradmix.console import Controls, Layout
from gradmix.dsp import integrated_loudness
from gradmix.errors import GradmixError
from gradmix.metrics.distances import STYLE_FEATURES, TONE_CENTRES_HZ
from gradmix.metrics.tracks import OCTAVE_BAND_CENTRES_HZ, crest_factor_db, octave_band_powers
from gradmix.models.engineer import arrangement_sides, log_frequency_centroid_hz

TRACK_LUFS = -28.0
"""Every track is brought to this loudness before the network listens and the console renders it."""
MAX_NORM_DB = 24.0
"""Largest boost or cut of the loudness normalisation (a near-silent track is not raised by 50 dB)."""
SILENT_LUFS = -70.0


@dataclass
class ModelConfig:
    """Sizes of :class:`MixController` (defaults: about 1 M parameters)."""

    mels: int = 64
    channels: tuple[int, ...] = (16, 32, 64, 128)
    dim: int = 128
    heads: int = 4
    layers: int = 3
    ff: int = 256
    style_dim: int = 0
    """Size of the latent mix style ``z`` (0: no style; the controller is deterministic given the tracks)."""
    style_direct: bool = False
    """Also map ``z`` linearly onto every control's logit (one offset per control, the same for every track),
    besides feeding it to the transformer: a short path that a reconstruction loss can use from the first step."""
    track_contrast: bool = False
    """The strip head also reads each track's :func:`track_contrast` (how it differs from the song's other tracks)."""
    engineer_switch: bool = False
    """A second pair of strip and master heads for engineer-like consoles: in training the segments whose target
    an engineer-like console made (:mod:`gradmix.models.engineer`) are decided by it, those with a human mix by
    the first pair; ``gradmix mix`` asks for the engineer's. Without it the two kinds of target, which disagree
    (most LMMS tracks have no EQ or compressor), are averaged by one head."""
    track_descriptors: bool = False
    """Each track's token also carries the numbers an engineer-like console is read from
    (:func:`track_descriptors`: octave-band shares and crest factor), besides the CNN's time statistics."""
    track_head: bool = False
    """A per-track head beside the strip head: it reads each track's :func:`track_contrast` after the transformer,
    its :func:`track_descriptors` and their difference from the song's mean, and adds its output to the strip
    head's logits. Its last layer starts at zero, so a model grown by it (``run.init``) starts by deciding as
    before; it is a short path from what sets a track apart to its own settings, which the strip head, reading
    tokens that the transformer has made nearly alike, does not find."""
    track_head_raw_descriptors: bool = False
    """The per-track heads' layer norm covers the track contrast only; the descriptors enter in their own units
    (dB / 10). A layer norm over both scales each track's descriptors by the spread of its contrast, so a fixed
    threshold on a descriptor (the habits' kick is a step of the crest factor, :mod:`gradmix.models.engineer`)
    lands elsewhere for every track, and the head learns a smoothed step."""
    engineer_song_makeup: bool = False
    """The engineer's strips share one compressor makeup gain per song: the mean over the song's tracks of what
    the strip heads give each. The engineer's makeup carries the song's level move (one for all its tracks,
    :func:`~gradmix.models.engineer.level_moved`); a per-track guess at it would change the balance."""
    pan_side: bool = False
    """The per-track heads also read each track's :func:`arrangement_side` (-1 .. 1): which side of the stereo
    field the habits' rule puts it on in its song. Which side a part goes is a convention the stems do not tell,
    so a head without it learns to centre every track (the mean of the two sides); with it, the EQ stage can
    teach the engineer's head a width (``habit_eq.pan_width``). Needs ``track_head`` and
    ``track_head_raw_descriptors`` (the side enters in its own units, so a model grown by it decides as before)."""

    def to_dict(self) -> dict:
        return {**asdict(self), "channels": list(self.channels)}

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        d = dict(d)
        if "channels" in d:
            d["channels"] = tuple(d["channels"])
        return cls(**d)


def normalization_gain_db(lufs: Tensor) -> Tensor:
    """Gain in dB that brings tracks of integrated loudness ``lufs`` (LUFS, any shape) to :data:`TRACK_LUFS`:
    within ``+-MAX_NORM_DB``, and 0 dB for a silent track (at or below :data:`SILENT_LUFS`)."""
    gain = (TRACK_LUFS - lufs).clamp(-MAX_NORM_DB, MAX_NORM_DB)
    return torch.where(lufs > SILENT_LUFS, gain, torch.zeros_like(gain))


def track_loudness(tracks: Tensor, sample_rate: float) -> Tensor:
    """Integrated loudness (LUFS, float64, no gradient) ``(batch, tracks)`` of ``tracks``
    ``(batch, tracks, channels, samples)``."""
    b, n = tracks.shape[:2]
    with torch.no_grad():
        return integrated_loudness(tracks.flatten(0, 1).double(), sample_rate=sample_rate).view(b, n)


def sounding_mask(lufs: Tensor, mask: Tensor | None) -> Tensor:
    """``(batch, tracks)`` bool: the real tracks (``mask``) whose loudness ``lufs`` (:func:`track_loudness`) is
    above :data:`SILENT_LUFS`, the tracks the model decides with (a silent one is left out, as ``gradmix mix``
    leaves out a silent stem)."""
    heard = lufs > SILENT_LUFS
    return heard if mask is None else heard & mask.to(torch.bool)


def normalization_db(tracks: Tensor, mask: Tensor | None, sample_rate: float) -> Tensor:
    """Gain in dB that brings each track to :data:`TRACK_LUFS` (0 dB for silent or padding tracks).

    Args:
        tracks: ``(batch, tracks, channels, samples)``.
        mask: ``(batch, tracks)`` or ``None``.

    Returns:
        ``(batch, tracks)`` dB, within ``+-MAX_NORM_DB``.
    """
    gain = normalization_gain_db(track_loudness(tracks, sample_rate))
    if mask is not None:
        gain = gain * mask.to(gain)
    return gain.to(tracks.dtype)


def mel_filterbank(sample_rate: float, n_fft: int, mels: int, fmin: float = 30.0, fmax: float = 16000.0) -> Tensor:
    """Triangular HTK-mel filters ``(mels, n_fft // 2 + 1)``, each normalised to unit area."""

    def mel(f):
        return 2595.0 * math.log10(1.0 + f / 700.0)

    fmax = min(fmax, sample_rate / 2)
    points = torch.linspace(mel(fmin), mel(fmax), mels + 2, dtype=torch.float64)
    hz = 700.0 * (10 ** (points / 2595.0) - 1.0)
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    lo, mid, hi = hz[:-2, None], hz[1:-1, None], hz[2:, None]
    fb = torch.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)).clamp_min(0)
    return (fb / fb.sum(-1, keepdim=True).clamp_min(1e-12)).float()


class TrackEncoder(nn.Module):
    """Log-mel CNN shared by all tracks: ``(items, 2, samples)`` -> ``(items, dim)`` for any length; with
    ``emit_descriptors``, ``(items, dim + 11)``: the :func:`track_descriptors` follow the embedding."""

    def __init__(self, cfg: ModelConfig, emit_descriptors: bool = False) -> None:
        super().__init__()
        self.mels = cfg.mels
        self.emit_descriptors = emit_descriptors
        layers, c_in = [], 2
        for c in cfg.channels:
            layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.GroupNorm(1, c), nn.GELU(), nn.MaxPool2d((2, 2))]
            c_in = c
        self.cnn = nn.Sequential(*layers)
        freq_out = cfg.mels // 2 ** len(cfg.channels)
        self.descriptors = cfg.track_descriptors
        extra = DESCRIPTORS if self.descriptors else 0
        self.proj = nn.Linear(2 * c_in * freq_out + extra, cfg.dim)
        self._fb: dict[tuple, Tensor] = {}  # per sample rate, device and dtype: no copy from the host per step

    def features(self, x: Tensor, sample_rate: float) -> Tensor:
        """``(items, 2, samples)`` -> log-mel of mid and side ``(items, 2, mels, frames)``."""
        n_fft = 1 << round(math.log2(sample_rate * 0.046))
        key = (sample_rate, x.device, x.dtype)
        if key not in self._fb:
            self._fb[key] = mel_filterbank(sample_rate, n_fft, self.mels).to(x)
        fb = self._fb[key]
        ms = torch.stack([x[:, 0] + x[:, 1], x[:, 0] - x[:, 1]], 1).flatten(0, 1) * 0.5
        if ms.shape[-1] < n_fft:
            ms = nn.functional.pad(ms, (0, n_fft - ms.shape[-1]))
        spec = torch.stft(
            ms,
            n_fft,
            n_fft // 2,
            window=torch.hann_window(n_fft, device=x.device, dtype=x.dtype),
            return_complex=True,
            center=False,
        )
        power = spec.real.square() + spec.imag.square()  # not abs().square(): a square root fewer, 1.5x faster
        mel = torch.log10(fb @ power + 1e-8)
        return mel.unflatten(0, (x.shape[0], 2))

    def forward(self, x: Tensor, sample_rate: float) -> Tensor:
        h = self.cnn((self.features(x, sample_rate) + 4.0) / 4.0)  # about zero-mean, unit range for -28 LUFS audio
        h = h.flatten(1, 2)  # (items, channels * freqs, frames)
        stats = [h.mean(-1), h.std(-1, unbiased=False)]
        described = track_descriptors(x, sample_rate).to(h) if self.descriptors or self.emit_descriptors else None
        if self.descriptors:
            stats.append(described)
        out = self.proj(torch.cat(stats, -1))
        return torch.cat([out, described], -1) if self.emit_descriptors else out


DESCRIPTORS = len(OCTAVE_BAND_CENTRES_HZ) + 1
"""Numbers per track of :func:`track_descriptors`."""


def arrangement_side(described: Tensor, mask: Tensor | None = None) -> Tensor:
    """Each track's side in its song by the habits' rule (:func:`~gradmix.models.engineer.arrangement_sides`),
    read from its :func:`track_descriptors` ``(batch, tracks, 11)``; ``mask`` ``(batch, tracks)`` marks the tracks
    that sound (default all). Returns ``(batch, tracks)``, -1 .. 1, in ``described``'s dtype and device."""
    share = (torch.pow(10.0, described.detach()[..., : len(OCTAVE_BAND_CENTRES_HZ)].double()) - 1e-6).clamp_min(0.0)
    sounding = torch.ones(described.shape[:2], dtype=torch.bool, device=described.device) if mask is None else mask
    return arrangement_sides(log_frequency_centroid_hz(share), sounding).to(described)


def track_descriptors(x: Tensor, sample_rate: float) -> Tensor:
    """``(items, channels, samples)`` -> ``(items, 11)``: each octave band's share of the track's power in dB / 10
    (floored at -60 dB) and the crest factor of its frame powers in dB / 10 (see
    :func:`gradmix.metrics.tracks.crest_factor_db`): what :func:`gradmix.models.engineer.track_habits` reads."""
    with torch.no_grad():
        bands = octave_band_powers(x, sample_rate=sample_rate)
        share = 10 * torch.log10(bands / bands.sum(-1, keepdim=True).clamp_min(1e-30) + 1e-6)
        crest = crest_factor_db(x, sample_rate=sample_rate)
        return torch.cat([share / 10, crest[:, None] / 10], -1)


class TrackHead(nn.Module):
    """A per-track head whose layer norm covers the first ``dim`` inputs (the track contrast) only: the
    ``extra`` inputs after them (descriptors) enter as they are. ``(..., dim + extra)`` -> ``(..., out)``;
    ``head[-1]`` is the last layer, as in an ``nn.Sequential`` head."""

    def __init__(self, dim: int, extra: int, out: int) -> None:
        super().__init__()
        self.dim = dim
        self.norm = nn.LayerNorm(dim)
        self.body = nn.Sequential(nn.Linear(dim + extra, dim), nn.GELU(), nn.Linear(dim, out))

    def __getitem__(self, index: int) -> nn.Module:
        return self.body[index]

    def forward(self, x: Tensor) -> Tensor:
        return self.body(torch.cat([self.norm(x[..., : self.dim]), x[..., self.dim :]], -1))


class MixController(nn.Module):
    """Predicts 0..1 :class:`Controls` of ``layout`` for a batch of multitracks.

    Args:
        layout: the console the network drives.
        cfg: sizes.
    """

    def __init__(self, layout: Layout, cfg: ModelConfig | None = None) -> None:
        super().__init__()
        self.layout, self.cfg = layout, cfg or ModelConfig()
        d = self.cfg.dim
        self.encoder = TrackEncoder(self.cfg, emit_descriptors=self.cfg.track_head)
        self.master_token = nn.Parameter(torch.randn(d) * 0.02)
        block = nn.TransformerEncoderLayer(
            d, self.cfg.heads, self.cfg.ff, dropout=0.0, batch_first=True, norm_first=True, activation="gelu"
        )
        self.context = nn.TransformerEncoder(block, self.cfg.layers, enable_nested_tensor=False)
        self.sends = len(layout.bus_names)
        self.strip_head = _head(
            2 * d if self.cfg.track_contrast else d,
            layout.num_strip_params + self.sends,
            _neutral([s for slot in layout.strip for s in slot.specs]) + [0.0] * self.sends,
            d,
        )
        self.master_head = _head(
            d,
            layout.num_bus_params + layout.num_master_params,
            _neutral(
                [s for _, chain in layout.buses for slot in chain for s in slot.specs]
                + [s for slot in layout.master for s in slot.specs]
            ),
        )
        if self.cfg.pan_side and not (self.cfg.track_head and self.cfg.track_head_raw_descriptors):
            raise ValueError(
                "pan_side: the side is read by the per-track heads past their layer norm"
                " (track_head, track_head_raw_descriptors)"
            )
        if self.cfg.track_head:
            out = layout.num_strip_params + self.sends
            extra = 2 * DESCRIPTORS + int(self.cfg.pan_side)
            if self.cfg.track_head_raw_descriptors:
                self.track_head = TrackHead(d, extra, out)
            else:
                self.track_head = nn.Sequential(
                    nn.LayerNorm(d + extra),
                    nn.Linear(d + extra, d),
                    nn.GELU(),
                    nn.Linear(d, out),
                )
            nn.init.zeros_(self.track_head[-1].weight)
            nn.init.zeros_(self.track_head[-1].bias)
        if self.cfg.engineer_switch:
            owners = [(slot.effect.type_name, s.name) for slot in layout.strip for s in slot.specs]
            if self.cfg.engineer_song_makeup and owners.count(("compressor", "makeup_db")) != 1:
                raise ValueError("engineer_song_makeup: the strips must have one compressor with a makeup gain")
            self.makeup_column = owners.index(("compressor", "makeup_db")) if self.cfg.engineer_song_makeup else -1
            self.engineer_strip_head = copy.deepcopy(self.strip_head)
            self.engineer_master_head = copy.deepcopy(self.master_head)
            if self.cfg.track_head:
                self.engineer_track_head = copy.deepcopy(self.track_head)
        if self.cfg.style_dim:
            self.style_encoder = TrackEncoder(self.cfg)
            self.style_head = nn.Linear(d, 2 * self.cfg.style_dim)
            self.style_in = nn.Linear(self.cfg.style_dim, d)
            self.register_buffer("style_center", torch.zeros(self.cfg.style_dim))
            """Mean style of the human mixes seen in training (``gradmix mix`` mixes with it)."""
            self.register_buffer("style_bank", torch.zeros(0, self.cfg.style_dim))
            """``(windows, style_dim)``: q(z | mix) means of windows of the human mixes seen in training, the
            styles ``gradmix sample`` draws from (:func:`gradmix.generate.build_style_bank`)."""
            self.register_buffer("style_bank_offsets", torch.zeros(0, len(STYLE_FEATURES)))
            """``(windows, features)``: how each window's human mix differs in style from the model's own mix of
            its tracks (:func:`gradmix.generate.style_coordinates`)."""
            self.register_buffer("style_bank_tones", torch.zeros(0, len(TONE_CENTRES_HZ)))
            """``(windows, bands)`` dB: how each window's human mix differs from the model's own mix of its
            tracks in tonal balance (:func:`gradmix.metrics.distances.tonal_balance`)."""
            if self.cfg.style_direct:
                self.style_strip = nn.Linear(self.cfg.style_dim, layout.num_strip_params + self.sends, bias=False)
                self.style_master = nn.Linear(
                    self.cfg.style_dim, layout.num_bus_params + layout.num_master_params, bias=False
                )
                nn.init.zeros_(self.style_strip.weight)
                nn.init.zeros_(self.style_master.weight)

    def encode_style(self, mix: Tensor, *, sample_rate: float) -> tuple[Tensor, Tensor]:
        """q(z | mix): mean and log-variance ``(batch, style_dim)`` of the style of stereo mixes
        ``(batch, 2, samples)`` (any content and length; the mix's own level is part of its style)."""
        if not self.cfg.style_dim:
            raise GradmixError("this model has no mix style (style_dim 0): retrain it with model.style_dim > 0")
        mu, logvar = self.style_head(self.style_encoder(mix, sample_rate)).chunk(2, -1)
        return mu, logvar.clamp(-10.0, 5.0)

    def forward(
        self,
        tracks: Tensor,
        *,
        sample_rate: float,
        mask: Tensor | None = None,
        z: Tensor | None = None,
        engineer: Tensor | None = None,
    ) -> Controls:
        """Controls for loudness-normalised tracks.

        Args:
            tracks: ``(batch, tracks, 2, samples)``, each track already at :data:`TRACK_LUFS`
                (:func:`normalization_db`); mono tracks duplicated on both channels.
            sample_rate: Hz.
            mask: ``(batch, tracks)``, 1 for real tracks.
            z: ``(batch, style_dim)`` mix style; default :attr:`style_center`.
            engineer: ``(batch,)``, 1 for an engineer-like console, 0 for one like the training songs'
                authors' (models with :attr:`ModelConfig.engineer_switch`; default 1).

        Returns:
            :class:`Controls` (strip ``(B, N, Ps)``, sends ``(B, N, buses)``, buses, master).
        """
        return self.decide(self.embed(tracks, sample_rate=sample_rate), mask, z, engineer)

    def embed(self, tracks: Tensor, *, sample_rate: float) -> Tensor:
        """Track embeddings ``(batch, tracks, features)`` of ``tracks`` ``(batch, tracks, 2, samples)`` (as in
        :meth:`forward`): the input of :meth:`decide`, which can decide more than once from one encoding."""
        b, n = tracks.shape[:2]
        return self.encoder(tracks.flatten(0, 1), sample_rate).view(b, n, -1)

    def decide(
        self, emb: Tensor, mask: Tensor | None = None, z: Tensor | None = None, engineer: Tensor | None = None
    ) -> Controls:
        """Controls from track embeddings ``(batch, tracks, dim)`` (the encoder's output), a style ``z`` and, for
        models with :attr:`ModelConfig.engineer_switch`, ``engineer`` (see :meth:`forward`)."""
        b = emb.shape[0]
        if self.cfg.track_head:
            emb, described = emb[..., : self.cfg.dim], emb[..., self.cfg.dim :]
        tokens = torch.cat([self.master_token.expand(b, 1, -1), emb], 1)
        if self.cfg.style_dim:
            z = self.style_center.expand(b, -1) if z is None else z
            tokens = tokens + self.style_in(z)[:, None]
        pad = None
        if mask is not None:
            pad = torch.cat([torch.zeros(b, 1, dtype=torch.bool, device=emb.device), ~mask.to(torch.bool)], 1)
        h = self.context(tokens, src_key_padding_mask=pad)
        track = h[:, 1:]
        if self.cfg.track_contrast:
            # both halves at unit scale, so that the head's layer norm weighs them alike
            track = torch.cat([nn.functional.layer_norm(track, track.shape[-1:]), track_contrast(track, mask)], -1)
        strip, master = self.strip_head(track), self.master_head(h[:, 0])
        if self.cfg.track_head:
            w = torch.ones_like(described[..., :1]) if mask is None else mask.to(described)[..., None]
            mean = (described * w).sum(1, keepdim=True) / w.sum(1, keepdim=True).clamp_min(1.0)
            own = torch.cat([track_contrast(h[:, 1:], mask), described, (described - mean) * w], -1)
            if self.cfg.pan_side:
                own = torch.cat([own, arrangement_side(described, mask)[..., None]], -1)  # 0 where silent
            strip = strip + self.track_head(own)
        if self.cfg.engineer_switch:
            e = emb.new_ones(b, dtype=torch.bool) if engineer is None else engineer.to(emb.device) > 0.5
            engineer_strip = self.engineer_strip_head(track)
            if self.cfg.track_head:
                engineer_strip = engineer_strip + self.engineer_track_head(own)
            strip = torch.where(e[:, None, None], engineer_strip, strip)
            master = torch.where(e[:, None], self.engineer_master_head(h[:, 0]), master)
        if self.cfg.style_dim and self.cfg.style_direct:
            strip, master = strip + self.style_strip(z)[:, None], master + self.style_master(z)
        strip, master = torch.sigmoid(strip), torch.sigmoid(master)
        if self.cfg.engineer_switch and self.cfg.engineer_song_makeup:
            col = self.makeup_column
            w = torch.ones_like(strip[..., col]) if mask is None else mask.to(strip)
            song = (strip[..., col] * w).sum(1, keepdim=True) / w.sum(1, keepdim=True).clamp_min(1.0)
            strip = strip.clone()
            strip[..., col] = torch.where(e[:, None], song.expand_as(w), strip[..., col])
        ps, pb = self.layout.num_strip_params, self.layout.num_bus_params
        return Controls(strip[..., :ps], strip[..., ps:], master[:, :pb], master[:, pb:])

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


CONTRAST_FLOOR = 1e-3
"""Floor of the song's spread of tokens in :func:`track_contrast` (token units, added in quadrature, which keeps
the gradient finite where every track has the same token): identical tracks get 0."""


def track_contrast(tokens: Tensor, mask: Tensor | None = None) -> Tensor:
    """How each track's token differs from the song's other tracks, independent of what they share.

    Args:
        tokens: ``(batch, tracks, dim)``.
        mask: ``(batch, tracks)``, 1 for real tracks (padding gets 0 and does not count).

    Returns:
        ``(batch, tracks, dim)``: ``(token - song mean) / sqrt(RMS deviation^2 + CONTRAST_FLOOR^2)``, the mean and RMS
        over the song's real tracks (and features); unchanged by a vector added to every token.
    """
    w = torch.ones_like(tokens[..., :1]) if mask is None else mask.to(tokens)[..., None]
    count = w.sum(1, keepdim=True).clamp_min(1.0)
    dev = (tokens - (tokens * w).sum(1, keepdim=True) / count) * w
    spread = (dev.square().sum((1, 2), keepdim=True) / (count * tokens.shape[-1]) + CONTRAST_FLOOR**2).sqrt()
    return dev / spread


def _neutral(specs) -> list[float]:
    return [float(s.normalize(torch.tensor(float(s.default)))) for s in specs]


def _head(dim_in: int, out: int, neutral: list[float], dim: int | None = None) -> nn.Sequential:
    """MLP whose output starts at ``logit(neutral)`` (clamped to 0.02..0.98 so gradients stay alive)."""
    dim = dim or dim_in
    last = nn.Linear(dim, out)
    with torch.no_grad():
        last.weight.mul_(0.01)
        u = torch.tensor(neutral).clamp(0.02, 0.98)
        last.bias.copy_(torch.log(u / (1 - u)))
    return nn.Sequential(nn.LayerNorm(dim_in), nn.Linear(dim_in, dim), nn.GELU(), last)
