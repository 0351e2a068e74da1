# fastssl: the README's two commands (`make demo`, `make test`) and the everyday ones.
# Every target sets up `.venv` first; a second run reuses it and returns fast.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.fastssl-installed
SYSTEM_PACKAGES := libopencv-dev libturbojpeg0-dev pkg-config dataset-fashion-mnist
PYTEST_ARGS ?=
# pip on some machines warns once per index entry it cannot read; keep the log readable
# while pipefail still passes pip's own exit code on.
SHELL := bash
.SHELLFLAGS := -o pipefail -c
PIP_QUIET := 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }

.PHONY: setup system-packages test demo lint format bench clean

setup: $(STAMP)

# System packages: FFCV builds against OpenCV and libjpeg-turbo; the demo reads Debian's
# Fashion-MNIST. Installed only when missing, and only when we are root.
system-packages:
	@missing=""; for p in $(SYSTEM_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = "0" ]; then \
	  echo "installing system packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	else \
	  echo "warning: missing system packages:$$missing (run as root or: sudo apt-get install$$missing)"; \
	fi

$(STAMP): pyproject.toml constraints.txt
	@$(MAKE) --no-print-directory system-packages
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt torch torchvision $(PIP_QUIET)
	$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt -e ".[dali,ffcv,dev]" $(PIP_QUIET)
	@touch $(STAMP)

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

demo: setup
	$(BIN)/python tools/demo.py

lint: setup
	$(BIN)/ruff check fastssl tests tools benchmarks
	$(BIN)/ruff format --check fastssl tests tools benchmarks
	$(BIN)/mypy

format: setup
	$(BIN)/ruff check --fix fastssl tests tools benchmarks
	$(BIN)/ruff format fastssl tests tools benchmarks

bench: setup
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
