"""Shared pieces of the runtime benchmarks: the bundle they serve, the machine line, a metrics scraper."""

from __future__ import annotations

import contextlib
import os
import urllib.request
from pathlib import Path


def bench_bundle(path: str | os.PathLike | None = None, width: float = 0.5, epochs: int = 2,
                 n_train: int = 3000) -> Path:
    """A compact-CNN bundle (``width`` scales the channels; defaults = the tests' tiny bundle), built once
    into ~/.cache/tierflow/bench-bundle-w<width>[-e<epochs>-n<n_train>] (or $TIERFLOW_BENCH_BUNDLE)."""
    name = f"bench-bundle-w{width:g}" + ("" if (epochs, n_train) == (2, 3000) else f"-e{epochs}-n{n_train}")
    target = Path(path or os.environ.get("TIERFLOW_BENCH_BUNDLE") or Path.home() / ".cache" / "tierflow" / name)
    if not (target / "manifest.json").is_file():
        from ml.tiny import build_tiny_bundle

        build_tiny_bundle(target, width=width, epochs=epochs, n_train=n_train)
    return target


def machine_line() -> str:
    from ml.report import machine

    m = machine()
    cpu = ""
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return (f"machine: {m['platform']}, python {m['python']}, {m['cpus']} CPUs ({m['affinity']} usable) {cpu}; "
            f"load average {load} (other processes share the CPUs)")


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Prometheus text → {(name, sorted labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:  # noqa: S310
        text = resp.read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def metric_sum(samples: dict, name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in samples.items()
               if n == name and all(dict(ls).get(k) == val for k, val in labels.items()))
