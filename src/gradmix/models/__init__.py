"""Mixing networks that drive the console, their losses, and the shipped default model."""

from gradmix.models.controller import (
    SILENT_LUFS,
    ModelConfig,
    MixController,
    normalization_db,
    normalization_gain_db,
    sounding_mask,
    track_loudness,
)
from gradmix.models.losses import MixLoss

__all__ = [
    "SILENT_LUFS",
    "ModelConfig",
    "MixController",
    "MixLoss",
    "normalization_db",
    "normalization_gain_db",
    "sounding_mask",
    "track_loudness",
]
