# Two entry points: `make demo` and `make test`. Both set up .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU wheel: an unpinned torch would pull several GB of CUDA packages. GPU users: TORCH= make ...
TORCH ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: setup demo test clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[test]"
	# MTCNN landmark weights for `e4e align` (--no-deps: the package pins old torch; we only load its .pt files)
	$(PY) -m pip install -q --no-deps facenet-pytorch==2.6.0
	touch $@

demo: setup
	$(PY) -m e4e.cli demo -o out/demo

test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) out
