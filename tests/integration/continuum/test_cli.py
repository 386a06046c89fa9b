"""`tierflow continuum up` in the foreground: Ctrl-C (SIGINT) or SIGTERM leaves nothing; --detach + down."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from infra.continuum.netns import Ledger, leftovers

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]


def _tierflow(home: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "tierflow_cli", "continuum", *args], cwd=ROOT, text=True,
                            env={**os.environ, "TIERFLOW_HOME": str(home)}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)


def _state(home: Path, timeout_s: float = 30.0) -> Ledger:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        states = list(home.glob("continuum/*/state.json"))
        if states and Ledger.load(states[0]).pids:
            return Ledger.load(states[0])
        time.sleep(0.1)
    raise AssertionError("no testbed state appeared")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_up_torn_down_on_signal(tmp_path, sig) -> None:
    proc = _tierflow(tmp_path, "up", "--scenario", "edge-fog-cloud")
    try:
        for line in proc.stdout:  # type: ignore[union-attr]
            if line.startswith("up; Ctrl-C"):
                break
        else:
            raise AssertionError(f"up did not come up: {proc.wait()}")
        ledger = _state(tmp_path)
        assert len(ledger.netns) == 4 and leftovers(ledger) != []
        proc.send_signal(sig)
        out = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "nothing left" in out, out
    assert leftovers(ledger) == []


def test_detach_then_down(tmp_path) -> None:
    proc = _tierflow(tmp_path, "up", "--scenario", "cloud-only", "--detach")
    out = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, out
    ledger = _state(tmp_path)
    assert all(Path(f"/run/netns/{ns}").exists() for ns in ledger.netns)
    down = _tierflow(tmp_path, "down")
    assert "nothing left" in down.communicate(timeout=60)[0]
    assert leftovers(ledger) == [] and not list(tmp_path.glob("continuum/*/state.json"))
