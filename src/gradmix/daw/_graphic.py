"""A gradmix graphic EQ as the parametric bell bands it is made of."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def bell_bands(gain_db: Sequence[float], sample_rate: float) -> list[tuple[float, float, float]]:
    """``(freq_hz, filter gain dB, q)`` of each RBJ peak filter of :func:`gradmix.dsp.graphic_eq`.

    The graphic EQ is a cascade of peak filters at the band centres (moved below 0.9 x Nyquist where
    needed) with one Q per band count; the filter gains are not the requested band gains but the ones
    that make the cascade meet them (:func:`gradmix.dsp.eq.graphic_eq_filter_gains`).
    """
    from gradmix.dsp.eq import graphic_design, graphic_eq_filter_gains

    g = torch.tensor([list(gain_db)], dtype=torch.float64)
    fc, q, _ = graphic_design(g.shape[1], float(sample_rate))
    filt = graphic_eq_filter_gains(g, sample_rate)[0]
    return [(float(f), float(v), float(b)) for f, v, b in zip(fc, filt, q)]
