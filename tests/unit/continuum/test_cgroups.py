"""The site cgroups on a unified (v2) hierarchy, as laid out in files: these machines mount the cpu controller
on v1 (tested for real by the continuum integration tests); a v2 host gets ``cpu.max`` and ``cpu.stat``.
The kernel's enforcement of ``cpu.max`` itself cannot be exercised here."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.continuum import netns


def _v2_root(tmp_path: Path, monkeypatch) -> Path:
    root = tmp_path / "cgroup2"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    monkeypatch.setattr(netns, "CG_V1_CPU", tmp_path / "no-v1-cpu")
    monkeypatch.setattr(netns, "CG_V1_ACCT", tmp_path / "no-v1-cpuacct")
    monkeypatch.setattr(netns, "CG_V2", root)
    return root


def test_v2_group_gets_cpu_max_and_reads_cpu_stat(tmp_path, monkeypatch) -> None:
    root = _v2_root(tmp_path, monkeypatch)
    assert netns.cgroup_mode() == "v2"
    edge = netns.CpuGroup("edge", cores=0.25)
    edge.create()
    (group,) = edge.dirs()
    assert group == root / netns.CG_PARENT / "edge" and group.is_dir()
    assert (root / netns.CG_PARENT / "cgroup.subtree_control").read_text() == "+cpu"  # the controller for children
    assert (group / "cpu.max").read_text() == "25000 100000"
    edge.limit(1.5)  # e.g. more while the worker imports TensorFlow
    assert (group / "cpu.max").read_text() == "150000 100000"
    (group / "cpu.stat").write_text("usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\nnr_periods 40\n"
                                    "nr_throttled 12\nthrottled_usec 750000\n")
    assert edge.usage_s() == 2.5 and edge.throttled_s() == 0.75
    (group / "cgroup.procs").write_text("101\n99\n")
    assert edge.pids() == [99, 101] and edge.procs_files() == [str(group / "cgroup.procs")]


def test_no_cpu_controller_is_a_clear_error(tmp_path, monkeypatch) -> None:
    root = _v2_root(tmp_path, monkeypatch)
    (root / "cgroup.controllers").write_text("hugetlb\n")  # e.g. cpu bound to a v1 hierarchy
    assert netns.cgroup_mode() == ""
    with pytest.raises(netns.ContinuumError, match="no cpu cgroup controller"):
        netns.CpuGroup("edge", cores=0.25).create()
