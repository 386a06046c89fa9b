"""`tierflow serve-local`: one release served in the foreground on the rollout's own local backend.

The workers are the rollout's supervised workers (`plugins.rollout.local`), brought up in the rollout's
order (`plugins.rollout.procedure.bring_up`), so what a user runs by hand is what the pipeline deploys:
a crashed worker is restarted by its supervisor, and state files make the workers visible to
`tierflow stack down`. Stopping (Ctrl-C, SIGTERM) stops this release's tiers edge first; releases a
rollout started for the same application are left alone.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from plugins.rollout.base import Release, RolloutError, TierWorkerSpec
from plugins.rollout.local import LocalProcessBackend
from plugins.rollout.procedure import bring_up, plan_rollout


def release_version(model_uri: str) -> str:
    """The version a bundle directory's manifest names ("local" until registered), or a models:/ URI's."""
    path = Path(model_uri)
    if (path / "manifest.json").is_file():
        return str(json.loads((path / "manifest.json").read_text()).get("version") or "local")
    tail = model_uri.rsplit("/", 1)[-1]
    return tail if tail.isdigit() else "local"


def serve(settings: Any, model_uri: str, tiers: tuple[str, ...], stop: threading.Event, *,
          echo: Callable[[str], None] = print, ready_timeout_s: float = 180.0, stop_timeout_s: float = 30.0) -> None:
    """Bring the release up, report restarts until ``stop`` is set, then stop its tiers edge first."""
    backend = LocalProcessBackend.from_settings(settings)
    uri = str(Path(model_uri).resolve()) if Path(model_uri).exists() else model_uri
    release = Release(settings.app, release_version(model_uri),
                      tuple(TierWorkerSpec(tier=t, model_uri=uri, http_port=0) for t in tiers))
    if release.version in backend.running(settings.app):
        raise RolloutError(f"release v{release.version} of {settings.app!r} already has workers here (started by a "
                           "rollout?); stop them with `tierflow stack down`, or serve under another TIERFLOW_APP")
    try:
        bring_up(backend, release, plan_rollout(release, {}), ready_timeout_s=ready_timeout_s,
                 log=lambda _m: None)
        for st in backend.workers(settings.app, release.version):
            echo(f"{st['tier']:6s} ready  supervisor pid {st['supervisor_pid']}  "
                 f"http://127.0.0.1:{st['port']}/metrics  log {st['log']}")
        echo(f"send requests to {settings.topic('requests')} on {settings.kafka.bootstrap}; Ctrl-C stops")
        restarts: dict[str, int] = {}
        while not stop.wait(1.0):
            for st in backend.workers(settings.app, release.version):
                if st["restarts"] > restarts.setdefault(st["tier"], 0):
                    restarts[st["tier"]] = st["restarts"]
                    echo(f"{st['tier']} worker exited (code {st['last_exit']}); restarted by its supervisor "
                         f"(see {st['log']})")
    finally:
        for spec in release.tiers:
            backend.stop_tier(release.app, release.version, spec.tier, stop_timeout_s)
