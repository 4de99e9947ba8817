# Two commands on a fresh machine: `make serve` (set up, then run the gateway on its embedded
# defaults) and `make test` (set up, then run the test suite). Everything installs into .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export LITELLM_LOCAL_MODEL_COST_MAP := True
export HF_HUB_OFFLINE := 1

.PHONY: setup serve test lint bench

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

lint: setup
	$(BIN)/ruff check proxy vilmo tests bench
	$(BIN)/mypy proxy vilmo

bench: setup
	$(BIN)/python bench/bench_gateway.py
	$(BIN)/python bench/bench_streaming.py
