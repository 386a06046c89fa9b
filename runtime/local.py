"""Tier workers as local processes watched by the caller: the tests' deployments and the continuum testbed.

Each worker is started, probed and stopped by the one local launcher (`runtime.launcher`), as the
rollout backend's supervised workers are (which `tierflow serve-local` runs); here no supervisor restarts
a worker: the caller does (`LocalDeployment.supervise_once`), and can kill one on purpose (fault injection).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ml.contract import TIERS
from runtime import scrape_targets
from runtime.launcher import free_port, http_status, log_tail, spawn, stop_group
from runtime.settings import Settings, settings_env


class WorkerProcessError(RuntimeError):
    """A worker exited or never became ready; the message carries the end of its log."""


class WorkerProcess:
    """`tierflow worker --tier T --model-uri U --http-port P` in its own process group."""

    def __init__(self, settings: Settings, tier: str, model_uri: str, log_dir: Path,
                 http_port: int | None = None, env: dict[str, str] | None = None):
        self.settings, self.tier, self.model_uri = settings, tier, str(model_uri)
        self.http_port = http_port or free_port()
        self.log_path = log_dir / f"worker-{tier}.log"
        self.env = {**os.environ, **settings_env(settings), "TIERFLOW_WORKER__HTTP_HOST": "127.0.0.1",
                    **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = -1

    @property
    def argv(self) -> list[str]:
        return [sys.executable, "-m", "runtime.cli", "worker", "--tier", self.tier, "--model-uri",
                self.model_uri, "--http-port", str(self.http_port)]

    def start(self) -> WorkerProcess:
        self.proc = spawn(f"{self.tier} worker", self.argv, self.env, self.log_path,
                          cwd=Path(__file__).resolve().parent.parent, error=WorkerProcessError)
        self.restarts += 1
        if self.scrape_address:
            scrape_targets.register(self.settings.home, self.target_name, self.scrape_address, self.target_labels)
        return self

    @property
    def target_labels(self) -> dict[str, str | None]:
        """The labels Prometheus puts on this worker's series (runtime.scrape_targets)."""
        return {"app": self.settings.app, "tier": self.tier, "replica": "0",
                "version": self.env.get("TIERFLOW_WORKER__VERSION") or self.settings.worker.version}

    @property
    def target_name(self) -> str:
        """This worker's Prometheus target file (runtime.scrape_targets)."""
        return f"{self.settings.app}-local-{self.tier}-{self.http_port}"

    @property
    def scrape_address(self) -> str | None:
        """Where a Prometheus on this machine reaches /metrics (None: it cannot, announce nothing)."""
        return f"127.0.0.1:{self.http_port}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ready(self) -> bool:
        return self.alive() and http_status(f"http://127.0.0.1:{self.http_port}/readyz") == 200

    def log_tail(self, limit: int = 3000) -> str:
        return log_tail(self.log_path, limit)

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                code = self.proc.returncode if self.proc else None
                raise WorkerProcessError(f"{self.tier} worker exited ({code}):\n{self.log_tail()}")
            if self.ready():
                return
            time.sleep(0.2)
        raise WorkerProcessError(f"{self.tier} worker not ready after {timeout_s}s:\n{self.log_tail()}")

    def signal(self, sig: int) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM (graceful drain), SIGKILL after timeout_s; returns the exit code."""
        if self.proc is None:
            return None
        stop_group(self.proc.pid, self.proc, timeout_s)
        scrape_targets.unregister(self.settings.home, self.target_name)
        return self.proc.wait(10)

    def kill(self) -> None:
        """kill -9: no drain, no flush, no commit (for fault-injection)."""
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(10)


class LocalDeployment:
    """One worker per tier; starts downstream tiers first, stops upstream first, restarts crashed ones."""

    def __init__(self, settings: Settings, model_uri: str | Path, log_dir: Path, tiers: tuple[str, ...] = TIERS,
                 env: dict[str, str] | None = None):
        self.workers = {t: WorkerProcess(settings, t, str(model_uri), log_dir, env=env) for t in tiers}

    def __getitem__(self, tier: str) -> WorkerProcess:
        return self.workers[tier]

    def start(self, timeout_s: float = 180.0) -> LocalDeployment:
        # Start all at once (model loading overlaps), then wait downstream first.
        for w in reversed(list(self.workers.values())):
            w.start()
        for w in reversed(list(self.workers.values())):
            w.wait_ready(timeout_s)
        return self

    def supervise_once(self) -> list[str]:
        """Restart workers that exited; returns the restarted tiers."""
        restarted = []
        for tier, w in self.workers.items():
            if not w.alive():
                w.start()
                restarted.append(tier)
        return restarted

    def stop(self, timeout_s: float = 30.0) -> dict[str, int | None]:
        """SIGTERM every worker (edge first), then wait for each; each drains its own batch."""
        for w in self.workers.values():
            w.signal(signal.SIGTERM)
        return {tier: w.stop(timeout_s) for tier, w in self.workers.items()}

    def __enter__(self) -> LocalDeployment:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
