"""The version-consistent rollout (plugins.rollout.procedure) with the Kubernetes backend on the testbed.

Tier pods run `tierflow worker` as local processes on nodes edge-1, fog-1 and cloud-1 and consume from the
test broker; a device client sends real Fashion-MNIST requests and reads the answers.
One test walks the whole story, because each step builds on the cluster state of the previous one:
v1 comes up on the right nodes and answers; v2 replaces it under steady traffic with no request lost;
v3 (missing model) fails readiness and is rolled back automatically while v2 keeps serving.
"""

from __future__ import annotations

import time
import urllib.request
import uuid

import numpy as np
import pytest

from plugins.rollout.base import Release, TierWorkerSpec
from plugins.rollout.kubernetes import LABEL_APP, LABEL_TIER, LABEL_VERSION, KubernetesRolloutBackend
from plugins.rollout.procedure import CanaryPolicy, CanaryReport, rollout
from tests.k8s.traffic import SteadyTraffic

pytestmark = pytest.mark.k8s
TIERS = ("edge", "fog", "cloud")


@pytest.fixture(scope="module")
def samples():
    from ml.datasets import load_fashion_mnist

    data = load_fashion_mnist("test").subset(200, seed=7)
    return data.x, data.y


def release(app: str, version: str, bundle) -> Release:
    return Release(app=app, version=version, tiers=tuple(TierWorkerSpec(t, str(bundle)) for t in TIERS))


def make_canary(settings, samples, n: int = 90):
    """Labeled canary requests through the device client; counts the answers of the new version.

    While the old edge still shares the consumer group, the new version answers only its partitions' share.
    """
    from runtime.client import DeviceClient

    def canary(rel: Release) -> CanaryReport:
        x, y = samples
        ids = [f"canary-{rel.version}-{uuid.uuid4().hex[:6]}-{i}" for i in range(n)]
        with DeviceClient(settings) as client:
            for i, rid in enumerate(ids):
                client.send(rid, x[i])
            client.wait_all(60)
            answers = {rid: client.answers[rid] for rid in ids if rid in client.answers}
            sent = {rid: client.sent_ms[rid] for rid in ids}
        by_version: dict[str, int] = {}
        by_tier: dict[str, int] = {}
        new = correct = 0
        lat = []
        for i, rid in enumerate(ids):
            a = answers.get(rid)
            if a is None:
                continue
            v = str(a.result["model_version"])
            by_version[v] = by_version.get(v, 0) + 1
            by_tier[a.result["tier"]] = by_tier.get(a.result["tier"], 0) + 1
            lat.append(a.received_ms - sent[rid])
            if v == rel.version:
                new += 1
                correct += int(a.result["label"]) == int(y[i])
        return CanaryReport(sent=n, answered=len(answers), new_version_answers=new, new_version_correct=correct,
                            p95_latency_ms=float(np.percentile(lat, 95)) if lat else float("inf"),
                            degraded=sum(bool(a.result["degraded"]) for a in answers.values()),
                            answers_by_version=by_version, answers_by_tier=by_tier)

    return canary


def tier_pods(core, app: str, version: str) -> dict[str, list]:
    pods = core.list_namespaced_pod("tierflow", label_selector=f"{LABEL_APP}={app},{LABEL_VERSION}={version}").items
    out: dict[str, list] = {}
    for p in pods:
        out.setdefault(p.metadata.labels[LABEL_TIER], []).append(p)
    return out


def scaled_objects(admin_kubeconfig: str, app: str) -> dict[str, dict]:
    """The app's KEDA ScaledObjects by name, read as cluster admin."""
    from kubernetes import client, config

    api = client.CustomObjectsApi(config.new_client_from_config(admin_kubeconfig))
    items = api.list_namespaced_custom_object("keda.sh", "v1alpha1", "tierflow", "scaledobjects",
                                              label_selector=f"{LABEL_APP}={app}")["items"]
    return {so["metadata"]["name"]: so for so in items}


def records_counted(pod, port: int = 9100) -> float:
    """Sum of tierflow_records_total on the pod's own /metrics (pod IP: proof that this pod did the work)."""
    with urllib.request.urlopen(f"http://{pod.status.pod_ip}:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("tierflow_records_total{"))


def test_rollout_places_tiers_answers_replaces_without_loss_and_rolls_back(
        k8s_settings, k8s_admin, k8s_admin_kubeconfig, tiny_bundle, samples, tmp_path):
    core, _ = k8s_admin
    settings = k8s_settings
    app = settings.app
    backend = KubernetesRolloutBackend(settings=settings, poll_s=0.5)
    promoted: list[str] = []
    lines: list[str] = []
    canary = make_canary(settings, samples)
    # the tiny bundle is a seconds-trained model (~45 % cascade accuracy): the bound says 'better than chance
    # (10 %)' on the ~30 canary answers the new edge gives while it holds 1 of 3 partitions
    policy = CanaryPolicy(requests=90, min_accuracy=0.15, max_p95_latency_ms=15000, min_new_version_answers=5,
                          max_degraded_fraction=0.0, timeout_s=60)
    try:
        # v1: downstream first, on the right nodes, Ready, answering.
        out = rollout(backend, release(app, "1", tiny_bundle), canary=canary, policy=policy,
                      promote=promoted.append, ready_timeout_s=180, log=lines.append)
        assert out.promoted and not out.rolled_back, out.problems
        assert out.canary.answered == 90 and out.canary.answers_by_version == {"1": 90}
        assert out.canary.accuracy >= 0.15
        pods = tier_pods(core, app, "1")
        assert sorted(pods) == sorted(TIERS)
        for tier, ps in pods.items():
            for p in ps:
                assert p.spec.node_name.startswith(f"{tier}-")  # on its pool
                assert all(c.ready for c in p.status.container_statuses)
        # every tier's pod processed records (requests/activations), read from the pod's own /metrics
        assert all(records_counted(p) > 0 for ps in pods.values() for p in ps)
        assert backend.running(app) == {"1": list(TIERS)}
        # each tier Deployment has its ScaledObject on the lag of the group and topic its workers consume
        scaled = scaled_objects(k8s_admin_kubeconfig, app)
        assert sorted(scaled) == sorted(f"{app}-v1-{t}" for t in TIERS)
        for tier in TIERS:
            so = scaled[f"{app}-v1-{tier}"]["spec"]
            meta = so["triggers"][0]["metadata"]
            assert so["scaleTargetRef"]["name"] == f"{app}-v1-{tier}"
            assert meta["consumerGroup"] == (f"{app}.edge" if tier == "edge" else f"{app}.v1.{tier}")
            assert meta["bootstrapServers"] == settings.kafka.bootstrap
            assert so["minReplicaCount"] == 1 and so["maxReplicaCount"] == settings.kafka.partitions

        # v2 under steady traffic: zero lost requests, both versions answered, v1 retired.
        traffic = SteadyTraffic(settings, samples[0])
        try:
            with traffic:
                time.sleep(2)
                out2 = rollout(backend, release(app, "2", tiny_bundle), canary=canary, policy=policy,
                               promote=promoted.append, ready_timeout_s=180, log=lines.append)
                time.sleep(2)
            steady = traffic.finish(timeout_s=60)
        finally:
            traffic.close()
        print(f"v1 canary {out.canary.answers_by_tier}, v2 canary by version {out2.canary.answers_by_version}, "
              f"steady traffic during v1->v2: {steady}")
        assert out2.promoted, out2.problems
        assert steady["sent"] > 50 and steady["answered"] == steady["sent"], steady
        assert steady["duplicates"] == 0 and set(steady["versions"]) <= {"1", "2"} and "2" in steady["versions"]
        assert backend.running(app) == {"2": list(TIERS)}
        assert tier_pods(core, app, "1") == {}
        assert sorted(scaled_objects(k8s_admin_kubeconfig, app)) == sorted(f"{app}-v2-{t}" for t in TIERS)

        # v3 with a missing model: readiness fails, automatic rollback, v2 untouched and still serving.
        broken = release(app, "3", tmp_path / "missing-model")
        out3 = rollout(backend, broken, canary=canary, policy=policy, promote=promoted.append,
                       ready_timeout_s=120, log=lines.append)
        assert out3.rolled_back and not out3.promoted
        assert "did not become ready" in out3.problems[0] and "missing-model" in out3.problems[0]
        assert backend.running(app) == {"2": list(TIERS)}
        assert tier_pods(core, app, "3") == {}
        assert sorted(scaled_objects(k8s_admin_kubeconfig, app)) == sorted(f"{app}-v2-{t}" for t in TIERS)
        assert promoted == ["1", "2"]
        after = canary(release(app, "2", tiny_bundle))
        assert after.answered == after.sent and after.answers_by_version == {"2": after.sent}
        assert any("rolling back v3" in line for line in lines)
    finally:
        for version, tiers in backend.running(app).items():
            for tier in tiers:
                backend.stop_tier(app, version, tier, timeout_s=60)
