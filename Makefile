# Two commands: `make run` (set up + run the main job) and `make test` (set up + run the tests).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: run test setup test-envs lerobot-env chromium clean-venv

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# torch first, pinned: a bare `torch` requirement would pull a multi-GB CUDA build.
# Every extra (ray, train, sweep, dashboard, dev, ...): the tests exercise all of them.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[all]'
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/python -m inference $(ARGS)

# Side venvs for real counterparts that cannot share ours (tests/side_envs.py); built before the
# suite because the suite may run without network access.
test-envs: $(STAMP)
	@$(BIN)/python -m tests.side_envs
	@$(MAKE) --no-print-directory chromium

# Headless Chromium from the OS packages, for the live viewer's browser test (tests/services/test_viewer_browser.py).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium (apt-get) for the web viewer test"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium missing and not installable here (needs root + apt-get): the web viewer test will skip"; fi; }

# LeRobot 0.6's environment alone (Python 3.12 + lerobot, ~6 GB): the interpreter policy=lerobot and
# record=lerobot use by default (policy.python=.venvs/lerobot/bin/python).
lerobot-env: $(STAMP)
	@$(BIN)/python -m tests.side_envs lerobot

# The suite runs in a private network namespace with only loopback where the machine allows it
# (scripts/netns.py; its first line says whether); `make test NETNS=off` runs it on the host network.
# The first line printed says where the suite will run (the namespace is probed with `true`).
# `-X faulthandler`: a native crash, even at interpreter teardown after pytest's summary (one CI run
# here ended so, exit 139, with nothing printed), shows every thread's Python stack on stderr.
test: $(STAMP)
	@$(BIN)/python scripts/netns.py --what "the test suite" -- true
	@$(MAKE) --no-print-directory test-envs
	@$(BIN)/python scripts/netns.py --watch --what "the test suite" -- $(BIN)/python -X faulthandler -m pytest $(ARGS)

clean-venv:
	rm -rf $(VENV)
