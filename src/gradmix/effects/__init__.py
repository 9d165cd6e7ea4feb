"""Effect classes: parameter specs with documented mixing ranges, 0..1 <-> physical mapping, registry."""

from gradmix.effects import library as _library  # noqa: F401  (registers the effects)
from gradmix.effects.base import REGISTRY, Effect, create, get_effect, register
from gradmix.effects.library import (
    Balance,
    Compressor,
    Delay,
    Distortion,
    Expander,
    Gain,
    GraphicEQ,
    Limiter,
    NoiseGate,
    Pan,
    ParametricEQ,
    Reverb,
    StereoWidth,
)
from gradmix.effects.spec import ParamSpec

__all__ = [
    "REGISTRY",
    "Effect",
    "ParamSpec",
    "create",
    "get_effect",
    "register",
    "Balance",
    "Compressor",
    "Delay",
    "Distortion",
    "Expander",
    "Gain",
    "GraphicEQ",
    "Limiter",
    "NoiseGate",
    "Pan",
    "ParametricEQ",
    "Reverb",
    "StereoWidth",
]
