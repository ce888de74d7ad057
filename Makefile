# Two commands do everything on a fresh machine:
#   make study CORES=2   - creates .venv if needed, runs the default study, builds the report
#   make test            - creates .venv if needed, runs the whole test suite
PYTHON ?= python3
VENV ?= .venv
CORES ?= 2
CONFIG ?= config.yaml
RESULTS ?= results
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: study long test benchmark share dry-run clean-results

$(STAMP): pyproject.toml workflow/envs/no-deps.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	$(BIN)/python -m pip install --quiet --no-deps -r workflow/envs/no-deps.txt
	touch $@

study: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) --configfile $(CONFIG) --replace-workflow-config --config results=$(RESULTS) \
		--report $(RESULTS)/report.html --report-after-run

long: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) --configfile config/long.yaml --replace-workflow-config

test: $(STAMP)
	$(BIN)/python -m pytest

benchmark: $(STAMP)
	$(BIN)/python benchmarks/bench_gapstats.py
	$(BIN)/python benchmarks/bench_extraction.py

share: $(STAMP)
	$(BIN)/snakemake share --cores $(CORES) --configfile $(CONFIG) --replace-workflow-config --config results=$(RESULTS)

dry-run: $(STAMP)
	$(BIN)/snakemake -n --cores $(CORES) --configfile $(CONFIG)

clean-results:
	rm -rf $(RESULTS)/* .snakemake
	touch $(RESULTS)/.gitkeep
