"""The effect chains that effect removal estimates and undoes: which effects, in which order, which of their
parameters are estimated, how training and evaluation draw them, and how a batch of them is rendered.

A chain applies, in this order, any of :data:`REMOVABLE`: a 6-band parametric EQ (the console's default
bands; only the gains are estimated), a compressor (threshold, ratio, attack, release; knee 6 dB, no makeup),
a ``tanh`` distortion (drive, tone, mix), a feedback delay (time, feedback, mix) and a reverb (four decay
times, pre-delay, mix). An absent effect is bypassed (EQ gains 0, ratio 1, mix 0). Removal undoes them in
reverse order.

Levels: chains are drawn for a dry signal peaking at :data:`PEAK_DBFS`, and the estimator hears the wet
signal brought to the same peak. Scaling a chain's input by ``s`` is the same as scaling its output by ``s``
with the compressor's threshold raised and the distortion's drive lowered by ``20 log10 s`` dB, which
:func:`rescaled` applies, so a chain found at the estimator's level is also the one of the original file.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from gradmix.effects import Effect, ParamSpec, create

REMOVABLE = ("eq", "compressor", "distortion", "delay", "reverb")
"""The effects of a removal chain, in the order they are applied (and undone in reverse)."""

ESTIMATED = {
    "eq": ("gain_db",),
    "compressor": ("threshold_db", "ratio", "attack_ms", "release_ms"),
    "distortion": ("drive_db", "tone_db", "mix"),
    "delay": ("time_ms", "feedback", "mix"),
    "reverb": ("decay_s", "predelay_ms", "mix"),
}
"""The parameters the estimator predicts, per effect (the others keep :data:`FIXED` or their defaults)."""

FIXED = {"compressor": {"knee_db": 6.0, "makeup_db": 0.0}}
"""Parameters a removal chain holds fixed."""

BYPASS = {
    "eq": {"gain_db": 0.0},
    "compressor": {"ratio": 1.0},
    "distortion": {"mix": 0.0},
    "delay": {"mix": 0.0},
    "reverb": {"mix": 0.0},
}
"""The settings that make an absent effect pass the signal unchanged."""

PEAK_DBFS = -1.0
"""The sample peak of the dry signals chains are drawn for, and of the wet signals the estimator hears."""

EFFECTS: dict[str, Effect] = {name: create(name) for name in REMOVABLE}
"""One instance of each removable effect (their defaults: the console's EQ bands, reverb seed 0, tanh)."""


def estimated_specs() -> list[tuple[str, ParamSpec]]:
    """Every scalar the estimator predicts, in its output order: ``(effect, spec)``; 22 of them."""
    return [(name, spec) for name in REMOVABLE for spec in EFFECTS[name].specs if spec.name in ESTIMATED[name]]


@dataclass
class ChainBatch:
    """A batch of removal chains.

    Attributes:
        present: ``(batch, effects)`` bool, one column per :data:`REMOVABLE` effect.
        params: physical values per effect, ``{effect: {name: (batch,) or (batch, bands)}}``, complete
            (absent effects hold their :data:`BYPASS` settings).
    """

    present: Tensor
    params: dict[str, dict[str, Tensor]]

    def controls(self) -> Tensor:
        """The estimated parameters as 0..1 ``(batch, 22)`` in :func:`estimated_specs` order (the estimator's
        targets; an absent effect's columns hold its bypass values, which the loss masks)."""
        cols = []
        for name, spec in estimated_specs():
            value = self.params[name][spec.name]
            if value.dim() == 2:
                value = value[:, spec.band]
            cols.append(spec.normalize(value.clamp(spec.min, spec.max)))
        return torch.stack(cols, 1).float()

    def item(self, i: int) -> list[tuple[str, dict[str, float | list[float]]]]:
        """Item ``i``'s chain: its present effects in order, each with complete physical parameters."""
        out = []
        for k, name in enumerate(REMOVABLE):
            if bool(self.present[i, k]):
                out.append((name, {n: v[i].tolist() for n, v in self.params[name].items()}))
        return out


def from_controls(present: Tensor, controls: Tensor) -> ChainBatch:
    """The chains of the estimator's decisions: ``present`` ``(batch, effects)`` bool and 0..1 ``controls``
    ``(batch, 22)``; absent effects are bypassed."""
    b = present.shape[0]
    params: dict[str, dict[str, Tensor]] = {}
    cols: dict[tuple[str, str], list[Tensor]] = {}
    for j, (name, spec) in enumerate(estimated_specs()):
        cols.setdefault((name, spec.name), []).append(spec.denormalize(controls[:, j].double().clamp(0, 1)))
    for k, name in enumerate(REMOVABLE):
        full = EFFECTS[name].complete(FIXED.get(name, {}))
        p = {}
        for pname, default in full.items():
            if (name, pname) in cols:
                values = cols[(name, pname)]
                p[pname] = torch.stack(values, 1) if len(values) > 1 else values[0]
            else:
                p[pname] = torch.as_tensor(default, dtype=torch.float64).expand(b, *torch.as_tensor(default).shape)
        for pname, off in BYPASS[name].items():
            p[pname] = torch.where(_rows(present[:, k], p[pname]), p[pname], torch.as_tensor(off, dtype=torch.float64))
        params[name] = p
    return ChainBatch(present.bool(), params)


def _rows(mask: Tensor, like: Tensor) -> Tensor:
    return mask.view(-1, *[1] * (like.dim() - 1))


def _uniform(g: torch.Generator, n: int, lo: float, hi: float) -> Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g, dtype=torch.float64)


def _log_uniform(g: torch.Generator, n: int, lo: float, hi: float) -> Tensor:
    return torch.exp(_uniform(g, n, torch.log(torch.tensor(lo)).item(), torch.log(torch.tensor(hi)).item()))


def draw_chains(batch: int, generator: torch.Generator, present: Tensor | None = None, p: float = 0.4) -> ChainBatch:
    """Random chains of production-like settings (for a dry signal peaking at :data:`PEAK_DBFS`).

    Args:
        batch: how many.
        generator: the CPU generator of every draw.
        present: ``(batch, effects)`` bool, which effects each chain has; default: each with probability ``p``.

    ============  ==========================================================================================
    EQ            gains N(0, 5) dB within +-12, one band at +-U(4, 12) dB (so the EQ is audible)
    compressor    threshold U(6, 24) dB below the peak, ratio logU(2, 12), attack logU(0.5, 30) ms,
                  release logU(30, 600) ms
    distortion    drive U(6, 30) dB, tone U(-6, 6) dB, mix U(0.3, 1)
    delay         time logU(60, 800) ms, feedback U(0.05, 0.6), mix U(0.15, 0.5)
    reverb        decay logU(0.4, 3.5) s times (1.2, 1, 0.85, 0.65) over the bands, pre-delay U(0, 40) ms,
                  mix U(0.15, 0.5)
    ============  ==========================================================================================
    """
    g, n = generator, batch
    if present is None:
        present = torch.rand(n, len(REMOVABLE), generator=g) < p
    gains = (5.0 * torch.randn(n, 6, generator=g, dtype=torch.float64)).clamp(-12, 12)
    band = torch.randint(0, 6, (n,), generator=g)
    sign = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0).double()
    gains[torch.arange(n), band] = sign * _uniform(g, n, 4.0, 12.0)
    tilt = torch.tensor([1.2, 1.0, 0.85, 0.65], dtype=torch.float64)
    decay = (_log_uniform(g, n, 0.4, 3.5)[:, None] * tilt).clamp(0.1, 6.0)
    drawn = {
        "eq": {"gain_db": gains},
        "compressor": {
            "threshold_db": PEAK_DBFS - _uniform(g, n, 6.0, 24.0),
            "ratio": _log_uniform(g, n, 2.0, 12.0),
            "attack_ms": _log_uniform(g, n, 0.5, 30.0),
            "release_ms": _log_uniform(g, n, 30.0, 600.0),
        },
        "distortion": {
            "drive_db": _uniform(g, n, 6.0, 30.0),
            "tone_db": _uniform(g, n, -6.0, 6.0),
            "mix": _uniform(g, n, 0.3, 1.0),
        },
        "delay": {
            "time_ms": _log_uniform(g, n, 60.0, 800.0),
            "feedback": _uniform(g, n, 0.05, 0.6),
            "mix": _uniform(g, n, 0.15, 0.5),
        },
        "reverb": {"decay_s": decay, "predelay_ms": _uniform(g, n, 0.0, 40.0), "mix": _uniform(g, n, 0.15, 0.5)},
    }
    params = {}
    for k, name in enumerate(REMOVABLE):
        full = {
            pn: torch.as_tensor(v, dtype=torch.float64) for pn, v in EFFECTS[name].complete(FIXED.get(name, {})).items()
        }
        full = {pn: v.expand(n, *v.shape).clone() for pn, v in full.items()}
        full.update(drawn[name])
        for pname, off in BYPASS[name].items():
            full[pname] = torch.where(_rows(present[:, k], full[pname]), full[pname], torch.as_tensor(off).double())
        params[name] = full
    return ChainBatch(present.bool(), params)


def render_chains(x: Tensor, chains: ChainBatch, sample_rate: float) -> Tensor:
    """Each item of ``x`` ``(batch, channels, samples)`` through its chain (absent effects bypassed)."""
    with torch.no_grad():
        y = x.clone()
        for k, name in enumerate(REMOVABLE):
            rows = chains.present[:, k].nonzero().flatten()
            if rows.numel():  # the others are bypassed: left as they are
                p = {n: v[rows].to(x) for n, v in chains.params[name].items()}
                y[rows] = EFFECTS[name](y[rows], p, sample_rate=sample_rate)
        return y


def peak_gain_db(x: Tensor) -> Tensor:
    """The gain in dB ``(batch,)`` that brings each item of ``(batch, channels, samples)`` to :data:`PEAK_DBFS`
    (0 for silence)."""
    peak = x.detach().abs().amax((1, 2))
    return torch.where(peak > 0, PEAK_DBFS - 20 * torch.log10(peak.clamp_min(1e-30)), torch.zeros_like(peak))


def rescaled(chains: ChainBatch, gain_db: Tensor) -> ChainBatch:
    """The chains that map ``x`` to ``y`` when ``chains`` maps ``x * 10^(gain_db / 20)`` to ``y * 10^(gain_db /
    20)`` (``gain_db`` ``(batch,)``): the compressor's threshold and the distortion's drive move with the
    level (see the module docstring); the drive stays >= 0."""
    params = {name: dict(p) for name, p in chains.params.items()}
    g = gain_db.double()
    params["compressor"]["threshold_db"] = (params["compressor"]["threshold_db"] - g).clamp(-60.0, 0.0)
    params["distortion"]["drive_db"] = (params["distortion"]["drive_db"] + g).clamp_min(0.0)
    return ChainBatch(chains.present, params)
