"""Speed and accuracy of gradmix's effects against dasp-pytorch, torchcomp, pedalboard, scipy and pyloudnorm.

What it measures, per effect and per signal:

- wall time in **seconds per track-second** (wall time / (tracks x seconds of audio)), the median of
  several runs after one warm-up run (numba JIT-compiles torchcomp's kernel on first use);
- ``fwd``: forward only (torch inference, ``torch.no_grad()``);
- ``fwd+bwd``: forward, then the gradient of ``y.square().mean()`` with respect to the input and to every
  parameter tensor (all ``requires_grad=True``, one value per track);
- ``gradmix fwd / this``: on pedalboard rows, gradmix's forward time divided by this one (goal: <= 3);
- ``max err``: for the EQs, ``20 log10(max |y - ref| / max |ref|)`` in dB, ``ref`` being scipy's float64
  ``sosfilt`` with the same RBJ coefficients (:func:`gradmix.dsp.biquad_coefficients`); for gain, against
  ``x * 10 ** (gain_db / 20)`` in float64; for loudness, the largest difference to pyloudnorm in LU;
  ``-`` where there is no common reference.

Signals (44.1 kHz, float32, seeded): (a) 16 mono tracks x 10 s and (b) 8 stereo tracks x 5 s of noise in
decaying "note" bursts at about -20 dBFS RMS over a -54 dBFS floor, so that every dynamics processor acts;
plus the goal case of the reverb: 16 stereo tracks x 10 s. torch runs on 2 threads; the numpy-based
libraries (pedalboard, scipy, pyloudnorm) process the tracks one by one on a pool of 2 threads, so every
library gets the same two cores. pedalboard's reverb (Freeverb) is a different algorithm; its Convolution
with gradmix's own 3 s impulse response is shown beside it for a like-for-like comparison.

Run from the repository root::

    python benchmarks/effects.py              # full run, several minutes
    python benchmarks/effects.py --quick      # smoke run: shorter signals, fewer repeats (< 2 minutes)
    python benchmarks/effects.py --markdown   # print a Markdown table instead of a rich one

pedalboard (GPL-3) is imported by this script only, never by the gradmix package.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import scipy.signal
import torch
from torch import Tensor

import gradmix.dsp as gd
from gradmix.dsp import linear_scan

SR = 44100
THREADS = 2
EQ_SHAPES = ("low_shelf", "peak", "peak", "peak", "peak", "high_shelf")
EQ_FREQS_HZ = (100.0, 300.0, 1000.0, 3000.0, 6000.0, 10000.0)
EQ_Q = (0.707, 1.0, 1.5, 1.0, 2.0, 0.707)
REVERB_DECAY_S = 3.0
DASP_DECAY = math.log(1000.0) / 10 - 0.1  # dasp's envelope exp(-(10 d + 1) t), t in 0..1 over the IR: RT60 = IR

GOAL_PEQ = 0.010
GOAL_COMPRESSOR = 0.004
GOAL_REVERB_TOTAL_S = 3.0
GOAL_PEDALBOARD_RATIO = 3.0


# ----------------------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Signal:
    name: str
    tracks: int
    channels: int
    seconds: float


@dataclass(frozen=True)
class Settings:
    signals: tuple[Signal, ...]
    reverb_goal: Signal
    repeats: int
    budget_s: float  # a measurement whose first run takes longer than this is not repeated
    dasp_reverb_subset: tuple[int, float]  # (tracks, seconds) dasp's direct-convolution reverb is timed on
    reverb_goal_repeats: int


FULL = Settings(
    signals=(Signal("16 mono x 10 s", 16, 1, 10.0), Signal("8 stereo x 5 s", 8, 2, 5.0)),
    reverb_goal=Signal("16 stereo x 10 s", 16, 2, 10.0),
    repeats=5,
    budget_s=30.0,
    dasp_reverb_subset=(1, 0.5),
    reverb_goal_repeats=3,
)
QUICK = Settings(
    signals=(Signal("16 mono x 1 s", 16, 1, 1.0), Signal("8 stereo x 1 s", 8, 2, 1.0)),
    reverb_goal=Signal("16 stereo x 10 s", 16, 2, 10.0),
    repeats=2,
    budget_s=3.0,
    dasp_reverb_subset=(1, 0.05),
    reverb_goal_repeats=1,
)


# ----------------------------------------------------------------------------------------------- signals


def make_signal(sig: Signal, seed: int = 0) -> Tensor:
    """Noise in decaying bursts (one every 0.25..0.6 s per track) over a quiet floor, ``(tracks, ch, n)``."""
    gen = torch.Generator().manual_seed(seed)
    n = int(round(sig.seconds * SR))
    t = torch.arange(n, dtype=torch.float64) / SR
    period = 0.25 + 0.35 * torch.rand(sig.tracks, 1, 1, generator=gen, dtype=torch.float64)
    env = 0.02 + torch.exp(-torch.remainder(t, period) / 0.12)
    noise = torch.randn(sig.tracks, 1, n, generator=gen, dtype=torch.float64)
    if sig.channels == 2:  # partly correlated stereo, so that width and balance matter
        noise = (noise + 0.5 * torch.randn(sig.tracks, 2, n, generator=gen, dtype=torch.float64)) / math.sqrt(1.25)
    return (0.1 * env * noise).to(torch.float32)


# ----------------------------------------------------------------------------------------------- implementations


@dataclass
class TorchImpl:
    """A differentiable implementation: ``apply(x, params)``; every tensor in ``params`` gets a gradient."""

    library: str
    apply: Callable[[Tensor, dict[str, Tensor]], Tensor]
    params: dict[str, Tensor]
    note: str = ""
    subset: tuple[int, float] | None = None  # time on (tracks, seconds) only: for very slow implementations


@dataclass
class NumpyImpl:
    """A forward-only implementation: ``process(track_index, track)``, track ``(channels, samples)``."""

    library: str
    process: Callable[[int, np.ndarray], np.ndarray]
    note: str = ""
    dtype: type = np.float32
    goal: bool = True  # pedalboard rows: counts for the "within 3x of pedalboard" goal
    reference: bool = False  # this row is the reference of the error column


@dataclass
class Case:
    effect: str
    impls: list
    reference: Callable[[np.ndarray], np.ndarray] | None = None  # float64 reference output for the whole batch
    error_unit: str = "dB"  # "dB" relative to the reference peak, or "LU" absolute


@dataclass
class Row:
    signal: str
    effect: str
    library: str
    fwd: float | None = None
    fwd_bwd: float | None = None
    ratio: float | None = None
    err: str = "-"
    note: str = ""
    goal: bool = False


_POOL: ThreadPoolExecutor | None = None


def per_track(fn: Callable[[int, np.ndarray], np.ndarray], x: np.ndarray) -> list:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(THREADS)
    return list(_POOL.map(lambda i: fn(i, x[i]), range(x.shape[0])))


def stack_tracks(outputs: list) -> np.ndarray:
    return np.stack([np.asarray(o) for o in outputs])


def per_item(values, batch: int, generator: torch.Generator, spread: float = 0.0) -> Tensor:
    """``values`` (a float or a ``(bands,)`` sequence) for each track, optionally with a relative spread."""
    base = torch.as_tensor(values, dtype=torch.float32)
    out = base.expand((batch,) + tuple(base.shape)).clone()
    if spread:
        out = out * (1 + spread * (2 * torch.rand(out.shape, generator=generator) - 1))
    return out


def dasp():
    import dasp_pytorch.functional as dasp_functional

    return dasp_functional


# ----------------------------------------------------------------------------------------------- effects


def case_gain(sig: Signal, gen: torch.Generator) -> Case:
    import pedalboard as pb

    g = torch.linspace(-6.0, 6.0, sig.tracks)
    boards = [pb.Pedalboard([pb.Gain(float(v))]) for v in g]
    return Case(
        "gain",
        [
            TorchImpl("gradmix", lambda x, p: gd.gain(x, gain_db=p["gain_db"]), {"gain_db": g}),
            TorchImpl("dasp-pytorch", lambda x, p: dasp().gain(x, SR, p["gain_db"]), {"gain_db": g}),
            NumpyImpl("pedalboard", lambda i, t: boards[i](t, SR)),
        ],
        reference=lambda x: x * 10 ** (g.double().numpy()[:, None, None] / 20),
    )


def case_pan(sig: Signal, gen: torch.Generator) -> Case | None:
    if sig.channels != 1:
        return None
    p = torch.linspace(-0.9, 0.9, sig.tracks)
    return Case(
        "pan (mono -> stereo)",
        [
            TorchImpl("gradmix", lambda x, q: gd.pan(x, pan=q["pan"]), {"pan": p}),
            TorchImpl(
                "dasp-pytorch",
                lambda x, q: dasp().stereo_panner(x, SR, (q["pan"][:, None] + 1) / 2),
                {"pan": p},
                note="stereo_panner, another pan law",
            ),
        ],
    )


def case_width(sig: Signal, gen: torch.Generator) -> Case | None:
    if sig.channels != 2:
        return None
    w = torch.linspace(0.5, 1.5, sig.tracks)
    return Case(
        "stereo width",
        [
            TorchImpl("gradmix", lambda x, p: gd.stereo_width(x, width=p["width"]), {"width": w}),
            TorchImpl(
                "dasp-pytorch",
                lambda x, p: dasp().stereo_widener(x, SR, (p["width"] / (1 + p["width"]))[:, None]),
                {"width": w},
                note="stereo_widener",
            ),
        ],
    )


def peq_params(batch: int, gen: torch.Generator) -> dict[str, Tensor]:
    return {
        "freq_hz": per_item(EQ_FREQS_HZ, batch, gen, spread=0.15),
        "gain_db": 9.0 * (2 * torch.rand(batch, len(EQ_SHAPES), generator=gen) - 1),
        "q": per_item(EQ_Q, batch, gen, spread=0.1),
    }


def rbj_sos(params: dict[str, Tensor], shapes=EQ_SHAPES) -> np.ndarray:
    """scipy ``sos`` arrays ``(batch, bands, 6)`` of the RBJ bands, designed in float64 by gradmix."""
    f, g, q = (params[k].double() for k in ("freq_hz", "gain_db", "q"))
    sections = []
    for k, shape in enumerate(shapes):
        b, a = gd.biquad_coefficients(shape, sample_rate=SR, freq_hz=f[:, k], gain_db=g[:, k], q=q[:, k])
        sections.append(torch.cat([b, a], -1))
    return torch.stack(sections, 1).numpy()


def dasp_peq(x: Tensor, p: dict[str, Tensor]) -> Tensor:
    f, g, q = p["freq_hz"], p["gain_db"], p["q"]
    args = []
    for k in range(6):  # low shelf, band0..band3, high shelf, each (gain, cutoff, q)
        args += [g[:, k], f[:, k], q[:, k]]
    return dasp().parametric_eq(x, SR, *args)


def pedalboard_peq(params: dict[str, Tensor], i: int):
    import pedalboard as pb

    kinds = {"low_shelf": pb.LowShelfFilter, "peak": pb.PeakFilter, "high_shelf": pb.HighShelfFilter}
    f, g, q = (params[k][i].tolist() for k in ("freq_hz", "gain_db", "q"))
    return pb.Pedalboard([kinds[s](cutoff_frequency_hz=f[k], gain_db=g[k], q=q[k]) for k, s in enumerate(EQ_SHAPES)])


def block_path_peq(x: Tensor, p: dict[str, Tensor]) -> Tensor:
    with linear_scan.forced():
        return gd.parametric_eq(
            x, sample_rate=SR, shapes=EQ_SHAPES, freq_hz=p["freq_hz"], gain_db=p["gain_db"], q=p["q"]
        )


def case_peq(sig: Signal, gen: torch.Generator) -> Case:
    params = peq_params(sig.tracks, gen)
    sos = rbj_sos(params)
    boards = [pedalboard_peq(params, i) for i in range(sig.tracks)]

    def scipy_track(i: int, t: np.ndarray) -> np.ndarray:
        return scipy.signal.sosfilt(sos[i], t, axis=-1)

    return Case(
        "parametric EQ, 6 bands",
        [
            TorchImpl(
                "gradmix",
                lambda x, p: gd.parametric_eq(
                    x, sample_rate=SR, shapes=EQ_SHAPES, freq_hz=p["freq_hz"], gain_db=p["gain_db"], q=p["q"]
                ),
                params,
            ),
            TorchImpl("gradmix (block path)", block_path_peq, params, note="the path off the CPU, forced here"),
            TorchImpl("dasp-pytorch", dasp_peq, params, note="frequency-sampled FIR (FFT)"),
            NumpyImpl("pedalboard", lambda i, t: boards[i](t, SR), note="shelf + 4 PeakFilter + shelf"),
            NumpyImpl("scipy sosfilt", scipy_track, dtype=np.float64, note="float64, the floor", reference=True),
        ],
        reference=lambda x: np.stack([scipy_track(i, x[i]) for i in range(x.shape[0])]),
    )


def case_graphic(bands: int):
    def build(sig: Signal, gen: torch.Generator) -> Case:
        import pedalboard as pb

        g = 6.0 * (2 * torch.rand(sig.tracks, bands, generator=gen) - 1)
        centres = gd.graphic_eq_centres_hz(bands)
        bw = 1.5 * (1.0 if bands == 10 else 1 / 3)
        q = math.sqrt(2**bw) / (2**bw - 1)
        boards = [
            pb.Pedalboard(
                [
                    pb.PeakFilter(cutoff_frequency_hz=min(fc, 0.9 * SR / 2), gain_db=float(gk), q=q)
                    for fc, gk in zip(centres, g[i].tolist())
                ]
            )
            for i in range(sig.tracks)
        ]
        return Case(
            f"graphic EQ, {bands} bands",
            [
                TorchImpl(
                    "gradmix", lambda x, p: gd.graphic_eq(x, sample_rate=SR, gain_db=p["gain_db"]), {"gain_db": g}
                ),
                NumpyImpl("pedalboard", lambda i, t: boards[i](t, SR), note=f"chain of {bands} PeakFilter"),
            ],
        )

    return build


def torchcomp_compressor(x: Tensor, p: dict[str, Tensor]) -> Tensor:
    import torchcomp

    level = x.abs().amax(1).clamp_min(1e-7)
    g = torchcomp.compexp_gain(
        level,
        p["threshold_db"],
        p["ratio"],
        -1000.0,
        0.5,
        torchcomp.ms2coef(p["attack_ms"], SR),
        torchcomp.ms2coef(p["release_ms"], SR),
    )
    return x * (g * torchcomp.db2amp(p["makeup_db"])[:, None]).unsqueeze(1)


def case_compressor(sig: Signal, gen: torch.Generator) -> Case:
    import pedalboard as pb

    b = sig.tracks
    full = {
        "threshold_db": per_item(-30.0, b, gen),
        "ratio": per_item(4.0, b, gen),
        "attack_ms": per_item(5.0, b, gen),
        "release_ms": per_item(100.0, b, gen),
        "knee_db": per_item(6.0, b, gen),
        "makeup_db": per_item(0.0, b, gen),
    }
    no_knee = {k: v for k, v in full.items() if k != "knee_db"}
    dasp_params = {k: v for k, v in full.items() if k != "release_ms"}
    boards = [pb.Pedalboard([pb.Compressor(threshold_db=-30, ratio=4, attack_ms=5, release_ms=100)]) for _ in range(b)]
    return Case(
        "compressor",
        [
            TorchImpl("gradmix", lambda x, p: gd.compressor(x, sample_rate=SR, **p), full),
            TorchImpl(
                "dasp-pytorch",
                lambda x, p: dasp().compressor(
                    x, SR, p["threshold_db"], p["ratio"], p["attack_ms"], p["attack_ms"], p["knee_db"], p["makeup_db"]
                ),
                dasp_params,
                note="attack only (one FIR-approximated one-pole)",
            ),
            TorchImpl(
                "torchcomp", torchcomp_compressor, no_knee, note="compexp_gain, hard knee, linear-gain smoothing"
            ),
            NumpyImpl("pedalboard", lambda i, t: boards[i](t, SR)),
        ],
    )


def case_expander(sig: Signal, gen: torch.Generator) -> Case:
    import pedalboard as pb

    b = sig.tracks
    params = {
        "threshold_db": per_item(-40.0, b, gen),
        "ratio": per_item(2.0, b, gen),
        "attack_ms": per_item(1.0, b, gen),
        "release_ms": per_item(50.0, b, gen),
        "knee_db": per_item(6.0, b, gen),
        "range_db": per_item(60.0, b, gen),
        "makeup_db": per_item(0.0, b, gen),
    }
    boards = [pb.Pedalboard([pb.NoiseGate(threshold_db=-40, ratio=2, attack_ms=1, release_ms=50)]) for _ in range(b)]
    return Case(
        "expander",
        [
            TorchImpl("gradmix", lambda x, p: gd.expander(x, sample_rate=SR, **p), params),
            NumpyImpl("pedalboard", lambda i, t: boards[i](t, SR), note="NoiseGate, ratio 2"),
        ],
    )


def case_gate(sig: Signal, gen: torch.Generator) -> Case:
    import pedalboard as pb

    b = sig.tracks
    params = {
        "threshold_db": per_item(-50.0, b, gen),
        "attack_ms": per_item(1.0, b, gen),
        "release_ms": per_item(50.0, b, gen),
        "range_db": per_item(60.0, b, gen),
        "knee_db": per_item(3.0, b, gen),
    }
    boards = [pb.Pedalboard([pb.NoiseGate(threshold_db=-50, ratio=10, attack_ms=1, release_ms=50)]) for _ in range(b)]
    return Case(
        "noise gate",
        [
            TorchImpl("gradmix", lambda x, p: gd.noise_gate(x, sample_rate=SR, **p), params),
            NumpyImpl("pedalboard", lambda i, t: boards[i](t, SR), note="NoiseGate, ratio 10"),
        ],
    )


def case_limiter(sig: Signal, gen: torch.Generator) -> Case:
    import pedalboard as pb

    b = sig.tracks
    params = {
        "ceiling_db": per_item(-6.0, b, gen),
        "release_ms": per_item(100.0, b, gen),
        "gain_db": per_item(6.0, b, gen),
    }
    boards = [pb.Pedalboard([pb.Gain(6.0), pb.Limiter(threshold_db=-6.0, release_ms=100.0)]) for _ in range(b)]
    return Case(
        "limiter (+6 dB drive)",
        [
            TorchImpl(
                "gradmix",
                lambda x, p: gd.limiter(x, sample_rate=SR, lookahead_ms=5.0, **p),
                params,
                note="5 ms look-ahead",
            ),
            NumpyImpl("pedalboard", lambda i, t: boards[i](t, SR), note="Gain + Limiter (no look-ahead)"),
        ],
    )


def case_distortion(sig: Signal, gen: torch.Generator) -> Case:
    import pedalboard as pb

    b, c = sig.tracks, sig.channels
    params = {"drive_db": per_item(12.0, b, gen), "tone_db": per_item(2.0, b, gen), "mix": per_item(1.0, b, gen)}
    boards = [pb.Pedalboard([pb.Distortion(drive_db=12.0)]) for _ in range(b)]

    # dasp reshapes drive_db to (batch, channels, 1): one value per channel
    def dasp_drive(x, p):
        return dasp().distortion(x, SR, p["drive_db"][:, None].expand(-1, c).reshape(-1))

    return Case(
        "distortion (tanh)",
        [
            TorchImpl(
                "gradmix",
                lambda x, p: gd.distortion(x, sample_rate=SR, shape="tanh", **p),
                params,
                note="includes the tilt (2 shelves)",
            ),
            TorchImpl("dasp-pytorch", dasp_drive, {"drive_db": params["drive_db"]}, note="tanh only"),
            NumpyImpl("pedalboard", lambda i, t: boards[i](t, SR), note="tanh only"),
        ],
    )


def dasp_reverb(x: Tensor, p: dict[str, Tensor]) -> Tensor:
    taps = int(REVERB_DECAY_S * SR)
    gains = [p["band_gain"][:, k] for k in range(12)]
    decays = [p["band_decay"][:, k] for k in range(12)]
    return dasp().noise_shaped_reverberation(x, SR, *gains, *decays, p["mix"], num_samples=taps)


def gradmix_reverb_ir(channels: int) -> np.ndarray:
    """gradmix's reverb impulse response, ``(channels, taps)``: the wet output for a unit impulse."""
    impulse = torch.zeros(1, channels, int(REVERB_DECAY_S * SR))
    impulse[..., 0] = 1.0
    with torch.no_grad():
        return gd.reverb(impulse, sample_rate=SR, decay_s=REVERB_DECAY_S, mix=1.0)[0].numpy().astype(np.float32)


def case_reverb(settings: Settings):
    def build(sig: Signal, gen: torch.Generator) -> Case:
        import pedalboard as pb

        b = sig.tracks
        params = {
            "decay_s": per_item([REVERB_DECAY_S] * gd.REVERB_BANDS, b, gen),
            "predelay_ms": per_item(10.0, b, gen),
            "mix": per_item(0.3, b, gen),
        }
        dasp_params = {
            "band_gain": per_item([1.0] * 12, b, gen),
            "band_decay": per_item([DASP_DECAY] * 12, b, gen),
            "mix": per_item(0.3, b, gen),
        }
        ir = gradmix_reverb_ir(sig.channels)
        freeverb = [pb.Pedalboard([pb.Reverb(room_size=0.9, wet_level=0.3, dry_level=0.7)]) for _ in range(b)]
        conv = [pb.Pedalboard([pb.Convolution(ir, mix=0.3, sample_rate=SR)]) for _ in range(b)]
        tracks, seconds = settings.dasp_reverb_subset
        return Case(
            f"reverb, {REVERB_DECAY_S:g} s IR",
            [
                TorchImpl("gradmix", lambda x, p: gd.reverb(x, sample_rate=SR, **p), params, note="FFT convolution"),
                TorchImpl(
                    "dasp-pytorch",
                    dasp_reverb,
                    dasp_params,
                    subset=(tracks, seconds),
                    note=f"direct conv1d; timed on {tracks} track x {seconds:g} s",
                ),
                NumpyImpl("pedalboard", lambda i, t: freeverb[i](t, SR), note="Reverb = Freeverb, another algorithm"),
                NumpyImpl(
                    "pedalboard",
                    lambda i, t: conv[i](t, SR),
                    goal=False,
                    note="Convolution with gradmix's IR (like for like)",
                ),
            ],
        )

    return build


def case_delay(sig: Signal, gen: torch.Generator) -> Case:
    import pedalboard as pb

    b = sig.tracks
    params = {"time_ms": per_item(250.0, b, gen), "feedback": per_item(0.4, b, gen), "mix": per_item(0.3, b, gen)}
    boards = [pb.Pedalboard([pb.Delay(delay_seconds=0.25, feedback=0.4, mix=0.3)]) for _ in range(b)]
    return Case(
        "delay",
        [
            TorchImpl("gradmix", lambda x, p: gd.delay(x, sample_rate=SR, **p), params, note="exact echoes by FFT"),
            NumpyImpl("pedalboard", lambda i, t: boards[i](t, SR)),
        ],
    )


def case_loudness(sig: Signal, gen: torch.Generator) -> Case:
    import pyloudnorm

    meter = pyloudnorm.Meter(SR, filter_class="DeMan")  # BS.1770's filters at any rate, as gradmix derives them

    def measure(i: int, t: np.ndarray) -> np.ndarray:
        return np.asarray(meter.integrated_loudness(t.T))

    return Case(
        "integrated loudness",
        [
            TorchImpl("gradmix", lambda x, p: gd.integrated_loudness(x, sample_rate=SR), {}),
            NumpyImpl(
                "pyloudnorm",
                measure,
                dtype=np.float64,
                reference=True,
                note="filter_class='DeMan' (its default 'K-weighting' is an approximation)",
            ),
        ],
        reference=lambda x: np.array([measure(i, x[i]) for i in range(x.shape[0])]),
        error_unit="LU",
    )


def all_cases(settings: Settings) -> list:
    return [
        case_gain,
        case_pan,
        case_width,
        case_peq,
        case_graphic(10),
        case_graphic(31),
        case_compressor,
        case_expander,
        case_gate,
        case_limiter,
        case_distortion,
        case_reverb(settings),
        case_delay,
        case_loudness,
    ]


# ----------------------------------------------------------------------------------------------- timing


def timed(fn: Callable[[], object], repeats: int, budget_s: float) -> tuple[float, object]:
    """Median wall time of ``fn`` after one warm-up run, and its last result.

    A run that takes longer than ``budget_s`` is not repeated: its own time is returned.
    """
    start = time.perf_counter()
    out = fn()
    first = time.perf_counter() - start
    runs = repeats if first * repeats <= budget_s else int(budget_s // first)
    if runs == 0:
        return first, out
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def torch_forward(apply: Callable, params: dict[str, Tensor], x: Tensor) -> Callable[[], Tensor]:
    def run() -> Tensor:
        with torch.no_grad():
            return apply(x, params)

    return run


def torch_forward_backward(apply: Callable, params: dict[str, Tensor], x: Tensor) -> Callable[[], None]:
    x_leaf = x.clone().requires_grad_(True)
    leaves = {k: v.clone().requires_grad_(True) for k, v in params.items()}

    def run() -> None:
        y = apply(x_leaf, leaves)
        loss = y.square().mean()
        torch.autograd.grad(loss, [x_leaf, *leaves.values()], allow_unused=True)

    return run


def subset(impl: TorchImpl, x: Tensor) -> tuple[Tensor, dict[str, Tensor], float]:
    """The input and parameters an implementation is timed on, and the number of track-seconds."""
    if impl.subset is None:
        return x, impl.params, x.shape[0] * x.shape[-1] / SR
    tracks, seconds = impl.subset
    n = int(round(seconds * SR))
    return x[:tracks, :, :n], {k: v[:tracks] for k, v in impl.params.items()}, tracks * n / SR


def error_text(y: np.ndarray, ref: np.ndarray | None, unit: str) -> str:
    if ref is None:
        return "-"
    n = min(y.shape[-1], ref.shape[-1])
    diff = np.abs(y[..., :n].astype(np.float64) - ref[..., :n]).max()
    if unit == "LU":
        return f"{diff:.2g} LU"
    peak = np.abs(ref[..., :n]).max()
    return f"{20 * math.log10(max(diff, 1e-300) / peak):.0f} dB"


def run_torch(impl: TorchImpl, x: Tensor, case: Case, ref: np.ndarray | None, settings: Settings, row: Row) -> None:
    xs, params, track_seconds = subset(impl, x)
    fwd, y = timed(torch_forward(impl.apply, params, xs), settings.repeats, settings.budget_s)
    fb, _ = timed(torch_forward_backward(impl.apply, params, xs), settings.repeats, settings.budget_s)
    row.fwd, row.fwd_bwd = fwd / track_seconds, fb / track_seconds
    row.err = error_text(y.double().numpy(), ref, case.error_unit) if impl.subset is None else "-"


def run_numpy(impl: NumpyImpl, x: Tensor, case: Case, ref: np.ndarray | None, settings: Settings, row: Row) -> None:
    xn = x.numpy().astype(impl.dtype)
    fwd, out = timed(lambda: per_track(impl.process, xn), settings.repeats, settings.budget_s)
    row.fwd = fwd / (x.shape[0] * x.shape[-1] / SR)
    row.err = "ref" if impl.reference else error_text(stack_tracks(out), ref, case.error_unit)
    row.goal = impl.library == "pedalboard" and impl.goal


def run_case(case: Case, sig: Signal, x: Tensor, settings: Settings) -> list:
    ref = case.reference(x.double().numpy()) if case.reference is not None else None
    rows = []
    for impl in case.impls:
        row = Row(sig.name, case.effect, impl.library, note=impl.note)
        runner = run_torch if isinstance(impl, TorchImpl) else run_numpy
        runner(impl, x, case, ref, settings, row)
        rows.append(row)
        progress(row)
    gradmix = next((r for r in rows if r.library == "gradmix"), None)
    for r in rows:
        if r.library == "pedalboard" and gradmix is not None:
            r.ratio = gradmix.fwd / r.fwd
    return rows


def run_reverb_goal(sig: Signal, settings: Settings) -> float:
    """Total seconds of gradmix's reverb forward+backward on the goal signal."""
    x = make_signal(sig, seed=2)
    gen = torch.Generator().manual_seed(2)
    params = {
        "decay_s": per_item([REVERB_DECAY_S] * gd.REVERB_BANDS, sig.tracks, gen),
        "predelay_ms": per_item(10.0, sig.tracks, gen),
        "mix": per_item(0.3, sig.tracks, gen),
    }

    def apply(x, p):
        return gd.reverb(x, sample_rate=SR, **p)

    total, _ = timed(torch_forward_backward(apply, params, x), settings.reverb_goal_repeats, settings.budget_s)
    return total


def progress(row: Row) -> None:
    print(
        f"  {row.signal:>17} | {row.effect:<24} | {row.library:<14} fwd {fmt(row.fwd):>8}"
        f"  fwd+bwd {fmt(row.fwd_bwd):>8}",
        file=sys.stderr,
        flush=True,
    )


# ----------------------------------------------------------------------------------------------- report


def fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3g}"


def fmt_ratio(v: float | None) -> str:
    return "" if v is None else f"{v:.2f}"


COLUMNS = (
    "signal",
    "effect",
    "implementation",
    "fwd s/track-s",
    "fwd+bwd s/track-s",
    "gradmix fwd / this",
    "max err",
    "notes",
)


def row_cells(r: Row) -> list[str]:
    return [r.signal, r.effect, r.library, fmt(r.fwd), fmt(r.fwd_bwd), fmt_ratio(r.ratio), r.err, r.note]


def goal_lines(rows: list, reverb_total: float, reverb_sig: Signal) -> list:
    def worst(effect: str, attr: str) -> tuple[float, str]:
        vals = [(getattr(r, attr), r.signal) for r in rows if r.library == "gradmix" and r.effect == effect]
        return max(vals)

    lines = []
    peq, peq_sig = worst("parametric EQ, 6 bands", "fwd_bwd")
    lines.append((f"6-band PEQ fwd+bwd <= {GOAL_PEQ:.3f} s/track-s: worst {peq:.3g} ({peq_sig})", peq <= GOAL_PEQ))
    comp, comp_sig = worst("compressor", "fwd_bwd")
    lines.append(
        (
            f"compressor fwd+bwd <= {GOAL_COMPRESSOR:.3f} s/track-s: worst {comp:.3g} ({comp_sig})",
            comp <= GOAL_COMPRESSOR,
        )
    )
    lines.append(
        (
            f"reverb {REVERB_DECAY_S:g} s IR, {reverb_sig.name} fwd+bwd <= {GOAL_REVERB_TOTAL_S:g} s total: "
            f"{reverb_total:.2f} s",
            reverb_total <= GOAL_REVERB_TOTAL_S,
        )
    )
    slow = [r for r in rows if r.goal and r.ratio is not None and r.ratio > GOAL_PEDALBOARD_RATIO]
    checked = [r for r in rows if r.goal and r.ratio is not None]
    detail = "; ".join(f"{r.effect} ({r.signal}) x{r.ratio:.1f}" for r in slow) or "none slower"
    lines.append(
        (
            f"every gradmix forward within {GOAL_PEDALBOARD_RATIO:g}x of pedalboard's "
            f"({len(checked)} pairs; over: {detail})",
            not slow,
        )
    )
    return lines


def print_rich(rows: list, goals: list, header: str) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 190)
    table = Table(title="gradmix effects benchmark (seconds per track-second; lower is faster)", title_justify="left")
    for i, c in enumerate(COLUMNS):
        table.add_column(c, justify="right" if 3 <= i <= 6 else "left")
    previous = None
    for r in rows:
        if previous is not None and (r.signal, r.effect) != previous:
            table.add_section()
        table.add_row(*row_cells(r))
        previous = (r.signal, r.effect)
    console.print(header)
    console.print(table)
    console.print("Goals:")
    for text, ok in goals:
        console.print(f"  [{'green' if ok else 'red'}]{'MET    ' if ok else 'NOT MET'}[/] {text}", highlight=False)


def print_markdown(rows: list, goals: list, header: str) -> None:
    print(header + "\n")
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "|".join("---:" if 3 <= i <= 6 else "---" for i in range(len(COLUMNS))) + "|")
    for r in rows:
        print("| " + " | ".join(c.replace("|", "\\|") for c in row_cells(r)) + " |")
    print("\nGoals:\n")
    for text, ok in goals:
        print(f"- {'MET' if ok else '**NOT MET**'}: {text}")


def load_text() -> str:
    return "load average " + " ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else ""


def header_text(settings: Settings, quick: bool, load_before: str) -> str:
    import dasp_pytorch  # noqa: F401
    import pedalboard  # noqa: F401
    import scipy
    import torchcomp  # noqa: F401
    from importlib.metadata import version

    libs = ", ".join(f"{n} {version(n)}" for n in ("gradmix", "dasp-pytorch", "torchcomp", "pedalboard", "pyloudnorm"))
    return (
        f"{'quick' if quick else 'full'} run; torch {torch.__version__} on {torch.get_num_threads()} threads, "
        f"scipy {scipy.__version__}, {libs}; {platform.processor() or platform.machine()}; "
        f"median of {settings.repeats} runs after a warm-up (fewer when a run takes over {settings.budget_s:g} s); "
        f"{SR} Hz float32; {os.cpu_count()} CPUs, {load_before} before and {load_text()} after"
    )


# ----------------------------------------------------------------------------------------------- main


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short signals and few repeats (< 2 minutes)")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table instead of a rich one")
    args = parser.parse_args(argv)
    torch.set_num_threads(THREADS)
    settings = QUICK if args.quick else FULL
    load_before = load_text()

    rows = []
    for k, sig in enumerate(settings.signals):
        x = make_signal(sig, seed=k)
        for build in all_cases(settings):
            case = build(sig, torch.Generator().manual_seed(100 + k))
            if case is not None:
                rows += run_case(case, sig, x, settings)
    reverb_total = run_reverb_goal(settings.reverb_goal, settings)

    goals = goal_lines(rows, reverb_total, settings.reverb_goal)
    (print_markdown if args.markdown else print_rich)(rows, goals, header_text(settings, args.quick, load_before))
    return 0


if __name__ == "__main__":
    sys.exit(main())
