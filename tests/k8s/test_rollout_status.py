"""Pure logic of the Kubernetes backend: names, labels and the rollout verdict (no cluster needed)."""

from __future__ import annotations

from kubernetes.client import models as k8s

from plugins.rollout.kubernetes import deployment_name, label_value, rollout_status


def _dep(replicas=2, generation=2, observed=2, updated=2, ready=2, available=2, total=2, conditions=None):
    return k8s.V1Deployment(
        metadata=k8s.V1ObjectMeta(name="d", generation=generation),
        spec=k8s.V1DeploymentSpec(replicas=replicas, selector=k8s.V1LabelSelector(),
                                  template=k8s.V1PodTemplateSpec()),
        status=k8s.V1DeploymentStatus(observed_generation=observed, updated_replicas=updated,
                                      ready_replicas=ready, available_replicas=available, replicas=total,
                                      conditions=conditions))


def _pod(restarts=0, waiting=None):
    state = k8s.V1ContainerState(waiting=k8s.V1ContainerStateWaiting(reason=waiting) if waiting else None,
                                 running=None if waiting else k8s.V1ContainerStateRunning())
    cs = k8s.V1ContainerStatus(name="base", image="i", image_id="", ready=not waiting, restart_count=restarts,
                               state=state)
    return k8s.V1Pod(metadata=k8s.V1ObjectMeta(name="p"), status=k8s.V1PodStatus(container_statuses=[cs]))


def test_ready_only_when_every_replica_of_the_latest_spec_is_ready():
    assert rollout_status(_dep(), [_pod(), _pod()], max_restarts=2)[0] == "ready"
    assert rollout_status(_dep(ready=1), [_pod(), _pod()], 2)[0] == "progressing"
    assert rollout_status(_dep(observed=1), [_pod()], 2)[0] == "progressing"
    assert rollout_status(_dep(total=3), [_pod()], 2)[0] == "progressing"  # an old pod still terminating


def test_crash_loops_and_unpullable_images_fail_at_once():
    state, why = rollout_status(_dep(ready=0), [_pod(restarts=2, waiting="CrashLoopBackOff")], 2)
    assert state == "failed" and "restarted 2 times" in why
    assert rollout_status(_dep(ready=0), [_pod(restarts=2)], 2)[0] == "progressing"  # running again: wait
    assert rollout_status(_dep(ready=0), [_pod(waiting="ImagePullBackOff")], 2)[0] == "failed"
    stuck = k8s.V1DeploymentCondition(type="Progressing", status="False", reason="ProgressDeadlineExceeded",
                                      message="took too long")
    assert rollout_status(_dep(ready=0, conditions=[stuck]), [], 2) == (
        "failed", "progress deadline exceeded: took too long")


def test_names_and_labels_are_valid_kubernetes_identifiers():
    assert deployment_name("FMNIST_app", "3", "edge") == "fmnist-app-v3-edge"
    assert len(deployment_name("a" * 80, "1", "cloud")) <= 63
    assert label_value("1.2+build") == "1.2-build"
    assert label_value("-x-") == "x"
