# gradmix: install, demo, tests, benchmarks. Everything goes into .venv (Python 3.11).
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check

.PHONY: install sysdeps demo test bench model eval-model removal-model eval-removal clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	# torch first and pinned: a CPU build on local disk; anything unpinned would pull a CUDA build.
	$(PIP) install torch==2.13.0
	$(PIP) install -e ".[dev]"
	touch $@

# benchmark peers; torchlpc (under torchcomp) compiles against torch: build it against the pinned one
$(VENV)/.bench: $(VENV)/.installed
	$(PIP) install numpy setuptools wheel
	$(PIP) install --no-build-isolation torchlpc==0.7.2
	$(PIP) install -e ".[dev,bench]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/gradmix demo -o out/demo

# ffmpeg reads MUSDB .stem.mp4 files, lmms renders real multitracks, fluidsynth with a GM soundfont renders
# scores, chromium runs the studio's browser tests; the tests need them all (under CI=true they fail without).
sysdeps:
	@{ command -v ffmpeg >/dev/null && command -v lmms >/dev/null && command -v fluidsynth >/dev/null && \
		[ -f /usr/share/sounds/sf2/FluidR3_GM.sf2 ] && [ -x /usr/bin/chromium ]; } || \
		{ command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ffmpeg lmms lmms-common \
		fluidsynth fluid-soundfont-gm chromium; } || \
		echo "note: install ffmpeg (.stem.mp4 files), lmms + lmms-common (gradmix dataset lmms), fluidsynth +" \
		"fluid-soundfont-gm (gradmix dataset midi), chromium (studio tests)"

test: install sysdeps
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m ruff format --check src tests benchmarks
	$(PY) -m pytest -q

# the default model: LMMS demo songs rendered into stems + mixes (resumable), then the three stages of the
# recipe (each resumes from its runs/ folder if interrupted), then the weights go into the package
model: install sysdeps
	$(VENV)/bin/gradmix dataset lmms data/lmms
	$(VENV)/bin/gradmix train configs/default.yaml
	$(VENV)/bin/gradmix train configs/per-track.yaml
	$(VENV)/bin/gradmix train configs/habit-eq.yaml
	cp runs/habit-eq/model.pt src/gradmix/models/default_model.pt

# the default model against the baselines on the songs its training held out
eval-model: install
	$(VENV)/bin/gradmix eval data/lmms --held-out --systems plain_sum,equal_loudness,rules,gradmix -o out/eval-model
	$(VENV)/bin/gradmix eval data/lmms --held-out --generative --seeds 0 1 2 -o out/eval-model

# the effect estimator of gradmix dry: dry stems of the LMMS songs, of 100 scores and of LMMS's own sounds (all
# resumable), training on console-made pairs (resumes from runs/removal), then training on with the sounds at
# 8 stems a folder (about a third of the pool; resumes from runs/removal-sounds); the weights go into the package
removal-model: install sysdeps
	$(VENV)/bin/gradmix dataset lmms data/lmms
	$(VENV)/bin/gradmix dataset midi data/midi --songs 100
	$(VENV)/bin/gradmix dataset sounds data/sounds
	$(VENV)/bin/gradmix train-removal data/lmms data/midi -o runs/removal
	$(VENV)/bin/gradmix train-removal data/lmms data/midi data/sounds --stems-per-song data/sounds=8 \
		--init runs/removal/model.pt --steps 8000 --lr 5e-4 -o runs/removal-sounds
	cp runs/removal-sounds/model.pt src/gradmix/models/removal_model.pt

# effect removal on the held-out stems of both datasets
eval-removal: install
	$(VENV)/bin/gradmix eval data/lmms data/midi --removal -o out/eval-removal

bench: $(VENV)/.bench
	$(PY) benchmarks/effects.py
	$(PY) benchmarks/console.py
	$(PY) benchmarks/mix.py

clean:
	rm -rf $(VENV) out .pytest_cache .hypothesis
