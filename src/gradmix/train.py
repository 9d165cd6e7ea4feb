"""``gradmix train CONFIG.yaml``: train a :class:`~gradmix.models.MixController` end to end through the console.

The YAML file maps onto :class:`TrainConfig` (sections ``data``, ``model``, ``optim``, ``run`` and
``habit_eq``; unknown keys are errors). Training uses Lightning, so the same code runs on one CPU or with DDP
on many GPUs and nodes (``--devices``, ``--num-nodes``, ``--strategy``). Every ``run.checkpoint_every`` steps
``last.ckpt`` is written; starting again with the same ``run.out`` resumes from it. Logs go to ``<out>/logs`` as
CSV (and TensorBoard when it is installed). At the end ``<out>/model.pt`` holds the model for ``gradmix mix --model``.

Regimes (``data.regime``):

- ``supervised``: songs with a mix; the target is the human mix of the same segment.
- ``self_supervised``: the target is a random engineer-like console (:mod:`gradmix.models.engineer`)
  applied to the loudness-normalised tracks; songs need no mix.
- ``mixed``: supervised where a song has a mix, self-supervised where it has none.

Per-track supervision (:class:`~gradmix.models.losses.TrackLoss`): where a track has a wet stem (the track as
the human mix hears it, e.g. ``gradmix dataset lmms``), each track's own part of the rendered mix (strip
output plus bus returns) is compared with it; an engineer-like target supplies the parts of the console that
made it. The ``optim.loss.track_*`` weights set these terms (0 turns them off); data without wet stems trains
with the mix losses alone. ``data.augment_*`` changes the dry inputs at random (:mod:`gradmix.data.augment`)
so that the net cannot read a track's setting off the way its stem was rendered.

With ``habit_eq.segments`` the run is instead the EQ stage (:func:`fit_habit_eq`): the engineer's per-track head
of a trained model learns the habits' EQ moves from segments encoded once.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor

from gradmix.audio import make_output_folder, write_atomically
from gradmix.console import Controls, Layout, pre_master, track_outputs
from gradmix.data import SegmentDataset, collate, find_songs
from gradmix.data.augment import Augmentation, augment_tracks
from gradmix.devices import compute_device
from gradmix.errors import GradmixError
from gradmix.metrics.tracks import OCTAVE_BAND_CENTRES_HZ
from gradmix.models import (
    MixController,
    MixLoss,
    ModelConfig,
    normalization_db,
    normalization_gain_db,
    sounding_mask,
    track_loudness,
)
from gradmix.models.checkpoint import load_model, save_model
from gradmix.models.controller import arrangement_side
from gradmix.models.engineer import (
    carve_on,
    compressed_by_gain_reduction,
    engineer_controls,
    level_matched_eq,
    level_moved,
    song_level_db,
    wanted_gain_reduction_db,
)
from gradmix.models.losses import TRACK_WEIGHTINGS, LossWeights, TrackLoss, active_tracks, control_loss, pick_tracks
from gradmix.progress import progress

REGIMES = ("supervised", "self_supervised", "mixed")


@dataclass
class DataConfig:
    songs: list[str] = field(default_factory=list)
    """Dataset folders (any layout :func:`gradmix.data.find_songs` reads)."""
    exclude: list[str] = field(default_factory=list)
    """Song names kept out of training (held out for evaluation)."""
    regime: str = "mixed"
    self_supervised_fraction: float = 0.0
    """In the ``mixed`` regime, the share of segments that get an engineer-like target even though their song
    has a mix (more variety of mixes per set of tracks: what a style model needs)."""
    engineer_carves: bool = False
    """Engineer-like targets keep the song's tone: each strip's EQ gains are the authors' heads' decision for the
    segment plus the habits' balanced moves (:func:`gradmix.models.engineer.carve_on`), so the engineer's heads
    learn only how the tracks differ. Needs ``model.engineer_switch``."""
    seconds: float = 4.0
    sample_rate: int = 44100
    batch_size: int = 4
    max_tracks: int = 64
    num_workers: int = 0
    augment_gain_db: float = 0.0
    """Standard deviation of a random gain on each dry track before normalisation (dB; 0: off)."""
    augment_tilt_db: float = 0.0
    """Largest random spectral tilt of a dry track (dB between a 250 Hz low shelf and a 4 kHz high shelf; 0: off)."""
    augment_compress: float = 0.0
    """Probability that a dry track is compressed at random before normalisation."""

    @property
    def augmentation(self) -> Augmentation:
        return Augmentation(self.augment_gain_db, self.augment_tilt_db, self.augment_compress)


@dataclass
class OptimConfig:
    lr: float = 3e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    grad_clip: float = 1.0
    kl_weight: float = 0.01
    """Weight of the KL term of the style latent (models with ``model.style_dim > 0``)."""
    style_info_weight: float = 0.0
    """Weight of the style-consistency term: the style encoder, shown the rendered mix, should find the ``z``
    the controller was given (mean squared error of the means). It makes the controller use ``z``, which a
    reconstruction loss alone lets it ignore when the tracks already explain most of the mix."""
    loss: LossWeights = field(default_factory=LossWeights)
    average_from: int = 0
    """Above 0, the model the run exports is the uniform mean of its weights after every step from this one on
    (:func:`weight_average`); 0: the last step's weights."""
    train_only: list[str] = field(default_factory=list)
    """Names of the model's parts that learn (e.g. ``[track_head, engineer_track_head]``; a parameter learns when
    its name starts with one of them); the others keep the weights they start with (``run.init``). Empty: all."""


@dataclass
class RunConfig:
    out: str = "runs/model"
    max_steps: int = 1000
    seed: int = 0
    devices: int | str = 1
    num_nodes: int = 1
    strategy: str = "auto"
    accelerator: str = "cpu"
    precision: str = "32-true"
    log_every: int = 10
    checkpoint_every: int = 50
    progress: bool = True
    init: str | None = None
    """A model file (``model.pt``) whose weights start the run (:func:`warm_start`); relative to the config file."""


@dataclass
class HabitEqConfig:
    segments: int = 0
    """With more than 0, the run is an *EQ stage* (:func:`fit_habit_eq`) instead of end-to-end training: this
    many training segments are encoded once, and the engineer's per-track head of the model ``run.init`` learns
    the habits' EQ moves on them for ``run.max_steps`` steps. 0: an ordinary run."""
    authors_level: bool = False
    """Every track of a song's target moves by one level (a rise on the compressors' makeup gain, a cut on the
    faders), so that what its master receives is as loud as under the authors' heads' decision
    (:func:`~gradmix.models.engineer.song_level_db`): the engineer's balance at the level the authors mix at,
    into the master bus the two share."""
    max_level_rise_db: float | None = None
    """With ``authors_level``, a song's level move rises by at most this many dB (cuts stay whole); None: no cap.
    A rise goes through the compressors' makeup gain into the master bus, where the master limiter supplies the
    last dB of a large one and flattens the song's crest factor."""
    gain_reduction: bool = False
    """Each strip compressor of the target is set as an engineer sets one by its meter
    (:func:`~gradmix.models.engineer.compressed_by_gain_reduction`): the habits' ratio, attack, release and knee,
    the threshold where it takes the habits' reduction off the track
    (:func:`~gradmix.models.engineer.wanted_gain_reduction_db`: a song's taste of a dB or two, half for bright
    tracks), and the fader raised by what it takes. Otherwise the compressors are the starting model's own."""
    pan_width: float | None = None
    """The target's pan of each track is this times its side in the song
    (:func:`~gradmix.models.controller.arrangement_side`, -1 .. 1: the darker of a pair left, the pairs further out
    as they get brighter, low tracks centred); None: the starting model's own pans. Needs ``model.pan_side``."""


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    habit_eq: HabitEqConfig = field(default_factory=HabitEqConfig)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        return _build(cls, d or {}, "")

    @classmethod
    def load(cls, path: str | os.PathLike) -> TrainConfig:
        p = Path(path)
        if not p.is_file():
            raise GradmixError(f"{p}: no such config file")
        try:
            data = yaml.safe_load(p.read_text())
        except yaml.YAMLError as exc:
            raise GradmixError(f"{p}: not valid YAML ({str(exc).splitlines()[0]})") from None
        cfg = cls.from_dict(data)
        base = p.resolve().parent  # paths in the file are relative to it
        cfg.data.songs = [str(base / s) if not Path(s).is_absolute() else s for s in cfg.data.songs]
        if not Path(cfg.run.out).is_absolute():
            cfg.run.out = str(base / cfg.run.out)
        if cfg.run.init and not Path(cfg.run.init).is_absolute():
            cfg.run.init = str(base / cfg.run.init)
        return cfg

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["model"] = self.model.to_dict()
        return d


def _build(cls, d: Any, where: str):
    if not isinstance(d, dict):
        raise GradmixError(f"config{where}: expected a mapping, got {type(d).__name__}")
    names = [f.name for f in dataclasses.fields(cls)]
    kw = {}
    for key, value in d.items():
        if key not in names:
            raise GradmixError(f"config{where}: unknown key {key!r} (one of {', '.join(names)})")
        sub = _NESTED.get((cls, key))
        kw[key] = _build(sub, value, f"{where}.{key}") if sub else value
    if cls is ModelConfig and "channels" in kw:
        kw["channels"] = tuple(kw["channels"])
    try:
        return cls(**kw)
    except TypeError as exc:
        raise GradmixError(f"config{where}: {exc}") from None


_NESTED = {
    (TrainConfig, "data"): DataConfig,
    (TrainConfig, "model"): ModelConfig,
    (TrainConfig, "optim"): OptimConfig,
    (TrainConfig, "run"): RunConfig,
    (TrainConfig, "habit_eq"): HabitEqConfig,
    (OptimConfig, "loss"): LossWeights,
}


def check(cfg: TrainConfig) -> None:
    """Raise :class:`GradmixError` naming the first bad value."""
    if cfg.data.regime not in REGIMES:
        raise GradmixError(f"config.data.regime: {cfg.data.regime!r} is not one of {', '.join(REGIMES)}")
    if not cfg.data.songs:
        raise GradmixError("config.data.songs: give at least one dataset folder")
    if cfg.data.sample_rate < 40000:
        raise GradmixError(
            f"config.data.sample_rate: {cfg.data.sample_rate} Hz is too low for the console "
            "(its EQ ranges reach 18 kHz); use 44100 or 48000"
        )
    if not 0 <= cfg.data.self_supervised_fraction <= 1:
        raise GradmixError("config.data.self_supervised_fraction: must be within 0..1")
    if cfg.data.engineer_carves and not cfg.model.engineer_switch:
        raise GradmixError("config.data.engineer_carves: needs model.engineer_switch (the authors' heads set the tone)")
    if cfg.optim.loss.tracks_per_song < 0:
        raise GradmixError("config.optim.loss.tracks_per_song: must be >= 0 (0: every track)")
    if not 0 <= cfg.data.augment_compress <= 1:
        raise GradmixError("config.data.augment_compress: must be within 0..1")
    if cfg.optim.loss.track_weighting not in TRACK_WEIGHTINGS:
        raise GradmixError(
            f"config.optim.loss.track_weighting: {cfg.optim.loss.track_weighting!r} is not one of "
            f"{', '.join(TRACK_WEIGHTINGS)}"
        )
    for name, v in (
        ("data.seconds", cfg.data.seconds),
        ("data.batch_size", cfg.data.batch_size),
        ("optim.lr", cfg.optim.lr),
        ("run.max_steps", cfg.run.max_steps),
        ("run.num_nodes", cfg.run.num_nodes),
    ):
        if not v > 0:
            raise GradmixError(f"config.{name}: must be > 0, got {v}")
    if not 0 <= cfg.optim.average_from <= cfg.run.max_steps:
        raise GradmixError(
            f"config.optim.average_from: must be within 0..run.max_steps ({cfg.run.max_steps}), "
            f"got {cfg.optim.average_from}"
        )
    if cfg.habit_eq.segments < 0:
        raise GradmixError("config.habit_eq.segments: must be >= 0 (0: an ordinary run)")
    if cfg.habit_eq.segments:
        if not (cfg.model.engineer_switch and cfg.model.track_head):
            raise GradmixError("config.habit_eq: needs model.engineer_switch and model.track_head (the head it trains)")
        if not cfg.run.init:
            raise GradmixError("config.habit_eq: needs run.init, the model whose engineer's EQ it refits")
    if cfg.habit_eq.max_level_rise_db is not None:
        if not cfg.habit_eq.authors_level:
            raise GradmixError("config.habit_eq.max_level_rise_db: needs habit_eq.authors_level (the move it caps)")
        if not cfg.habit_eq.max_level_rise_db >= 0:
            raise GradmixError(f"config.habit_eq.max_level_rise_db: must be >= 0, got {cfg.habit_eq.max_level_rise_db}")
    if cfg.habit_eq.pan_width is not None:
        if not cfg.model.pan_side:
            raise GradmixError("config.habit_eq.pan_width: needs model.pan_side (the head reads the side it pans to)")
        if not 0 <= cfg.habit_eq.pan_width <= 1:
            raise GradmixError(f"config.habit_eq.pan_width: must be within 0..1, got {cfg.habit_eq.pan_width}")
    if cfg.run.init and not Path(cfg.run.init).is_file():
        raise GradmixError(f"config.run.init: {cfg.run.init}: no such model file")
    devices = cfg.run.devices
    if devices != "auto" and not (isinstance(devices, int) and devices > 0):
        raise GradmixError(f"config.run.devices (--devices): {devices!r} is not a number of devices (>= 1) or 'auto'")


def check_lightning(cfg: TrainConfig) -> None:
    """Refuse an accelerator or strategy name Lightning does not know (its own error is a traceback)."""
    from lightning.pytorch.accelerators import AcceleratorRegistry
    from lightning.pytorch.strategies import StrategyRegistry

    for key, known in (
        ("accelerator", ["auto", "gpu", *sorted(AcceleratorRegistry.available_accelerators())]),
        ("strategy", ["auto", *StrategyRegistry.available_strategies()]),
    ):
        value = getattr(cfg.run, key)
        if value not in known:
            names = ", ".join(known[:6]) + (", ..." if len(known) > 6 else "")
            raise GradmixError(f"config.run.{key} (--{key}): {value!r} is not one of {names}")


def training_songs(cfg: DataConfig) -> list:
    songs = [s for folder in cfg.songs for s in find_songs(folder) if s.name not in set(cfg.exclude)]
    if cfg.regime == "supervised":
        songs = [s for s in songs if s.mix is not None]
    songs = [s for s in songs if len(s.stems) <= cfg.max_tracks]
    if not songs:
        raise GradmixError(f"no training songs in {', '.join(cfg.songs)} for the {cfg.regime} regime")
    return songs


def _lightning_module(cfg: TrainConfig, per_track: bool):
    import lightning as L

    augmentation = cfg.data.augmentation

    class MixTraining(L.LightningModule):
        """The controller, the console and the loss; one step renders a batch and compares it with targets."""

        def __init__(self) -> None:
            super().__init__()
            self.layout = Layout.default()
            self.model = MixController(self.layout, cfg.model)
            if cfg.optim.train_only:
                names = [name for name, _ in self.model.named_parameters()]
                for part in cfg.optim.train_only:
                    if not any(name.startswith(part) for name in names):
                        raise GradmixError(f"config.optim.train_only: the model has no part {part!r}")
                for name, p in self.model.named_parameters():
                    p.requires_grad_(any(name.startswith(part) for part in cfg.optim.train_only))
            self.loss = MixLoss(cfg.data.sample_rate, cfg.optim.loss)
            self.track_loss = TrackLoss(cfg.data.sample_rate, cfg.optim.loss) if per_track else None
            self.sr = cfg.data.sample_rate

        def training_step(self, batch, index):
            tracks, mask, mono = batch.tracks, batch.mask, batch.mono
            lufs = track_loudness(tracks, self.sr)  # measured once: what sounds, and each track's normalisation
            heard = sounding_mask(lufs, mask)
            g = torch.Generator().manual_seed(cfg.run.seed * 1_000_003 + self.global_step * 97 + self.global_rank)
            gain_db = (normalization_gain_db(lufs) * heard).to(tracks.dtype)  # normalization_db: 0 dB where unheard
            clean = tracks * torch.pow(10.0, gain_db / 20)[..., None, None]
            if augmentation.enabled:
                tracks = augment_tracks(tracks, augmentation, g, sample_rate=self.sr)
                x = tracks * torch.pow(10.0, normalization_db(tracks, mask, self.sr) / 20)[..., None, None]
            else:
                x = clean
            emb = self.model.embed(x, sample_rate=self.sr)
            target, use_mix, made = self._target(batch, x, g, emb, heard)
            z = kl = None
            if cfg.model.style_dim:  # conditional VAE: the style of the target mix, sampled
                mu, logvar = self.model.encode_style(target, sample_rate=self.sr)
                z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
                kl = 0.5 * (mu.square() + logvar.exp() - 1 - logvar).sum(-1).mean()
            controls = self.model.decide(emb, heard, z, engineer=(~use_mix).to(x.dtype))
            params = self.layout.denormalize(controls)
            estimate, strips = self.layout.render(x, params, sample_rate=self.sr, mask=mask, mono=mono)
            loss, terms = self.loss(estimate, target)
            if made is not None and cfg.optim.loss.control:
                engineered = heard & ~use_mix[:, None]
                terms["control"] = control_loss(controls, made[2], engineered)
                loss = loss + cfg.optim.loss.control * terms["control"]
            if self.track_loss is not None:
                track_loss, track_terms = self._track_terms(batch, clean, strips, params, use_mix, made, g)
                loss = loss + track_loss
                terms.update({f"track_{k}": v for k, v in track_terms.items()})
            if kl is not None:
                loss = loss + cfg.optim.kl_weight * kl
                terms["kl"] = kl.detach()
            if z is not None and cfg.optim.style_info_weight > 0:
                info = (self.model.encode_style(estimate, sample_rate=self.sr)[0] - z.detach()).square().mean()
                loss = loss + cfg.optim.style_info_weight * info
                terms["style_info"] = info.detach()
            if not torch.isfinite(loss):
                raise GradmixError(f"non-finite loss at step {self.global_step} (songs {batch.songs})")
            self.log("loss", loss, prog_bar=True, batch_size=tracks.shape[0])
            for k, v in terms.items():
                self.log(f"loss_{k}", v, batch_size=tracks.shape[0])
            return loss

        def _target(self, batch, x, g, emb, heard):
            """The target mix ``(B, 2, T)`` of each song, which songs use their human mix ``(B,)``, and the
            engineer-like console that made the others (``(strips, params, controls)``, or ``None`` when every
            song uses its human mix), set by the habits of the tracks the network hears ``x`` (normalised, and
            augmented where augmentation is on) and rendered from them: only human targets ask the network to undo
            the augmentation, so the settings of an engineer-like target are the ones its audio asks for (a carved
            target's tone excepted: the authors' heads decide it from the same ``x``, with what they learnt of
            undoing it). ``emb``: the network's track embeddings of ``x`` ``(B, N, features)``, from which those
            heads decide; ``heard`` ``(B, N)``: the tracks that sound in the segment, the ones decided with."""
            use_mix = batch.has_mix if cfg.data.regime != "self_supervised" else torch.zeros_like(batch.has_mix)
            if cfg.data.regime == "mixed" and cfg.data.self_supervised_fraction > 0:
                # on the CPU on purpose: g is the step's one CPU stream, drawn in turn by the augmentation, this
                # draw, the engineer's habits and the track picks; a CUDA generator draws other numbers, and a
                # generator of its own here would shift every later draw of a CPU run. What crosses to the
                # device is small: this draw (a number a song) and the engineer's controls below.
                draw = torch.rand(use_mix.shape, generator=g).to(x.device)
                use_mix = use_mix & (draw >= cfg.data.self_supervised_fraction)
            if bool(use_mix.all()):
                return batch.mix, use_mix, None
            with torch.no_grad():
                c = engineer_controls(
                    self.layout, x.shape[0], x.shape[1], g, dtype=x.dtype, audio=x, mask=heard, sample_rate=self.sr
                )
                c = Controls(*(v.to(x.device) for v in (c.strip, c.sends, c.buses, c.master)))  # made on the CPU
                if cfg.data.engineer_carves:
                    authors = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
                    c = carve_on(c, self.model.decide(emb, heard, engineer=authors), self.layout)
                params = self.layout.denormalize(c)
                made, strips = self.layout.render(x, params, sample_rate=self.sr, mask=batch.mask, mono=batch.mono)
            return torch.where(use_mix[:, None, None], batch.mix, made), use_mix, (strips, params, c)

        def _track_terms(self, batch, clean, strips, params, use_mix, made, g):
            """The per-track loss on up to ``tracks_per_song`` tracks per song: against the wet stems where a
            song uses its human mix, against the engineer-like console's parts where it does not."""
            human_wet = batch.has_wet if batch.has_wet is not None else torch.zeros_like(batch.mask)
            has_wet = torch.where(use_mix[:, None], human_wet, batch.mask)
            wet_all = batch.wet if batch.wet is not None else torch.zeros_like(clean)
            sounding = active_tracks(clean, torch.where(use_mix[:, None, None, None], wet_all, clean), has_wet)
            index, valid = pick_tracks(sounding, cfg.optim.loss.tracks_per_song, g)
            if index.shape[1] == 0:
                return self.track_loss(strips[:, :0], strips[:, :0], valid, strips[:, 0], strips[:, 0])

            def pick(t):
                return t.gather(1, index.view(*index.shape, *[1] * (t.dim() - 2)).expand(-1, -1, *t.shape[2:]))

            def parts_and_mix(strips, params):
                chosen = dataclasses.replace(params, sends_db=pick(params.sends_db))
                return (
                    track_outputs(self.layout, pick(strips), chosen, sample_rate=self.sr),
                    pre_master(self.layout, strips * has_wet[..., None, None], params, sample_rate=self.sr),
                )

            parts, mix = parts_and_mix(strips, params)
            wet, wet_mix = pick(wet_all), (wet_all * has_wet[..., None, None]).sum(1)
            if made is not None:
                with torch.no_grad():
                    made_parts, made_mix = parts_and_mix(*made[:2])
                wet = torch.where(use_mix[:, None, None, None], wet, made_parts)
                wet_mix = torch.where(use_mix[:, None, None], wet_mix, made_mix)
            return self.track_loss(parts, wet, valid, mix, wet_mix)

        def configure_optimizers(self):
            learning = [p for p in self.model.parameters() if p.requires_grad]
            opt = torch.optim.AdamW(learning, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": lr_schedule(opt, cfg), "interval": "step"}}

        def on_train_epoch_start(self) -> None:
            self.trainer.train_dataloader.dataset.set_epoch(self.current_epoch)

    return MixTraining()


def weight_average(first_step: int):
    """A Lightning callback that averages the model's weights (uniformly) after every optimizer step from
    ``first_step`` (1-based) on and leaves the mean in the model when training ends; resumable (its checkpoints
    hold the mean as ``state_dict`` and the last weights as ``current_model_state``)."""
    from lightning.pytorch.callbacks import WeightAveraging

    class FromStep(WeightAveraging):
        def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
            return step_idx is not None and step_idx + 1 >= first_step

    return FromStep()


def lr_schedule(opt: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """``optim.warmup_steps`` of linear warm-up, then a cosine decay to 0 at ``run.max_steps``."""
    total, warm = cfg.run.max_steps, max(1, cfg.optim.warmup_steps)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def style_center(model: MixController, songs: list, data: DataConfig, segments: int = 3) -> torch.Tensor:
    """Mean of q(z | mix) over a few segments of every song's human mix (zeros when no song has one)."""
    from gradmix.data import random_example

    mus = []
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for song in [s for s in songs if s.mix is not None]:
            for _ in range(segments):
                ex = random_example(song, seconds=data.seconds, sample_rate=data.sample_rate, generator=g)
                mus.append(model.encode_style(ex.mix[None], sample_rate=data.sample_rate)[0][0])
    return torch.stack(mus).mean(0) if mus else torch.zeros(model.cfg.style_dim)


def add_style_bank(
    model: MixController, songs: list, sample_rate: int, *, window_s: float = 10.0, most_s: float = 90.0
) -> None:
    """The styles ``gradmix sample`` draws from (:func:`gradmix.generate.build_style_bank`): every whole
    ``window_s`` window of the first ``most_s`` seconds of each song with a human mix."""
    from gradmix.data import read_example, song_seconds
    from gradmix.generate import build_style_bank

    windows = []
    for song in [s for s in songs if s.mix is not None]:
        length = min(most_s, song_seconds(song))
        for k in range(max(1, int(length // window_s))):
            ex = read_example(song, offset_s=k * window_s, seconds=min(window_s, length), sample_rate=sample_rate)
            windows.append((ex.heard_tracks(), ex.mix))
    if windows:
        build_style_bank(model, windows, sample_rate)


def warm_start(model: MixController, path: str | os.PathLike) -> None:
    """Start ``model`` from the weights of the model file ``path`` where the two agree, so that a recipe can grow
    a trained model: a tensor of the same name and shape is copied; a linear layer with more inputs than the
    file's (``model.track_descriptors`` added) keeps the file's columns and gets zeros for the new ones, so the
    model starts by deciding as the file's did; the engineer's heads (``model.engineer_switch``) start as the
    file's own heads where the file has none. Anything else keeps its initialisation. The style bank is not
    copied (training rebuilds it)."""
    source = load_model(path)[0].state_dict()
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.startswith("style_bank"):
                continue
            src = source.get(name, source.get(name.removeprefix("engineer_")))
            if src is None:
                continue
            if src.shape == tensor.shape:
                tensor.copy_(src)
            elif src.dim() == 2 and src.shape[0] == tensor.shape[0] and src.shape[1] < tensor.shape[1]:
                tensor.zero_()[:, : src.shape[1]].copy_(src)


def export_model(model: MixController, songs: list, cfg: TrainConfig, path: Path, **info: Any) -> Path:
    """Write a trained ``model`` to ``path``: its style centre and bank taken from the training ``songs``'
    human mixes (models with a style latent), its training songs and held-out ones recorded beside ``info``."""
    if cfg.model.style_dim:
        model.style_center.copy_(style_center(model, songs, cfg.data))
        add_style_bank(model, songs, cfg.data.sample_rate)
    recorded = {"songs": [s.name for s in songs], "excluded": list(cfg.data.exclude), "regime": cfg.data.regime}
    return save_model(path, model, sample_rate=cfg.data.sample_rate, info={**info, **recorded})


def encode_segments(model: MixController, songs: list, cfg: TrainConfig) -> list[tuple[Tensor, ...]]:
    """``habit_eq.segments`` training segments (in batches of ``data.batch_size``, augmented as in training,
    seeded by ``run.seed``), each batch as ``(embeddings (B, N, features), heard (B, N) (the tracks that sound in
    the segment, :func:`~gradmix.models.sounding_mask`), strip (B, N, params),
    sends (B, N, buses), level_db (B,), reduction_db (B, N))`` on the CPU: the model's track embeddings, the 0..1
    strip controls and sends of the EQ stage's target (:func:`habit_eq_target`, its compressors set by
    :func:`~gradmix.models.engineer.compressed_by_gain_reduction` with ``habit_eq.gain_reduction``), the level
    move that brings the song under that target to the level the authors' heads give it
    (:func:`~gradmix.models.engineer.song_level_db`), and the gain reduction (dB) each compressor of the target
    takes (0 without ``habit_eq.gain_reduction``)."""
    sr, layout, device = cfg.data.sample_rate, model.layout, next(model.parameters()).device
    data = SegmentDataset(
        songs, seconds=cfg.data.seconds, sample_rate=sr, seed=cfg.run.seed, length=cfg.habit_eq.segments
    )
    order = torch.Generator().manual_seed(cfg.run.seed)
    loader = torch.utils.data.DataLoader(
        data, batch_size=cfg.data.batch_size, shuffle=True, generator=order, collate_fn=collate, drop_last=True
    )
    batches = []
    with torch.no_grad():
        for i, batch in enumerate(progress(loader, "encoding segments", cfg.run.progress)):
            g = torch.Generator().manual_seed(cfg.run.seed * 1_000_003 + i * 97)
            tracks, mask = batch.tracks, sounding_mask(track_loudness(batch.tracks, sr), batch.mask)
            if cfg.data.augmentation.enabled:
                tracks = augment_tracks(tracks, cfg.data.augmentation, g, sample_rate=sr)
            x = tracks * torch.pow(10.0, normalization_db(tracks, mask, sr) / 20)[..., None, None]
            emb = model.embed(x.to(device), sample_rate=sr)
            c = engineer_controls(layout, *x.shape[:2], g, dtype=x.dtype, audio=x, mask=mask, sample_rate=sr)
            target, authors = habit_eq_target(model, emb, mask.to(device), c.strip.to(device), c.sends.to(device), sr)
            reduction = torch.zeros(mask.shape, dtype=torch.float64)
            if cfg.habit_eq.gain_reduction:
                wanted = wanted_gain_reduction_db(x, mask, sr, g)
                target, reduction = compressed_by_gain_reduction(layout, target, c, x.to(device), wanted, sr)
            level = song_level_db(layout, target, authors, x.to(device), sr, mask.to(device), batch.mono.to(device))
            batches.append((emb.cpu(), mask, target.strip.cpu(), target.sends.cpu(), level.cpu(), reduction.cpu()))
    return batches


def habit_eq_target(
    model: MixController, emb: Tensor, mask: Tensor, strip: Tensor, sends: Tensor, sample_rate: float
) -> tuple[Controls, Controls]:
    """The EQ stage's target for encoded segments (``emb`` ``(B, N, features)``, ``mask`` ``(B, N)``) whose habits'
    controls are ``strip`` and ``sends``: the engineer's own decision with the habits' EQ moves carved on the
    authors' heads' tone, level-matched (:func:`~gradmix.models.engineer.level_matched_eq`); and the authors' heads'
    decision."""
    b, layout = emb.shape[0], model.layout
    bands = slice(model.cfg.dim, model.cfg.dim + len(OCTAVE_BAND_CENTRES_HZ))  # descriptors: band shares in dB / 10
    habits = Controls(strip, sends, strip.new_zeros(b, 0), strip.new_zeros(b, 0))  # no bus or master here
    authors = model.decide(emb, mask, engineer=emb.new_zeros(b))
    own = model.decide(emb, mask, engineer=emb.new_ones(b))
    carved = carve_on(habits, authors, layout)
    return level_matched_eq(layout, own, carved, emb[..., bands] * 10, sample_rate), authors


def eq_stage_targets(
    model: MixController, batches: list[tuple[Tensor, ...]], habit_eq: HabitEqConfig
) -> list[Controls]:
    """The EQ stage's target controls (strips and sends) of each encoded batch (:func:`encode_segments`), each
    song moved to the authors' level with ``habit_eq.authors_level`` (its rise capped at
    ``habit_eq.max_level_rise_db``), each track panned ``habit_eq.pan_width`` times its side in the song with that
    option (the side read from the batch's descriptors, as ``model`` reads it)."""
    layout, targets = model.layout, []
    pan = next(i for i, slot in enumerate(layout.strip) if slot.effect.type_name == "pan")
    for emb, mask, strip, sends, level_db, _ in batches:
        if habit_eq.pan_width is not None:
            side = arrangement_side(emb[..., model.cfg.dim :], mask).to(strip)
            strip = strip.clone()
            strip[..., layout.strip_control_index(pan, "pan")] = (
                layout.strip[pan].spec("pan").normalize(habit_eq.pan_width * side)
            )
        target = Controls(strip, sends, strip.new_zeros(len(strip), 0), strip.new_zeros(len(strip), 0))
        if habit_eq.authors_level:
            cap = habit_eq.max_level_rise_db
            target = level_moved(layout, target, level_db if cap is None else level_db.clamp_max(cap))
        targets.append(target)
    return targets


def fit_habit_eq(cfg: TrainConfig) -> Path:
    """The EQ stage (``habit_eq.segments`` > 0): the engineer's per-track head of the model ``run.init`` learns
    to give each track the habits' EQ moves carved on the song's tone (:func:`carve_on`, the tone from the
    authors' heads), level-matched (:func:`~gradmix.models.engineer.level_matched_eq`: the fader takes back
    what the move adds to the track's loudness); every other setting stays the starting model's own decision.
    Only that head learns, on the control loss alone, so the segments are encoded once
    (:func:`encode_segments`, kept in ``<out>/habit_eq_segments.pt``) and each of the ``run.max_steps`` steps
    fits one of their batches, picked by the step's seed. Runs on a GPU with ``run.accelerator: gpu``; resumes from
    ``<out>/checkpoints/habit_eq.pt``; logs ``<out>/logs/habit_eq.csv``; returns ``<out>/model.pt``."""
    songs = training_songs(cfg.data)
    out = make_output_folder(cfg.run.out)
    device = compute_device({"gpu": "cuda", "auto": "auto"}.get(cfg.run.accelerator, cfg.run.accelerator))
    model = MixController(Layout.default(), cfg.model)
    warm_start(model, cfg.run.init)
    model.eval().to(device)
    cached = out / "habit_eq_segments.pt"
    if cached.is_file():
        batches = torch.load(cached, weights_only=True)
    else:
        batches = encode_segments(model, songs, cfg)
        write_atomically(cached, lambda f: torch.save(batches, f))
    if not batches:
        raise GradmixError(f"config.habit_eq.segments: {cfg.habit_eq.segments} is less than one batch")
    if len(batches[0]) != 6:
        raise GradmixError(f"{cached}: encoded by an older gradmix; delete it to encode the segments again")
    if any(bool((batch[5] > 0).any()) for batch in batches) != cfg.habit_eq.gain_reduction:
        raise GradmixError(
            f"{cached}: encoded with habit_eq.gain_reduction {not cfg.habit_eq.gain_reduction}; delete it to encode"
            " the segments again"
        )
    batches = [tuple(t.to(device) for t in batch) for batch in batches]
    targets = eq_stage_targets(model, batches, cfg.habit_eq)
    for p in model.parameters():
        p.requires_grad_(False)
    head = model.engineer_track_head
    for p in head.parameters():
        p.requires_grad_(True)
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    schedule = lr_schedule(opt, cfg)
    state, start = out / "checkpoints" / "habit_eq.pt", 0
    if state.is_file():
        saved = torch.load(state, weights_only=True)
        head.load_state_dict(saved["head"])
        opt.load_state_dict(saved["optimizer"])
        schedule.load_state_dict(saved["schedule"])
        start = int(saved["step"])
    log = out / "logs" / "habit_eq.csv"
    log.parent.mkdir(parents=True, exist_ok=True)
    if start == 0 or not log.is_file():
        log.write_text("step,loss,lr\n")
    for step in progress(
        range(start, cfg.run.max_steps), "EQ stage", cfg.run.progress, total=cfg.run.max_steps - start
    ):
        pick = int(
            torch.randint(len(batches), (), generator=torch.Generator().manual_seed(cfg.run.seed * 1_000_003 + step))
        )
        emb, mask = batches[pick][:2]
        loss = control_loss(model.decide(emb, mask, engineer=emb.new_ones(emb.shape[0])), targets[pick], mask)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(head.parameters(), cfg.optim.grad_clip)
        opt.step()
        schedule.step()
        if (step + 1) % cfg.run.log_every == 0:
            with log.open("a") as f:
                f.write(f"{step + 1},{loss.item():.6g},{schedule.get_last_lr()[0]:.6g}\n")
        if (step + 1) % cfg.run.checkpoint_every == 0 or step + 1 == cfg.run.max_steps:
            state.parent.mkdir(parents=True, exist_ok=True)
            blob = {
                "head": head.state_dict(),
                "optimizer": opt.state_dict(),
                "schedule": schedule.state_dict(),
                "step": step + 1,
            }
            write_atomically(state, lambda f: torch.save(blob, f))
    return export_model(model, songs, cfg, out / "model.pt", steps=cfg.run.max_steps, stage="habit_eq")


def train(cfg: TrainConfig) -> Path:
    """Train (or resume) and return the path of the exported ``model.pt``."""
    check(cfg)
    if cfg.habit_eq.segments:
        return fit_habit_eq(cfg)
    try:
        import lightning as L
        from lightning.pytorch.callbacks import ModelCheckpoint
        from lightning.pytorch.loggers import CSVLogger
    except ImportError:
        raise GradmixError("training needs Lightning: pip install -e '.[train]'") from None
    check_lightning(cfg)
    L.seed_everything(cfg.run.seed, workers=True, verbose=False)
    songs = training_songs(cfg.data)
    out = make_output_folder(cfg.run.out)
    data = SegmentDataset(
        songs,
        seconds=cfg.data.seconds,
        sample_rate=cfg.data.sample_rate,
        seed=cfg.run.seed,
        length=max(len(songs), cfg.data.batch_size * 50),
    )
    loader = torch.utils.data.DataLoader(
        data,
        batch_size=cfg.data.batch_size,
        shuffle=True,
        collate_fn=collate,
        num_workers=cfg.data.num_workers,
        drop_last=True,
        persistent_workers=cfg.data.num_workers > 0,
    )
    has_wet = any(stem.wet is not None for song in songs for stem in song.stems)
    per_track = cfg.optim.loss.per_track and (has_wet or cfg.data.regime != "supervised")
    if cfg.optim.loss.per_track and not has_wet:
        print(
            "note: no training song has wet stems; the human mixes train with the mix losses alone"
            + (", engineer-like targets with their per-track parts too" if per_track else ""),
            file=sys.stderr,
        )
    module = _lightning_module(cfg, per_track)
    last = out / "checkpoints" / "last.ckpt"
    if cfg.run.init and not last.is_file():
        warm_start(module.model, cfg.run.init)
    loggers = [CSVLogger(out, name="logs")]  # each (re)start writes logs/version_N
    try:
        from lightning.pytorch.loggers import TensorBoardLogger
        import tensorboard  # noqa: F401

        loggers.append(TensorBoardLogger(out, name="tensorboard"))
    except ImportError:
        pass
    ckpt = ModelCheckpoint(
        dirpath=out / "checkpoints", every_n_train_steps=cfg.run.checkpoint_every, save_last=True, save_top_k=0
    )
    trainer = L.Trainer(
        max_steps=cfg.run.max_steps,
        accelerator=cfg.run.accelerator,
        devices=cfg.run.devices,
        num_nodes=cfg.run.num_nodes,
        strategy=cfg.run.strategy,
        precision=cfg.run.precision,
        gradient_clip_val=cfg.optim.grad_clip,
        logger=loggers,
        callbacks=[ckpt] + ([weight_average(cfg.optim.average_from)] if cfg.optim.average_from else []),
        log_every_n_steps=cfg.run.log_every,
        enable_progress_bar=cfg.run.progress,
        enable_model_summary=False,
        default_root_dir=out,
    )
    trainer.fit(module, loader, ckpt_path=str(last) if last.is_file() else None)
    path = out / "model.pt"
    if trainer.is_global_zero:
        export_model(module.model, songs, cfg, path, steps=int(trainer.global_step))
    return path
