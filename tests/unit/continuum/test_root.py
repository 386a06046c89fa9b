"""Without root the testbed says so before it touches anything."""

from __future__ import annotations

import pytest

from infra.continuum import netns


def test_without_root_a_clear_error(monkeypatch) -> None:
    monkeypatch.setattr(netns.os, "geteuid", lambda: 1000)
    with pytest.raises(netns.ContinuumError, match="needs root"):
        netns.require_root()


def test_site_argv_joins_cgroup_then_namespace() -> None:
    argv = netns.site_argv("ns1", None, ["python", "-V"])
    assert argv[:3] == ["env", "TF_CGROUPS=", "TF_NETNS=ns1"] and argv[-2:] == ["python", "-V"]
