"""The level solve of ``gradmix fit``: every track's level, pan and sends by least squares."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from gradmix.console import SEND_SPEC, Controls, Layout, Logits, Params, render_strips
from gradmix.fit.song import FitProblem, linear_console, linearised, to_logit


def side_gains(pan: Tensor, mono: Tensor) -> Tensor:
    """``(tracks, 2)`` left/right gains of the console's pan slot: constant-power law for mono tracks, balance
    for stereo ones (see :func:`gradmix.dsp.pan`, :func:`gradmix.dsp.balance`)."""
    theta = (pan + 1) * (math.pi / 4)
    fade = torch.cos(pan.abs() * (math.pi / 2))
    one = torch.ones_like(fade)
    stereo = torch.stack([torch.where(pan > 0, fade, one), torch.where(pan < 0, fade, one)], -1)
    return torch.where(mono[:, None], torch.stack([torch.cos(theta), torch.sin(theta)], -1), stereo)


def pan_and_level(gains: Tensor, mono: Tensor) -> tuple[Tensor, Tensor]:
    """The inverse of :func:`side_gains` up to a level: ``(tracks, 2)`` gains >= 0 -> pan ``(tracks,)`` and the
    level in dB that the track needs besides."""
    left, right = gains.unbind(-1)
    theta = torch.atan2(right, left)
    loud = torch.maximum(left, right).clamp_min(1e-12)
    side = 2 / math.pi * torch.acos((torch.minimum(left, right) / loud).clamp(0, 1))
    pan = torch.where(mono, 4 / math.pi * theta - 1, torch.where(right < left, -side, side))
    level = torch.where(mono, torch.hypot(left, right), loud)
    return pan.clamp(-1, 1), 20 * torch.log10(level.clamp_min(1e-12))


def solve_levels(problem: FitProblem, logits: Logits) -> bool:
    """Set every track's level, pan and sends in ``logits`` (in place) by least squares on the waveform error
    of ``problem``, every other control held.

    With each master effect either linear or a gain envelope held at the current mix's, the output is linear
    in each track's left and right gains and, for fixed gains, in its send levels: alternating least squares
    on the first ``tuning.level_solve_s`` seconds (every effect is causal: the song's start alone is rendered);
    a track silent there keeps its level, pan and sends. A track's new level goes to its compressor's make-up
    gain (exact: after the dynamics), beyond that range to its input gain with the thresholds moved by as
    much (exact too while they stay in range: the dynamics see the same level relative to threshold). Kept
    only if the whole song's error falls.

    Returns:
        whether the controls changed.
    """
    layout, x, mono, ref, sample_rate = problem.layout, problem.x, problem.mono, problem.ref, problem.sample_rate
    if not linear_console(layout) or "gain" not in [s.effect.type_name for s in layout.strip]:
        return False
    n_tracks, n_buses = x.shape[1], len(layout.buses)
    span = min(x.shape[-1], int(problem.tuning.level_solve_s * sample_rate))
    with torch.no_grad():
        params = layout.denormalize(Controls.from_logits(logits))
        pre = render_strips(layout.strip[:-1], x[..., :span], params.strip[:-1], sample_rate=sample_rate, mono=mono)[0]
        gains = side_gains(params.strip[-1]["pan"][0], mono[0])
        sends = torch.pow(10.0, params.sends_db[0] / 20)  # (N, buses)
        run, master = linearised(layout, params, pre * gains[:, :, None], sample_rate, span)

        basis = x.new_zeros(n_tracks, 2, 2, span)  # (track, side, channel, samples)
        basis[:, 0, 0], basis[:, 1, 1] = pre[:, 0], pre[:, 1]
        flat = basis.flatten(0, 1)
        del basis, pre
        F = x.new_empty(n_tracks * 2, 1 + n_buses, 2, span)  # (track x side, 1 + bus, channel, samples)
        F[:, 0] = master(flat)
        for k, (_, chain) in enumerate(layout.buses):
            F[:, 1 + k] = master(run(chain, params.buses[k], flat))
        del flat
        J = F.reshape(n_tracks * 2 * (1 + n_buses), 2 * span)  # rows: (track, side, 1 + bus)
        target = ref[:, :span].reshape(-1)
        Q = J.new_zeros(len(J), len(J), dtype=torch.float64)
        r = J.new_zeros(len(J), dtype=torch.float64)
        block_samples = 1 << 16  # in double, a block of samples at a time: no double copy of J
        for a in range(0, J.shape[1], block_samples):
            block = J[:, a : a + block_samples].double()
            Q += block @ block.T
            r += block @ target[a : a + block_samples].double()
        del F, J, block
        ridge = 1e-9 * Q.diagonal().mean().clamp_min(1e-30)
        g, s = gains.double(), sends.double()
        heard = Q.diagonal().reshape(n_tracks, 2 * (1 + n_buses)).amax(1) > 1e-12 * float(Q.diagonal().max())

        def solve(A: Tensor, b: Tensor) -> Tensor:
            return torch.linalg.solve(A + ridge * torch.eye(len(A), dtype=A.dtype, device=A.device), b)

        for _ in range(problem.tuning.level_rounds):
            # gains: coefficient of column (track, side, j) = g[track, side] * (1, sends[track])[j]
            W = Q.new_zeros(n_tracks, 2, 1 + n_buses, n_tracks, 2)
            idx = torch.arange(n_tracks, device=Q.device)
            for side in range(2):
                W[idx, side, :, idx, side] = torch.cat([Q.new_ones(n_tracks, 1), s], 1)
            W = W.reshape(-1, 2 * n_tracks)
            g = solve(W.T @ Q @ W, W.T @ r).reshape(n_tracks, 2).clamp_min(0)
            if n_buses:
                a0 = Q.new_zeros(n_tracks, 2, 1 + n_buses)
                a0[:, :, 0] = g
                V = Q.new_zeros(n_tracks, 2, 1 + n_buses, n_tracks, n_buses)
                for b in range(n_buses):
                    V[idx, :, 1 + b, idx, b] = g
                V = V.reshape(-1, n_tracks * n_buses)
                a0 = a0.reshape(-1)
                s = solve(V.T @ Q @ V, V.T @ (r - Q @ a0)).reshape(n_tracks, n_buses)
                s = s.clamp(10 ** (SEND_SPEC.min / 20), 10 ** (SEND_SPEC.max / 20))

        g = torch.where(heard[:, None], g, gains.double())
        s = torch.where(heard[:, None], s, sends.double())
        pan, level_db = pan_and_level(g.to(x.dtype), mono[0])
        j_pan = layout.strip_control_index(len(layout.strip) - 1, "pan")
        pan_spec = layout.strip[-1].spec("pan")

        def with_offset(offset_db: float) -> Logits:
            trial = logits.copy()
            set_level(layout, trial, params, level_db + offset_db)
            trial.strip[0, :, j_pan] = to_logit(pan_spec, pan)
            if n_buses:
                trial.sends[0] = to_logit(SEND_SPEC, 20 * torch.log10(s.to(x.dtype)))
            return trial

        # the held envelopes do not see the master's dynamics answer a change of the overall level: that one
        # number is searched on the real console (a parabola through three levels, twice)
        tried = {c: problem.error(with_offset(c)) for c in (-1.0, 0.0, 1.0)}
        for width in (1.0, 0.25):
            centre = min(tried, key=tried.get)
            for d in (-width, width):
                if centre + d not in tried:
                    tried[centre + d] = problem.error(with_offset(centre + d))
            a, b, c = (tried[centre + d] for d in (-width, 0.0, width))
            bend = a - 2 * b + c
            if bend > 0:
                best = centre + max(-2.0, min(2.0, 0.5 * width * (a - c) / bend))
                if best not in tried:
                    tried[best] = problem.error(with_offset(best))
        best = min(tried, key=tried.get)
        if tried[best] >= problem.error(logits):
            return False
        for v, t in zip(logits, with_offset(best)):
            v.data.copy_(t)
    return True


def set_level(layout: Layout, logits: Logits, params: Params, level_db: Tensor) -> None:
    """Add ``level_db (tracks,)`` to each track: make-up gain of the strip's last dynamics slot first, then
    its gain slot with every threshold after it moved by as much."""
    types = [s.effect.type_name for s in layout.strip]
    rest = level_db
    dynamics = [i for i, s in enumerate(layout.strip) if "makeup_db" in [p.name for p in s.specs]]
    if dynamics:
        i = dynamics[-1]
        spec = layout.strip[i].spec("makeup_db")
        now = params.strip[i]["makeup_db"][0]
        new = (now + rest).clamp(spec.min, spec.max)
        logits.strip[0, :, layout.strip_control_index(i, "makeup_db")] = to_logit(spec, new)
        rest = rest - (new - now)
    g = types.index("gain")
    spec = layout.strip[g].spec("gain_db")
    now = params.strip[g]["gain_db"][0]
    new = (now + rest).clamp(spec.min, spec.max)
    moved = new - now
    logits.strip[0, :, layout.strip_control_index(g, "gain_db")] = to_logit(spec, new)
    for i in range(g + 1, len(layout.strip)):
        if "threshold_db" in [p.name for p in layout.strip[i].specs]:
            spec = layout.strip[i].spec("threshold_db")
            t = params.strip[i]["threshold_db"][0]
            logits.strip[0, :, layout.strip_control_index(i, "threshold_db")] = to_logit(spec, t + moved)
