# Two commands for a new user: `make demo` and `make test`. Each creates .venv and installs
# what it needs when missing; .ci/run calls `make test` and nothing else.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed-stamp

.PHONY: demo test lint bench clean help chromium

help:
	@echo "make demo   run the whole path end to end on an embedded nats-server"
	@echo "make test   run every test (unit and real nats-server integration)"
	@echo "make lint   ruff check, ruff format --check, mypy --strict"
	@echo "make bench  run the benchmarks (JSON to stdout and benchmarks/results/)"

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/atlas-broker demo

test: $(STAMP) chromium
	$(BIN)/python -m pytest -q -p no:cacheprovider

# The audit report test renders the page in Debian's headless Chromium.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the report test"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache atlas-data
