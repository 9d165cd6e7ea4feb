"""Saving and loading a trained mixing model (``model.pt``), and the default model shipped in the package.

A model file is a plain ``torch.save`` dictionary read with ``weights_only=True``: ``format``, ``version``,
``layout`` (only ``"default"`` for now), ``sample_rate``, ``config`` (:class:`ModelConfig`), ``info``
(how it was trained) and ``state_dict`` (float16, to keep the package small).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from gradmix.audio import write_atomically
from gradmix.console import Layout
from gradmix.errors import GradmixError
from gradmix.models.controller import MixController, ModelConfig

FORMAT, VERSION = "gradmix.model", 1
DEFAULT_MODEL = Path(__file__).with_name("default_model.pt")


def save_model(path: str | os.PathLike, model: MixController, *, sample_rate: int, info: dict[str, Any]) -> Path:
    """Write ``model`` atomically to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(torch.float16) if v.is_floating_point() else v for k, v in model.state_dict().items()}
    blob = {
        "format": FORMAT,
        "version": VERSION,
        "layout": "default",
        "sample_rate": int(sample_rate),
        "config": model.cfg.to_dict(),
        "info": info,
        "state_dict": state,
    }
    return write_atomically(path, lambda f: torch.save(blob, f))


def load_model(path: str | os.PathLike | None = None) -> tuple[MixController, dict[str, Any]]:
    """Load a model file (default: the shipped model); returns the model in eval mode and its metadata."""
    path = Path(path) if path is not None else DEFAULT_MODEL
    if not path.is_file():
        hint = (
            " (the package was installed without its default model; run `make model`)" if path == DEFAULT_MODEL else ""
        )
        raise GradmixError(f"{path}: no such model file{hint}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one user-facing error
        raise GradmixError(f"{path}: not a gradmix model file ({type(exc).__name__})") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise GradmixError(f"{path}: not a gradmix model file")
    if blob.get("version") != VERSION or blob.get("layout") != "default":
        raise GradmixError(
            f"{path}: model file version {blob.get('version')} / layout {blob.get('layout')!r} "
            f"is not supported by this gradmix"
        )
    model = MixController(Layout.default(), ModelConfig.from_dict(blob["config"]))
    state = {k: v.float() if v.is_floating_point() else v for k, v in blob["state_dict"].items()}
    for name in ("style_bank", "style_bank_offsets", "style_bank_tones"):  # sized by the file; absent from older files
        if hasattr(model, name):
            setattr(model, name, state.setdefault(name, getattr(model, name)))
    model.load_state_dict(state)
    model.eval()
    return model, {k: blob[k] for k in ("sample_rate", "config", "info")}
