# hsm-vault: `make run` serves the API, `make test` runs the whole suite. Both install what
# they need first (a .venv, the Python packages, Debian's softhsm2/opensc/wrk when missing)
# and set up a development SoftHSM2 token, database, keys and dev credentials under var/.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export VAULT_VAR_DIR ?= $(CURDIR)/var
export SOFTHSM2_CONF ?= $(VAULT_VAR_DIR)/softhsm2.conf
PYTEST_ARGS ?=

.PHONY: run test bench lint setup system-deps venv clean

system-deps:
	@if [ ! -e /usr/lib/softhsm/libsofthsm2.so ] || ! command -v pkcs11-tool >/dev/null \
	    || ! command -v wrk >/dev/null; then \
	  echo "installing Debian packages: softhsm2 opensc wrk"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	    $(SUDO) apt-get install -y -qq --no-install-recommends softhsm2 opensc wrk >/dev/null; \
	fi

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'
	touch $@

venv: $(BIN)/.installed

setup: system-deps venv
	$(BIN)/hsm-vault bootstrap

run: setup
	$(BIN)/hsm-vault serve

# The whole suite on SQLite, then the integration and end-to-end tests again with the
# session's database on PostgreSQL (skipped, with a notice, where no PostgreSQL answers on
# 127.0.0.1:5432; .ci/run installs and starts one and makes its absence a failure). Tests
# with a database of their own (markers `postgres`, `first_pass_only`) and those whose
# checks do not depend on the database engine (`first_pass_only`: HSM faults, TLS) ran in
# the first pass. The HTTP fuzzing (schemathesis) runs in both: a value SQLite stores and
# PostgreSQL refuses would be a 5xx on PostgreSQL alone.
test: setup
	$(BIN)/pytest $(PYTEST_ARGS)
	VAULT_TEST_DATABASE=postgresql $(BIN)/pytest -m 'not postgres and not first_pass_only' tests/integration tests/e2e $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: setup
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache .hypothesis
