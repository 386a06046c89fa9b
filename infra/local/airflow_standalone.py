"""`airflow standalone` for the embedded stack, with no log server listening on every interface.

Airflow's scheduler and triggerer each start `airflow serve-logs`, which binds all interfaces (0.0.0.0 and
[::]) with no setting to change it (`airflow/utils/serve_logs/core.py` passes ``host=""``). On one machine
the API server reads task logs from the shared local log folder, so the log servers are not needed: this
runs Airflow's own standalone command with ``--skip-serve-logs`` added to those two components, so every
listener of the stack stays on loopback. Run as ``python -m infra.local.airflow_standalone``.
"""

from __future__ import annotations

import sys

from airflow.cli.commands import standalone_command

NO_LOG_SERVER = ("scheduler", "triggerer")


class _Component(standalone_command.SubCommand):
    def __init__(self, parent, name: str, command: list[str], env: dict[str, str]):  # noqa: ANN001 - Airflow's
        if name in NO_LOG_SERVER:
            command = [*command, "--skip-serve-logs"]
        super().__init__(parent, name, command, env)


def main() -> int:
    standalone_command.SubCommand = _Component  # the components standalone builds in run()
    standalone_command.StandaloneCommand().run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
