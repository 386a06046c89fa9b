"""The Prometheus rules and the Grafana dashboard name only metrics the tier workers export, and the rules
pass `promtool check rules` and their own `promtool test rules` cases."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from ml.contract import TIERS
from runtime import scrape_targets
from runtime.metrics import WorkerMetrics

ROOT = Path(__file__).resolve().parents[3]
RULES = ROOT / "infra" / "prometheus" / "tierflow.rules.yml"
RULE_TESTS = ROOT / "infra" / "prometheus" / "tierflow.rules.test.yml"
DASHBOARD = ROOT / "infra" / "grafana" / "tierflow-tiers.json"
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
             "offset", "inf", "nan"}


def exported() -> set[str]:
    """Series names a worker's /metrics exposes (prometheus_client adds the type's suffixes), plus `up`."""
    names = {"up"}
    for family in WorkerMetrics("edge", "1").registry.collect():
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}[family.type]
        names |= {family.name + s for s in suffixes}
    return names


def recorded() -> set[str]:
    return {r["record"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "record" in r}


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression selects: identifiers that are no function, keyword, label
    name or string."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)  # label lists
    idents = {m.group(1) for m in re.finditer(r"(?<![\w:.])([A-Za-z_:][\w:]*)\s*(\(?)", expr) if not m.group(2)}
    return {i for i in idents if i.lower() not in _KEYWORDS}


def promtool() -> str:
    exe = shutil.which("promtool")
    assert exe, "promtool missing: `make install` installs Debian's prometheus package"
    return exe


def test_metric_names_reads_selectors_not_functions_or_labels():
    expr = ('histogram_quantile(0.95, sum by (app, tier, le) (rate(tierflow_tier_latency_seconds_bucket'
            '{tier="edge",outcome="x"}[1m]))) / on (tier) group_left up and tier:x:sum > 0.5')
    assert metric_names(expr) == {"tierflow_tier_latency_seconds_bucket", "up", "tier:x:sum"}


def test_rules_pass_promtool_check_and_their_unit_tests():
    check = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True)
    assert check.returncode == 0 and "SUCCESS" in check.stdout, check.stdout + check.stderr
    test = subprocess.run([promtool(), "test", "rules", RULE_TESTS.name], capture_output=True, text=True,
                          cwd=RULE_TESTS.parent)
    assert test.returncode == 0 and "SUCCESS" in test.stdout, test.stdout + test.stderr


def test_rules_read_only_exported_metrics_and_cover_what_operators_watch():
    groups = yaml.safe_load(RULES.read_text())["groups"]
    known = exported() | recorded()
    for rule in (r for g in groups for r in g["rules"]):
        unknown = metric_names(rule["expr"]) - known
        assert not unknown, f"{rule.get('record') or rule.get('alert')} reads {unknown}, which no worker exports"
    names = recorded()
    for q in ("p50", "p95", "p99"):
        assert f"tier:tierflow_tier_latency_seconds:{q}_1m" in names
    assert {"tier:tierflow_answers:rate1m", "tier_exit:tierflow_exit_answers:rate1m",
            "tier:tierflow_degraded_answers:ratio_rate1m", "tier:tierflow_dlq_records:rate1m",
            "tier:tierflow_consumer_lag:sum"} <= names
    alerts = {r["alert"] for g in groups for r in g["rules"] if "alert" in r}
    assert alerts == {"TierflowDegradedAnswers", "TierflowDeadLetters", "TierflowConsumerLagGrowing",
                      "TierflowTierDown"}
    # The tier-down alert selects the job the local discovery and the PodMonitor both set.
    assert f'job="{scrape_targets.JOB}"' in next(r["expr"] for g in groups for r in g["rules"]
                                                 if r.get("alert") == "TierflowTierDown")


def test_dashboard_has_a_row_per_tier_and_queries_only_exported_metrics():
    dash = json.loads(DASHBOARD.read_text())
    panels = dash["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    rows = [p["title"] for p in panels if p["type"] == "row"]
    assert rows[1:] == [f"Tier {t}" for t in TIERS]
    known = exported() | recorded()
    tier = None
    for panel in panels:
        if panel["type"] == "row":
            tier = next((t for t in TIERS if panel["title"] == f"Tier {t}"), None)
            continue
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = metric_names(target["expr"])
            assert names and not names - known, f"{panel['title']}: {names - known} not exported"
            assert 'app="$app"' in target["expr"]
            if tier:
                assert f'tier="{tier}"' in target["expr"], panel["title"]
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    assert {v["name"] for v in dash["templating"]["list"]} == {"datasource", "app"}
    queried = {n for p in panels for t in p.get("targets", []) for n in metric_names(t["expr"])}
    assert {"tierflow_threshold", "tierflow_operating_point"} <= queried  # what adaptive exits moved, and where


def test_scrape_targets_are_file_sd_groups_written_whole(tmp_path):
    path = scrape_targets.register(tmp_path, "fmnist-v1-edge-0", "127.0.0.1:9101",
                                   {"app": "fmnist", "tier": "edge", "version": None})
    assert json.loads(path.read_text()) == [{"targets": ["127.0.0.1:9101"], "labels": {"app": "fmnist", "tier": "edge"}}]
    assert [p.name for p in scrape_targets.targets_dir(tmp_path).iterdir()] == ["fmnist-v1-edge-0.json"]
    scrape_targets.unregister(tmp_path, "fmnist-v1-edge-0")
    scrape_targets.unregister(tmp_path, "fmnist-v1-edge-0")  # idempotent
    assert scrape_targets.registered(tmp_path) == []


@pytest.mark.parametrize("interval", [1, 5.0])
def test_embedded_prometheus_config_scrapes_itself_and_the_announced_workers(tmp_path, interval):
    from infra.local.services import prometheus_config
    from runtime.settings import PrometheusSettings, Settings

    settings = Settings(_env_file=None, home=tmp_path,
                        prometheus=PrometheusSettings(url="http://127.0.0.1:9999", scrape_interval_s=interval))
    config = prometheus_config(settings, scrape_targets.targets_dir(tmp_path))
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert jobs["prometheus"]["static_configs"] == [{"targets": ["127.0.0.1:9999"]}]
    assert jobs[scrape_targets.JOB]["file_sd_configs"][0]["files"] == [str(tmp_path / "prometheus/targets/*.json")]
    assert config["global"]["scrape_interval"] == f"{interval:g}s" and config["rule_files"] == [str(RULES)]


def test_prometheus_durations() -> None:
    from infra.prometheus_api import PrometheusError, duration_s

    assert [duration_s(t) for t in ("5s", "1m30s", "500ms", "1h")] == [5, 90, 0.5, 3600]
    with pytest.raises(PrometheusError):
        duration_s("5 s")
