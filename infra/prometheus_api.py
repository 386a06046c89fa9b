"""Live figures from a Prometheus server's HTTP API (`/api/v1/query`), for the demo and continuum reports.

A report reads what Prometheus computed from the workers' own metrics with the recording rules of
infra/prometheus/tierflow.rules.yml, so a report and the dashboard show the same numbers.
"""

from __future__ import annotations

import json
import math
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass

RULES = "infra/prometheus/tierflow.rules.yml"  # where the recorded series below are defined


class PrometheusError(RuntimeError):
    """Prometheus did not answer, or answered with an error."""


@dataclass(frozen=True)
class Sample:
    labels: dict[str, str]
    value: float


class Prometheus:
    """A client of one server's query API (instant queries only: that is what reports need)."""

    def __init__(self, url: str, timeout_s: float = 5.0):
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def _get(self, path: str, **params: str) -> dict:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        try:
            with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=self.timeout_s) as resp:  # noqa: S310
                body = json.loads(resp.read())
        except (OSError, ValueError) as exc:
            raise PrometheusError(f"{self.url}{path}: {exc}") from exc
        if body.get("status") != "success":
            raise PrometheusError(f"{self.url}{path}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=self.timeout_s) as resp:  # noqa: S310
                return resp.status == 200
        except OSError:
            return False

    def query(self, expr: str) -> list[Sample]:
        """An instant vector query; NaN samples (a quantile over no observations) are left out."""
        data = self._get("/api/v1/query", query=expr)
        if data["resultType"] != "vector":
            raise PrometheusError(f"{expr!r} is a {data['resultType']}, not an instant vector")
        out = [Sample(r["metric"], float(r["value"][1])) for r in data["result"]]
        return [s for s in out if not math.isnan(s.value)]

    def wait(self, expr: str, *, count: int = 1, timeout_s: float = 60.0) -> list[Sample]:
        """Query until at least `count` samples come back (series appear a scrape and a rule run late)."""
        deadline = time.monotonic() + timeout_s
        while True:
            samples = self.query(expr)
            if len(samples) >= count or time.monotonic() > deadline:
                return samples
            time.sleep(0.5)

    def targets(self) -> list[dict]:
        """Active scrape targets: labels, health ("up"/"down"/"unknown"), last error."""
        return self._get("/api/v1/targets", state="active")["activeTargets"]

    def scrape_interval_s(self) -> float:
        """The server's global scrape interval, from its loaded configuration."""
        import yaml

        text = str(yaml.safe_load(self._get("/api/v1/status/config")["yaml"])["global"]["scrape_interval"])
        return duration_s(text)

    def rules(self) -> list[dict]:
        return self._get("/api/v1/rules")["groups"]

    def graph_url(self, expr: str, range_: str = "15m") -> str:
        """The server's graph page for expr (what the README's screenshot shows)."""
        params = {"g0.expr": expr, "g0.tab": "0", "g0.range_input": range_}
        return f"{self.url}/graph?{urllib.parse.urlencode(params)}"


def tier_figures(prom: Prometheus, app: str) -> dict[str, dict[str, float]]:
    """Per tier: p50/p95/p99 of the tier latency and of end to end (ms), answers/s, degraded share,
    DLQ records/s, consumer lag; from the recorded series."""
    series = {
        "tier_p50_ms": ("tier:tierflow_tier_latency_seconds:p50_1m", 1000),
        "tier_p95_ms": ("tier:tierflow_tier_latency_seconds:p95_1m", 1000),
        "tier_p99_ms": ("tier:tierflow_tier_latency_seconds:p99_1m", 1000),
        "e2e_p50_ms": ("tier:tierflow_end_to_end_latency_seconds:p50_1m", 1000),
        "e2e_p95_ms": ("tier:tierflow_end_to_end_latency_seconds:p95_1m", 1000),
        "e2e_p99_ms": ("tier:tierflow_end_to_end_latency_seconds:p99_1m", 1000),
        "answers_per_s": ("tier:tierflow_answers:rate1m", 1),
        "degraded_ratio": ("tier:tierflow_degraded_answers:ratio_rate1m", 1),
        "dlq_per_s": ("tier:tierflow_dlq_records:rate1m", 1),
        "consumer_lag": ("tier:tierflow_consumer_lag:sum", 1),
    }
    out: dict[str, dict[str, float]] = {}
    for key, (name, scale) in series.items():
        for s in prom.query(f'{name}{{app="{app}"}}'):
            out.setdefault(s.labels.get("tier", "?"), {})[key] = round(s.value * scale, 3)
    return out


def live_figures(url: str, app: str, tiers: int, *, settle_s: float = 0.0,
                 timeout_s: float = 60.0) -> dict[str, dict[str, float]] | None:
    """`tier_figures` once every tier has a recorded p95, from the server at url; None where no Prometheus
    runs. settle_s: wait first, so the last scrape and rule run after a load include its final counts."""
    prom = Prometheus(url)
    if not prom.ready():
        return None
    time.sleep(settle_s)
    prom.wait(f'tier:tierflow_tier_latency_seconds:p95_1m{{app="{app}"}}', count=tiers, timeout_s=timeout_s)
    return tier_figures(prom, app)


def duration_s(text: str) -> float:
    """A Prometheus duration ("15s", "1m30s", "500ms") in seconds."""
    import re

    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise PrometheusError(f"not a Prometheus duration: {text!r}")
    return sum(float(n) * units[u] for n, u in parts)


def _increase(selector: str, by: str, start_s: float, end_s: float) -> str:
    """PromQL for what counters grew by between two instants, exactly (the difference of the samples at
    start and end, no extrapolation as in increase()); a series born inside the window counts from 0."""
    at_end = f"sum by ({by}) ({selector} @ {end_s:.3f})"
    return f"({at_end} - (sum by ({by}) ({selector} @ {start_s:.3f}) or {at_end} * 0))"


def window_figures(prom: Prometheus, app: str, start_s: float, end_s: float) -> dict[str, dict[str, float]]:
    """Per answering tier over [start_s, end_s] (epoch s): answers, degraded answers, end-to-end (origin to
    answer published) and tier (receipt to publish) p50/p95 in ms, from the workers' counters and
    histograms. Exact counts need a scrape after the window's last answer and none of the next window's
    records before end_s: quiet stretches of a scrape interval around it."""
    sel = f'{{app="{app}"}}'
    counts = {"answers": f'tierflow_records_total{{app="{app}",outcome="answered"}}',
              "degraded": f"tierflow_degraded_answers_total{sel}"}
    out: dict[str, dict[str, float]] = {}
    for key, selector in counts.items():
        for s in prom.query(_increase(selector, "tier", start_s, end_s)):
            out.setdefault(s.labels["tier"], {})[key] = round(s.value)
    for prefix, metric in (("", "tierflow_end_to_end_latency_seconds"), ("tier_", "tierflow_tier_latency_seconds")):
        for q in (50, 95):
            expr = f"histogram_quantile({q / 100}, {_increase(f'{metric}_bucket{sel}', 'tier, le', start_s, end_s)})"
            for s in prom.query(expr):  # NaN (no observations in the window: a tier that answered none) left out
                out.setdefault(s.labels["tier"], {})[f"{prefix}p{q}_ms"] = round(s.value * 1000, 2)
    return out
