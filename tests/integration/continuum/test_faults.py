"""A link between sites cut under load: every request answered, the ones that needed the far side degraded,
none lost; once the link is healed and a deadline has passed, no degraded answers. Answers are counted
on APP.results itself after the system is quiet, not only by the client (which keeps the first)."""

from __future__ import annotations

from typing import Any

import pytest

from infra.continuum.measure import Phase, run_load, topic_summary
from infra.continuum.scenario import load_scenario
from infra.continuum.testbed import Testbed
from tests.integration.runtime.conftest import offline_cascade

pytestmark = pytest.mark.integration

DEADLINE_MS = 1500
RATE = 40.0
CUT_AT_S, HEAL_AT_S, CUT_PHASE_S = 0.5, 4.5, 5.0
ABOVE = {"fog-cloud": {"cloud"}, "edge-fog": {"fog", "cloud"}}


@pytest.fixture(scope="module")
def cut_runs(tiny_bundle, tmp_path_factory) -> dict[str, dict[str, Any]]:
    """One layout, one load: the fog-cloud link cut and healed, a quiet stretch, then the edge-fog link."""
    from ml.datasets import load_fashion_mnist

    x = load_fashion_mnist("test").x[:1000]
    tier_of, _ = offline_cascade(tiny_bundle, x)
    with Testbed(load_scenario("edge-fog-cloud"), tmp_path_factory.mktemp("cuts")) as tb:
        settings = tb.settings(default_deadline_ms=DEADLINE_MS)
        tb.start_workers(settings, tiny_bundle)

        def action(what: str, link: str) -> Any:
            def call() -> Any:
                return tb.cut(link) if what == "cut" else tb.heal(link)
            call.__name__ = f"{what} {link}"
            return call

        phases = [Phase("before", RATE, duration_s=1.5)]
        actions = {}
        for link in ABOVE:
            phases += [Phase(f"cut {link}", RATE, duration_s=CUT_PHASE_S), Phase(f"after {link}", RATE, duration_s=2.0)]
            actions[f"cut {link}"] = [(CUT_AT_S, action("cut", link)), (HEAL_AT_S, action("heal", link))]
        run = run_load(tb, settings, x, phases, deadline_ms=DEADLINE_MS, entry_tier="edge", actions=actions,
                       drain_s=3.0, settle_s=1.0)
    done = {e["what"]: e["t_ms"] for e in run.events if e["event"] == "action"}
    assert sorted(done) == sorted(f"{w} {link}" for link in ABOVE for w in ("cut", "heal")), done
    topic = topic_summary(run)
    for link in ABOVE:  # shown with -s: what today's worker does across a cut
        rows = [r for r in run.rows if r["phase"] in (f"cut {link}", f"after {link}")]
        print(f"\n{link}: {len(rows)} requests, {sum(r['result']['degraded'] for r in rows if 'result' in r)} "
              f"degraded, {sum(r.get('latency_ms', 1e9) > DEADLINE_MS + 1000 for r in rows)} later than deadline+1s, "
              f"answered twice on APP.results {sum(r['request_id'] in set(topic['answered_twice']) for r in rows)}")
    return {link: {"link": link, "run": run, "tier_of": tier_of, "cut_ms": done[f"cut {link}"],
                   "heal_ms": done[f"heal {link}"], "topic": topic,
                   "phases": {f"cut {link}", f"after {link}"}} for link in ABOVE}


@pytest.fixture(params=list(ABOVE))
def cut_run(request, cut_runs) -> dict[str, Any]:
    return cut_runs[request.param]


def _during(cut_run: dict[str, Any]) -> list[dict[str, Any]]:
    """Requests sent while the link was down and too early for the far side to answer after the heal."""
    return [r for r in cut_run["run"].rows if r["phase"] in cut_run["phases"]
            and cut_run["cut_ms"] < r["sent_ms"] < cut_run["heal_ms"] - DEADLINE_MS - 300]


def _outcomes(rows: list[dict[str, Any]], tier_of: list[str]) -> dict[str, int]:
    """(offline tier → answering tier, degraded) counts, for failure messages."""
    out: dict[str, int] = {}
    for r in rows:
        key = f"{tier_of[r['index']]}->{r['result']['tier']}{' degraded' if r['result']['degraded'] else ''}"
        out[key] = out.get(key, 0) + 1
    return out


def test_cut_link_every_request_answered_far_ones_degraded(cut_run) -> None:
    run, tier_of, link = cut_run["run"], cut_run["tier_of"], cut_run["link"]
    topic = cut_run["topic"]
    assert topic["lost"] == [], f"{len(topic['lost'])} requests have no answer on APP.results"
    assert all("result" in r for r in run.rows), "the client got an answer for every request"
    far = [r for r in _during(cut_run) if tier_of[r["index"]] in ABOVE[link]]
    assert len(far) >= 5, f"too few requests needing the far side during the cut ({len(far)})"
    assert all(r["result"]["degraded"] for r in far), \
        f"{sum(not r['result']['degraded'] for r in far)} of {len(far)} not degraded: {_outcomes(far, tier_of)}"
    assert {r["result"]["tier"] for r in far} <= {"edge", "fog"} - ABOVE[link]
    # after the heal plus a deadline: the whole chain answers again
    after = [r for r in run.rows if r["phase"] in cut_run["phases"]
             and r["sent_ms"] > cut_run["heal_ms"] + DEADLINE_MS + 500]
    assert len(after) >= 30
    assert not any(r["result"]["degraded"] for r in after), \
        f"degraded answers after the heal: {_outcomes(after, tier_of)}"
    assert {r["result"]["tier"] for r in after} == {"edge", "fog", "cloud"}


def test_cut_link_requests_below_the_cut_answered_normally_and_in_time(cut_run) -> None:
    rows = [r for r in cut_run["run"].rows if r["phase"] in cut_run["phases"]]
    late = [r for r in rows if r["latency_ms"] > DEADLINE_MS + 1000]
    near = [r for r in _during(cut_run) if cut_run["tier_of"][r["index"]] not in ABOVE[cut_run["link"]]]
    assert near and not any(r["result"]["degraded"] for r in near), \
        f"requests that need no link across the cut: {_outcomes(near, cut_run['tier_of'])}"
    assert not late, f"{len(late)} of {len(rows)} answers more than 1 s after the deadline"


def test_cut_link_no_request_answered_twice(cut_run) -> None:
    mine = {r["request_id"] for r in cut_run["run"].rows if r["phase"] in cut_run["phases"]}
    twice = [rid for rid in cut_run["topic"]["answered_twice"] if rid in mine]
    assert twice == [], f"{len(twice)} request ids answered more than once on APP.results, e.g. {twice[:3]}"
