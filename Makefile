# Two commands do everything on a fresh machine:
#   make study CORES=2   - creates .venv if needed, runs the default study, builds the report
#   make test            - installs Chromium if missing, creates .venv if needed, runs the test suite
#   make test-fast       - the same without the tests marked slow (Snakemake, real models, browser)
PYTHON ?= python3
VENV ?= .venv
CORES ?= 2
CONFIG ?= config.yaml
RESULTS ?= results
# uv (default) or pip: both install the exact versions and hashes of requirements.lock.
INSTALLER ?= uv
# torch's CPU wheel (2.13.0+cpu) is not on PyPI: take it from pip's find-links where the machine
# sets them, else from PyTorch's CPU wheel index.
TORCH_WHEELS ?= $(or $(PIP_FIND_LINKS),https://download.pytorch.org/whl/cpu/torch/)
LOCK := requirements.lock
NO_DEPS := workflow/envs/no-deps.txt
CONDA_ENV := workflow/envs/critscale.yaml
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
UV_PIN = $(shell grep -m1 '^uv==' $(LOCK) | cut -d' ' -f1)

.PHONY: study long genres intervene test test-fast chromium debian-corpora benchmark share verify dry-run lock readme-figures clean-results

$(STAMP): $(LOCK) pyproject.toml $(NO_DEPS) Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
ifeq ($(INSTALLER),uv)
	$(BIN)/python -m pip install --quiet $(UV_PIN)
	$(BIN)/uv pip sync --quiet --compile-bytecode --python $(BIN)/python --find-links $(TORCH_WHEELS) $(LOCK)
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python --no-deps -e . -r $(NO_DEPS)
else
	$(BIN)/python -m pip install --quiet --require-hashes --find-links $(TORCH_WHEELS) -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps -e . -r $(NO_DEPS)
endif
	touch $@

# Regenerate the lock (linux-64, Python 3.11, CPU torch) and the conda environment of the rules
# after changing pyproject.toml; tests/test_environment.py checks that all of them agree.
lock: $(STAMP)
	$(BIN)/uv pip compile pyproject.toml --extra test --python-version 3.11 \
		--python-platform x86_64-manylinux_2_28 --find-links $(TORCH_WHEELS) --generate-hashes \
		--custom-compile-command "make lock" --upgrade -o $(LOCK)
	$(PYTHON) workflow/envs/conda_env_from_lock.py $(LOCK) $(CONDA_ENV)

# The report test opens the HTML report in headless Chromium. Checked first, so a machine that
# cannot install it stops within seconds with the command to run.
chromium:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "make test: installing Chromium (apt-get install -y chromium)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; \
	  else \
	    echo "make test needs Chromium for the report test; run: sudo apt-get install -y chromium" >&2; \
	    exit 1; \
	  fi; }

# The pinned corpora of config.yaml that Debian packages (the tests read them too). Checked
# first, so a machine that cannot install them stops within seconds with the command to run.
DEBIAN_CORPORA := r-cran-janeaustenr pari-doc
debian-corpora:
	@dpkg-query -W $(DEBIAN_CORPORA) >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing the corpora's Debian packages (apt-get install -y $(DEBIAN_CORPORA))"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(DEBIAN_CORPORA) >/dev/null; \
	  else \
	    echo "the corpora need Debian packages; run: sudo apt-get install -y $(DEBIAN_CORPORA)" >&2; \
	    exit 1; \
	  fi; }

# A killed run resumes: profiles/default sets rerun-incomplete, and workflow/rules/common.smk
# removes the lock of a killed run when no other snakemake runs in this directory.
study: debian-corpora $(STAMP)
	$(BIN)/snakemake --cores $(CORES) --configfile $(CONFIG) --replace-workflow-config --config results=$(RESULTS) \
		--report $(RESULTS)/report.html --report-after-run

# The long-context study (config/long.yaml): SmolLM2 up to n = 8192 on one corpus.
long: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) --configfile config/long.yaml --replace-workflow-config

# The genre study (config/genres.yaml, an overlay of config.yaml): Qwen2.5-Coder-0.5B on code and
# encyclopedic prose; prints the wall time at the end (README quotes it).
genres: debian-corpora $(STAMP)
	/usr/bin/time -f 'make genres: %e s wall' $(BIN)/snakemake --cores $(CORES) --configfile $(CONFIG) config/genres.yaml --replace-workflow-config

# The intervention (config/intervene.yaml): SmolLM2's schedule and the published rules beyond its
# 8192 positions; prints the plan's size first and the wall time at the end. INTERVENE_CONFIG takes
# overlays: make intervene INTERVENE_CONFIG="config/intervene.yaml config/intervene-1.25L.yaml"
INTERVENE_CONFIG ?= config/intervene.yaml
intervene: $(STAMP)
	$(BIN)/snakemake -n intervene --cores $(CORES) --configfile $(INTERVENE_CONFIG) --replace-workflow-config | grep -A20 '^Job stats'
	/usr/bin/time -f 'make intervene: %e s wall' $(BIN)/snakemake intervene --cores $(CORES) --configfile $(INTERVENE_CONFIG) --replace-workflow-config

test: chromium debian-corpora $(STAMP)
	$(BIN)/python -m pytest

# No Snakemake run, plan or lint, no real model and no browser (the `slow` marker of
# pyproject.toml), so no Chromium; the corpora stay, the config tests read them.
test-fast: debian-corpora $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

benchmark: $(STAMP)
	$(BIN)/python benchmarks/bench_gapstats.py
	$(BIN)/python benchmarks/bench_kernel_bound.py
	$(BIN)/python benchmarks/bench_extraction.py
	$(BIN)/python benchmarks/bench_row_quantiles.py
	$(BIN)/python benchmarks/bench_plan.py

# make share LEVEL=rows (or scores): a sharing level other than the config's
share: $(STAMP)
	$(BIN)/snakemake share --cores $(CORES) --configfile $(CONFIG) --replace-workflow-config --config results=$(RESULTS) $(if $(LEVEL),"share={level: $(LEVEL)}")

verify: $(STAMP)
	$(BIN)/snakemake verify --cores 1 --configfile $(CONFIG) --replace-workflow-config --config results=$(RESULTS)

dry-run: $(STAMP)
	$(BIN)/snakemake -n --cores $(CORES) --configfile $(CONFIG)

clean-results:
	rm -rf $(RESULTS)/* .snakemake
	touch $(RESULTS)/.gitkeep

# Small PNGs of key figures of a finished study, for the README (docs/figures/).
readme-figures: $(STAMP)
	$(BIN)/python -m critscale.readme_figures --results $(RESULTS) --out docs/figures
