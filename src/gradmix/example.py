"""A built-in example multitrack, synthesised by code (so it ships with no licence question)."""

from __future__ import annotations

import math

import torch

EXAMPLE_TRACKS = ("kick", "snare", "hats", "bass", "chords", "lead")


def example_multitrack(seconds: float = 8.0, sample_rate: int = 44100, seed: int = 0) -> dict[str, torch.Tensor]:
    """A short 120 bpm groove: kick, snare, hi-hats, bass, chords, lead — dry mono stems.

    Args:
        seconds: length in seconds.
        sample_rate: Hz.
        seed: seed of the noise sources (same seed, same audio).

    Returns:
        ``{track name: (1, samples) float32 tensor}``, each peaking near -6 dBFS.
    """
    gen = torch.Generator().manual_seed(seed)
    n = int(seconds * sample_rate)
    t = torch.arange(n, dtype=torch.float64) / sample_rate
    beat = 0.5  # seconds per beat at 120 bpm
    phase = (t % beat) / beat
    bar_pos = t % (4 * beat)

    def decay(since: torch.Tensor, tau: float) -> torch.Tensor:
        return torch.exp(-since / tau)

    since_beat = t % beat
    kick = torch.sin(2 * math.pi * (50 * since_beat + 60 * 0.03 * (1 - decay(since_beat, 0.03)))) * decay(
        since_beat, 0.15
    )
    since_snare = (t - beat) % (2 * beat)
    noise = torch.randn(n, generator=gen, dtype=torch.float64)
    snare = (0.6 * noise + 0.4 * torch.sin(2 * math.pi * 190 * t)) * decay(since_snare, 0.08)
    since_eighth = t % (beat / 2)
    hat_noise = torch.randn(n, generator=gen, dtype=torch.float64)
    hats = torch.diff(hat_noise, prepend=hat_noise[:1]) * decay(since_eighth, 0.02) * 0.5
    roots = torch.tensor([55.0, 55.0, 43.65, 49.0])  # A, A, F, G
    bar = (t // (4 * beat)).long() % 4
    root = roots[bar].double()
    bass_phase = 2 * math.pi * torch.cumsum(root, 0) / sample_rate
    bass = torch.tanh(2 * torch.sin(bass_phase)) * (0.6 + 0.4 * decay(since_beat, 0.2))
    chord = torch.zeros(n, dtype=torch.float64)
    for ratio in (4.0, 5.04, 6.0, 8.0):
        ph = 2 * math.pi * torch.cumsum(root * ratio, 0) / sample_rate
        chord = chord + torch.sin(ph) + 0.3 * torch.sin(2 * ph)
    chords = chord * (0.5 + 0.5 * torch.sin(2 * math.pi * 0.25 * t) ** 2)
    melody = torch.tensor([440.0, 523.25, 587.33, 659.25, 587.33, 523.25, 440.0, 392.0])
    note = melody[((t // beat).long() % 8)].double() * (1 + 0.004 * torch.sin(2 * math.pi * 5.5 * t))
    lead_phase = 2 * math.pi * torch.cumsum(note, 0) / sample_rate
    lead = torch.sin(lead_phase) + 0.5 * torch.sin(2 * lead_phase) + 0.25 * torch.sin(3 * lead_phase)
    lead = lead * (1 - decay(since_beat, 0.01)) * decay(since_beat, 0.4) * (bar_pos >= 0).double()
    del phase
    out = {}
    for name, sig in zip(EXAMPLE_TRACKS, (kick, snare, hats, bass, chords, lead)):
        out[name] = (sig / sig.abs().max() * 0.5).float()[None]
    return out
