"""Helpers for running DAGs with `dag.test()` against the real local services, each in a child process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def airflow_db(tmp_path_factory) -> dict[str, str]:
    """An AIRFLOW_HOME with a migrated SQLite metadata DB (what `dag.test()` needs), created once."""
    home = tmp_path_factory.mktemp("airflow-dagtest")
    env = {"AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
           "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"), "AIRFLOW__CORE__UNIT_TEST_MODE": "False"}
    subprocess.run([str(Path(sys.executable).parent / "airflow"), "db", "migrate"], env={**os.environ, **env},
                   check=True, capture_output=True, timeout=300)
    return env
