"""The one place the testbed starts tier workers: the project's launcher, placed in a site.

Today that launcher is ``runtime.local.WorkerProcess`` (``tierflow worker --tier T --model-uri U
--http-port P`` with the ``TIERFLOW_*`` environment of ``runtime.settings.settings_env``); when the
launchers are unified, re-point ``SiteWorker`` here and nothing else in ``infra/continuum`` changes.
The only differences from a local rollout: the command is wrapped to join the site's cpu cgroup and
network namespace before it runs, and readiness is probed from inside that namespace.
"""

from __future__ import annotations

from pathlib import Path

from infra.continuum.netns import CpuGroup, in_netns, site_argv
from runtime.local import WorkerProcess
from runtime.localhost import http_status
from runtime.settings import Settings


class SiteWorker(WorkerProcess):
    """A tier worker process in a site's namespace and cgroup (same PID as the worker itself)."""

    def __init__(self, settings: Settings, tier: str, model_uri: str, log_dir: Path, *, netns: str,
                 group: CpuGroup | None, http_port: int = 9100, env: dict[str, str] | None = None):
        super().__init__(settings, tier, model_uri, log_dir, http_port=http_port, env=env)
        self.netns, self.group = netns, group

    @property
    def argv(self) -> list[str]:
        return site_argv(self.netns, self.group, super().argv)

    @property
    def scrape_address(self) -> str | None:
        """None: its /metrics answers inside the site's namespace only; the testbed announces it through a
        scrape bridge instead (`Testbed.announce_home`)."""
        return None

    def ready(self) -> bool:
        return self.alive() and in_netns(self.netns, http_status,
                                         f"http://127.0.0.1:{self.http_port}/readyz", 1.0) == 200

    def metrics_text(self) -> str:
        """The worker's Prometheus text, fetched inside its site (empty if it does not answer)."""
        import urllib.request

        def fetch() -> str:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/metrics",  # noqa: S310
                                            timeout=5) as resp:
                    return resp.read().decode()
            except OSError:
                return ""

        return in_netns(self.netns, fetch)
