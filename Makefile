PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Exact versions of everything `make setup` installs (pip-compile of pyproject.toml, all extras).
LOCK := constraints.txt

.PHONY: setup test demo lint figures test-browser explore clean lock

setup: $(STAMP)

$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c $(LOCK) --upgrade pip
	$(BIN)/python -m pip install --quiet -c $(LOCK) -e '.[dev]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 > /dev/null
	touch $(STAMP)

test: setup
	$(BIN)/python -m pytest -n 2 tests

demo: setup
	$(BIN)/ibs-study demo

lint: setup
	$(BIN)/ruff check ibs_study tests benchmarks
	$(BIN)/ruff format --check ibs_study tests benchmarks

# The browser test of the confusion explorer (JupyterLab + headless Chromium; skipped without one).
test-browser: setup
	$(BIN)/python -m pytest -m browser tests/browser

# Serve the confusion explorer notebook as an app on 127.0.0.1 (Voila): the study's crop and crop + IBS
# runs (runs/study), or before the study those of `make demo` (runs/demo).
EXPLORE_NOTEBOOK ?= notebooks/05_confusion_explorer.ipynb
EXPLORE_PORT ?= 8866
explore: setup
	@test -f $(EXPLORE_NOTEBOOK) || { echo "$(EXPLORE_NOTEBOOK) does not exist yet"; exit 1; }
	$(BIN)/voila $(EXPLORE_NOTEBOOK) --no-browser --Voila.ip=127.0.0.1 --port=$(EXPLORE_PORT)

# Regenerate paper_figures/ from paper_figures/synthetic_results.json (RUNS=<folder of the study's
# run directories> adds the qualitative figures).
figures: setup
	$(BIN)/ibs-study figures $(if $(RUNS),--runs $(RUNS))

# Refresh $(LOCK) from pyproject.toml with pip-tools, installed into a throwaway venv. Versions
# already in $(LOCK) are kept where pyproject.toml still allows them; UPGRADE=1 takes the newest.
lock:
	tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	$(PYTHON) -m venv "$$tmp" && "$$tmp/bin/python" -m pip install --quiet pip-tools && \
	echo pip | CUSTOM_COMPILE_COMMAND="make lock" "$$tmp/bin/pip-compile" --quiet --all-extras \
	    --strip-extras --allow-unsafe --no-emit-index-url --no-emit-find-links \
	    $(if $(UPGRADE),--upgrade) --output-file $(LOCK) pyproject.toml -

clean:
	rm -rf $(VENV) build *.egg-info
