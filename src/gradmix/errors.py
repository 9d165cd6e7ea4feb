"""Project exceptions: every bad input raises one of these with a message that names the value found
and what was expected; the CLI prints the message as one line and exits non-zero."""


class GradmixError(Exception):
    """Base class of every error gradmix raises on purpose."""


class ParameterError(GradmixError, ValueError):
    """A parameter value (a float or a tensor) is non-finite, out of range or of the wrong shape."""


class ShapeError(GradmixError, ValueError):
    """An audio tensor has the wrong number of dimensions or channels."""


class AudioError(GradmixError):
    """An audio file or folder is missing, unreadable, empty, non-finite or has an unsupported layout."""


class ConsoleFileError(GradmixError):
    """A console file does not follow the schema; the message names the exact place of the problem."""


class UnknownEffectError(GradmixError, KeyError):
    """An effect type name is not in the registry."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])
