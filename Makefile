# The two commands of the README: `make run` and `make test`.
# Each sets up everything it needs on a fresh machine (venv, install) first.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint format bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The CPU build of torch: an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev,demo]"
	touch $(STAMP)

run: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/ia3 studio

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# scripts/test-services.sh installs chromium and PostgreSQL when missing (as root; otherwise it
# names the command) and runs pytest beside a throwaway PostgreSQL server (README, Tests).
# scripts/pytest-phases.sh runs the test files in PYTEST_WORKERS processes (pytest-xdist), then
# the browser tests alone; PYTEST_WORKERS=0 runs the first phase in one process too.
PYTEST_WORKERS ?= 2
test: $(STAMP) lint
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
	  scripts/test-services.sh scripts/pytest-phases.sh $(BIN)/python $(PYTEST_WORKERS) \
	  $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/pip install -q -e ".[bench]"
	HF_HUB_OFFLINE=1 $(BIN)/python bench/engine.py
	HF_HUB_OFFLINE=1 $(BIN)/python bench/jobs.py
	HF_HUB_OFFLINE=1 $(BIN)/python bench/fewshot.py --quick
	$(BIN)/python bench/merge_memory.py
	HF_HUB_OFFLINE=1 $(BIN)/python bench/serving.py

clean:
	rm -rf $(VENV) build *.egg-info
