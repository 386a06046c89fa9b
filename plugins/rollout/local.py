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

Run as ``python -m plugins.rollout.local supervise <state-file> -- <worker argv...>`` (internal).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from plugins.rollout.base import Release, RolloutBackend, RolloutError, TierWorkerSpec
from runtime.localhost import http_status, log_tail

SUPERVISOR_MODULE = "plugins.rollout.local"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


def _alive(pid: int) -> bool:
    """The pid exists, is not a zombie, and is one of our supervisors (guards against pid reuse)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z" and SUPERVISOR_MODULE.encode() in cmdline


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
            st = _read_json(f)
            if st is None or "version" not in st or not st.get("supervisor_pid"):
                continue
            if not _alive(st["supervisor_pid"]):
                f.unlink(missing_ok=True)
                continue
            st["state_file"] = str(f)
            out.append(st)
        return out

    # -- RolloutBackend ------------------------------------------------------------------------
    def start_tier(self, release: Release, spec: TierWorkerSpec) -> None:
        existing = self.workers(release.app, release.version, spec.tier)
        vdir = self.app_dir(release.app) / f"v{release.version}"
        logs = self.app_dir(release.app) / "logs"
        vdir.mkdir(parents=True, exist_ok=True)
        logs.mkdir(parents=True, exist_ok=True)
        exe = tierflow_executable(self.ml_python)
        for replica in range(len(existing), spec.replicas):
            port = spec.http_port if spec.http_port and _port_free(spec.http_port) and replica == 0 else _free_port()
            argv = [exe, *spec.worker_command()[1:]]
            argv[argv.index("--http-port") + 1] = str(port)
            state_file = vdir / f"{spec.tier}-{replica}.json"
            log = logs / f"v{release.version}-{spec.tier}-{replica}.log"
            env = {**os.environ, **self.env, **spec.env,
                   "TIERFLOW_APP": release.app,
                   "TIERFLOW_WORKER__VERSION": release.version,
                   "TIERFLOW_WORKER__HTTP_HOST": "127.0.0.1",
                   "PYTHONUNBUFFERED": "1"}
            _write_json(state_file, {"app": release.app, "version": release.version, "tier": spec.tier,
                                     "replica": replica, "port": port, "log": str(log), "argv": argv,
                                     "supervisor_pid": 0, "worker_pid": 0, "restarts": 0,
                                     "last_exit": None, "status": "starting"})
            with open(log, "ab") as out:
                proc = subprocess.Popen(
                    [sys.executable, "-m", SUPERVISOR_MODULE, "supervise", str(state_file), "--", *argv],
                    env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True, cwd=str(self.home))
            # Wait until the supervisor has recorded itself (it is then findable by any later process).
            deadline = time.monotonic() + 30
            while not (_read_json(state_file) or {}).get("supervisor_pid"):
                if proc.poll() is not None:
                    raise RolloutError(f"supervisor of v{release.version} {spec.tier} exited with code "
                                       f"{proc.returncode}; log {log}:\n{log_tail(log)}")
                if time.monotonic() > deadline:
                    raise RolloutError(f"supervisor of v{release.version} {spec.tier} did not start; log {log}")
                time.sleep(0.05)

    def wait_ready(self, release: Release, spec: TierWorkerSpec, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            states = [_read_json(f) for f in self._state_files(release.app, release.version, spec.tier)]
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
        """SIGTERM the supervisors (they forward it and wait for the drain); SIGKILL after timeout_s."""
        files = self._state_files(app, version, tier)
        pids = []
        for f in files:
            st = _read_json(f)
            if st and st.get("supervisor_pid") and _alive(st["supervisor_pid"]):
                pids.append(st["supervisor_pid"])
                with contextlib.suppress(ProcessLookupError):
                    os.kill(st["supervisor_pid"], signal.SIGTERM)
        deadline = time.monotonic() + timeout_s + 2.0
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        for p in pids:
            if _alive(p):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p, signal.SIGKILL)  # the supervisor leads its session: worker goes too
        for f in files:
            f.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            (self.app_dir(app) / f"v{version}").rmdir()

    def running(self, app: str) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for st in self.workers(app):
            tiers = out.setdefault(st["version"], [])
            if st["tier"] not in tiers:
                tiers.append(st["tier"])
        return out

    def stop_all(self, app: str, timeout_s: float = 30.0) -> None:
        for version, tiers in self.running(app).items():
            for tier in tiers:
                self.stop_tier(app, version, tier, timeout_s)


# -- the supervisor process --------------------------------------------------------------------
def supervise(state_file: Path, argv: list[str], *, grace_s: float = 30.0, max_backoff_s: float = 10.0) -> int:
    """Run argv, restart it when it exits unasked, forward SIGTERM/SIGINT; exit when stopped."""
    stopping = False
    child: subprocess.Popen | None = None

    def on_term(signum, _frame):
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)

    def update(**kw) -> None:
        st = _read_json(state_file)
        if st is None:  # removed by stop_tier: do not resurrect a partial record
            return
        st.update(kw)
        _write_json(state_file, st)

    restarts, backoff = 0, 1.0
    update(supervisor_pid=os.getpid(), status="starting")
    while not stopping:
        started = time.monotonic()
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
        if stopping:  # SIGTERM arrived while starting: the handler saw no child yet
            child.send_signal(signal.SIGTERM)
        update(worker_pid=child.pid, status="running")
        code = child.wait()  # a SIGTERM to us is forwarded by on_term; the wait resumes after it
        if stopping:
            break
        restarts += 1
        if time.monotonic() - started > 60:
            backoff = 1.0  # it ran a good while: start the back-off over
        print(f"[supervisor] worker exited with code {code}; restart {restarts} in {backoff:.0f}s",
              file=sys.stderr, flush=True)
        update(restarts=restarts, last_exit=code, status="crashed")
        deadline = time.monotonic() + backoff
        while not stopping and time.monotonic() < deadline:
            time.sleep(0.1)
        backoff = min(backoff * 2, max_backoff_s)
    if child is not None and child.poll() is None:
        try:
            child.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    state_file.unlink(missing_ok=True)
    return 0


def main(args: list[str]) -> int:
    if len(args) < 4 or args[0] != "supervise" or args[2] != "--":
        print("usage: python -m plugins.rollout.local supervise STATE_FILE -- WORKER_ARGV...", file=sys.stderr)
        return 2
    return supervise(Path(args[1]), args[3:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
