"""Detached service processes: start in their own process group, wait until healthy, stop the group.

Every service of the local stack runs as the leader of a new session (`start_new_session=True`, i.e.
`setsid`), so stopping it is `killpg(pgid, SIGTERM)` then SIGKILL: children (Airflow's scheduler,
API server, task processes; MLflow's workers) go with it and nothing is left running.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from runtime.localhost import free_port, http_status, log_tail, port_open  # noqa: F401 - re-exported


class StackError(RuntimeError):
    """A service could not start, is unhealthy or is misconfigured; the message says what to do."""


@dataclass
class ServiceState:
    """What `stack down`/`status` need to find a running service again (saved in state.json)."""

    name: str
    pid: int  # also the process group id (session leader)
    started_at: float
    log: str
    ports: dict[str, int] = field(default_factory=dict)
    url: str = ""
    cmdline_hint: str = ""  # a word of argv[0]; guards against a recycled pid


def spawn(name: str, argv: list[str], env: dict[str, str], log_path: Path, cwd: Path | None = None
          ) -> subprocess.Popen[bytes]:
    """Start argv as a session leader writing stdout+stderr to log_path (appended)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting {name}: {' '.join(argv)}\n".encode())
        log.flush()
        try:
            return subprocess.Popen(argv, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        except FileNotFoundError as exc:
            raise StackError(f"{name}: cannot run {argv[0]!r} ({exc}); is the venv installed (`make install`)?"
                             ) from exc


def wait_until(check: Callable[[], bool], proc: subprocess.Popen[bytes] | None, timeout_s: float,
               what: str, log_path: Path) -> None:
    """Poll check() until it holds; fail fast if the process died, with the log tail in the message."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise StackError(f"{what} exited with code {proc.returncode}; log {log_path}:\n{log_tail(log_path)}")
        if check():
            return
        time.sleep(0.2)
    raise StackError(f"{what} not healthy after {timeout_s:.0f}s; log {log_path}:\n{log_tail(log_path)}")


def alive(state: ServiceState) -> bool:
    """The recorded process still exists and is the one we started (not a recycled pid or a zombie)."""
    try:
        stat = Path(f"/proc/{state.pid}/stat").read_text()
        cmdline = Path(f"/proc/{state.pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":
        return False
    return not state.cmdline_hint or state.cmdline_hint in cmdline


def session_members(sid: int) -> list[int]:
    """Live (non-zombie) processes of a session. A service is started as a session leader, so this
    includes children that moved to their own process group (Airflow runs each task in one)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = (proc / "stat").read_text().rsplit(")", 1)[-1].split()
            if int(fields[3]) == sid and fields[0] != "Z":
                pids.append(int(proc.name))
    return pids


def group_alive(pgid: int) -> bool:
    """Anything left of the service started as session/group leader pgid (zombies do not count)."""
    return bool(session_members(pgid))


def stop_group(pgid: int, proc: subprocess.Popen[bytes] | None = None, timeout_s: float = 15.0) -> None:
    """SIGTERM the process group (the service shuts down its children), then SIGTERM and finally
    SIGKILL whatever is left in its session; idempotent."""
    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        if sig == signal.SIGTERM and wait_s == timeout_s:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, sig)
        else:
            for pid in session_members(pgid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if proc is not None:
                proc.poll()  # reap our own child so it does not linger as a zombie
            if not group_alive(pgid):
                return
            time.sleep(0.1)
    if proc is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(2)


def read_state(path: Path) -> dict[str, ServiceState]:
    if not path.exists():
        return {}
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise StackError(f"stack state {path} is unreadable ({exc}); stop leftovers by hand and delete it"
                         ) from exc
    return {name: ServiceState(**entry) for name, entry in raw.items()}


def write_state(path: Path, states: dict[str, ServiceState]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({n: asdict(s) for n, s in states.items()}, indent=2))
    tmp.replace(path)
