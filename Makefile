# Two commands for a newcomer: `make dev` runs everything, `make test` runs the tests.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install dev test browser lint typecheck check clean bench chaos

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[local,test,agent-framework]'
	touch $(STAMP)

dev: install
	$(PY) -m cli.main dev

test: install browser
	$(PY) -m pytest $(PYTEST_ARGS)

# The browser tests drive Debian's Chromium; install it when missing (needs root or sudo).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing chromium for the browser tests"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

# Benchmarks and resilience runs (minutes; loopback only). Figures go to .data/bench/.
# The memory soak runs last, for SOAK_MINUTES (30 by default; 0 skips it).
SOAK_MINUTES ?= 30
bench: install
	mkdir -p .data/bench
	for b in ingress e2e fanout cost baseline streaming; do \
	  $(PY) -m bench.$$b | tee .data/bench/$$b.log || exit 1; done
	[ "$(SOAK_MINUTES)" = 0 ] || $(PY) -m bench.soak --minutes $(SOAK_MINUTES) | tee .data/bench/soak.log

chaos: install
	mkdir -p .data/bench
	$(PY) -m bench.chaos | tee .data/bench/chaos.log

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

typecheck: install
	$(VENV)/bin/mypy

check: lint typecheck test

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
