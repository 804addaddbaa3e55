# Sound Sentry — common tasks. Everything runs inside .venv (made by scripts/setup.sh).
SHELL  := /bin/bash
PYTHON := .venv/bin/python
HOST   ?= 0.0.0.0
PORT   ?= 8000
PYTEST_ARGS ?=

# pyannote.audio must not send telemetry, wherever Python runs.
export PYANNOTE_METRICS_ENABLED := false

.PHONY: help setup setup-dev serve test clean distclean

help:
	@echo "make setup      system tools + .venv with runtime requirements"
	@echo "make serve      run the API on $(HOST):$(PORT)"
	@echo "make test       dev setup, then pytest (PYTEST_ARGS=... for extra flags)"
	@echo "make clean      remove caches;  make distclean  also removes .venv"

setup:
	bash scripts/setup.sh

setup-dev:
	bash scripts/setup.sh --dev

serve: setup
	$(PYTHON) -m uvicorn api.main:app --host $(HOST) --port $(PORT)

test: setup-dev
	$(PYTHON) -m pytest -q tests $(PYTEST_ARGS)

# Further targets (bench, train, evaluate) go here, each depending on `setup`
# and calling a module under scripts/, e.g.:  $(PYTHON) -m scripts.run_test ...

clean:
	find . -path ./.venv -prune -o -path ./.git -prune -o \
	  \( -name __pycache__ -o -name .pytest_cache -o -name .hypothesis \) -type d -print0 \
	  | xargs -0 rm -rf

distclean: clean
	rm -rf .venv
