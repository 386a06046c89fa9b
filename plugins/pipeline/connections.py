"""The ML tasks' ``pre_execute``: the Connections resolved on the orchestrator side, handed to the ML interpreter.

Airflow 3 lets an external-python task reach the supervisor (and so Connections) only when the Task SDK is
installed in that interpreter, which the ML environment (a TensorFlow venv, the trainer image) need not have.
So the task's own process, which is Airflow's, resolves the Connections just before it starts the ML
interpreter and puts them into that process's environment (`ExternalPythonOperator.env_vars`). The
environment is neither an XCom, nor a rendered template field, nor logged.
"""

from __future__ import annotations

from typing import Any


def pass_connections(context: Any) -> None:
    """Set the task's subprocess environment from `plugins.hooks.connected.connected_env`."""
    from plugins.hooks.connected import connected_env

    task = context["task"]
    task.env_vars = {**(task.env_vars or {}), **connected_env()}
