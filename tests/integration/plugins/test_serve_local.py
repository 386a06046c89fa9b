"""`tierflow serve-local` runs the rollout's supervised workers: they answer, a killed worker is restarted by its
supervisor (and serve-local says so), and SIGTERM leaves no supervisor, worker or state file behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from plugins.rollout.local import LocalProcessBackend
from runtime.launcher import pid_alive
from runtime.settings import settings_env

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[3]


def _wait_for(lines: list[str], text: str, proc: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not any(text in ln for ln in lines):
        assert proc.poll() is None, "serve-local exited:\n" + "".join(lines)
        assert time.monotonic() < deadline, f"no {text!r} after {timeout_s}s:\n" + "".join(lines)
        time.sleep(0.2)


def test_serve_local_uses_supervised_workers_and_stops_them(kafka_settings, tiny_bundle):
    from plugins.pipeline.deploy import canary_samples
    from runtime.client import DeviceClient

    settings = kafka_settings
    env = {**os.environ, **settings_env(settings), "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "tierflow_cli", "serve-local", "--model-uri", str(tiny_bundle),
                             "--no-broker"], env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True).start()
    backend = LocalProcessBackend(settings.home)
    try:
        _wait_for(lines, "Ctrl-C stops", proc, 240)
        workers = backend.workers(settings.app)
        assert sorted(w["tier"] for w in workers) == ["cloud", "edge", "fog"]
        assert all(w["version"] == "local" and pid_alive(w["supervisor_pid"]) for w in workers)

        x, _ = canary_samples(20)
        with DeviceClient(settings) as client:
            for i in range(len(x)):
                client.send(f"sl-{i}", x[i])
            client.wait_all(60)
            assert len(client.answers) == 20

        (edge,) = backend.workers(settings.app, "local", "edge")
        os.kill(edge["worker_pid"], signal.SIGKILL)
        _wait_for(lines, "edge worker exited (code -9); restarted by its supervisor", proc, 30)
        assert backend.workers(settings.app, "local", "edge")[0]["restarts"] == 1

        workers = backend.workers(settings.app)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, "".join(lines)
        assert backend.running(settings.app) == {}
        assert not any(pid_alive(w["supervisor_pid"]) or pid_alive(w["worker_pid"]) for w in workers)
        assert not list(backend.app_dir(settings.app).glob("v*/*.json"))
    finally:
        if proc.poll() is None:
            proc.kill()
        backend.stop_all(settings.app, timeout_s=10)
