# Sound Sentry — common tasks. Everything runs inside .venv (made by scripts/setup.sh).
SHELL  := /bin/bash
PYTHON := .venv/bin/python
HOST   ?= 0.0.0.0
PORT   ?= 8000
PYTEST_ARGS ?=

.PHONY: help setup setup-dev serve test lint train zoo operating-point rollup evaluate clean distclean

help:
	@echo "make setup      system tools + .venv with runtime requirements"
	@echo "make serve      run the API on $(HOST):$(PORT)"
	@echo "make test       dev setup, ruff, then pytest (PYTEST_ARGS=... for extra flags)"
	@echo "make lint       ruff check over the project"
	@echo "make train      rebuild data/ from ../shared/corpus;  make evaluate  devset figures + model card"
	@echo "make zoo        render the generator zoo's fakes into cache/zoo (about 10 min)"
	@echo "make operating-point  refit data/fusion.json's thresholds on Debian-shipped real speech (about 8 min)"
	@echo "make rollup     refit data/rollup.json, the per-speaker contrast roll-up (about 12 min)"
	@echo "make clean      remove caches;  make distclean  also removes .venv"

setup:
	bash scripts/setup.sh

setup-dev:
	bash scripts/setup.sh --dev

serve: setup
	$(PYTHON) -m api.server --host $(HOST) --port $(PORT)

test: setup-dev lint
	$(PYTHON) -m pytest -q tests $(PYTEST_ARGS)

lint: setup-dev
	$(PYTHON) -m ruff check .

# Rebuild every shipped model from ../shared/corpus: the recipes in configs/, in file-name order, each
# copied beside what it made (data/recipes/ for the shipped artefacts). About 5 h on 2 cores (+10 min the zoo,
# +8 min the operating point, +12 min the roll-up), 2.4 h of it vocoder training (configs/02, 03, 06, 07), 25 min TKAN features,
# 80 min the two CNN-Transformer seeds; `soundsentry train --dry-run configs/*.toml` lists each step's command and minutes.
SHARED ?= ../shared
train: setup-dev
	.venv/bin/soundsentry train --shared $(SHARED) configs/*.toml

# The generator zoo's fakes alone (configs/18_zoo.toml, about 10 min on one core): cache/zoo/
zoo: setup-dev
	.venv/bin/soundsentry train --shared $(SHARED) configs/18_zoo.toml

# The operating point alone (configs/19_reals.toml, 20_operating_point.toml; about 8 min on one core): the
# decision thresholds in data/fusion.json from real speech no scorer trained on; then `make evaluate`
operating-point: setup-dev
	.venv/bin/soundsentry train --shared $(SHARED) configs/19_reals.toml configs/20_operating_point.toml

# The contrast roll-up alone (configs/21_rollup.toml; about 12 min on one core, 10 of them building 600
# conversations from cache/reals and cache/zoo): data/rollup.json; then `make evaluate`
rollup: setup-dev
	.venv/bin/soundsentry train --shared $(SHARED) configs/21_rollup.toml

# --restart: the published figures are scored afresh (a run by hand resumes from results/*/predictions.partial.jsonl)
evaluate: setup
	$(PYTHON) -m scripts.run_test --test-dir $(SHARED)/devset --output-dir results/devset --restart
	$(PYTHON) -m scripts.run_test --test-dir $(SHARED)/devset --output-dir results/devset_webm --browser-chunks --restart
	$(PYTHON) -m scripts.evaluate_conversations --devset $(SHARED)/devset --output-dir results/conversations
	$(PYTHON) -m scripts.check_shortcuts --data $(SHARED)/corpus/manifest.csv --output results/shortcuts_corpus.json
	$(PYTHON) -m scripts.model_card --devset-metrics results/devset/metrics.json \
	  --browser-metrics results/devset_webm/metrics.json

clean:
	find . -path ./.venv -prune -o -path ./.git -prune -o \
	  \( -name __pycache__ -o -name .pytest_cache -o -name .hypothesis \) -type d -print0 \
	  | xargs -0 rm -rf

distclean: clean
	rm -rf .venv
