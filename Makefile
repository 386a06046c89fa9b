# The two commands a new user types (see README): `make demo` and `make test`.
.PHONY: install demo test lint

install:
	@bash infra/scripts/install.sh

# The whole pipeline end to end on the embedded default stack.
demo: install
	.venv/bin/tierflow demo $(ARGS)

# The test suite: unit, integration against real local services, Kubernetes testbed.
test: install
	.venv/bin/ruff check .
	.venv/bin/python -m pytest

lint: install
	.venv/bin/ruff check .
