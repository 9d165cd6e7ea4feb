"""The tuning of ``gradmix fit``, in one place."""

from __future__ import annotations

from dataclasses import dataclass

from gradmix.console.setting import CHUNK_SAMPLES


@dataclass(frozen=True)
class FitTuning:
    """Every constant of ``gradmix fit``; :data:`TUNING` is the one its command uses.

    Attributes:
        window_s: seconds of the song that one gradient step renders (a random window).
        warmup_s: seconds rendered before that window, so that envelopes and tails are in place.
        check_every: steps between renders of the whole song (the best console so far is kept).
        moves: the closed-form moves, each with the share of the budget (time or steps) after which it is
            made: ``"levels"`` (:func:`gradmix.fit.levels.solve_levels`), or a bus effect whose time is searched
            (:func:`gradmix.fit.time_search.search_time`).
        align_max_s: a target is moved by at most this many seconds against the stems ...
        align_min_overlap: ... and must then cover this share of them ...
        align_window_s: ... the lag being found over the stems' first this many seconds.
        bytes_per_track_second: memory fit needs besides the loaded stems and the model, per second of each
            track (the tracks at the model's level, 0.35 MB/s, and the song's render) ...
        bytes_per_searched_track_second: ... and besides per second of each track within the first
            ``search_s`` (the time search's and the level solve's renders and spectra). Measured peak resident
            sizes of ``gradmix fit``: 2.2 GB for 8 tracks x 30 s, 5.2 GB for 32 x 30 s, 2.3 GB for 8 x 90 s, of
            which about 1.2 GB is the model's and the libraries' own (the estimate: 1.1, 4.5 and 1.5 GB besides).
        search_s: seconds of the song (from its start) whose cross-correlations give the time search its
            candidate lags.
        judge_s: seconds of the song (from its start) on which the time search judges its candidates.
        fine_ms: how far (ms) the time search moves its chosen time to the peak of the high band's
            cross-correlation.
        level_solve_s: seconds of the song (from its start) that the least-squares fit of levels, pans and
            sends looks at.
        level_rounds: rounds of alternating least squares (gains, then sends) of the level solve.
        chunk_samples: samples (all channels of all tracks of a chunk) in one batched render or one batch of
            cross-spectra.
    """

    window_s: float = 2.5
    warmup_s: float = 1.0
    check_every: int = 10
    moves: tuple[tuple[float, str], ...] = ((0.0, "levels"),) + tuple(
        (share, move) for share in (0.25, 0.6) for move in ("delay", "reverb", "levels")
    )
    align_max_s: float = 2.0
    align_min_overlap: float = 0.9
    align_window_s: float = 60.0
    bytes_per_track_second: float = 0.7e6
    bytes_per_searched_track_second: float = 4e6
    search_s: float = 30.0
    judge_s: float = 10.0
    fine_ms: float = 10.0
    level_solve_s: float = 15.0
    level_rounds: int = 4
    chunk_samples: int = CHUNK_SAMPLES


TUNING = FitTuning()
"""The tuning ``gradmix fit`` uses."""
