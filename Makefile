# The two commands a newcomer needs; both set up the machine first (.ci/setup is idempotent).
BACKLINE_DATA ?= $(HOME)/.cache/backline/data
OUT ?= out
export BACKLINE_DATA

.PHONY: setup demo test

setup:
	bash .ci/setup

# The main job: a bass and a drum stem for the bundled example, with the shipped models.
demo: setup
	.venv/bin/backline generate --context examples/ultima_context.flac --instrument bass --seed 0 --out $(OUT)/ultima_bass.wav
	.venv/bin/backline generate --context examples/ultima_context.flac --instrument drums --seed 0 --out $(OUT)/ultima_drums.wav

test: setup
	OMP_NUM_THREADS=1 .venv/bin/python -m pytest
