"""Shared fixtures: each real service has its own fixture module under tests/fixtures/."""

pytest_plugins = [
    "tests.fixtures.broker",
    "tests.fixtures.stack",
    "tests.fixtures.models",
    "tests.fixtures.dagtest",
]
