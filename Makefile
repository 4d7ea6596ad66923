# Two commands do all the set-up: `make run` (start a broker) and `make test`.
# Both create the virtual environment .venv on first use, with python3 only,
# and install the exact versions of requirements-dev.lock (PIP_CONSTRAINT
# reaches the isolated build of the package too, so setuptools is pinned).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MIN_VENV := .venv-min
MIN_STAMP := $(MIN_VENV)/.installed
LOCK := requirements-dev.lock

.PHONY: run client test test-min chaos lint bench bench-cluster clean redis-server

$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	PIP_CONSTRAINT=$(LOCK) $(BIN)/pip install --quiet --disable-pip-version-check 'pip==26.3'
	PIP_CONSTRAINT=$(LOCK) $(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

# The suite on the lowest runtime versions pyproject.toml admits
# (requirements-min.txt); the development tools stay those of the lock.
$(MIN_STAMP): pyproject.toml $(LOCK) requirements-min.txt
	$(PYTHON) -m venv $(MIN_VENV)
	grep -v -E '^(pyzmq|msgspec|prompt_toolkit|redis|hiredis)==' $(LOCK) > $(MIN_VENV)/constraints.txt
	cat requirements-min.txt >> $(MIN_VENV)/constraints.txt
	PIP_CONSTRAINT=$(MIN_VENV)/constraints.txt $(MIN_VENV)/bin/pip install --quiet --disable-pip-version-check 'pip==26.3'
	PIP_CONSTRAINT=$(MIN_VENV)/constraints.txt $(MIN_VENV)/bin/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(MIN_STAMP)

run: $(STAMP)
	$(BIN)/chat-broker $(ARGS)

client: $(STAMP)
	$(BIN)/chat-client $(ARGS)

# The cluster-mode tests start their own redis-server processes: install
# Debian's package where it is missing and we can (never its service).
redis-server:
	@.ci/ensure-redis-server

test: $(STAMP) redis-server
	$(BIN)/python -m pytest $(ARGS)

# Only the fault-injection suite (docs/RELIABILITY.md), with its figures
# printed; `make test` runs it too. More rounds: make chaos CHAOS_ROUNDS=10
chaos: $(STAMP) redis-server
	CHAOS_ROUNDS=$(CHAOS_ROUNDS) $(BIN)/python -m pytest -m chaos -s -p no:cacheprovider $(ARGS)

# The fault-injection suite is left out here: it drives the same library
# calls as the rest of the suite, which `make test` already runs it with, and
# it is the slowest part (CI's whole run must stay well under 15 minutes).
test-min: $(MIN_STAMP) redis-server
	PATH=$(CURDIR)/$(MIN_VENV)/bin:$$PATH $(MIN_VENV)/bin/python -m pytest -m "not chaos" $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check protocol broker client tests examples bench
	$(BIN)/ruff format --check protocol broker client tests examples bench
	$(BIN)/mypy

# Both groups: the single-broker scenarios (~8 min), then the cluster ones
# (~5 min, needs redis-server). One group: ARGS="--only single|cluster".
bench: $(STAMP) redis-server
	$(BIN)/python -m bench.run $(ARGS)

bench-cluster: $(STAMP) redis-server
	$(BIN)/python -m bench.run --only cluster $(ARGS)

clean:
	rm -rf $(VENV) $(MIN_VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
