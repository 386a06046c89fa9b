"""How each service of the embedded stack is started and health-checked (plain data, no side effects).

`plan(name, settings, paths, ports)` returns the command line, environment and health probe of one
service; `infra.local.stack` runs the plans. Ports come from the service URLs in Settings, the extra
listeners from `Settings.stack` (0 = a free port chosen by the caller).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from infra.local.process import StackError, http_status, port_open
from runtime import scrape_targets
from runtime.settings import Settings, settings_env

SERVICES = ("broker", "s3", "mlflow", "airflow", "prometheus")
# Services each one needs running first.
REQUIRES: dict[str, tuple[str, ...]] = {"broker": (), "s3": (), "mlflow": ("s3",), "airflow": (), "prometheus": ()}
WEED_PORTS = {  # name in Settings.stack.weed_ports -> weed mini flag
    "master": "-master.port", "master_grpc": "-master.port.grpc",
    "volume": "-volume.port", "volume_grpc": "-volume.port.grpc",
    "filer": "-filer.port", "filer_grpc": "-filer.port.grpc",
    "s3_grpc": "-s3.port.grpc", "admin": "-admin.port", "admin_grpc": "-admin.port.grpc",
}
# Healthy means every component a task run needs heartbeats, not only the scheduler.
AIRFLOW_COMPONENTS = ("metadatabase", "scheduler", "triggerer", "dag_processor")
REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_RULES = REPO / "infra" / "prometheus" / "tierflow.rules.yml"


@dataclass(frozen=True)
class StackPaths:
    """Everything the stack writes lives under $TIERFLOW_HOME/stack (plus stack.env next to it)."""

    home: Path

    @property
    def root(self) -> Path:
        return self.home / "stack"

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def env_file(self) -> Path:
        return self.home / "stack.env"

    def log(self, service: str) -> Path:
        return self.root / "logs" / f"{service}.log"

    def data(self, service: str) -> Path:
        return self.root / service


@dataclass
class ServicePlan:
    name: str
    argv: list[str]
    env: dict[str, str]
    url: str
    ports: dict[str, int]  # every listener, "main" first
    healthy: Callable[[], bool]
    cwd: Path | None = None
    hint: str = ""
    files: dict[Path, str] = field(default_factory=dict)  # written (mode 600) before the start


def host_port(url: str, default_port: int) -> tuple[str, int]:
    parsed = urlparse(url if "://" in url else f"tcp://{url}")
    if not parsed.hostname:
        raise StackError(f"cannot read a host from {url!r}; expected e.g. http://127.0.0.1:{default_port}")
    return parsed.hostname, parsed.port or default_port


def venv_bin(name: str) -> str:
    """A console script of the running interpreter's environment (the project venv)."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    raise StackError(f"{name} not found next to {sys.executable}; run `make install` (uv sync --all-extras)")


def base_env() -> dict[str, str]:
    """The caller's environment minus TIERFLOW_* (each service gets its own, explicit settings)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERFLOW_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def main_ports(settings: Settings) -> dict[str, tuple[str, int]]:
    return {
        "broker": host_port(settings.kafka.bootstrap, 9092),
        "s3": host_port(settings.s3.endpoint_url or "", 8333),
        "mlflow": host_port(settings.mlflow.tracking_uri, 5000),
        "airflow": host_port(settings.airflow.api_url, 8080),
        "prometheus": host_port(settings.prometheus.url, 19090),
    }


def configured_extra_ports(name: str, settings: Settings) -> dict[str, int]:
    if name == "s3":
        return {k: settings.stack.weed_ports.get(k, 0) for k in WEED_PORTS}
    return {}


def _s3_credentials(settings: Settings) -> tuple[str, str]:
    key, secret = settings.s3.access_key_id, settings.s3.secret_access_key
    if not key or secret is None:
        raise StackError("S3 credentials missing: `tierflow stack up` generates them into $TIERFLOW_HOME/stack.env")
    return key, secret.get_secret_value()


def plan_s3(settings: Settings, paths: StackPaths, ports: dict[str, int]) -> ServicePlan:
    host, port = main_ports(settings)["s3"]
    key, secret = _s3_credentials(settings)
    data = paths.data("s3")
    data.mkdir(parents=True, exist_ok=True)
    argv = [venv_bin("weed"), "mini", f"-dir={data}", f"-ip={host}", f"-ip.bind={host}", f"-s3.port={port}",
            *(f"{flag}={ports[name]}" for name, flag in WEED_PORTS.items()),
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false", "-admin.ui=false",
            "-master.telemetry=false", f"-bucket={settings.s3.bucket}"]
    # weed mini creates an admin identity from these variables; anonymous or wrong keys are rejected.
    env = {**base_env(), "AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret}
    url = f"http://{host}:{port}"
    return ServicePlan("s3", argv, env, url, {"main": port, **ports},
                       healthy=lambda: http_status(url) is not None
                       and all(port_open(host, p) for p in ports.values()), cwd=data, hint="weed")


def plan_mlflow(settings: Settings, paths: StackPaths, ports: dict[str, int]) -> ServicePlan:
    host, port = main_ports(settings)["mlflow"]
    key, secret = _s3_credentials(settings)
    data = paths.data("mlflow")
    data.mkdir(parents=True, exist_ok=True)
    artifacts = f"s3://{settings.s3.bucket}/{settings.stack.mlflow_artifacts_prefix.strip('/')}"
    argv = [venv_bin("mlflow"), "server", "--backend-store-uri", f"sqlite:///{data / 'mlflow.db'}",
            "--artifacts-destination", artifacts, "--host", host, "--port", str(port), "--workers", "1"]
    env = {**base_env(), "AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret,
           "AWS_DEFAULT_REGION": settings.s3.region, "MLFLOW_S3_ENDPOINT_URL": settings.s3.endpoint_url or ""}
    url = f"http://{host}:{port}"
    return ServicePlan("mlflow", argv, env, url, {"main": port},
                       healthy=lambda: http_status(f"{url}/health") == 200, cwd=data, hint="mlflow")


def _airflow_healthy(url: str) -> bool:
    import urllib.request

    try:  # a busy API server on two cores may take seconds: a short probe would call it unhealthy
        with urllib.request.urlopen(f"{url}/api/v2/monitor/health", timeout=10) as resp:  # noqa: S310
            body = json.loads(resp.read())
    except (OSError, ValueError):
        return False
    return all((body.get(part) or {}).get("status") == "healthy" for part in AIRFLOW_COMPONENTS)


def _jwt_secret(home: Path) -> str:
    """Airflow signs its API tokens with this; generated once per stack home, kept private."""
    path = home / "jwt_secret"
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(32))
    return path.read_text().strip()


def plan_airflow(settings: Settings, paths: StackPaths, ports: dict[str, int]) -> ServicePlan:
    host, port = main_ports(settings)["airflow"]
    if settings.airflow.password is None:
        raise StackError("Airflow admin password missing: `tierflow stack up` generates it into stack.env")
    home = paths.data("airflow")
    home.mkdir(parents=True, exist_ok=True)
    passwords = home / "passwords.json"
    url = f"http://{host}:{port}"
    user = settings.airflow.username
    env = {
        **base_env(),
        **settings_env(settings),  # tasks see the same services and credentials as this stack
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": str(settings.stack.airflow_parallelism),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__AUTH_MANAGER":
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{user}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__API__HOST": host,
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": url,
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET": _jwt_secret(home),
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        # Task processes talk to the API server's execution API; with one API worker on two busy cores
        # Airflow's 5 s default timed out (httpx.ReadTimeout) on the first run after start.
        "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "30",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
    }
    # Airflow's standalone, minus its log servers, which would listen on every interface (see the module).
    argv = [venv_bin("python"), "-m", "infra.local.airflow_standalone"]
    return ServicePlan("airflow", argv, env, url, {"main": port},
                       healthy=lambda: _airflow_healthy(url), cwd=home, hint="airflow",
                       files={passwords: json.dumps({user: settings.airflow.password.get_secret_value()})})


def prometheus_config(settings: Settings, targets: Path, rules: Path = PROMETHEUS_RULES) -> dict:
    """Scrape Prometheus itself and every tier worker announced in `targets` (runtime.scrape_targets)."""
    interval = f"{settings.prometheus.scrape_interval_s:g}s"
    host, port = main_ports(settings)["prometheus"]
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(rules)],
        "scrape_configs": [
            {"job_name": "prometheus", "static_configs": [{"targets": [f"{host}:{port}"]}]},
            # honor_labels: a worker's own tier/version labels win over the target file's (they agree).
            {"job_name": scrape_targets.JOB, "honor_labels": True,
             "file_sd_configs": [{"files": [str(targets / "*.json")], "refresh_interval": interval}]},
        ],
    }


def plan_prometheus(settings: Settings, paths: StackPaths, ports: dict[str, int]) -> ServicePlan:
    host, port = main_ports(settings)["prometheus"]
    binary = shutil.which("prometheus") or "/usr/bin/prometheus"
    if not Path(binary).exists():
        raise StackError("prometheus not found; `make install` installs Debian's prometheus package")
    data = paths.data("prometheus")
    data.mkdir(parents=True, exist_ok=True)
    targets = scrape_targets.targets_dir(settings.home)
    targets.mkdir(parents=True, exist_ok=True)
    config = data / "prometheus.yml"
    url = f"http://{host}:{port}"
    argv = [binary, f"--config.file={config}", f"--storage.tsdb.path={data / 'tsdb'}",
            f"--storage.tsdb.retention.time={settings.prometheus.retention}",
            f"--web.listen-address={host}:{port}", "--web.enable-lifecycle"]
    # JSON is YAML: the config needs no YAML writer.
    return ServicePlan("prometheus", argv, base_env(), url, {"main": port},
                       healthy=lambda: http_status(f"{url}/-/ready") == 200, cwd=data, hint="prometheus",
                       files={config: json.dumps(prometheus_config(settings, targets), indent=2)})


def plan_broker_port_check(settings: Settings) -> tuple[str, int]:
    return main_ports(settings)["broker"]


def broker_healthy(host: str, port: int) -> bool:
    return port_open(host, port)


PLANNERS: dict[str, Callable[[Settings, StackPaths, dict[str, int]], ServicePlan]] = {
    "s3": plan_s3, "mlflow": plan_mlflow, "airflow": plan_airflow, "prometheus": plan_prometheus,
}
