"""The embedded local stack: tansu broker, SeaweedFS S3, MLflow server, Airflow standalone and a
Prometheus server scraping the local tier workers, on loopback.

Used by `tierflow stack up|down|status` and by the test fixtures (tests/fixtures/stack.py)::

    stack = LocalStack(load_settings())           # or Settings(...) with free ports, as the tests do
    settings = stack.up(["mlflow"])               # starts s3 first (mlflow needs it); returns Settings
    ...                                           # with the generated credentials filled in
    stack.down()                                  # stops every recorded process group

State (pids, ports) is in $TIERFLOW_HOME/stack/state.json, logs in $TIERFLOW_HOME/stack/logs/, data
in $TIERFLOW_HOME/stack/<service>/, generated credentials and URLs in $TIERFLOW_HOME/stack.env
(mode 600, read by Settings). Services started by one `up` keep running after the command exits.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path

from pydantic import SecretStr

from infra.local.process import (
    ServiceState,
    StackError,
    alive,
    free_port,
    group_alive,
    port_open,
    read_state,
    spawn,
    stop_group,
    wait_until,
    write_state,
)
from infra.local.services import (
    PLANNERS,
    REPO,
    REQUIRES,
    SERVICES,
    StackPaths,
    configured_extra_ports,
    main_ports,
)
from plugins.rollout.local import LocalProcessBackend
from runtime.settings import ENV_PREFIX, Settings, default_home

Event = Callable[[str, str], None]  # (service, message) for progress displays

ENV_FILE_KEYS = {  # stack.env key -> how to read it from Settings
    "KAFKA__BOOTSTRAP": lambda s: s.kafka.bootstrap,
    "S3__ENDPOINT_URL": lambda s: s.s3.endpoint_url,
    "S3__BUCKET": lambda s: s.s3.bucket,
    "S3__ACCESS_KEY_ID": lambda s: s.s3.access_key_id,
    "S3__SECRET_ACCESS_KEY": lambda s: s.s3.secret_access_key.get_secret_value() if s.s3.secret_access_key else None,
    "MLFLOW__TRACKING_URI": lambda s: s.mlflow.tracking_uri,
    "AIRFLOW__API_URL": lambda s: s.airflow.api_url,
    "AIRFLOW__USERNAME": lambda s: s.airflow.username,
    "AIRFLOW__PASSWORD": lambda s: s.airflow.password.get_secret_value() if s.airflow.password else None,
    "PROMETHEUS__URL": lambda s: s.prometheus.url,
}


def load_settings(home: Path | None = None) -> Settings:
    """Settings for a stack home: environment first, then <home>/stack.env, then defaults."""
    home = (home or default_home()).resolve()
    return Settings(_env_file=home / "stack.env", home=home)


def with_credentials(settings: Settings) -> Settings:
    """Fill in missing S3 keys and Airflow password with fresh random values (never fixed ones)."""
    s3 = settings.s3.model_copy(update={
        "access_key_id": settings.s3.access_key_id or f"tf{secrets.token_hex(8)}",
        "secret_access_key": settings.s3.secret_access_key or SecretStr(secrets.token_urlsafe(24)),
    })
    airflow = settings.airflow.model_copy(update={
        "password": settings.airflow.password or SecretStr(secrets.token_urlsafe(12))})
    return settings.model_copy(update={"s3": s3, "airflow": airflow})


def write_env_file(settings: Settings, path: Path) -> None:
    """stack.env: the URLs and generated credentials of this stack, readable only by the owner."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["# Written by `tierflow stack up`: URLs and generated credentials of the local stack. Private."]
    for key, read in ENV_FILE_KEYS.items():
        value = read(settings)
        if value is not None:
            lines.append(f"{ENV_PREFIX}{key}={value}")
    tmp = path.with_suffix(".tmp")
    tmp.touch(mode=0o600)
    tmp.chmod(0o600)
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)


def with_requirements(services: Iterable[str]) -> list[str]:
    """The services plus what they need, in start order."""
    wanted: set[str] = set()

    def add(name: str) -> None:
        if name not in SERVICES:
            raise StackError(f"unknown service {name!r}; choose from {', '.join(SERVICES)}")
        for dep in REQUIRES[name]:
            add(dep)
        wanted.add(name)

    for name in services:
        add(name)
    return [name for name in SERVICES if name in wanted]


class LocalStack:
    """Start, check and stop the services of one stack home. Safe to use from several processes in
    turn (state is re-read for every operation), not concurrently."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.paths = StackPaths(Path(settings.home).resolve())
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._lock = threading.RLock()
        self._brokers: dict[str, object] = {}

    # -- queries ---------------------------------------------------------------------------------
    def states(self) -> dict[str, ServiceState]:
        with self._lock:
            return read_state(self.paths.state)

    def _record(self, name: str, state: ServiceState | None) -> None:
        """Add (or with None remove) one service in state.json; threads of one `up` share the file."""
        with self._lock:
            states = read_state(self.paths.state)
            if state is None:
                states.pop(name, None)
            else:
                states[name] = state
            write_state(self.paths.state, states)

    def status(self) -> dict[str, dict[str, object]]:
        """Per service: running (process alive), healthy (answers its probe), url, pid, ports, log."""
        from infra.local.services import broker_healthy, host_port

        states = self.states()
        out: dict[str, dict[str, object]] = {}
        for name in SERVICES:
            st = states.get(name)
            if st is None:
                out[name] = {"running": False, "healthy": False, "url": "", "pid": None, "ports": {}, "log": ""}
                continue
            running = alive(st)
            if name == "broker":
                healthy = running and broker_healthy(*host_port(st.url, 9092))
            else:
                healthy = running and PLANNERS[name](self.settings, self.paths, self._extra_from(st)).healthy()
            out[name] = {"running": running, "healthy": healthy, "url": st.url, "pid": st.pid,
                         "ports": st.ports, "log": st.log, "uptime_s": time.time() - st.started_at}
        return out

    @staticmethod
    def _extra_from(state: ServiceState) -> dict[str, int]:
        return {k: v for k, v in state.ports.items() if k != "main"}

    # -- up --------------------------------------------------------------------------------------
    def up(self, services: Iterable[str] | None = None, on_event: Event | None = None) -> Settings:
        """Start the services (and what they need) that are not running yet; wait until each is
        healthy. Returns the Settings of this stack, credentials included."""
        notify = on_event or (lambda _svc, _msg: None)
        self.settings = with_credentials(self.settings)
        write_env_file(self.settings, self.paths.env_file)
        names = with_requirements(services or self.settings.stack.services)
        # Independent services start at the same time (Airflow does not wait for MLflow); a service
        # waits only for what it requires. The first failure stops what this call started.
        done = {name: threading.Event() for name in names}
        failures: dict[str, BaseException] = {}
        started_here: list[str] = []

        def start(name: str) -> None:
            try:
                for dep in REQUIRES[name]:
                    if dep in done:
                        done[dep].wait()
                        if dep in failures:
                            return
                states = self.states()
                if name in states and alive(states[name]):
                    notify(name, "already running")
                    return
                t0 = time.monotonic()
                notify(name, "starting")
                started_here.append(name)
                state = self._start_broker() if name == "broker" else self._start(name, notify)
                self._record(name, state)
                notify(name, f"healthy in {time.monotonic() - t0:.1f}s at {state.url}")
            except BaseException as exc:  # noqa: BLE001 - reported below, in the caller's thread
                failures[name] = exc
            finally:
                done[name].set()

        threads = [threading.Thread(target=start, args=(n,), name=f"stack-up-{n}", daemon=True) for n in names]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if failures:
            for name in reversed(started_here):
                self._stop_one(name)
            name, exc = next(iter(failures.items()))
            if isinstance(exc, StackError):
                raise exc
            raise StackError(f"{name}: {exc}") from exc
        return self.settings

    def _check_free(self, name: str, host: str, port: int) -> None:
        if port_open(host, port):
            setting = {"broker": "KAFKA__BOOTSTRAP", "s3": "S3__ENDPOINT_URL", "mlflow": "MLFLOW__TRACKING_URI",
                       "airflow": "AIRFLOW__API_URL", "prometheus": "PROMETHEUS__URL"}[name]
            raise StackError(f"{name}: {host}:{port} is already in use (another stack or program?). "
                             f"Stop it, or choose another port with {ENV_PREFIX}{setting}.")

    def _start_broker(self) -> ServiceState:
        from runtime.broker import EmbeddedBroker

        host, port = main_ports(self.settings)["broker"]
        self._check_free("broker", host, port)
        log = self.paths.log("broker")
        broker = EmbeddedBroker(host=host, port=port, log_path=log,
                                startup_timeout_s=self.settings.stack.startup_timeout_s)
        broker.start()
        self._brokers["broker"] = broker
        return ServiceState("broker", broker.pid or 0, time.time(), str(log), {"main": port},
                            f"{host}:{port}", "tansu")

    def _start(self, name: str, notify: Event) -> ServiceState:
        host, port = main_ports(self.settings)[name]
        self._check_free(name, host, port)
        extra = {k: v or free_port(host) for k, v in configured_extra_ports(name, self.settings).items()}
        for key, value in extra.items():
            if port_open(host, value):
                raise StackError(f"{name}: extra listener {key} port {value} is in use; change Settings.stack")
        plan = PLANNERS[name](self.settings, self.paths, extra)
        for path, content in plan.files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600)
            path.write_text(content)
        log = self.paths.log(name)
        proc = spawn(name, plan.argv, plan.env, log, plan.cwd)
        self._procs[name] = proc
        state = ServiceState(name, proc.pid, time.time(), str(log), plan.ports, plan.url, plan.hint)
        # Record at once so that `stack down` finds it even if this command is interrupted.
        self._record(name, state)
        wait_until(plan.healthy, proc, self.settings.stack.startup_timeout_s, name, log)
        if name == "s3":
            self._check_s3()
        if name == "airflow":
            self._check_airflow_login(plan.url)
        return state

    def _check_s3(self) -> None:
        """The bucket exists and the generated keys are accepted (weed rejects unknown keys)."""
        from plugins.hooks.s3 import DatasetStore

        store = DatasetStore.from_settings(self.settings)
        deadline = time.monotonic() + 30
        while True:
            try:
                store.ensure_bucket()
                return
            except Exception as exc:  # weed's filer may need a moment after the port opens
                status = getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
                if 400 <= status < 500:  # wrong keys, invalid bucket name: retrying will not help
                    raise StackError(f"s3: bucket {self.settings.s3.bucket!r} not usable: {exc}") from exc
                if time.monotonic() > deadline:
                    raise StackError(f"s3: bucket {self.settings.s3.bucket} not usable: {exc}") from exc
                time.sleep(0.3)

    def _check_airflow_login(self, url: str) -> None:
        body = json.dumps({"username": self.settings.airflow.username,
                           "password": self.settings.airflow.password.get_secret_value()}).encode()
        req = urllib.request.Request(f"{url}/auth/token", data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - loopback
                token = json.loads(resp.read()).get("access_token")
                if not token:
                    raise StackError("airflow: /auth/token answered without a token")
        except OSError as exc:
            raise StackError(f"airflow: login with the generated password failed: {exc}") from exc
        self._wait_airflow_dags(url, token)

    def _wait_airflow_dags(self, url: str, token: str) -> None:
        """Ready means the DAG processor has parsed this repo's DAGs: a run triggered right after works."""
        expected = {p.stem for p in (REPO / "dags").glob("*.py")}
        deadline = time.monotonic() + self.settings.stack.startup_timeout_s
        while True:
            req = urllib.request.Request(f"{url}/api/v2/dags?limit=100",
                                         headers={"Authorization": f"Bearer {token}", "Accept": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - loopback
                    parsed = {d["dag_id"] for d in json.loads(resp.read())["dags"]}
            except (OSError, ValueError, KeyError):
                parsed = set()
            if expected <= parsed:
                return
            if time.monotonic() > deadline:
                raise StackError(f"airflow: DAGs {sorted(expected - parsed)} not parsed after "
                                 f"{self.settings.stack.startup_timeout_s:.0f}s; see the import errors in the UI")
            time.sleep(1.0)

    # -- down ------------------------------------------------------------------------------------
    def down(self, services: Iterable[str] | None = None, on_event: Event | None = None) -> list[str]:
        """Stop the services (all recorded ones by default), last started first. Returns what stopped.

        Stopping everything (no ``services``) first stops every tier worker a rollout, the demo or
        `serve-local` started under this home (all applications, edge first, graceful drain), while the
        broker is still there to take their last commits; they are returned as "worker APP vN TIER"."""
        notify = on_event or (lambda _svc, _msg: None)
        stopped = []
        if services is None:
            notify("workers", "stopping the tier workers")
            stopped += [f"worker {w}" for w in LocalProcessBackend(self.settings.home).stop_everything()]
        states = self.states()
        names = [n for n in reversed(SERVICES) if n in states and (services is None or n in services)]
        for name in names:
            notify(name, "stopping")
            self._stop_one(name)
            stopped.append(name)
            notify(name, "stopped")
        return stopped

    def _stop_one(self, name: str) -> None:
        state = self.states().get(name)
        proc = self._procs.pop(name, None)
        broker = self._brokers.pop(name, None)
        if broker is not None:
            broker.stop()  # type: ignore[attr-defined]
        if state is not None and (proc is not None or alive(state) or group_alive(state.pid)):
            stop_group(state.pid, proc)
        elif proc is not None:
            stop_group(proc.pid, proc)
        with contextlib.suppress(OSError):
            self._record(name, None)
