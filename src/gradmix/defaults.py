"""Defaults of the library functions that the commands expose: one place, read by the functions and by the
command-line help (this module imports nothing, so ``gradmix --help`` stays fast)."""

DEMO_OUT = "out/demo"
DEMO_SECONDS = 8.0
"""Length of the built-in example multitrack (s)."""
SAMPLE_COUNT = 8
"""Mixes that ``gradmix sample`` writes (and ``gradmix eval --generative`` draws per song)."""
SAMPLE_TEMPERATURE = 1.4
"""How far each sampled mix moves from the automatic mix towards its drawn human style (1: as far as a human
engineer was from the model)."""
SAMPLE_REFINE_STEPS = 30
"""Steps optimising each sampled mix's pans, sends, buses and master towards its style."""
MATCH_REFINE_STEPS = 30
"""Steps optimising ``gradmix match``'s console against the reference's features."""
FIT_MAX_STEPS = 2000
FIT_BUDGET_S = 120.0
"""Most optimisation steps and seconds of ``gradmix fit``."""
STUDIO_HOST = "127.0.0.1"
STUDIO_PORT = 8765
STEM_LUFS = -25.0
"""Loudness of every stem that effect normalisation writes (LUFS)."""
DATASET_SAMPLE_RATE = 44100
EVAL_SECONDS = 30.0
"""Seconds of each song that ``gradmix eval`` measures (from the start)."""
EVAL_SYSTEMS = ("plain_sum", "equal_loudness", "rules", "random_console")
DEVICE = "cpu"
"""Where the commands compute: ``cpu``, ``cuda`` (``cuda:N``) or ``auto`` (CUDA where torch sees it)."""
MIDI_SONG_SECONDS = 30.0
"""Length of every song of ``gradmix dataset midi`` (seconds from the score's start)."""
REMOVAL_STEPS = 20000
"""Training steps of the effect estimator (``gradmix train-removal``, ``make removal-model``)."""
