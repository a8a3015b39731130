# Two commands: `make run` (set up + run the main job) and `make test` (set up + run the tests).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: run test setup clean-venv

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# torch first, pinned: a bare `torch` requirement would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/python -m inference $(ARGS)

# The suite runs in a private network namespace with only loopback where the machine allows it
# (scripts/netns.py; its first line says whether); `make test NETNS=off` runs it on the host network.
test: $(STAMP)
	@$(BIN)/python scripts/netns.py --watch --what "the test suite" -- $(BIN)/python -m pytest $(ARGS)

clean-venv:
	rm -rf $(VENV)
