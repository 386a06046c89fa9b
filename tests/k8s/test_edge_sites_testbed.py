"""A release spanning two edge sites on the testbed: one edge Deployment per site, on the site's node
(edge-1 site=factory-a, edge-2 site=factory-b), each consuming APP.requests from its own broker; both
forward to the shared fog and cloud tiers, whose broker also carries APP.results.

One walk, each step on the cluster state of the previous one: v1 answers requests sent at either site;
v2 replaces v1 at both sites under load from both sites with nothing lost or answered twice; v3, whose
factory-b edge cannot be scheduled, is rolled back at both sites (factory-a's v3 edge was already
serving) under load, and v2 keeps answering everywhere.
"""

from __future__ import annotations

import time

import pytest

from plugins.pipeline.deploy import run_canary
from plugins.rollout.base import Release, TierWorkerSpec
from plugins.rollout.kubernetes import LABEL_SITE, LABEL_TIER, LABEL_VERSION, KubernetesRolloutBackend
from plugins.rollout.procedure import CanaryPolicy, rollout
from runtime.settings import EdgeSite, Settings
from tests.k8s.traffic import SteadyTraffic

pytestmark = pytest.mark.k8s
TIERS = ("edge", "fog", "cloud")


@pytest.fixture(scope="module")
def site_brokers(tmp_path_factory):
    """Each site's own broker (the session broker serves fog, cloud and APP.results)."""
    from runtime.broker import EmbeddedBroker

    logs = tmp_path_factory.mktemp("site-brokers")
    with EmbeddedBroker(log_path=logs / "a.log") as a, EmbeddedBroker(log_path=logs / "b.log") as b:
        yield {"factory-a": a.bootstrap, "factory-b": b.bootstrap}


@pytest.fixture(scope="module")
def samples():
    from ml.datasets import load_fashion_mnist

    data = load_fashion_mnist("test").subset(120, seed=11)
    return data.x, data.y


def with_sites(settings: Settings, sites: list[EdgeSite]) -> Settings:
    return settings.model_copy(update={"k8s": settings.k8s.model_copy(update={"edge_sites": sites})})


def edge_pods(core, app: str, version: str) -> dict[str, list]:
    """Edge pods of one version by site."""
    pods = core.list_namespaced_pod("tierflow", label_selector=f"tierflow.io/app={app},{LABEL_VERSION}={version},"
                                                               f"{LABEL_TIER}=edge").items
    out: dict[str, list] = {}
    for p in pods:
        out.setdefault(p.metadata.labels.get(LABEL_SITE, "-"), []).append(p)
    return out


def under_load(settings: Settings, sites: list[EdgeSite], x, step, tag: str) -> tuple[object, dict[str, dict]]:
    """Runs ``step()`` while each site's devices send 8 requests/s to the site's broker."""
    traffic = {s.name: SteadyTraffic(settings.at_site(s), x, rate=8, prefix=f"{tag}-{s.name}") for s in sites}
    try:
        for t in traffic.values():
            t.__enter__()
        time.sleep(2)
        out = step()
        time.sleep(2)
        for t in traffic.values():
            t.__exit__(None, None, None)
        return out, {name: t.finish(timeout_s=60) for name, t in traffic.items()}
    finally:
        for t in traffic.values():
            t.close()


def test_two_edge_sites_answer_roll_out_and_roll_back_together(
        k8s_settings, k8s_admin, site_brokers, tiny_bundle, samples, tmp_path):
    core, apps = k8s_admin
    sites = [EdgeSite(name=n, bootstrap=b, node_selector={"site": n}) for n, b in site_brokers.items()]
    settings = with_sites(k8s_settings, sites)
    app = settings.app
    backend = KubernetesRolloutBackend(settings=settings, poll_s=0.5)
    x, y = samples
    canary = lambda rel: run_canary(settings, rel, x[:60], y[:60], timeout_s=60, rate=30, sites=sites)  # noqa: E731
    policy = CanaryPolicy(requests=60, min_accuracy=0.15, max_p95_latency_ms=15000, min_new_version_answers=5,
                          max_degraded_fraction=0.0)
    promoted: list[str] = []
    lines: list[str] = []

    def release(version: str) -> Release:
        return Release(app, version, tuple(TierWorkerSpec(t, str(tiny_bundle)) for t in TIERS))

    try:
        out1 = rollout(backend, release("1"), canary=canary, policy=policy, promote=promoted.append,
                       ready_timeout_s=180, log=lines.append)
        assert out1.promoted, out1.problems
        # half of the canary went to each site's broker, and every request was answered by v1
        assert out1.canary.answered == 60 and out1.canary.answers_by_version == {"1": 60}
        pods = edge_pods(core, app, "1")
        assert {site: [p.spec.node_name for p in ps] for site, ps in pods.items()} == {
            "factory-a": ["edge-1"], "factory-b": ["edge-2"]}
        env = {s: {e.name: e.value for e in ps[0].spec.containers[0].env} for s, ps in pods.items()}
        assert all(f'"edge": "{site_brokers[s]}"' in env[s]["TIERFLOW_KAFKA__TIER_BOOTSTRAP"] for s in env)
        assert backend.running(app) == {"1": list(TIERS)}

        out2, steady = under_load(settings, sites, x, lambda: rollout(
            backend, release("2"), canary=canary, policy=policy, promote=promoted.append, ready_timeout_s=180,
            log=lines.append), "r2")
        print(f"v1->v2 at two sites under load: {steady}")
        assert out2.promoted, out2.problems
        for name, s in steady.items():
            assert s["sent"] > 30 and s["answered"] == s["sent"] and s["duplicates"] == 0, (name, s)
            assert "2" in s["versions"], (name, s)
        assert edge_pods(core, app, "1") == {} and set(edge_pods(core, app, "2")) == {"factory-a", "factory-b"}

        # v3: factory-b's edge cannot be scheduled (no node has its label); factory-a's v3 edge comes up first
        broken_sites = [sites[0], EdgeSite(name="factory-b", bootstrap=site_brokers["factory-b"],
                                           node_selector={"site": "factory-nowhere"})]
        broken = KubernetesRolloutBackend(settings=with_sites(settings, broken_sites), poll_s=0.5)
        out3, steady3 = under_load(settings, sites, x, lambda: rollout(
            broken, release("3"), canary=canary, policy=policy, promote=promoted.append, ready_timeout_s=60,
            log=lines.append), "r3")
        print(f"v3 rolled back at two sites under load: {steady3}")
        assert out3.rolled_back and "edge at site factory-b" in out3.problems[0], out3.problems
        for name, s in steady3.items():
            assert s["sent"] > 30 and s["answered"] == s["sent"] and s["duplicates"] == 0, (name, s)
            assert set(s["versions"]) <= {"2", "3"}, (name, s)
        assert edge_pods(core, app, "3") == {}
        assert not [d for d in apps.list_namespaced_deployment("tierflow").items
                    if d.metadata.labels.get(LABEL_VERSION) == "3" and d.metadata.labels.get("tierflow.io/app") == app]
        assert backend.running(app) == {"2": list(TIERS)} and promoted == ["1", "2"]
        after = canary(release("2"))
        assert after.answered == after.sent and after.answers_by_version == {"2": after.sent}
    finally:
        for version, tiers in backend.running(app).items():
            for tier in tiers:
                backend.stop_tier(app, version, tier, timeout_s=60)
