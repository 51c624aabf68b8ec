# The README's two commands: `make run` and `make test`. Everything else supports them.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
MODELS ?= model_repository
PORT ?= 8000
# A bare `torch` requirement can pull a multi-GB CUDA build: install the CPU build explicitly first.
# The project's own requirement stays a range (pyproject.toml). Override TORCH for a CUDA machine.
TORCH ?= torch==2.13.0

.PHONY: install run train-defaults serve test test-slow chromium lint format clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

train-defaults: install  ## train the four default models on digits if the repository is empty
	$(PY) -m training.defaults --models $(MODELS)

run: train-defaults  ## train the defaults if needed, then serve on port $(PORT)
	$(PY) -m service serve --models $(MODELS) --host 0.0.0.0 --port $(PORT)

chromium:  ## the browser tests drive Debian's chromium (never `playwright install`): installed when missing, as root
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) ; } \
	  || echo "*** chromium is missing: the browser tests (tests/browser) will FAIL; apt-get install -y chromium ***"

test: install chromium  ## the suite without the slow markers, then the browser tests in their own process
	$(PY) -m pytest -q -m "not ray and not distributed and not browser"
	$(PY) -m pytest -q -m browser  # playwright's sync API keeps an event loop running: apart from the async tests

test-slow: install  ## the real local Ray cluster and the multi-process torchrun tests (CI runs them too)
	$(PY) -m pytest -q -m "ray or distributed"

lint: install  ## ruff (lint and format) and mypy (artifact/, service/, models/, latentserve/): what CI runs
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) runs .pytest_cache
