# Two commands for a newcomer: `make demo` and `make test`. Both set up what they need first; a
# second run finds .venv up to date and the system packages present, and goes straight to work.

SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast install system lock clean

demo: install system
	$(BIN)/tritonfleet demo

test: install system
	$(BIN)/pytest -q

# The quick subset: everything but the end-to-end cases that start several servers.
test-fast: install
	$(BIN)/pytest -q -m "not slow"

install: $(STAMP)

# requirements.lock pins every transitive package, so a fresh machine installs the same set.
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -c requirements.lock -e '.[dev]' \
	  2> >(grep -v 'is ignored: it is neither' >&2)
	deploy/scripts/install-k8s-tools.sh $(BIN)
	touch $(STAMP)

# Prometheus, HAProxy and the libpython the Triton Python-backend stub links against, from apt.
system:
	@deploy/scripts/install-system-packages.sh

# Re-resolve the lock from pyproject.toml (run after changing a dependency).
lock:
	rm -rf /tmp/tritonfleet-lock && $(PYTHON) -m venv /tmp/tritonfleet-lock
	/tmp/tritonfleet-lock/bin/pip install -q '.[dev]'
	/tmp/tritonfleet-lock/bin/pip freeze --exclude tritonfleet > requirements.lock

clean:
	rm -rf $(VENV) run reports
