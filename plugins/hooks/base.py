"""What the tierflow hooks share: an Airflow Connection when one is defined, else tierflow's settings.

Airflow users point the pipeline at their services the way they configure every other DAG: a
Connection (UI, CLI, ``AIRFLOW_CONN_*`` variables or a secrets backend) named by the hook's default
connection id. Where no such Connection exists (the embedded stack, tests, the CLI), the hooks fall
back to ``runtime.settings.Settings`` (``TIERFLOW_*`` variables and ``$TIERFLOW_HOME/stack.env``).
"""

from __future__ import annotations

from typing import Any

from airflow.exceptions import AirflowNotFoundException
from airflow.sdk.bases.hook import BaseHook


def find_connection(conn_id: str | None) -> Any | None:
    """The Airflow Connection ``conn_id``, or None when it is not defined (or no id is given)."""
    if not conn_id:
        return None
    try:
        return BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return None


def fallback_settings(settings: Any | None) -> Any:
    if settings is not None:
        return settings
    from runtime.settings import get_settings

    return get_settings()
