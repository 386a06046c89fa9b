"""The one local process launcher: every process tierflow starts on this machine goes through here.

Users: the local rollout backend (`plugins.rollout.local`, supervised tier workers that outlive the
Airflow task; `tierflow serve-local` and the demo run them too), the tests' deployments (`runtime.local`)
and the embedded stack's services (`infra.local.stack`).

- :func:`spawn` starts argv as the leader of a new session (``setsid``), stdout+stderr appended to a
  log file; :func:`stop_group` stops the whole session (SIGTERM, then SIGKILL), so children go too.
- :func:`wait_until` polls a readiness check and fails fast, with the log tail, if the process died.
- :func:`start_supervised` runs argv under a small supervisor process (``python -m runtime.launcher
  supervise STATE -- ARGV``) that restarts it with back-off, forwards SIGTERM for a graceful drain and
  keeps a JSON state file (pid, restarts, last exit code) that any later process can read.

Errors are :class:`LaunchError` unless the caller names its own error type (``error=``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from runtime.localhost import free_port, http_status, log_tail, port_free, port_open

__all__ = ["SUPERVISOR_MODULE", "LaunchError", "free_port", "group_alive", "http_status", "log_tail",
           "pid_alive", "port_free", "port_open", "read_json", "session_members", "spawn", "start_supervised",
           "stop_group", "supervise", "wait_until", "write_json"]

SUPERVISOR_MODULE = "runtime.launcher"


class LaunchError(RuntimeError):
    """A process could not start, died while starting or never became ready; the message has its log tail."""


def spawn(name: str, argv: list[str], env: dict[str, str], log_path: Path, cwd: Path | str | None = None, *,
          error: type[Exception] = LaunchError) -> subprocess.Popen[bytes]:
    """Start argv as a session leader writing stdout+stderr to log_path (appended)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting {name}: {' '.join(argv)}\n".encode())
        log.flush()
        try:
            return subprocess.Popen(argv, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        except FileNotFoundError as exc:
            raise error(f"{name}: cannot run {argv[0]!r} ({exc}); is the venv installed (`make install`)?"
                        ) from exc


def wait_until(check: Callable[[], bool], proc: subprocess.Popen[bytes] | None, timeout_s: float,
               what: str, log_path: Path, *, error: type[Exception] = LaunchError, state: str = "ready") -> None:
    """Poll check() until it holds; fail fast if the process died, with the log tail in the message."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise error(f"{what} exited with code {proc.returncode}; log {log_path}:\n{log_tail(log_path)}")
        if check():
            return
        time.sleep(0.2)
    raise error(f"{what} not {state} after {timeout_s:.0f}s; log {log_path}:\n{log_tail(log_path)}")


def pid_alive(pid: int, cmdline_hint: str = "") -> bool:
    """The process exists, is not a zombie and (if a hint is given) its command line contains the hint,
    which guards against a recycled pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":
        return False
    return not cmdline_hint or cmdline_hint in cmdline


def session_members(sid: int) -> list[int]:
    """Live (non-zombie) processes of a session. A process is started as a session leader, so this
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
    """Anything left of the process started as session/group leader pgid (zombies do not count)."""
    return bool(session_members(pgid))


def stop_group(pgid: int, proc: subprocess.Popen[bytes] | None = None, timeout_s: float = 15.0) -> None:
    """SIGTERM the process group (the leader shuts down its children), then SIGTERM and finally
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


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def write_json(path: Path, data: dict) -> None:
    """Atomic replace (readers never see half a file)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


# -- supervised processes ------------------------------------------------------------------------------
def start_supervised(state_file: Path, argv: list[str], env: dict[str, str], log_path: Path, *,
                     record: dict | None = None, cwd: Path | str | None = None, name: str = "process",
                     error: type[Exception] = LaunchError, timeout_s: float = 30.0) -> int:
    """Run argv under its own supervisor (a new session, so it outlives the caller's process group);
    returns the supervisor's pid once it has recorded itself in state_file (``record`` + pids, restarts,
    last exit code, status)."""
    write_json(state_file, {**(record or {}), "argv": argv, "log": str(log_path), "supervisor_pid": 0,
                            "worker_pid": 0, "restarts": 0, "last_exit": None, "status": "starting"})
    proc = spawn(f"supervisor of {name}", [sys.executable, "-m", SUPERVISOR_MODULE, "supervise", str(state_file),
                                           "--", *argv], env, log_path, cwd, error=error)
    deadline = time.monotonic() + timeout_s
    while not (pid := (read_json(state_file) or {}).get("supervisor_pid")):
        if proc.poll() is not None:
            raise error(f"supervisor of {name} exited with code {proc.returncode}; log {log_path}:\n"
                        f"{log_tail(log_path)}")
        if time.monotonic() > deadline:
            raise error(f"supervisor of {name} did not start; log {log_path}")
        time.sleep(0.05)
    return int(pid)


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
        st = read_json(state_file)
        if st is None:  # removed by whoever stopped us: do not resurrect a partial record
            return
        st.update(kw)
        write_json(state_file, st)

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
        print(f"[supervisor] process exited with code {code}; restart {restarts} in {backoff:.0f}s",
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
        print(f"usage: python -m {SUPERVISOR_MODULE} supervise STATE_FILE -- ARGV...", file=sys.stderr)
        return 2
    return supervise(Path(args[1]), args[3:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
