"""Linux primitives of the testbed: network namespaces, veth pairs, tc shaping, cpu cgroups, processes.

Every object created is recorded in a ``Ledger`` (also written to a state file) before it exists, so
teardown removes exactly what this run made, in reverse order, whatever failed in between — and a
later ``tierflow continuum down`` can do the same from the file. Nothing is found or killed by a
broad name. Needs root; without it ``require_root`` says so before anything is touched.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
CG_V1_CPU = Path("/sys/fs/cgroup/cpu")
CG_V1_ACCT = Path("/sys/fs/cgroup/cpuacct")
CG_V2 = Path("/sys/fs/cgroup")
CG_PARENT = "tierflow-continuum"
PERIOD_US = 100_000


class ContinuumError(RuntimeError):
    """The testbed cannot be laid out or used here; the message says why and what to do."""


def require_root() -> None:
    if os.geteuid() != 0:
        raise ContinuumError("the continuum testbed needs root: it creates network namespaces, veth links, tc "
                             "qdiscs and cpu cgroups. Run it as root (e.g. `sudo .venv/bin/tierflow continuum "
                             "...`); CI runs as root.")
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            raise ContinuumError(f"`{tool}` (iproute2) is not installed: `apt-get install iproute2`")


def sh(*argv: str, check: bool = True) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise ContinuumError(f"`{' '.join(argv)}` failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


# ---- cgroups ---------------------------------------------------------------------------------------

def cgroup_mode() -> str:
    """"v1" (separate cpu and cpuacct hierarchies), "v2" (cpu.max) or "" (no cpu controller)."""
    if (CG_V1_CPU / "cpu.cfs_quota_us").exists():
        return "v1"
    controllers = CG_V2 / "cgroup.controllers"
    if controllers.exists() and "cpu" in controllers.read_text().split():
        return "v2"
    return ""


@dataclass
class CpuGroup:
    """One cgroup per site (or per helper kind); ``cores=None`` measures without limiting."""

    name: str
    cores: float | None = None

    def dirs(self) -> list[Path]:
        mode = cgroup_mode()
        if mode == "v1":
            acct = [CG_V1_ACCT / CG_PARENT / self.name] if CG_V1_ACCT.exists() and CG_V1_ACCT != CG_V1_CPU else []
            return [CG_V1_CPU / CG_PARENT / self.name, *acct]
        if mode == "v2":
            return [CG_V2 / CG_PARENT / self.name]
        return []

    def create(self, limit: bool = True) -> None:
        mode = cgroup_mode()
        if not mode:
            raise ContinuumError("no cpu cgroup controller (v1 /sys/fs/cgroup/cpu or v2 cpu.max) to limit sites")
        for d in self.dirs():
            d.mkdir(parents=True, exist_ok=True)
        if mode == "v2":
            parent = CG_V2 / CG_PARENT
            with contextlib.suppress(OSError):
                (parent / "cgroup.subtree_control").write_text("+cpu")
        if limit:
            self.limit()

    def limit(self, cores: float | None = None) -> None:
        """Apply the quota (``self.cores``; ``cores`` overrides it for now, e.g. more while starting)."""
        mode = cgroup_mode()
        cores = self.cores if cores is None else cores
        if cores is not None:
            quota = max(1000, int(cores * PERIOD_US))
            if mode == "v1":
                (self.dirs()[0] / "cpu.cfs_period_us").write_text(str(PERIOD_US))
                (self.dirs()[0] / "cpu.cfs_quota_us").write_text(str(quota))
            else:
                (self.dirs()[0] / "cpu.max").write_text(f"{quota} {PERIOD_US}")

    def procs_files(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in self.dirs()]

    def pids(self) -> list[int]:
        out: set[int] = set()
        for f in self.procs_files():
            with contextlib.suppress(OSError):
                out.update(int(p) for p in Path(f).read_text().split())
        return sorted(out)

    def usage_s(self) -> float:
        """CPU seconds used by the group so far (cpuacct.usage, or cpu.stat usage_usec on v2)."""
        for d in self.dirs():
            with contextlib.suppress(OSError, ValueError):
                if (d / "cpuacct.usage").exists():
                    return int((d / "cpuacct.usage").read_text()) / 1e9
                for line in (d / "cpu.stat").read_text().splitlines():
                    if line.startswith("usage_usec"):
                        return int(line.split()[1]) / 1e6
        return 0.0

    def throttled_s(self) -> float:
        for d in self.dirs():
            with contextlib.suppress(OSError, ValueError):
                for line in (d / "cpu.stat").read_text().splitlines():
                    key, value = line.split()
                    if key == "throttled_time":
                        return int(value) / 1e9
                    if key == "throttled_usec":
                        return int(value) / 1e6
        return 0.0

    def remove(self, timeout_s: float = 5.0) -> None:
        deadline = time.monotonic() + timeout_s
        for d in self.dirs():
            while d.exists():
                try:
                    d.rmdir()
                except OSError:
                    if time.monotonic() > deadline:
                        raise ContinuumError(f"cgroup {d} still has processes {self.pids()}") from None
                    time.sleep(0.05)


# ---- processes inside a site -----------------------------------------------------------------------

def site_argv(netns: str | None, group: CpuGroup | None, argv: list[str]) -> list[str]:
    """argv that joins ``group`` and enters ``netns`` (None: stays in this machine's namespace), then execs
    ``argv`` (same PID all the way, so the process is in its site's cgroup and namespace before its first
    instruction)."""
    procs = group.procs_files() if group is not None else []
    enter = 'ip netns exec "$TF_NETNS" ' if netns is not None else ""
    script = f'for f in $TF_CGROUPS; do echo $$ > "$f"; done; exec {enter}"$@"'
    return ["env", f"TF_CGROUPS={' '.join(procs)}", f"TF_NETNS={netns or ''}", "sh", "-c", script, "sh", *argv]


def spawn(netns: str | None, group: CpuGroup | None, argv: list[str], log_path: Path,
          env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(site_argv(netns, group, argv), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, env=env)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):  # a zombie of ours is not alive
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    return False


def stop_pid(pid: int, timeout_s: float = 10.0) -> None:
    """SIGTERM the process group ``pid`` leads (each site process is a session leader), SIGKILL later."""
    for sig, wait in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
        if not pid_alive(pid):
            break
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + wait
        while pid_alive(pid) and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.05)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


# ---- running Python code inside a namespace --------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)


def in_netns(netns: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call ``fn`` on a fresh thread that joined ``netns`` (sockets it opens live there; the rest of
    this process stays where it is). For probes and metric scrapes from the orchestrator."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({netns}): {os.strerror(err)}")
            finally:
                os.close(fd)
            box["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    t = threading.Thread(target=target, name=f"netns-{netns}", daemon=True)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


# ---- the ledger ------------------------------------------------------------------------------------

@dataclass
class Ledger:
    """What one testbed created, in creation order; ``teardown`` undoes it in reverse."""

    run_id: str
    state_path: Path | None = None
    netns: list[str] = field(default_factory=list)
    groups: list[dict[str, Any]] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def save(self) -> None:
        if self.state_path is not None:
            self.state_path.parent.mkdir(parents=True, exist_ok=True)
            self.state_path.write_text(json.dumps(asdict(self) | {"state_path": str(self.state_path)}))

    @classmethod
    def load(cls, path: Path) -> Ledger:
        data = json.loads(path.read_text())
        data["state_path"] = Path(data["state_path"]) if data.get("state_path") else None
        return cls(**data)

    def add_netns(self, name: str) -> None:
        self.netns.append(name)
        self.save()

    def add_group(self, group: CpuGroup) -> None:
        self.groups.append(asdict(group))
        self.save()

    def add_pid(self, pid: int) -> None:
        self.pids.append(pid)
        self.save()

    def teardown(self) -> list[str]:
        """Stop processes (workers first: they were started last), empty and remove cgroups, delete
        namespaces (which deletes their veth ends). Returns the problems left, empty when clean."""
        problems: list[str] = []
        for pid in reversed(self.pids):
            try:
                stop_pid(pid)
            except OSError as exc:
                problems.append(f"process {pid}: {exc}")
        groups = [CpuGroup(**g) for g in self.groups]
        for g in groups:  # anything a site process forked that left its process group
            for pid in g.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for g in reversed(groups):
            try:
                g.remove()
            except ContinuumError as exc:
                problems.append(str(exc))
        for parent in {d.parent for g in groups for d in g.dirs()}:
            with contextlib.suppress(OSError):
                parent.rmdir()  # only succeeds when no other testbed uses it
        for ns in reversed(self.netns):
            if Path(f"/run/netns/{ns}").exists():
                out = subprocess.run(["ip", "netns", "delete", ns], capture_output=True, text=True, check=False)
                if out.returncode != 0:
                    problems.append(f"netns {ns}: {out.stderr.strip()}")
        for f in self.files:
            with contextlib.suppress(OSError):
                Path(f).unlink()
        if self.state_path is not None and not problems:
            with contextlib.suppress(OSError):
                self.state_path.unlink()
        return problems


def leftovers(ledger: Ledger) -> list[str]:
    """What of a torn-down ledger still exists (for tests and `down`): namespaces, cgroups, processes."""
    left = [f"netns {ns}" for ns in ledger.netns if Path(f"/run/netns/{ns}").exists()]
    left += [f"cgroup {d}" for g in ledger.groups for d in CpuGroup(**g).dirs() if d.exists()]
    left += [f"process {pid}" for pid in ledger.pids if pid_alive(pid)]
    return left
