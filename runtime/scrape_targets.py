"""Where Prometheus finds the local tier workers: one file_sd JSON file per worker.

The local launchers (`plugins.rollout.local`, `runtime.local`) write a file when they start a worker
and remove it when they stop it; the embedded stack's Prometheus watches ``<home>/prometheus/targets/*.json``
(file-based service discovery re-reads the folder on every change), so a rollout needs no reload.
Target labels: ``app``, ``tier``, ``version``, ``replica``, the same labels the worker puts on its
metrics, so ``up{job="tierflow-workers"}`` says which tier is down.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path

JOB = "tierflow-workers"


def targets_dir(home: Path | str) -> Path:
    return Path(home) / "prometheus" / "targets"


def _path(home: Path | str, name: str) -> Path:
    return targets_dir(home) / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.json"


def register(home: Path | str, name: str, address: str, labels: dict[str, str | None]) -> Path:
    """Announce one worker's /metrics at address (host:port), replacing an earlier file of that name;
    labels without a value are left out."""
    path = _path(home, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # not *.json: Prometheus never reads half a file
    tmp.write_text(json.dumps([{"targets": [address], "labels": {k: str(v) for k, v in labels.items() if v}}]))
    tmp.replace(path)
    return path


def unregister(home: Path | str, name: str) -> None:
    with contextlib.suppress(OSError):
        _path(home, name).unlink()


def registered(home: Path | str) -> list[dict]:
    """Every announced target group (what Prometheus reads)."""
    out = []
    for path in sorted(targets_dir(home).glob("*.json")):
        with contextlib.suppress(OSError, ValueError):
            out.extend(json.loads(path.read_text()))
    return out
