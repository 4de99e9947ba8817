# Two commands on a fresh machine: `make serve` (set up, then run the gateway on its embedded
# defaults) and `make test` (set up, then run the test suite). Everything installs into .venv.
# `make test-fast` skips the tests that load models; `make lint` is ruff and mypy --strict.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export LITELLM_LOCAL_MODEL_COST_MAP := True
export HF_HUB_OFFLINE := 1

.PHONY: setup serve test test-fast lint bench

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

serve: setup
	$(BIN)/vilmo serve $(ARGS)

test: setup
	$(BIN)/python -m pytest -q $(ARGS)

# The fast tier: everything but the tests marked slow (those that load or train a model).
test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow" $(ARGS)

lint: setup
	$(BIN)/ruff check proxy vilmo localllm tests bench
	$(BIN)/mypy proxy vilmo localllm tests

bench: setup
	$(BIN)/python bench/bench_gateway.py
	$(BIN)/python bench/bench_streaming.py
