"""Continuum tests need root (namespaces, veth, tc, cgroups): CI runs as root, so they never skip there.
Off root they fail with the testbed's own message, rather than silently passing."""

from __future__ import annotations

import pytest

from infra.continuum.netns import require_root


@pytest.fixture(autouse=True)
def _root() -> None:
    require_root()
