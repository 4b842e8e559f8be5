# lumenkit — one command for the main job, one for the tests.
#   make report   generate the synthetic dataset (if needed) and render the HTML workbook into reports/
#   make sections the sections report: synthetic sections without masks → HTML pages per deposit and sample
#   make test     lint + the test suite
# Both create .venv when no virtual environment is active and install what they need.

PYTHON ?= python3
ifdef VIRTUAL_ENV
VENV := $(VIRTUAL_ENV)
else
VENV := .venv
endif
PY := $(VENV)/bin/python
# The CPU build of PyTorch (on this project's build machine it comes from local disk).
# GPU users: install your CUDA build of torch into the environment first; it is kept.
# Elsewhere, a CPU-only wheel: make TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=
STAMP := $(VENV)/.lumenkit-installed
PARAMS ?= params/synthetic.yaml
DATA ?= data/synthetic
SECTIONS ?= data/sections
PYTEST_ARGS ?=

.PHONY: install test test-fast lint docs data report sections bench clean help

help:
	@echo "make report | make sections | make test | make data | make bench | make lint | make clean"

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install $(TORCH_SPEC) $(TORCH_PIP_ARGS)
	$(PY) -m pip install -e ".[dev]"
	@touch $@

install: $(STAMP)

lint: install
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports

test: install lint data $(SECTIONS)/samples.csv docs
	$(PY) -m pytest $(PYTEST_ARGS)
	$(PY) -m pytest --nbval-lax notebooks/ -p no:cacheprovider

# The documentation site (mkdocs.yml, docs/); --strict turns every warning (a broken link, a table without data) into an error.
docs: install
	$(VENV)/bin/mkdocs build --strict --site-dir $(or $(SITE),site)

test-fast: install
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

$(DATA)/dataset.yaml: | $(STAMP)
	$(PY) -m lumenkit synth --out $(DATA) --seed 0

data: install $(DATA)/dataset.yaml

report: data
	$(PY) -m lumenkit report --params $(PARAMS)

$(SECTIONS)/samples.csv: | $(STAMP)
	$(PY) -m lumenkit synth --sections --out $(SECTIONS) --seed 0

# Then every page in headless Chromium (scripts/browser_check.py); it needs playwright and a system Chromium, and
# fails without them, so the check is skipped (with a note) only when they are missing.
sections: data $(SECTIONS)/samples.csv
	$(PY) -m lumenkit report --params params/sections.yaml
	@if $(PY) -c "import playwright.sync_api; from lumenkit.workbook.browser import chromium_path; \
	    raise SystemExit(chromium_path() is None)" 2>/dev/null; then \
	  $(PY) scripts/browser_check.py reports/sections; \
	else \
	  echo "browser check skipped: no Chromium or playwright (apt-get install chromium; pip install playwright)"; \
	fi

bench: install
	$(PY) benchmarks/bench_synth.py
	$(PY) benchmarks/bench_sampler.py
	$(PY) benchmarks/bench_model.py
	$(PY) benchmarks/bench_predict.py --quick
	$(PY) benchmarks/bench_train_step.py
	$(PY) benchmarks/bench_metrics.py
	$(PY) benchmarks/bench_analysis.py
	$(PY) benchmarks/bench_geojson.py

clean:
	rm -rf reports/*/ .pytest_cache
