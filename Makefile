# Two commands do all the set-up on a fresh machine with Python 3.11 and make:
#   make demo   - virtualenv, install, synthetic sources, sync, serve on 127.0.0.1:8000
#   make test   - install (PostgreSQL too, through apt, when missing), ruff, mypy, pytest
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO_DIR ?= demo
CUSTOMERS ?= 10000

.PHONY: install demo shared test lint typecheck pytest bench bench-http clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/fabric demo --dir $(DEMO_DIR) --customers $(CUSTOMERS)

# The shared deployment on one machine: PostgreSQL (the store), SeaweedFS (S3 for exports),
# a Dask scheduler and two workers, two API nodes (README, "Operations: more than one
# machine"). Ctrl-C stops every server.
shared: install
	bash scripts/ensure-postgres.sh
	$(BIN)/python scripts/shared_deployment.py --dir demo-shared --customers $(CUSTOMERS)

lint: install
	$(BIN)/ruff check fabric tests benchmarks
	$(BIN)/ruff format --check fabric tests benchmarks

typecheck: install
	$(BIN)/mypy

# The suite runs in one process per core (at most 4): each builds its own session fixtures
# (demo templates, a PostgreSQL cluster); a module's tests stay on one process (loadscope).
pytest: install
	bash scripts/ensure-postgres.sh
	$(BIN)/pytest -q -n auto --maxprocesses 4 --dist loadscope

test: lint typecheck pytest

bench: install
	$(BIN)/python benchmarks/sync_bench.py
	$(BIN)/python benchmarks/store_bench.py
	$(BIN)/python benchmarks/mask_bench.py

# The HTTP benchmark drives a server with wrk (Debian's package) on a synced demo:
#   make bench-http BENCH_PROJECT=/path/to/demo   (fabric demo --no-serve --dir ... first)
BENCH_PROJECT ?= $(DEMO_DIR)
bench-http: install
	@command -v wrk >/dev/null || apt-get install -y wrk
	$(BIN)/python benchmarks/http_bench.py --project $(BENCH_PROJECT)

clean:
	rm -rf $(VENV) $(DEMO_DIR) demo-shared .pytest_cache .mypy_cache .ruff_cache build *.egg-info
