"""The stack's service processes: started, probed and stopped by the one local launcher
(`runtime.launcher`), plus the state file that lets `stack down`/`status` find them again.

Every service of the local stack runs as the leader of a new session (`setsid`), so stopping it is
`killpg(pgid, SIGTERM)` then SIGKILL: children (Airflow's scheduler, API server, task processes;
MLflow's workers) go with it and nothing is left running.
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from runtime import launcher
from runtime.launcher import free_port, group_alive, http_status, log_tail, port_open, stop_group  # noqa: F401


class StackError(RuntimeError):
    """A service could not start, is unhealthy or is misconfigured; the message says what to do."""


# The stack's services start and stop through the one local launcher; its errors are StackErrors here.
spawn = functools.partial(launcher.spawn, error=StackError)
wait_until = functools.partial(launcher.wait_until, error=StackError, state="healthy")


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


def alive(state: ServiceState) -> bool:
    """The recorded process still exists and is the one we started (not a recycled pid or a zombie)."""
    return launcher.pid_alive(state.pid, state.cmdline_hint)


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
