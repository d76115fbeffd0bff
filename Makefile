# `make test` and `make demo` create (or reuse) .venv, install what they need, then run.
# torch is pinned: 2.13.0 resolves to a CPU build here; an unpinned torch may pull a CUDA build.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test demo bench lint

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	@# render_model's pictures need graphviz's `dot`: install it where we can (root, apt-get),
	@# carry on without it elsewhere (those tests skip).
	command -v dot >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		{ apt-get update -qq && apt-get install -y -qq graphviz >/dev/null; } ; } || \
		echo "graphviz's dot not installed: render_model cannot write files here"
	touch $(STAMP)

test: $(STAMP) lint
	$(PY) -m pytest -q

demo: $(STAMP)
	MINIPROB_FAST=demo $(PY) tutorials/vae_digits.py

bench: $(STAMP)
	$(PY) -m pip install -q -e '.[bench]'  # NumPyro and JAX, the compiled peer
	$(PY) benchmarks/run.py

lint: $(STAMP)
	$(PY) -m ruff check miniprob tests benchmarks tutorials tools conftest.py
	$(PY) -m ruff format --check miniprob tests benchmarks tutorials tools conftest.py
