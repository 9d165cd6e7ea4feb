"""Objective mix metrics: features with documented formulas, distances to a target mix, set-level metrics."""

from gradmix.metrics.distances import (GROUPS, aggregate_score, diversity, feature_errors, feature_vector,
                                       frame_features, frechet_distance, median_bandwidth, mmd, mmd_test,
                                       mrstft_distance, running_mean, style_distance, style_features)
from gradmix.metrics.features import (dynamics_features, loudness_features, loudness_range, mix_features,
                                      panning_features, spectral_features, spectral_frames,
                                      stereo_panning_spectrum, true_peak_dbtp)

__all__ = ["GROUPS", "aggregate_score", "diversity", "dynamics_features", "feature_errors", "feature_vector",
           "frame_features", "frechet_distance", "loudness_features", "loudness_range", "median_bandwidth",
           "mix_features", "mmd", "mmd_test", "mrstft_distance", "panning_features", "running_mean",
           "spectral_features", "spectral_frames", "stereo_panning_spectrum", "style_distance", "style_features",
           "true_peak_dbtp"]
