# QENEX Ledger: the two commands a new machine needs are `make devnet` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DEVNET_ARGS ?=
PYTEST_ARGS ?=

.PHONY: install devnet test test-quick lint bench clean

$(BIN)/qenex-node: pyproject.toml requirements.lock state/_jmt_core.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c requirements.lock setuptools
	$(BIN)/pip install --quiet --disable-pip-version-check --no-build-isolation -c requirements.lock -e '.[test]'
	touch $@

install: $(BIN)/qenex-node   ## create .venv with the pinned dependencies

devnet: install              ## start a local 4-validator network and run the demo workload
	$(BIN)/qenex-devnet up $(DEVNET_ARGS)

test: install                ## lint, types, then the whole suite (unit, property, multi-process)
	$(BIN)/ruff check .
	$(BIN)/mypy consensus state crypto contracts
	$(BIN)/pytest $(PYTEST_ARGS)

test-quick: install          ## everything but the multi-process tests
	$(BIN)/pytest -m "not slow" $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy consensus state crypto contracts

bench: install               ## open-loop load against a fresh devnet (1,500 tx/s offered for 60 s)
	$(BIN)/qenex-devnet bench

clean:
	rm -rf $(VENV) .devnet *.egg-info .pytest_cache .hypothesis
