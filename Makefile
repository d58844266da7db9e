# Two commands for a new user: `make demo` and `make test`. Each creates .venv and installs
# what it needs when missing; .ci/run calls `make test` and nothing else.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed-stamp

.PHONY: demo test lint bench clean help system-packages

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

test: $(STAMP) system-packages
	$(BIN)/python -m pytest -q -p no:cacheprovider

# Debian packages some tests need, installed when missing: chromium renders the audit
# report page headless; systemd's systemd-analyze verifies the units in deploy/systemd.
system-packages:
	@missing=; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v systemd-analyze >/dev/null 2>&1 || missing="$$missing systemd"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages for the tests:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache atlas-data
