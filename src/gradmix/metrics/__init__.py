"""Objective mix metrics: features with documented formulas (distances and set metrics follow)."""

from gradmix.metrics.features import (dynamics_features, loudness_features, loudness_range, mix_features,
                                      panning_features, spectral_features, true_peak_dbtp)

__all__ = ["dynamics_features", "loudness_features", "loudness_range", "mix_features", "panning_features",
           "spectral_features", "true_peak_dbtp"]
