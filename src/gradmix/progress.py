"""One progress bar for every long job (rich), shown only when asked (e.g. when stdout is a terminal)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

T = TypeVar("T")


def progress(
    items: Iterable[T], label: str, show: bool, *, total: int | None = None, transient: bool = False
) -> Iterable[T]:
    """``items`` unchanged, wrapped in a rich progress bar when ``show``."""
    if not show:
        return items
    from rich.progress import track

    return track(items, total=total, description=label, transient=transient)
