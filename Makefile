# One command to set up and start the app (`make run`), one to set up and run the tests
# (`make test`). Both create .venv on first use and reinstall when the requirements change.
# The first Python 3.11+ on PATH (3.11 is what CI tests; 3.12 and 3.13 work too).
PYTHON ?= $(firstword $(foreach p,python3.11 python3.12 python3.13 python3,\
  $(if $(shell command -v $(p) >/dev/null 2>&1 && $(p) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && echo ok),$(p))))
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup run test test-fast lint format browser-deps bench clean

$(STAMP): $(wildcard requirements*.txt) pyproject.toml
	@test -n "$(PYTHON)" || { echo 'SceneSeek needs Python 3.11 or newer (python3.11, python3.12, python3.13 or python3 on PATH)' >&2; exit 1; }
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

# The edit loop: leaves out the slow, Ray and browser tests (CI runs everything: `make test`).
test-fast: setup
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -m "not slow and not ray and not browser" -q

bench: setup
	$(PY) benchmarks/pca.py
	$(PY) benchmarks/features.py
	$(PY) benchmarks/keywords.py

clean:
	rm -rf $(VENV) .sceneseek .pytest_cache .ruff_cache
