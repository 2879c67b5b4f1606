# The two quickstart commands (README): `make demo` and `make test`.
# Each one installs the package and its test extras into the current Python first,
# so both work on a fresh machine; re-running the install is a no-op when satisfied.
PYTHON ?= python3

.PHONY: install demo test
install:
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -e '.[dev]'

demo: install
	$(PYTHON) -m anysr_plugin demo

test: install
	$(PYTHON) -m pytest -q
