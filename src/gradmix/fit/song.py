"""The console as ``gradmix fit`` sees it: the whole song's render and error, and the console made linear in
the tracks' levels by holding the master's envelopes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from gradmix.console import Controls, Layout, Logits, Params, Slot, StripGroup, pre_master, render_chunked
from gradmix.effects import ParamSpec
from gradmix.fit.tuning import TUNING, FitTuning
from gradmix.models import MixController


@dataclass
class FitProblem:
    """A song to fit and how: the model (its layout is the console), the tracks, the target mix, all on one
    device (the model's), where every render, solve and search of the fit runs.

    Attributes:
        model: the mixing model; ``model.layout`` is the console that is fitted.
        x: the tracks ``(1, N, 2, samples)``.
        mono: ``(1, N)`` bool, the tracks whose channels are a duplicated mono signal.
        ref: the target mix ``(2, samples)``.
        sample_rate: Hz.
        tuning: fit's constants.
    """

    model: MixController
    x: Tensor
    mono: Tensor
    ref: Tensor
    sample_rate: int
    tuning: FitTuning = TUNING

    @property
    def layout(self) -> Layout:
        return self.model.layout

    def render(self, logits: Logits) -> Tensor:
        """The whole song's render ``(2, samples)`` with ``logits``, without gradients; the strips in chunks of
        tracks of at most ``tuning.chunk_samples`` samples, summed as they come, so that memory grows with the
        song's length, not with its tracks x length."""
        with torch.no_grad():
            params = self.layout.denormalize(Controls.from_logits(logits))
            group = StripGroup(self.layout.strip, range(self.x.shape[1]), params.strip)
            mix, _ = render_chunked(
                self.layout,
                [group],
                self.x,
                params,
                sample_rate=self.sample_rate,
                mono=self.mono,
                chunk_samples=self.tuning.chunk_samples,
                keep_strips=False,
            )
            return mix[0]

    def error(self, logits: Logits) -> float:
        """Sum of squares of the whole song's render with ``logits`` minus the target."""
        return float((self.render(logits) - self.ref).square().sum())


def to_logit(spec: ParamSpec, value: Tensor) -> Tensor:
    """The logit of a physical ``value`` of ``spec`` (clamped into its range, kept 1e-4 inside 0..1)."""
    u = spec.normalize(value.clamp(spec.min, spec.max)).clamp(1e-4, 1 - 1e-4)
    return torch.logit(u)


def held_envelope(before: Tensor, after: Tensor) -> Tensor:
    """``(batch, 1, samples)`` gain with ``after = before * gain`` (a linked envelope), read from the channel
    with the larger magnitude; 0 where the input is silent."""
    pick = before.abs().argmax(1, keepdim=True)
    b, a = before.gather(1, pick), after.gather(1, pick)
    return torch.where(b != 0, a / torch.where(b != 0, b, torch.ones_like(b)), torch.zeros_like(b))


def linearised(
    layout: Layout, params: Params, strips: Tensor, sample_rate: int, span: int
) -> tuple[Callable[[Sequence[Slot], Sequence[dict], Tensor], Tensor], Callable[[Tensor], Tensor]]:
    """``(run, master)`` for the console at ``params`` whose strips give ``strips (N, 2, samples)``:
    ``run(chain, chain_params, y)`` applies a chain to a batch ``(m, 2, span)``; ``master(y)`` applies the
    master chain with each dynamics effect's gain envelope held at the current mix's (a linear map of the
    first ``span`` samples)."""
    stage = pre_master(layout, strips[None], params, sample_rate=sample_rate)
    envelopes = []
    for slot, p in zip(layout.master, params.master):
        out = slot.effect(stage, p, sample_rate=sample_rate)
        envelopes.append(held_envelope(stage, out)[..., :span] if slot.effect.envelope else None)
        stage = out

    def run(chain: Sequence[Slot], chain_params: Sequence[dict], y: Tensor) -> Tensor:
        m = y.shape[0]
        for slot, p in zip(chain, chain_params):
            y = slot.effect(y, {k: v.expand(m, *v.shape[1:]) for k, v in p.items()}, sample_rate=sample_rate)
        return y

    def master(y: Tensor) -> Tensor:
        for slot, p, env in zip(layout.master, params.master, envelopes):
            y = y * env if env is not None else run([slot], [p], y)
        return y

    return run, master


def linear_console(layout: Layout) -> bool:
    """Whether ``layout`` is one the closed-form moves understand: strips of linear and dynamics effects ending
    in a pan, linear buses, a master of linear and dynamics effects."""
    strip = [s.effect for s in layout.strip]
    master = [s.effect for s in layout.master]
    buses = [s.effect for _, chain in layout.buses for s in chain]
    return (
        strip[-1].mono_in and all(e.linear or e.envelope for e in strip[:-1] + master) and all(e.linear for e in buses)
    )
