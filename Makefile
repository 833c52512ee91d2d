PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup test demo lint figures test-browser explore clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 > /dev/null
	touch $(STAMP)

test: setup
	$(BIN)/python -m pytest -n 2 tests

demo: setup
	$(BIN)/ibs-study demo

lint: setup
	$(BIN)/ruff check ibs_study tests benchmarks
	$(BIN)/ruff format --check ibs_study tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info
