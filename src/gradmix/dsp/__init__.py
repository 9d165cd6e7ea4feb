"""Differentiable audio effects as pure functions on ``(batch, channels, samples)`` tensors.

Parameters are keyword-only, in physical units named in the keyword (``gain_db``, ``freq_hz``,
``attack_ms``, ``q``), each a float (shared by the batch) or a ``(batch,)`` / ``(batch, bands)`` tensor.
"""

from gradmix.dsp.biquad import SHAPES, biquad, biquad_coefficients, frequency_response_db, sos_filter
from gradmix.dsp.distortion import DISTORTION_SHAPES, distortion
from gradmix.dsp.dynamics import compressor, expander, limiter, limiter_latency_samples, noise_gate
from gradmix.dsp.eq import OCTAVE_CENTRES_HZ, THIRD_OCTAVE_CENTRES_HZ, graphic_eq, graphic_eq_centres_hz, parametric_eq
from gradmix.dsp.gain import balance, gain, pan, stereo_width
from gradmix.dsp.loudness import integrated_loudness, soft_integrated_loudness
from gradmix.dsp.reverb import REVERB_BANDS, REVERB_CROSSOVERS_HZ, delay, fft_convolve, reverb

__all__ = [
    "SHAPES",
    "DISTORTION_SHAPES",
    "OCTAVE_CENTRES_HZ",
    "THIRD_OCTAVE_CENTRES_HZ",
    "REVERB_BANDS",
    "REVERB_CROSSOVERS_HZ",
    "balance",
    "biquad",
    "biquad_coefficients",
    "compressor",
    "delay",
    "distortion",
    "expander",
    "fft_convolve",
    "frequency_response_db",
    "gain",
    "graphic_eq",
    "graphic_eq_centres_hz",
    "integrated_loudness",
    "limiter",
    "limiter_latency_samples",
    "noise_gate",
    "pan",
    "parametric_eq",
    "reverb",
    "soft_integrated_loudness",
    "sos_filter",
    "stereo_width",
]
