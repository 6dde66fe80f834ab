# `make demo` runs the seed scripts end to end; `make test` runs ruff and the whole suite.
# Both create .venv on first use and reinstall when pyproject.toml changes.
# `make chromium` installs Debian's chromium, which the browser tests in tests/browser drive.
# `make bench` runs every benchmark in bench/ at full size; docs/benchmarks.md has the figures.
# The Firestore ones start Google's Firestore emulator, which needs Java.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
CHROMIUM := /usr/bin/chromium

.PHONY: demo test lint chromium bench clean

$(INSTALLED): pyproject.toml examples/modules/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]' -e 'examples/modules[test]'
	touch $@

demo: $(INSTALLED)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash examples/demo.sh build/demo

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Playwright drives this system chromium and never downloads a browser of its own.
# Installing it needs root, which CI has; elsewhere a missing chromium stops here with the command.
chromium:
	@if [ ! -x $(CHROMIUM) ]; then \
		if [ "$$(id -u)" -ne 0 ]; then \
			echo "$(CHROMIUM) is missing and installing it needs root:" \
				"run 'sudo apt-get install chromium', then 'make test' again" >&2; \
			exit 1; \
		fi; \
		echo "installing Debian's chromium for the browser tests"; \
		apt-get update -qq && \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; \
	fi

test: lint chromium
	$(BIN)/python -m pytest

bench: $(INSTALLED)
	$(BIN)/python bench/state_bench.py
	$(BIN)/python bench/flow_bench.py
	$(BIN)/python bench/cold_start.py
	$(BIN)/python bench/roundtrips.py
	$(BIN)/python bench/first_tick.py

clean:
	rm -rf $(VENV) build .pytest_cache .ruff_cache
