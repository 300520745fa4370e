# fsarbench — the README's commands. Every target sets up .venv idempotently first.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed
# Pin the torch pair this machine has on local disk; elsewhere `make TORCH_PINS=` takes
# whatever satisfies pyproject's ranges (torch>=2.4).
TORCH_PINS ?= $(shell uname -m | grep -q x86_64 && echo "torch==2.14.1 torchvision==0.29.1")

export HF_HUB_OFFLINE ?= 1
export PYTHONDONTWRITEBYTECODE = 1

.PHONY: setup browser run test test-slow test-cuda bench lint format docs clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check $(TORCH_PINS) -e ".[test]"
	touch $(STAMP)

run: setup
	$(PY) -m fsarbench run --all $(ARGS)

# Headless Chromium and its driver for the report's browser tests (Debian packages); nothing
# to do where both exist, installed with apt when root, else how to install is printed.
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then \
		true; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver || \
		{ apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver; }; \
	else \
		echo "browser tests need /usr/bin/chromium and /usr/bin/chromedriver: run" \
			"'sudo apt-get install -y chromium chromium-driver' (they are skipped until then)"; \
	fi

test: setup browser
	$(PY) -m pytest -q $(ARGS)

test-slow: setup browser
	$(PY) -m pytest -q -m slow $(ARGS)

# The CUDA paths (tests/test_cuda.py); every test skips where torch sees no GPU.
test-cuda: setup
	$(PY) -m pytest -q -m cuda $(ARGS)

bench: setup
	$(PY) -m benchmarks $(ARGS)

lint: setup
	$(PY) -m ruff check fsarbench baselines sgtm splits tests benchmarks
	$(PY) -m ruff format --check fsarbench baselines sgtm splits tests benchmarks

format: setup
	$(PY) -m ruff format fsarbench baselines sgtm splits tests benchmarks
	$(PY) -m ruff check --fix fsarbench baselines sgtm splits tests benchmarks

docs: setup
	$(PY) -m fsarbench.cli._reference > docs/reference.md

clean:
	rm -rf $(VENV) build *.egg-info
