"""Local-process rollout backend (the embedded default): one small supervisor per tier worker.

Why a supervisor per worker and state files, not one central daemon: the workers must outlive the
Airflow task that started them and be found and stopped by a later task (or `tierflow`), and crashed
workers must come back. Each worker gets its own supervisor process, started with `setsid` so it
leaves the task's process group (Airflow kills that group when the task ends). The supervisor
restarts its worker with exponential back-off (like a kubelet's CrashLoopBackOff), forwards SIGTERM
for a graceful drain, and keeps a JSON state file under ``$TIERFLOW_HOME/workers/<app>/`` (pid,
port, restarts, last exit code, log path). There is no daemon whose death would orphan every worker,
nothing to bootstrap first, and the file system is the registry any later process can read.
Worker logs go to ``$TIERFLOW_HOME/workers/<app>/logs/``.

The supervisor and the process primitives are the one local launcher, `runtime.launcher`, which the
tests' deployments and the embedded stack use too; `tierflow serve-local` runs this backend itself
(`plugins.rollout.serve_local`), and `tierflow stack down` stops every worker it started (`stop_everything`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import time
from pathlib import Path

from ml.contract import TIERS
from plugins.rollout.base import Release, RolloutBackend, RolloutError, TierWorkerSpec
from runtime import scrape_targets
from runtime.launcher import (
    SUPERVISOR_MODULE,
    free_port,
    http_status,
    log_tail,
    pid_alive,
    port_free,
    read_json,
    session_members,
    start_supervised,
)


def _alive(pid: int) -> bool:
    """The pid is one of our live supervisors (guards against pid reuse)."""
    return pid_alive(pid, SUPERVISOR_MODULE)


def _left_of(state: dict) -> list[int]:
    """Live processes of a worker's supervisor session: the supervisor leads it, its worker is a member
    (and stays one if the supervisor was killed, so it is found by the recorded worker pid)."""
    sid, worker = state["supervisor_pid"], state.get("worker_pid") or 0
    if _alive(sid):
        return session_members(sid)
    return [worker] if worker and pid_alive(worker, "--tier") and worker in session_members(sid) else []


def tierflow_executable(ml_python: str | None = None) -> str:
    """The `tierflow` of the ML environment (workers need TensorFlow), else of this environment."""
    candidates = []
    if ml_python:
        candidates.append(Path(ml_python).parent / "tierflow")
    candidates.append(Path(sys.executable).parent / "tierflow")
    for c in candidates:
        if c.exists():
            return str(c)
    found = shutil.which("tierflow")
    if not found:
        raise RolloutError("cannot find the `tierflow` command; set TIERFLOW_ML_PYTHON to the ML venv's python")
    return found


class LocalProcessBackend(RolloutBackend):
    """Tier workers as supervised local processes; state in ``<home>/workers/<app>/``."""

    def __init__(self, home: Path | str, *, env: dict[str, str] | None = None, ml_python: str | None = None,
                 max_restarts: int = 2) -> None:
        self.home = Path(home)
        self.env = dict(env or {})  # TIERFLOW_* for the workers (settings_env), on top of os.environ
        self.ml_python = ml_python
        self.max_restarts = max_restarts  # a worker that crashed this often while rolling out fails it

    @classmethod
    def from_settings(cls, settings) -> LocalProcessBackend:
        from runtime.settings import settings_env

        return cls(settings.home, env=settings_env(settings), ml_python=settings.ml_python)

    # -- state ---------------------------------------------------------------------------------
    def app_dir(self, app: str) -> Path:
        return self.home / "workers" / app

    def _state_files(self, app: str, version: str | None = None, tier: str | None = None) -> list[Path]:
        root = self.app_dir(app)
        pattern = f"v{version if version is not None else '*'}/{tier if tier is not None else '*'}-*.json"
        return sorted(root.glob(pattern))

    def workers(self, app: str, version: str | None = None, tier: str | None = None) -> list[dict]:
        """State of the live supervised workers (stale files of dead supervisors are removed)."""
        out = []
        for f in self._state_files(app, version, tier):
            st = read_json(f)
            if st is None or "version" not in st or not st.get("supervisor_pid"):
                continue
            if not _alive(st["supervisor_pid"]):
                f.unlink(missing_ok=True)
                scrape_targets.unregister(self.home, self._target_name(app, st["version"], f.stem))
                continue
            st["state_file"] = str(f)
            out.append(st)
        return out

    @staticmethod
    def _target_name(app: str, version: str, worker: str) -> str:
        """The worker's Prometheus target file (runtime.scrape_targets); worker is "<tier>-<replica>"."""
        return f"{app}-v{version}-{worker}"

    # -- RolloutBackend ------------------------------------------------------------------------
    def start_tier(self, release: Release, spec: TierWorkerSpec) -> None:
        existing = self.workers(release.app, release.version, spec.tier)
        vdir = self.app_dir(release.app) / f"v{release.version}"
        logs = self.app_dir(release.app) / "logs"
        vdir.mkdir(parents=True, exist_ok=True)
        logs.mkdir(parents=True, exist_ok=True)
        exe = tierflow_executable(self.ml_python)
        for replica in range(len(existing), spec.replicas):
            port = spec.http_port if spec.http_port and port_free(spec.http_port) and replica == 0 else free_port()
            argv = [exe, *spec.worker_command()[1:]]
            argv[argv.index("--http-port") + 1] = str(port)
            state_file = vdir / f"{spec.tier}-{replica}.json"
            log = logs / f"v{release.version}-{spec.tier}-{replica}.log"
            env = {**os.environ, **self.env, **spec.env,
                   "TIERFLOW_APP": release.app,
                   "TIERFLOW_WORKER__VERSION": release.version,
                   "TIERFLOW_WORKER__HTTP_HOST": "127.0.0.1",
                   "PYTHONUNBUFFERED": "1"}
            # Recorded first: the supervisor is then findable by any later process.
            start_supervised(state_file, argv, env, log, cwd=self.home, error=RolloutError,
                             name=f"v{release.version} {spec.tier}",
                             record={"app": release.app, "version": release.version, "tier": spec.tier,
                                     "replica": replica, "port": port})
            scrape_targets.register(self.home, self._target_name(release.app, release.version, state_file.stem),
                                    f"127.0.0.1:{port}", {"app": release.app, "tier": spec.tier,
                                                          "version": release.version, "replica": str(replica)})

    def wait_ready(self, release: Release, spec: TierWorkerSpec, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            states = [read_json(f) for f in self._state_files(release.app, release.version, spec.tier)]
            states = [s for s in states if s]
            if len(states) < spec.replicas:
                raise RolloutError(f"v{release.version} {spec.tier}: {len(states)} of {spec.replicas} "
                                   "workers were started")
            not_ready = []
            for st in states:
                if st["restarts"] >= self.max_restarts or not _alive(st["supervisor_pid"]):
                    raise RolloutError(
                        f"v{release.version} {spec.tier} worker crashed {st['restarts']} times "
                        f"(last exit code {st['last_exit']}); log {st['log']}:\n{log_tail(st['log'])}")
                if http_status(f"http://127.0.0.1:{st['port']}/readyz") != 200:
                    not_ready.append(st)
            if not not_ready:
                return
            if time.monotonic() > deadline:
                st = not_ready[0]
                raise RolloutError(f"v{release.version} {spec.tier} not ready after {timeout_s:.0f}s "
                                   f"(/readyz on port {st['port']}); log {st['log']}:\n{log_tail(st['log'])}")
            time.sleep(0.1)

    def stop_tier(self, app: str, version: str, tier: str, timeout_s: float) -> None:
        """SIGTERM the supervisors (they forward it and wait for the drain); after timeout_s SIGKILL whatever
        is left in their sessions (a worker whose supervisor was killed included)."""
        files = self._state_files(app, version, tier)
        states = [st for st in map(read_json, files) if st and st.get("supervisor_pid")]
        for st in states:
            if _alive(st["supervisor_pid"]):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(st["supervisor_pid"], signal.SIGTERM)
        deadline = time.monotonic() + timeout_s + 2.0
        while any(_left_of(st) for st in states) and time.monotonic() < deadline:
            time.sleep(0.1)
        for st in states:
            for pid in _left_of(st):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        for f in files:
            f.unlink(missing_ok=True)
            scrape_targets.unregister(self.home, self._target_name(app, version, f.stem))
        with contextlib.suppress(OSError):
            (self.app_dir(app) / f"v{version}").rmdir()

    def running(self, app: str) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for st in self.workers(app):
            tiers = out.setdefault(st["version"], [])
            if st["tier"] not in tiers:
                tiers.append(st["tier"])
        return out

    def stop_all(self, app: str, timeout_s: float = 30.0) -> list[str]:
        """Stop every worker of ``app``, each version edge first; returns what stopped ("v3 edge", ...)."""
        recorded: dict[str, set[str]] = {}
        for f in self._state_files(app):  # stale files too: a worker may outlive its supervisor
            st = read_json(f)
            if st and "version" in st:
                recorded.setdefault(str(st["version"]), set()).add(str(st["tier"]))
        stopped = []
        for version, tiers in sorted(recorded.items()):
            for tier in sorted(tiers, key=lambda t: TIERS.index(t) if t in TIERS else len(TIERS)):
                self.stop_tier(app, version, tier, timeout_s)
                stopped.append(f"v{version} {tier}")
        return stopped

    def apps(self) -> list[str]:
        """Applications that have (or had) workers under this home."""
        root = self.home / "workers"
        return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []

    def stop_everything(self, timeout_s: float = 30.0) -> list[str]:
        """Every worker of every application under this home; returns what stopped ("fmnist v3 edge", ...)."""
        return [f"{app} {what}" for app in self.apps() for what in self.stop_all(app, timeout_s)]
