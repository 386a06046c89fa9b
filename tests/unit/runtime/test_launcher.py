"""The one local launcher: session leaders stopped as a group, supervised processes restarted and stopped."""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest

from runtime.launcher import (
    LaunchError,
    group_alive,
    pid_alive,
    read_json,
    spawn,
    start_supervised,
    stop_group,
    wait_until,
)

CHILD_AND_GRANDCHILD = "import subprocess, time; subprocess.Popen(['sleep', '60']); time.sleep(60)"


def test_spawn_leads_a_session_and_stop_group_ends_its_children(tmp_path):
    proc = spawn("sleeper", [sys.executable, "-c", CHILD_AND_GRANDCHILD], dict(os.environ), tmp_path / "s.log")
    assert os.getsid(proc.pid) == proc.pid
    wait_until(lambda: len(os.popen(f"pgrep -s {proc.pid}").read().split()) >= 2, proc, 10, "sleeper",
               tmp_path / "s.log")
    stop_group(proc.pid, proc, timeout_s=5)
    assert not group_alive(proc.pid) and proc.poll() is not None
    assert "starting sleeper" in (tmp_path / "s.log").read_text()


def test_wait_until_names_the_dead_process_with_its_log(tmp_path):
    proc = spawn("crasher", [sys.executable, "-c", "print('boom'); raise SystemExit(3)"], dict(os.environ),
                 tmp_path / "c.log")
    with pytest.raises(LaunchError, match=r"(?s)crasher exited with code 3.*boom"):
        wait_until(lambda: False, proc, 10, "crasher", tmp_path / "c.log")


def test_supervised_process_is_restarted_and_stopped_with_its_supervisor(tmp_path):
    state = tmp_path / "w.json"
    pid = start_supervised(state, [sys.executable, "-c", "raise SystemExit(5)"], dict(os.environ),
                           tmp_path / "w.log", record={"tier": "edge"}, name="crashing worker")
    assert pid_alive(pid, "runtime.launcher")
    wait_until(lambda: (read_json(state) or {}).get("restarts", 0) >= 1, None, 15, "restart", tmp_path / "w.log")
    st = read_json(state)
    assert st["tier"] == "edge" and st["last_exit"] == 5 and st["supervisor_pid"] == pid
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not pid_alive(pid) and not state.exists()
