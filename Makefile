# Developer and CI entry points. Everything runs from the project's own .venv.
#   make venv    create .venv (python3 -m venv), pip install -e '.[dev,docs]'; redone when pyproject.toml changes
#   make consul  resolve a consul binary (CONSUL_BIN, PATH, .cache/consul, or Debian's package)
#   make lint    ruff check, ruff format --check, mypy (strict, per pyproject.toml)
#   make test    pytest on 2 xdist workers; extra arguments via PYTEST_ARGS='-k foo -x'
#   make demo    python -m locksmith.demo
#   make clean   remove .venv and tool caches (keeps the downloaded consul in .cache)

PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: venv consul lint test demo clean distclean bench-docs

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install --quiet -e '.[dev,docs]'
	touch $(STAMP)

consul: venv
	$(VPY) -m locksmith.testing fetch --version

lint: venv
	$(VPY) -m ruff check .
	$(VPY) -m ruff format --check .
	$(VPY) -m mypy

test: venv consul
	$(VPY) -m pytest -n 2 --dist loadgroup $(PYTEST_ARGS)

demo: venv consul
	$(VPY) -m locksmith.demo

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build dist *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf .cache

bench-docs: venv  ## draw the charts of the last full benchmark runs into the docs
	$(VPY) bench/charts.py --docs
