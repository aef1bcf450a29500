# Two entry points: `make demo` and `make test`. Both set up .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU wheel: an unpinned torch would pull several GB of CUDA packages. GPU users keep their own
# torch: `pip install -e .` in their environment (torch>=2.1), or TORCH='torch==X' make ...
TORCH ?= torch==2.13.0
EMOJI_FONT := /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf
PYTEST_ARGS ?=

.PHONY: setup demo test serve clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q $(TORCH)
	# [test] includes the [avatars] extra (dicebear-core, dicebear-styles, resvg-py) for `e4e data avatars`
	$(PY) -m pip install -q -e ".[test,web]"
	# MTCNN landmark weights for `e4e align` (--no-deps: the package pins old torch; we only load its .pt files)
	$(PY) -m pip install -q --no-deps facenet-pytorch==2.6.0
	# the emoji training set is built from Debian's colour-emoji font (`e4e data emoji`); not fatal where
	# apt is unavailable: those tests then skip and say why
	test -f $(EMOJI_FONT) || { (apt-get update -qq && apt-get install -y -qq fonts-noto-color-emoji) >/dev/null 2>&1 \
	    || echo "note: fonts-noto-color-emoji not installed; 'e4e data emoji' needs it"; }
	# headless Chromium for the `e4e serve` browser test; not fatal where apt is unavailable (it then skips)
	command -v chromedriver >/dev/null || { (apt-get update -qq && apt-get install -y -qq chromium chromium-driver) \
	    >/dev/null 2>&1 || echo "note: chromium/chromium-driver not installed; the e4e serve browser test will skip"; }
	touch $@

demo: setup
	$(PY) -m e4e.cli demo -o out/demo

serve: setup
	$(PY) -m e4e.cli serve

test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) out
