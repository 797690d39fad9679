# Two commands for a newcomer: `make demo` and `make test`. Both set up what they need first; a
# second run finds .venv up to date and the system packages present, and goes straight to work.

SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast install system lock clean images

demo: install system
	$(BIN)/tritonfleet demo

test: install system
	$(BIN)/pytest -q

# The quick subset: everything but the end-to-end cases that start several servers.
test-fast: install
	$(BIN)/pytest -q -m "not slow"

install: $(STAMP)

# PyTorch's CPU build (torch==2.13.0+cpu in the lock) is on PyTorch's own index, not on PyPI, where
# torch 2.13.0 is a CUDA build of several GB. Torch goes in first from the indexes pip already sees (a
# wheel store, a mirror, a cache); only where none has that build is PyTorch's index added, so an
# install on a machine that cannot reach it never waits on it.
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
PIP_INSTALL  = $(1)/pip install -q --disable-pip-version-check -c requirements.lock
PIP_QUIET   := 2> >(grep -v 'is ignored: it is neither' >&2)

define install_torch
	$(call PIP_INSTALL,$(1)) torch 2>/dev/null \
	  || $(call PIP_INSTALL,$(1)) --extra-index-url $(TORCH_INDEX) torch $(PIP_QUIET)
endef

# requirements.lock pins every transitive package, so a fresh machine installs the same set.
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(call install_torch,$(BIN))
	$(call PIP_INSTALL,$(BIN)) -e '.[dev]' $(PIP_QUIET)
	deploy/scripts/install-k8s-tools.sh $(BIN)
	touch $(STAMP)

# Prometheus, HAProxy, Chromium and the libpython the Triton Python-backend stub for the
# venv's Python links against, from apt.
system:
	@deploy/scripts/install-system-packages.sh $(BIN)/python

# Re-resolve the lock from pyproject.toml (run after changing a dependency).
# Torch is resolved first, from the lock's own pin, so the new lock keeps the CPU build.
LOCK_HEADER := \# Written by make lock (pip freeze). The +cpu build of torch is on $(TORCH_INDEX), which make install adds only where pip sees no such build.
lock:
	rm -rf /tmp/tritonfleet-lock && $(PYTHON) -m venv /tmp/tritonfleet-lock
	$(call install_torch,/tmp/tritonfleet-lock/bin)
	/tmp/tritonfleet-lock/bin/pip install -q '.[dev]'
	{ echo '$(LOCK_HEADER)'; /tmp/tritonfleet-lock/bin/pip freeze --exclude tritonfleet; } > requirements.lock

# The Triton and app images (CPU), daemonless (podman/buildah) from a Debian base and the lock's
# wheels; OCI archives in build/images/. `deploy/docker/build-images.sh --variant gpu` for the GPU pair.
images: install
	deploy/docker/build-images.sh

clean:
	rm -rf $(VENV) run reports
