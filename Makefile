# One command to set up and start the app (`make run`), one to set up and run the tests
# (`make test`). Both create .venv on first use and reinstall when the requirements change.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup run test lint format browser-deps bench clean

$(STAMP): $(wildcard requirements*.txt) pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -r requirements-dev.txt
	$(PY) -m pip install --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)

run: setup
	$(VENV)/bin/streamlit run dashboard/app.py

browser-deps:
	bash scripts/ensure_chromium.sh

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check core dashboard tests benchmarks

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format core dashboard tests benchmarks

test: setup browser-deps
	$(VENV)/bin/ruff check .
	$(PY) -m pytest

bench: setup
	$(PY) benchmarks/pca.py
	$(PY) benchmarks/features.py
	$(PY) benchmarks/keywords.py

clean:
	rm -rf $(VENV) .sceneseek .pytest_cache .ruff_cache
