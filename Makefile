# make test : create .venv if missing, install cogalign with its test extras under constraints.txt, run pytest
# make demo : the same set-up, then `cogalign demo` (e.g. make demo DEMO_ARGS=--fresh)
# make test-slow / make lint : the slow tests / ruff;  make clean : removes .venv (the whole install), runs/demo and
# .pytest_cache
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.cogalign-installed

export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
# Bytecode is cached under the venv even where PYTHONDONTWRITEBYTECODE is set: without a cache every process (each
# test subprocess, each launcher rank) compiles torch, transformers and trl from source again (bench/startup.py:
# 19 s against 8 s here).
export PYTHONPYCACHEPREFIX := $(abspath $(VENV))/pycache
export PYTHONDONTWRITEBYTECODE :=

.PHONY: install test test-slow demo lint clean

install: $(STAMP)

# uv installs the pinned set (several GB of torch/CUDA wheels) in about a third of pip's time; pip only fetches uv.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt uv
	$(VENV)/bin/uv pip install --python $(PY) --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

demo: $(STAMP)
	$(VENV)/bin/cogalign demo $(DEMO_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) runs/demo .pytest_cache
