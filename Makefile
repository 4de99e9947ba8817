# Two commands on a fresh machine: `make serve` (set up, build the model graphs, then run the
# gateway on its embedded defaults) and `make test` (set up, then run the test suite). Everything installs into .venv.
# `make test-fast` skips the tests that load models; `make lint` is ruff and mypy --strict.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export LITELLM_LOCAL_MODEL_COST_MAP := True
export HF_HUB_OFFLINE := 1
# torch comes from the CPU wheel index: the models run on CPU, and PyPI's Linux torch is the
# multi-GB CUDA build (torch==2.13.0+cpu sorts above 2.13.0, so pip takes it). The index is
# added to pip's own (an offline mirror or wheel folder still serves) where it answers: an
# offline machine would spend a minute and a half on retries. `TORCH_INDEX=` skips it.
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
torch_index = $(if $(TORCH_INDEX),$(shell $(PYTHON) -c "import sys, urllib.request; \
	urllib.request.urlopen(sys.argv[1], timeout=10)" $(TORCH_INDEX) >/dev/null 2>&1 \
	&& echo --extra-index-url $(TORCH_INDEX)))

.PHONY: setup serve test test-fast lint bench

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt $(torch_index) torch
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

# `vilmo warmup` builds the ONNX graphs once (torch is needed only for that); the gateway then
# serves from the cache with onnxruntime and tokenizers alone.
serve: setup
	$(BIN)/vilmo warmup
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
