# The two commands a newcomer needs; both set up the machine first (.ci/setup is idempotent).
BACKLINE_DATA ?= $(HOME)/.cache/backline/data
export BACKLINE_DATA

.PHONY: setup demo test

setup:
	bash .ci/setup

demo: setup
	.venv/bin/backline data build --preset small --out "$(BACKLINE_DATA)/small"
	.venv/bin/backline data stats "$(BACKLINE_DATA)/small"

test: setup
	OMP_NUM_THREADS=1 .venv/bin/python -m pytest
