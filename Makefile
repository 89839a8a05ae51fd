# contextbox — `make test` is what CI runs (.ci/run); `make demo` is the offline demo.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: install install-local system-deps test wheel-check demo lint bench mutation mutants-listed clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(PIP) install --upgrade pip

install: $(BIN)/python
	$(PIP) install -e '.[dev]'

install-local: $(BIN)/python
	$(PIP) install -e '.[dev,local,bench,ray,demos,mcp,docs]'

# Debian's chromium for the visualizer's browser test (never a downloaded browser build)
system-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
	  else echo "make: chromium is missing: sudo apt-get install chromium" >&2; exit 1; fi; }

test: install-local system-deps
	$(BIN)/python -m pytest -q -p no:cacheprovider

# the wheel builds, installs into a fresh venv and runs (also part of make test: tests/test_wheel.py)
wheel-check: install-local
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/test_wheel.py

demo: $(BIN)/python
	$(PIP) install -e '.[local]'
	$(BIN)/rlm model prepare
	$(BIN)/rlm demo war-and-peace

lint: install
	$(BIN)/ruff check src tests bench

# mutation testing (docs/mutation.md). `make mutation`: a random sample of SAMPLE (40) mutants of each core
# module and one table of kill rates (half an hour to an hour on 2 cores). Every mutant of some modules:
#   make mutation MODULES=bench/scoring.py      Tests: TESTS="tests/test_x.py"   Parallel: JOBS=2
# every mutant of every module (hours of CPU): make mutation FULL=1
mutation: install
	$(PIP) install -e '.[dev,mutation]'
	$(BIN)/python tests/mutation.py --max-children $(or $(JOBS),2) \
	  $(if $(MODULES),--modules $(MODULES),$(if $(FULL),,--sweep $(or $(SAMPLE),40))) $(if $(TESTS),--tests "$(TESTS)")

# the survivors listed in issue 19, each applied to a copy of src/ against the test that kills it
mutants-listed: install
	$(BIN)/python tests/listed_mutants.py

bench: install
	$(BIN)/python bench/bench_core.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
