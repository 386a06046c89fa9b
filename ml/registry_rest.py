"""Read the MLflow model registry over plain REST: find a model version, download its tier bundle.

The loading path of every tier worker (``ml.bundle.load_tier`` for ``models:/`` URIs): no ``import
mlflow`` (other artifact stores than the server's proxy fall back to ``mlflow.artifacts``). Takes the
tracking URI and the cache directory as arguments. No Kafka, no Airflow.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

TAG = "tierflow."
BUNDLE_ARTIFACT = "bundle"  # artifacts/<this>/ inside each model version


class RegistryError(RuntimeError):
    """A registry lookup failed; the message names the model/alias and what to do."""


def parse_models_uri(uri: str) -> tuple[str, str | None, str | None]:
    """"models:/NAME/VERSION" or "models:/NAME@ALIAS" -> (name, version, alias)."""
    if not uri.startswith("models:/"):
        raise ValueError(f"not a registry URI: {uri!r} (expected models:/NAME/VERSION or models:/NAME@ALIAS)")
    rest = uri[len("models:/"):].strip("/")
    if "@" in rest:
        name, alias = rest.split("@", 1)
        return name, None, alias
    if "/" in rest:
        name, version = rest.rsplit("/", 1)
        return name, version, None
    raise ValueError(f"{uri!r} names no version or alias (models:/{rest}/3 or models:/{rest}@champion)")


# -- REST (loading path and cheap queries: no mlflow import) ------------------------------------------
class _Rest:
    def __init__(self, tracking_uri: str, timeout_s: float = 30.0):
        if not tracking_uri.startswith(("http://", "https://")):
            raise RegistryError(f"tracking URI {tracking_uri!r} is not an MLflow server URL (http://host:port)")
        self.base = tracking_uri.rstrip("/")
        self.timeout_s = timeout_s

    def _open(self, url: str, data: bytes | None = None, method: str | None = None) -> bytes:
        req = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
        token = os.environ.get("MLFLOW_TRACKING_TOKEN")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        for attempt in range(3):
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:  # noqa: S310 - configured URL
                    return resp.read()
            except urllib.error.HTTPError:
                raise
            except (urllib.error.URLError, OSError) as exc:
                if attempt == 2:
                    raise RegistryError(f"MLflow server {self.base} unreachable: {exc}") from exc
                time.sleep(0.5 * (attempt + 1))
        raise AssertionError("unreachable")

    def get(self, endpoint: str, **params: str) -> dict[str, Any]:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        return json.loads(self._open(f"{self.base}/api/2.0/{endpoint}{query}") or b"{}")

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return json.loads(self._open(f"{self.base}/api/2.0/{path}", json.dumps(body).encode(), "POST") or b"{}")

    def model_version(self, name: str, version: str | None, alias: str | None) -> dict[str, Any]:
        try:
            if alias:
                return self.get("mlflow/registered-models/alias", name=name, alias=alias)["model_version"]
            return self.get("mlflow/model-versions/get", name=name, version=str(version))["model_version"]
        except urllib.error.HTTPError as exc:
            ref = f"@{alias}" if alias else f"/{version}"
            raise RegistryError(f"models:/{name}{ref} not found on {self.base} ({exc.code}); "
                                f"register it first or check the name/alias") from exc

    def list_artifacts(self, path: str) -> list[dict[str, Any]]:
        return self.get("mlflow-artifacts/artifacts", path=path).get("files", [])

    def download(self, path: str, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        quoted = urllib.parse.quote(path)
        dest.write_bytes(self._open(f"{self.base}/api/2.0/mlflow-artifacts/artifacts/{quoted}"))


def _tags(mv: dict[str, Any]) -> dict[str, str]:
    return {t["key"]: t.get("value", "") for t in mv.get("tags", [])}


def _download_tree(rest: _Rest, root: str, dest: Path) -> None:
    for entry in rest.list_artifacts(root):
        rel = entry["path"].rsplit("/", 1)[-1]
        if entry.get("is_dir"):
            _download_tree(rest, f"{root}/{rel}", dest / rel)
        else:
            rest.download(f"{root}/{rel}", dest / rel)


def _fetch_bundle(rest: _Rest, mv: dict[str, Any], dest: Path) -> None:
    """Download the one-tier bundle of a model version into dest (via the server's artifact proxy)."""
    source = mv.get("source", "")
    artifact_uri = None
    if source.startswith("models:/m-"):
        model_id = source[len("models:/"):].split("/", 1)[0]
        artifact_uri = rest.get(f"mlflow/logged-models/{model_id}")["model"]["info"]["artifact_uri"]
    elif source.startswith("mlflow-artifacts:"):
        artifact_uri = source
    if artifact_uri and artifact_uri.startswith("mlflow-artifacts:"):
        path = urllib.parse.urlparse(artifact_uri).path.lstrip("/")
        _download_tree(rest, f"{path}/artifacts/{BUNDLE_ARTIFACT}", dest)
        if (dest / "manifest.json").is_file():
            return
    # Any other artifact store (s3:// direct, file:, runs:/): let MLflow resolve it.
    import mlflow

    mlflow.set_tracking_uri(rest.base)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{mv['name']}/{mv['version']}",
                                                     dst_path=str(dest.parent / f".{dest.name}.mlflow")))
    shutil.copytree(local / "artifacts" / BUNDLE_ARTIFACT, dest, dirs_exist_ok=True)
    shutil.rmtree(local, ignore_errors=True)


def download_registered(uri: str, tracking_uri: str, cache_dir: str | Path) -> tuple[Path, dict[str, Any]]:
    """Local directory of a registered tier's one-tier bundle (cached per model version under
    ``cache_dir/<model>/<version>``), and the model version record. Versions are immutable, so a
    cached copy is reused without a download."""
    name, version, alias = parse_models_uri(uri)
    rest = _Rest(tracking_uri)
    mv = rest.model_version(name, version, alias)
    cache = Path(cache_dir) / name / str(mv["version"])
    if (cache / "manifest.json").is_file():
        return cache, mv
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{mv['version']}-", dir=cache.parent))
    try:
        _fetch_bundle(rest, mv, tmp / "bundle")
        if not (tmp / "bundle" / "manifest.json").is_file():
            raise RegistryError(f"{uri} (version {mv['version']}) holds no tier bundle; was it registered by "
                                "ml.registry.register_bundle?")
        try:
            (tmp / "bundle").rename(cache)
        except OSError:  # another worker finished the same download first
            if not (cache / "manifest.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return cache, mv


