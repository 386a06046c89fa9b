# The two commands a new user types (see README): `make demo` and `make test`.
.PHONY: install demo test lint

install:
	@bash infra/scripts/install.sh

# The whole pipeline end to end on the embedded default stack.
demo: install
	.venv/bin/tierflow demo $(ARGS)

# The test suite: the import contract (layers only import downward, no cycles), then unit,
# integration against real local services, Kubernetes testbed.
test: install
	.venv/bin/ruff check .
	.venv/bin/lint-imports
	.venv/bin/python -m pytest

lint: install
	.venv/bin/ruff check .
	.venv/bin/lint-imports
