"""The Kubernetes rollout inside a real Airflow task (`dag.test()`), through the `kubernetes_default`
connection: a missing model fails the task, and the pod's own output and description are in the task log.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.settings import settings_env

pytestmark = pytest.mark.k8s
ROOT = Path(__file__).resolve().parents[2]
DAG_FILE = Path(__file__).parent / "dags" / "k8s_tier_rollout.py"
RUNNER = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("k8s_tier_rollout", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
run = module.rollout_dag.test(run_conf=json.loads(sys.argv[2]))
ti = [t for t in run.get_task_instances() if t.task_id == "roll_out"][0]
print("TASK_STATE", getattr(ti.state, "value", ti.state), flush=True)
"""


def run_dag(settings, rollout_kubeconfig: str, conf: dict, home: Path) -> tuple[str, str]:
    """dag.test() in a child process with its own AIRFLOW_HOME; returns (task state, whole output)."""
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIERFLOW_", "AIRFLOW"))}
    env.update(settings_env(settings))
    env.pop("TIERFLOW_K8S__KUBE_CONFIG_PATH", None)  # the task must go through the Airflow connection
    env.update({
        "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAG_FILE.parent), "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW_CONN_KUBERNETES_DEFAULT": json.dumps({"conn_type": "kubernetes", "extra": {
            "kube_config_path": rollout_kubeconfig, "namespace": "tierflow"}}),
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
    })
    airflow = str(Path(sys.executable).parent / "airflow")
    subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    proc = subprocess.run([sys.executable, "-c", RUNNER, str(DAG_FILE), json.dumps(conf)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    states = [ln.split()[1] for ln in proc.stdout.splitlines() if ln.startswith("TASK_STATE ")]
    assert states, f"dag.test did not finish (exit {proc.returncode}):\n{out[-5000:]}"
    return states[0], out


def test_failed_rollout_fails_the_task_with_the_pod_log_in_the_task_log(k8s_settings, rollout_kubeconfig,
                                                                         tmp_path):
    """The good path inside Airflow is covered by test_pipeline_dag_k8s; here a missing model."""
    missing = tmp_path / "missing-model"
    state, out = run_dag(k8s_settings, rollout_kubeconfig,
                         {"version": "6", "bundle": str(missing), "tiers": ["cloud"]}, tmp_path / "airflow")
    assert state == "failed"
    assert "v6 rolled back" in out and "did not become ready" in out
    assert f"[pod {k8s_settings.app}-v6-cloud-" in out and f"cannot serve tier 'cloud' from '{missing}'" in out
    assert "on cloud-1 phase" in out  # the pod description (node, phase, events) is in the task log too

    from plugins.rollout.kubernetes import KubernetesRolloutBackend

    assert KubernetesRolloutBackend(settings=k8s_settings).running(k8s_settings.app) == {}  # rolled back
