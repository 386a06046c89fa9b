"""The pipeline DAG itself (`dag.test()`) with backend=kubernetes: train, gate and register run as trainer pods
on the tainted trainer node (their results handed on through S3, their logs in the task log), a tiny
training run is registered in the real MLflow server and rolled out as tier pods on the testbed, which load `models:/APP-tier/1` from MLflow
(S3 keys from the Kubernetes Secret, never in the pod spec) and answer the canary; the deploy task's log
carries the pods' own output. The Airflow task reaches the API server through `kubernetes_default`.
"""

from __future__ import annotations

import json

import pytest

from tests.integration.dags.dagrun import run_dag

pytestmark = pytest.mark.k8s

TINY = {"epochs": 1, "max_train_samples": 1500, "canary_requests": 60, "canary_accuracy_drop": 0.25,
        "dataset": "fashion-mnist", "backend": "kubernetes"}


def test_pipeline_dag_rolls_out_registered_tiers_as_pods(airflow_db, mlflow_server, k8s_settings, k8s_admin,
                                                         rollout_kubeconfig, monkeypatch, tmp_path):
    from ml.registry import champion_metrics
    from plugins.rollout.kubernetes import LABEL_APP, KubernetesRolloutBackend
    from runtime.settings import TrainerPodSettings

    core, _ = k8s_admin
    monkeypatch.delenv("TIERFLOW_K8S__KUBE_CONFIG_PATH")  # the task must use the Airflow connection
    # the trainer pool is tainted for training only: the trainer pods must tolerate it
    taint = {"key": "tierflow.io/pool", "value": "trainer", "effect": "NoSchedule"}
    core.patch_node("trainer-1", {"spec": {"taints": [taint]}})
    trainer = TrainerPodSettings(image="tierflow-trainer:testbed", cpu_request="500m", memory_request="1Gi",
                                 tolerations=[{**taint, "operator": "Equal"}])
    settings = mlflow_server.model_copy(update={
        "app": k8s_settings.app, "home": tmp_path, "kafka": k8s_settings.kafka,
        "k8s": k8s_settings.k8s.model_copy(update={"kube_config_path": None, "trainer": trainer})})
    # The tier pods read MLflow's S3 artifacts with the stack's keys, from the Secret only.
    core.patch_namespaced_secret("tierflow-secrets", "tierflow", {"stringData": {
        "s3-access-key-id": settings.s3.access_key_id,
        "s3-secret-access-key": settings.s3.secret_access_key.get_secret_value()}})
    airflow_env = {**airflow_db, "AIRFLOW_CONN_KUBERNETES_DEFAULT": json.dumps(
        {"conn_type": "kubernetes", "extra": {"kube_config_path": rollout_kubeconfig, "namespace": "tierflow"}})}
    backend = KubernetesRolloutBackend(settings=k8s_settings)
    try:
        result = run_dag(airflow_env, settings, "tierflow_pipeline", TINY)
        assert result["state"] == "success", result["log"][-6000:]
        assert result["tasks"]["deploy"] == "success"
        ml = ("train_calibrate_partition", "gate", "register")
        assert {t: result["tasks"][t] for t in ml} == dict.fromkeys(ml, "skipped")  # no external Python
        pod_tasks = ("train_in_pod", "gate_in_pod", "register_in_pod")
        assert {t: result["tasks"][t] for t in pod_tasks} == dict.fromkeys(pod_tasks, "success")
        # each step was a pod scheduled on the trainer node (the pods are deleted when done: their events stay)
        scheduled = [e.message for e in core.list_namespaced_event("tierflow").items
                     if e.reason == "Scheduled" and e.involved_object.name.startswith(f"{settings.app}-")]
        for step in ("train", "gate", "register"):
            assert any(f"/{settings.app}-{step}-" in m and m.endswith("to trainer-1") for m in scheduled), scheduled
        assert not core.list_namespaced_pod("tierflow", label_selector="app.kubernetes.io/component=trainer").items
        assert champion_metrics(settings.app, settings.mlflow.tracking_uri)["release"] == "1"
        assert backend.running(settings.app) == {"1": ["edge", "fog", "cloud"]}
        pods = core.list_namespaced_pod("tierflow", label_selector=f"{LABEL_APP}={settings.app}").items
        assert {p.spec.node_name.split("-")[0] for p in pods} == {"edge", "fog", "cloud"}
        for p in pods:
            tier = p.metadata.labels["tierflow.io/tier"]
            assert p.spec.node_name.startswith(f"{tier}-")  # on its pool
            (c,) = p.spec.containers
            assert c.args[c.args.index("--model-uri") + 1] == f"models:/{settings.app}-{tier}/1"
            secret_env = {e.name: e for e in c.env if e.value_from and e.value_from.secret_key_ref}
            assert "TIERFLOW_S3__SECRET_ACCESS_KEY" in secret_env
            assert settings.s3.secret_access_key.get_secret_value() not in json.dumps(
                [e.to_dict() for e in c.env])
        log = result["log"]
        assert f"[pod {settings.app}-v1-edge-" in log and "worker started" in log
        assert "ready on nodes ['edge-" in log
        # the trainer pods' own output reached the task log, and their results came through S3
        assert "ml-step train: result in s3://" in log and "ml-step register: result in s3://" in log
        assert "gate passed" in log
    finally:
        core.patch_node("trainer-1", {"spec": {"taints": None}})
        for version, tiers in backend.running(settings.app).items():
            for tier in tiers:
                backend.stop_tier(settings.app, version, tier, timeout_s=60)
