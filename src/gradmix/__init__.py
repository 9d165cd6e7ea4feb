"""gradmix: automatic multitrack mixing through a differentiable mixing console."""

from gradmix.errors import AudioError, ConsoleFileError, GradmixError, ParameterError, ShapeError, UnknownEffectError

__version__ = "0.1.0"

__all__ = [
    "AudioError",
    "ConsoleFileError",
    "GradmixError",
    "ParameterError",
    "ShapeError",
    "UnknownEffectError",
    "__version__",
]
