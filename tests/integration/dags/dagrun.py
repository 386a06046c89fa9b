"""Run one DAG with `dag.test()` in a child process (its own AIRFLOW_HOME and SQLite DB, so the test
session's imports never fix Airflow's configuration). Prints {"state", "tasks": {task_id: state}} as JSON.

Usage: python -m tests.integration.dags.dagrun DAG_FILE DAG_ID CONF_JSON
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def main(dag_file: str, dag_id: str, conf: str) -> int:
    import importlib.util

    spec = importlib.util.spec_from_file_location(Path(dag_file).stem, dag_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    dag = next(v for v in vars(module).values() if getattr(v, "dag_id", None) == dag_id)
    run = dag.test(run_conf=json.loads(conf) or None)
    tasks = {ti.task_id: str(ti.state.value if hasattr(ti.state, "value") else ti.state)
             for ti in run.get_task_instances()}
    state = run.state.value if hasattr(run.state, "value") else str(run.state)
    print("DAGRUN_RESULT " + json.dumps({"state": state, "tasks": tasks, "run_id": run.run_id}), flush=True)
    return 0


def run_dag(airflow_env: dict[str, str], settings, dag_id: str, conf: dict | None = None,
            timeout_s: float = 900) -> dict:
    """dag.test() of dags/<dag_id>.py with TIERFLOW_* of `settings`; returns state, task states and the log."""
    from runtime.settings import settings_env

    env = {**os.environ, **airflow_env, **settings_env(settings), "TIERFLOW_HOME": str(settings.home)}
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    # the code under test first, also in external-python tasks (the venv may hold another checkout)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    proc = subprocess.run([sys.executable, "-m", "tests.integration.dags.dagrun", str(REPO / "dags" / f"{dag_id}.py"),
                           dag_id, json.dumps(conf or {})], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=timeout_s)
    out = proc.stdout + proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("DAGRUN_RESULT ")]
    if not lines:
        raise AssertionError(f"dag.test of {dag_id} did not finish (exit {proc.returncode}):\n{out[-6000:]}")
    return {**json.loads(lines[-1].removeprefix("DAGRUN_RESULT ")), "log": out}


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
