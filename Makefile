# Two commands for a fresh machine: `make dev` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home

.PHONY: install dev test bench clean compile

install: $(STAMP) system-packages

# Redis and PostgreSQL (Debian's) for the Celery workers and the Dagster instance of the scale-out
# tests; installed once when missing (as root, or through sudo when it is there).
.PHONY: system-packages
system-packages:
	@if ! command -v redis-server >/dev/null || ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q redis-server postgresql >/dev/null \
	  || { DEBIAN_FRONTEND=noninteractive $$SUDO apt-get update -q >/dev/null && \
	       DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q redis-server postgresql >/dev/null; }; \
	fi

# uv resolves and installs in seconds; plain pip is the fallback if uv cannot be installed.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv || true
	if [ -x $(BIN)/uv ]; then $(BIN)/uv pip install --python $(BIN)/python --quiet -e ".[dev]"; \
	else $(BIN)/python -m pip install --quiet -e ".[dev]"; fi
	touch $(STAMP)

dev: install
	bash scripts/dev.sh

# Two test processes, each taking whole files (module fixtures stay shared within a file): most
# tests wait on servers and subprocesses, so two share the 2 cores well (599 tests: 573 s against
# 1,063 s in one process, on the same loaded machine). PYTEST_ARGS adds to or overrides it.
PYTEST_ARGS ?= -n 2 --dist loadfile
test: install
	$(BIN)/pytest -q $(PYTEST_ARGS)

compile: install
	$(BIN)/seqctl defs compile --out .data/compiled

bench: install
	$(BIN)/python bench/batch.py

# A day of streaming compressed into minutes, with maintenance and without: `make soak SOAK_ARGS="--batches 600"`.
.PHONY: soak
soak: install
	$(BIN)/python bench/soak.py $(SOAK_ARGS)

# The scale-out stack (docs/workers.md): Redis, Postgres, moto S3 and STACK_WORKERS Celery workers.
.PHONY: stack-up stack-down scale-bench
stack-up: install
	bash scripts/stack.sh up --workers $(or $(STACK_WORKERS),2) --buckets $(or $(STACK_BUCKETS),2)

stack-down:
	bash scripts/stack.sh down

# One vs two Celery workers and bucketed vs unbucketed, measured in one run.
scale-bench: install
	$(BIN)/python bench/scale.py $(SCALE_ARGS)

clean:
	rm -rf .data .dagster_home
