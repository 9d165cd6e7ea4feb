"""Every effect of gradmix with its documented default ranges for mixing.

Defaults are neutral (the effect leaves the audio unchanged or nearly so), so a console built from
defaults is a plain sum; ranges are what a network or a random console may use.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from gradmix import dsp
from gradmix.dsp.dynamics import limiter_latency_samples
from gradmix.effects.base import Effect, plain_json_value, register
from gradmix.effects.spec import ParamSpec
from gradmix.errors import ParameterError


@register
class Gain(Effect):
    type_name = "gain"
    function = staticmethod(dsp.gain)
    linear = True

    def __init__(self) -> None:
        self.specs = [ParamSpec("gain_db", "dB", -48.0, 12.0, 0.0)]


@register
class Pan(Effect):
    """Constant-power pan of a mono track to stereo."""

    type_name = "pan"
    function = staticmethod(dsp.pan)
    linear = True
    mono_in = True

    def __init__(self) -> None:
        self.specs = [ParamSpec("pan", "", -1.0, 1.0, 0.0)]


@register
class Balance(Effect):
    type_name = "balance"
    function = staticmethod(dsp.balance)
    linear = True

    def __init__(self) -> None:
        self.specs = [ParamSpec("pan", "", -1.0, 1.0, 0.0)]


@register
class StereoWidth(Effect):
    type_name = "width"
    function = staticmethod(dsp.stereo_width)
    linear = True

    def __init__(self) -> None:
        self.specs = [ParamSpec("width", "", 0.0, 2.0, 1.0)]


DEFAULT_EQ_SHAPES = ("low_shelf", "peak", "peak", "peak", "peak", "high_shelf")


def _band_specs(shape: str, band: int, peak_index: int, peaks: int) -> list[ParamSpec]:
    """Frequency ranges per shape; peaks get staggered, overlapping ranges across 40 Hz - 16 kHz."""
    q = ParamSpec("q", "", 0.3, 6.0, 1.0, "log", band)
    if shape == "low_shelf":
        f, q = (
            ParamSpec("freq_hz", "Hz", 30.0, 500.0, 100.0, "log", band),
            ParamSpec("q", "", 0.3, 2.0, 0.707, "log", band),
        )
    elif shape == "high_shelf":
        f, q = (
            ParamSpec("freq_hz", "Hz", 1500.0, 16000.0, 6000.0, "log", band),
            ParamSpec("q", "", 0.3, 2.0, 0.707, "log", band),
        )
    elif shape == "lowpass":
        f, q = (
            ParamSpec("freq_hz", "Hz", 500.0, 18000.0, 18000.0, "log", band),
            ParamSpec("q", "", 0.5, 2.0, 0.707, "log", band),
        )
    elif shape == "highpass":
        f, q = (
            ParamSpec("freq_hz", "Hz", 20.0, 1000.0, 20.0, "log", band),
            ParamSpec("q", "", 0.5, 2.0, 0.707, "log", band),
        )
    else:
        lo, hi = 40.0, 16000.0
        r = hi / lo
        a, b = lo * r ** (peak_index / (peaks + 1)), lo * r ** ((peak_index + 2) / (peaks + 1))
        f = ParamSpec("freq_hz", "Hz", round(a, 1), round(b, 1), round(math.sqrt(a * b), 1), "log", band)
    g = ParamSpec("gain_db", "dB", -12.0, 12.0, 0.0, "linear", band)
    return [f, g, q]


@register
class ParametricEQ(Effect):
    """Parametric EQ; ``shapes`` fixes the number of bands and the shape of each (default 6 bands:
    low shelf, 4 peaks with staggered ranges, high shelf). Gain ranges +-12 dB; Q 0.3-6 (peaks)."""

    type_name = "eq"
    function = staticmethod(dsp.parametric_eq)
    linear = True
    static = ("shapes",)

    def __init__(self, shapes: Sequence[str] = DEFAULT_EQ_SHAPES) -> None:
        self.shapes = list(shapes)
        for k, s in enumerate(self.shapes):
            if s not in dsp.SHAPES:
                raise ParameterError(f"eq shapes[{k}]: {s!r} is not one of {', '.join(dsp.SHAPES)}")
        peaks = [k for k, s in enumerate(self.shapes) if s not in ("low_shelf", "high_shelf", "lowpass", "highpass")]
        specs = []
        for k, s in enumerate(self.shapes):
            specs += _band_specs(s, k, peaks.index(k) if k in peaks else 0, len(peaks))
        order = {"freq_hz": 0, "gain_db": 1, "q": 2}
        self.specs = sorted(specs, key=lambda p: (order[p.name], p.band))

    def config(self) -> dict[str, Any]:
        return {"shapes": list(self.shapes)}

    def to_json(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """``{"type": "eq", "bands": [{"shape", "freq_hz", "gain_db", "q"}, ...]}``."""
        full = {k: plain_json_value(v) for k, v in self.complete(params).items()}
        return {
            "type": self.type_name,
            "bands": [
                {"shape": s, "freq_hz": full["freq_hz"][k], "gain_db": full["gain_db"][k], "q": full["q"][k]}
                for k, s in enumerate(self.shapes)
            ],
        }

    @classmethod
    def from_json(cls, entry: Mapping[str, Any]) -> tuple[Effect, dict[str, Any]]:
        bands = entry.get("bands", [])
        effect = cls([b["shape"] for b in bands])
        defaults = effect.defaults()
        params = {
            name: [float(b.get(name, defaults[name][k])) for k, b in enumerate(bands)]
            for name in ("freq_hz", "gain_db", "q")
        }
        return effect, params

    def sample_rate_problem(self, params: Mapping[str, Any], sample_rate: float) -> tuple[list[Any], str] | None:
        """A band at or above Nyquist."""
        for k, f in enumerate(plain_json_value(self.complete(params)["freq_hz"])):
            if f >= sample_rate / 2:
                return ["bands", k, "freq_hz"], f"{f:g} is not < {sample_rate / 2:g} (Nyquist)"
        return None


@register
class GraphicEQ(Effect):
    """ISO graphic EQ, 10 or 31 bands of +-12 dB."""

    type_name = "graphic_eq"
    function = staticmethod(dsp.graphic_eq)
    linear = True

    def __init__(self, bands: int = 10) -> None:
        if bands not in (10, 31):
            raise ParameterError(f"graphic_eq bands: {bands} is not 10 or 31")
        self.bands = bands
        self.specs = [ParamSpec("gain_db", "dB", -12.0, 12.0, 0.0, "linear", k) for k in range(bands)]

    def __call__(self, x, params=None, *, sample_rate):
        return dsp.graphic_eq(x, sample_rate=sample_rate, **self.complete(params or {}))

    def config(self) -> dict[str, Any]:
        return {"bands": self.bands}

    def to_json(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """``{"type": "graphic_eq", "gain_db": [10 or 31 values]}`` (the band count is the list's length)."""
        return {"type": self.type_name, "gain_db": plain_json_value(self.complete(params)["gain_db"])}

    @classmethod
    def from_json(cls, entry: Mapping[str, Any]) -> tuple[Effect, dict[str, Any]]:
        gains = entry.get("gain_db", [0.0] * 10)
        effect = cls(len(gains))
        return effect, {"gain_db": [float(g) for g in gains]}

    def sample_rate_problem(self, params: Mapping[str, Any], sample_rate: float) -> tuple[list[Any], str] | None:
        """Below 22050 Hz: the top ISO band (16 or 20 kHz) lies past Nyquist."""
        if sample_rate < 22050:
            return [], f"a graphic EQ needs a sample rate of at least 22050 Hz, not {sample_rate:g}"
        return None


def _times(attack: tuple[float, float, float], release: tuple[float, float, float]) -> list[ParamSpec]:
    return [ParamSpec("attack_ms", "ms", *attack, "log"), ParamSpec("release_ms", "ms", *release, "log")]


@register
class Compressor(Effect):
    type_name = "compressor"
    envelope = True
    function = staticmethod(dsp.compressor)

    def __init__(self) -> None:
        self.specs = [
            ParamSpec("threshold_db", "dB", -60.0, 0.0, -20.0),
            ParamSpec("ratio", "ratio", 1.0, 20.0, 1.0, "log"),
            *_times((0.1, 100.0, 10.0), (10.0, 1000.0, 100.0)),
            ParamSpec("knee_db", "dB", 0.0, 12.0, 6.0),
            ParamSpec("makeup_db", "dB", 0.0, 24.0, 0.0),
        ]


@register
class Expander(Effect):
    type_name = "expander"
    envelope = True
    function = staticmethod(dsp.expander)

    def __init__(self) -> None:
        self.specs = [
            ParamSpec("threshold_db", "dB", -80.0, -10.0, -50.0),
            ParamSpec("ratio", "ratio", 1.0, 10.0, 1.0, "log"),
            *_times((0.1, 50.0, 5.0), (10.0, 1000.0, 100.0)),
            ParamSpec("knee_db", "dB", 0.0, 12.0, 6.0),
            ParamSpec("range_db", "dB", 0.0, 80.0, 60.0),
            ParamSpec("makeup_db", "dB", 0.0, 12.0, 0.0),
        ]


@register
class NoiseGate(Effect):
    type_name = "gate"
    envelope = True
    function = staticmethod(dsp.noise_gate)

    def __init__(self) -> None:
        self.specs = [
            ParamSpec("threshold_db", "dB", -100.0, -20.0, -100.0),
            *_times((0.1, 50.0, 1.0), (10.0, 1000.0, 100.0)),
            ParamSpec("range_db", "dB", 0.0, 80.0, 60.0),
            ParamSpec("knee_db", "dB", 0.0, 12.0, 3.0),
        ]


@register
class Limiter(Effect):
    """Look-ahead limiter; ``lookahead_ms`` (static) is its reported latency."""

    type_name = "limiter"
    envelope = True
    function = staticmethod(dsp.limiter)
    static = ("lookahead_ms",)

    def __init__(self, lookahead_ms: float = 5.0) -> None:
        self.lookahead_ms = float(lookahead_ms)
        self.specs = [
            ParamSpec("ceiling_db", "dB", -12.0, 0.0, 0.0),
            ParamSpec("release_ms", "ms", 10.0, 1000.0, 100.0, "log"),
            ParamSpec("gain_db", "dB", 0.0, 24.0, 0.0),
        ]

    def config(self) -> dict[str, Any]:
        return {"lookahead_ms": self.lookahead_ms}

    def latency_samples(self, sample_rate: float) -> int:
        return limiter_latency_samples(self.lookahead_ms, sample_rate)


@register
class Distortion(Effect):
    type_name = "distortion"
    function = staticmethod(dsp.distortion)
    static = ("shape",)

    def __init__(self, shape: str = "tanh") -> None:
        if shape not in dsp.DISTORTION_SHAPES:
            raise ParameterError(f"distortion shape: {shape!r} is not one of {', '.join(dsp.DISTORTION_SHAPES)}")
        self.shape = shape
        self.specs = [
            ParamSpec("drive_db", "dB", 0.0, 36.0, 0.0),
            ParamSpec("tone_db", "dB", -12.0, 12.0, 0.0),
            ParamSpec("mix", "", 0.0, 1.0, 0.0),
        ]

    def config(self) -> dict[str, Any]:
        return {"shape": self.shape}


REVERB_DEFAULT_DECAY_S = (1.8, 1.5, 1.2, 0.8)


@register
class Reverb(Effect):
    """Filtered-noise reverb: RT60 per band (low, low-mid, high-mid, high), pre-delay, mix."""

    type_name = "reverb"
    function = staticmethod(dsp.reverb)
    linear = True
    static = ("seed",)

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)
        self.specs = [
            *(ParamSpec("decay_s", "s", 0.1, 6.0, d, "log", k) for k, d in enumerate(REVERB_DEFAULT_DECAY_S)),
            ParamSpec("predelay_ms", "ms", 0.0, 100.0, 0.0),
            ParamSpec("mix", "", 0.0, 1.0, 0.0),
        ]

    def config(self) -> dict[str, Any]:
        return {"seed": self.seed}


@register
class Delay(Effect):
    type_name = "delay"
    function = staticmethod(dsp.delay)
    linear = True

    def __init__(self) -> None:
        self.specs = [
            ParamSpec("time_ms", "ms", 10.0, 2000.0, 250.0, "log"),
            ParamSpec("feedback", "", 0.0, 0.9, 0.3),
            ParamSpec("mix", "", 0.0, 1.0, 0.0),
        ]
