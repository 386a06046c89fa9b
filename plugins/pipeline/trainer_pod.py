"""The pipeline's ML steps (train, gate, register) as pods of the trainer image, for backend=kubernetes.

The Airflow task (no TensorFlow in it) writes the step's input to S3, runs the pod through the
cncf-kubernetes provider's KubernetesPodOperator (its node pool, tolerations, resources and optional
``nvidia.com/gpu`` from ``k8s.trainer``; the pod's log streamed into the task log; the pod deleted at
the end), then reads the step's result object back from S3 and returns it as the task's XCom.

Why a result object in S3 and not the operator's XCom sidecar: the sidecar is read by ``exec`` into the
pod, which needs a container runtime (the k8s testbed's stand-in kubelet has none, and locked-down
clusters forbid exec for Airflow's identity); S3 is already where the datasets and MLflow's artifacts
live, and results stay there after the pod is gone. Files a later step needs (the bundle, the canary
samples) go there too: pods share no disk. Credentials reach the pod only by ``secretKeyRef``.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any

from runtime.settings import Settings

STEPS = ("train", "gate", "register")


def step_prefix(settings: Settings, dag_id: str, run_id: str, step: str) -> str:
    """S3 key prefix of one step of one DAG run: input.json, result.json and the files it hands on."""
    run = re.sub(r"[^A-Za-z0-9._-]+", "_", run_id)
    return f"{settings.k8s.trainer.result_prefix}/{settings.app}/{dag_id}/{run}/{step}"


# -- orchestrator side (the Airflow task) ------------------------------------------------------------------
def trainer_operator(settings: Settings, step: str, input_uri: str, result_uri: str, *, task_id: str) -> Any:
    """The KubernetesPodOperator that runs ``tierflow ml-step STEP`` in the trainer image on its pool."""
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from kubernetes.client import models as k8s

    from plugins.rollout.kubernetes import dns_label, hardened_pod, kafka_tls_volume, pod_env

    ks, ts = settings.k8s, settings.k8s.trainer
    gpu = {"nvidia.com/gpu": str(ts.gpus)} if ts.gpus else {}
    tls = kafka_tls_volume(settings)  # the Kafka TLS files pod_env points at, when the settings name any
    volumes = [k8s.V1Volume(name="tmp", empty_dir=k8s.V1EmptyDirVolumeSource()), *([tls[0]] if tls else [])]
    mounts = [k8s.V1VolumeMount(name="tmp", mount_path="/tmp"), *([tls[1]] if tls else [])]
    return KubernetesPodOperator(
        task_id=task_id,
        name=dns_label(f"{settings.app}-{step}", max_len=50),  # plus the operator's random suffix
        namespace=ks.namespace,
        # an explicit kubeconfig wins over the Airflow connection (as for the tier rollout)
        kubernetes_conn_id=None if ks.kube_config_path else ks.conn_id,
        config_file=ks.kube_config_path,
        in_cluster=False if ks.kube_config_path else None,
        image=ts.image,
        image_pull_policy=ks.image_pull_policy,
        cmds=list(ks.command),
        arguments=["ml-step", step, "--input", input_uri, "--output", result_uri],
        env_vars=pod_env(settings, {"TIERFLOW_HOME": "/tmp/tierflow"}),
        labels={"app.kubernetes.io/name": "tierflow", "app.kubernetes.io/component": "trainer",
                "tierflow.io/app": dns_label(settings.app), "tierflow.io/step": step},
        container_resources=k8s.V1ResourceRequirements(
            requests={"cpu": ts.cpu_request, "memory": ts.memory_request, **gpu},
            limits={"cpu": ts.cpu_limit, "memory": ts.memory_limit, **gpu}),
        node_selector=dict(ts.node_selector),
        tolerations=[k8s.V1Toleration(**t) for t in ts.tolerations] or None,
        **hardened_pod(settings),
        volumes=volumes,
        volume_mounts=mounts,
        get_logs=True,
        do_xcom_push=False,
        startup_timeout_seconds=ts.startup_timeout_s,
        on_finish_action="delete_pod",
        random_name_suffix=True,
    )


def run_in_trainer_pod(settings: Settings, step: str, payload: dict[str, Any], context: Any) -> dict[str, Any]:
    """Input to S3, the step in its pod, its result from S3 (the task fails with the pod's exit code)."""
    from plugins.hooks.s3 import DatasetStore

    store = DatasetStore.from_settings(settings)
    store.ensure_bucket()
    prefix = step_prefix(settings, context["dag"].dag_id, context["run_id"], step)
    input_uri = store.put_bytes(f"{prefix}/input.json", json.dumps(payload).encode(), content_type="application/json")
    result_key = f"{prefix}/result.json"
    op = trainer_operator(settings, step, input_uri, store.uri(result_key), task_id=f"{context['task'].task_id}-pod")
    op.execute(context)
    return json.loads(store.get_bytes(result_key))


def run_in_current_task(step: str, payload: dict[str, Any]) -> dict[str, Any]:
    """`run_in_trainer_pod` from inside an Airflow task, with the S3/MLflow/Kafka of its Connections."""
    from airflow.sdk import get_current_context

    from plugins.hooks.connected import connected_settings
    from runtime.settings import get_settings

    return run_in_trainer_pod(connected_settings(get_settings()), step, payload, get_current_context())


# -- pod side (`tierflow ml-step`, in the trainer image) -----------------------------------------------------
def run_step(step: str, payload: dict[str, Any], settings: Settings, stage_uri: str) -> dict[str, Any]:
    """One ML step on ``payload``; files a later step needs are staged under ``stage_uri`` (s3://...)."""
    from plugins.hooks.s3 import DatasetStore, split_uri
    from plugins.pipeline import ml_steps

    store = DatasetStore.from_settings(settings)
    store.bucket, prefix = split_uri(stage_uri)
    work = Path(tempfile.mkdtemp(prefix=f"tierflow-{step}-"))
    if step == "train":
        trained = ml_steps.train_calibrate_partition(payload["cfg"], payload["dataset_uri"], settings,
                                                     str(work / "bundles"))
        trained["bundle_dir"] = upload_dir(store, Path(trained["bundle_dir"]), f"{prefix}/bundle")
        canary = Path(trained["canary_file"])
        trained["canary_file"] = store.put_bytes(f"{prefix}/canary.npz", canary.read_bytes())
        return trained
    if step == "gate":
        return ml_steps.gate_step(payload["cfg"], payload["trained"], settings)
    if step == "register":
        trained = dict(payload["trained"])
        trained["bundle_dir"] = str(download_dir(trained["bundle_dir"], work / "bundle", settings))
        return ml_steps.register_step(trained, settings)
    raise ValueError(f"unknown ML step {step!r}; one of {list(STEPS)}")


def upload_dir(store: Any, root: Path, prefix: str) -> str:
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        store.put_bytes(f"{prefix}/{path.relative_to(root).as_posix()}", path.read_bytes())
    return store.uri(prefix)


def download_dir(uri: str, target: Path, settings: Settings) -> Path:
    """Every object under the s3:// prefix ``uri`` into ``target``."""
    from plugins.hooks.s3 import DatasetStore, split_uri

    store = DatasetStore.from_settings(settings)
    store.bucket, prefix = split_uri(uri)
    pages = store.client.get_paginator("list_objects_v2").paginate(Bucket=store.bucket, Prefix=f"{prefix}/")
    for page in pages:
        for obj in page.get("Contents", []):
            path = target / obj["Key"][len(prefix) + 1:]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(store.get_bytes(obj["Key"]))
    if not target.is_dir():
        raise FileNotFoundError(f"nothing under {uri}")
    return target
