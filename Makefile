# Sound Sentry — common tasks. Everything runs inside .venv (made by scripts/setup.sh).
SHELL  := /bin/bash
PYTHON := .venv/bin/python
HOST   ?= 0.0.0.0
PORT   ?= 8000
PYTEST_ARGS ?=

# pyannote.audio must not send telemetry, wherever Python runs.
export PYANNOTE_METRICS_ENABLED := false

.PHONY: help setup setup-dev serve test train evaluate clean distclean

help:
	@echo "make setup      system tools + .venv with runtime requirements"
	@echo "make serve      run the API on $(HOST):$(PORT)"
	@echo "make test       dev setup, then pytest (PYTEST_ARGS=... for extra flags)"
	@echo "make train      rebuild data/ from ../shared/corpus;  make evaluate  devset figures + model card"
	@echo "make clean      remove caches;  make distclean  also removes .venv"

setup:
	bash scripts/setup.sh

setup-dev:
	bash scripts/setup.sh --dev

serve: setup
	$(PYTHON) -m uvicorn api.main:app --host $(HOST) --port $(PORT)

test: setup-dev
	$(PYTHON) -m pytest -q tests $(PYTEST_ARGS)

# Rebuild the shipped TKAN model from ../shared/corpus (about 25 min on 2 cores), then evaluate it.
SHARED ?= ../shared
train: setup
	$(PYTHON) -m scripts.make_spoofs --corpus $(SHARED)/corpus
	$(PYTHON) -m scripts.feature_extractor --data $(SHARED)/corpus --data cache/spoofs/manifest.csv --output cache/features/train
	$(PYTHON) -m scripts.train_classifier --features cache/features/train --output data

evaluate: setup
	$(PYTHON) -m scripts.run_test --test-dir $(SHARED)/devset --output-dir results/devset
	$(PYTHON) -m scripts.run_test --test-dir $(SHARED)/devset --output-dir results/devset_webm --browser-chunks
	$(PYTHON) -m scripts.model_card --devset-metrics results/devset/metrics.json \
	  --browser-metrics results/devset_webm/metrics.json --notes data/NOTES.md

clean:
	find . -path ./.venv -prune -o -path ./.git -prune -o \
	  \( -name __pycache__ -o -name .pytest_cache -o -name .hypothesis \) -type d -print0 \
	  | xargs -0 rm -rf

distclean: clean
	rm -rf .venv
