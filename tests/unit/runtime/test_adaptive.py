"""The adaptive-exit controller, without Kafka: the pure step rule and a simulated slow upstream."""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest

from ml.exit_curve import ExitCurve, OperatingPoint
from runtime.adaptive import AdaptiveExits, Policy, Upstream, attach, next_point

RATES = [0.4, 0.3, 0.2, 0.1, 0.04]  # forward share at each operating point
POLICY = Policy(objective_ms=250, max_step=3, hysteresis=0.5, min_samples=10, quiet_s=30)


def up(slow: float, ratio: float = 1.0, samples: int = 100, quiet: float = 0.0) -> Upstream:
    return Upstream(forward_ratio=ratio, slow_share=slow, samples=samples, quiet_s=quiet)


def test_a_healthy_upstream_keeps_the_calibrated_point():
    assert next_point(0, RATES, up(0.0), POLICY) == 0
    assert next_point(0, RATES, up(0.1), POLICY) == 0  # 0.4 x 0.1 = 4 % over the objective: within 5 %


def test_a_slow_upstream_moves_to_the_least_adapted_point_that_meets_the_budget_in_bounded_steps():
    # slow share 0.5: over-objective share per point 20, 15, 10, 5, 2 %: point 3 is the first within 5 %
    assert next_point(0, RATES, up(0.5), POLICY) == 3
    assert next_point(0, RATES, up(0.5), Policy(objective_ms=250, max_step=1)) == 1
    # nothing meets it: as far as the floor allows, never further
    assert next_point(3, RATES, up(1.0), POLICY) == 4
    assert next_point(4, RATES, up(1.0), POLICY) == 4


def test_the_live_forward_share_scales_the_calibrated_one():
    # the tier forwards twice what validation predicts: point 3 gives 0.2 x 0.5 = 10 %, point 4 4 %
    assert next_point(0, RATES, up(0.5, ratio=2.0), Policy(objective_ms=250, max_step=9)) == 4
    assert next_point(0, RATES, up(0.5, ratio=0.5), Policy(objective_ms=250, max_step=9)) == 2


def test_hysteresis_holds_an_adapted_point_until_there_is_room_to_spare():
    # at point 3 with slow share 0.2: point 2 would give 4 % (within budget, not within half of it): stay
    assert next_point(3, RATES, up(0.2), POLICY) == 3
    # slow share 0.1: point 2 gives 2 % <= 2.5 %: step back there, not further (point 1: 3 %)
    assert next_point(3, RATES, up(0.1), POLICY) == 2
    # recovered: back to calibrated, at most max_step points per update
    assert next_point(4, RATES, up(0.0), POLICY) == 1
    assert next_point(1, RATES, up(0.0), POLICY) == 0


def test_too_few_outcomes_hold_or_probe_back_and_a_long_silence_returns_to_calibrated():
    assert next_point(3, RATES, up(1.0, samples=3), POLICY) == 3
    assert next_point(3, RATES, up(1 / 3, samples=3), POLICY) == 3  # one of three slow: hold
    assert next_point(3, RATES, up(0.0, samples=3, quiet=1), POLICY) == 2  # all in time: one point back
    assert next_point(3, RATES, up(0.0, samples=0, quiet=10), POLICY) == 3
    assert next_point(3, RATES, up(0.0, samples=0, quiet=31), POLICY) == 0
    assert next_point(0, [0.3], up(1.0), POLICY) == 0  # a curve of one point never moves


def _curve() -> ExitCurve:
    pts = [OperatingPoint(thresholds=[round(0.9 - 0.1 * i, 2)], answer_rate=1 - r, accuracy=0.9 - 0.002 * i,
                          expected_cost=r) for i, r in enumerate(RATES)]
    return ExitCurve(final_accuracy=0.91, floor_points=2.0, floor_accuracy=0.89, points=pts)


def test_a_stricter_runtime_floor_shortens_the_curve():
    curve = _curve()
    assert len(AdaptiveExits(curve, POLICY).points) == 5
    assert len(AdaptiveExits(curve, POLICY, floor_points=1.4).points) == 3  # accuracy >= 0.896: 0.9, 0.898, 0.896


def _simulate(delay_ms, seconds: int, adaptive: bool = True, rate: int = 100, seed: int = 0, late: bool = True):
    """A tier at ``rate`` requests/s whose forwards are answered after ``2 * delay(t) + 20`` ms (± 10 %); at each
    point it forwards that point's share; ``late``: the controller sees its forwards in flight past the objective.
    Returns per second: (point, over-objective share of all requests), and the points applied."""
    rng = np.random.default_rng(seed)
    applied: list[tuple[list, int]] = []
    clock = {"now": 0.0}
    arrivals: list[tuple[float, float, float]] = []  # (time seen, latency, time sent)
    in_flight_late = lambda: sum(clock["now"] - sent > POLICY.objective_ms / 1000 for _, _, sent in arrivals)  # noqa: E731
    ctl = AdaptiveExits(_curve(), POLICY, apply=lambda p, i: applied.append((p.thresholds, i)),
                        late=in_flight_late if late else None)
    out = []
    for s in range(seconds):
        over = 0
        for k in range(rate):
            now = clock["now"] = s + k / rate
            while arrivals and arrivals[0][0] <= now:
                ctl.resolved(*arrivals.pop(0)[:2])
            forwarded = rng.uniform() < RATES[ctl.point if adaptive else 0]
            ctl.decided(now, 1, int(forwarded))
            if forwarded:
                latency = (2 * delay_ms(now) + 20) * rng.uniform(0.9, 1.1)
                arrivals.append((now + latency / 1000, latency, now))
                arrivals.sort()
                over += latency > POLICY.objective_ms
            ctl.update(now)
        out.append((ctl.point, over / rate))
    return out, applied


def test_simulated_wan_step_adapts_keeps_the_objective_and_returns_to_calibrated():
    delay = lambda t: 300 if 30 <= t < 90 else 40  # noqa: E731 - one-way ms
    run, applied = _simulate(delay, 150)
    static, _ = _simulate(delay, 150, adaptive=False)
    assert all(p == 0 for p, _ in run[:30])  # healthy: calibrated
    slow = run[31:90]
    assert all(p == 4 for p, _ in slow)  # 300 ms one way: only the last point (4 % forwarded) meets 5 %
    windows = [np.mean([o for _, o in run[a:a + 10]]) for a in range(30, 90, 10)]
    static_windows = [np.mean([o for _, o in static[a:a + 10]]) for a in range(30, 90, 10)]
    # p95 under the objective in every window, the one with the step included, where static misses it
    assert max(windows) <= 0.05 < min(static_windows)
    back = next(s for s in range(90, 150) if run[s][0] == 0)
    assert back - 90 <= 30  # calibrated thresholds back within 30 s of recovery
    assert all(p == 0 for p, _ in run[back:])
    assert applied[-1] == ([0.9], 0) and max(i for _, i in applied) == 4
    downs = [(a[1], b[1]) for a, b in zip(applied, applied[1:], strict=False) if b[1] < a[1]]
    assert downs and all(a - b <= POLICY.max_step for a, b in downs)  # the release is bounded


def test_forwards_late_in_flight_are_what_saves_the_window_with_the_step():
    """Answered outcomes alone arrive a slow round trip after the step and are diluted by the window's fast
    ones: the step's 10 s window misses the objective without the forwards known late in flight."""
    delay = lambda t: 300 if 30 <= t < 90 else 40  # noqa: E731
    with_late, applied = _simulate(delay, 45)
    without, _ = _simulate(delay, 45, late=False)
    step_window = lambda run: np.mean([o for _, o in run[30:40]])  # noqa: E731
    assert step_window(with_late) <= 0.05 < step_window(without)
    assert with_late[30][0] == 4  # at the lowest point within the second of the step, in one move
    assert [i for _, i in applied] == [4]


def test_hard_evidence_moves_at_once_past_the_step_bound():
    recent = Upstream(forward_ratio=1.0, slow_share=0.05, samples=4, quiet_s=0.0, recent_slow=3, recent_samples=4)
    assert next_point(0, RATES, recent, Policy(objective_ms=250, max_step=1)) == 4  # 0.75 slow: only 4 meets 5 %
    weak = Upstream(forward_ratio=1.0, slow_share=0.05, samples=4, quiet_s=0.0, recent_slow=2, recent_samples=4)
    assert next_point(0, RATES, weak, Policy(objective_ms=250, max_step=1)) == 0  # too few outcomes, too few misses
    # the window's share counts when it is the larger one
    both = Upstream(forward_ratio=1.0, slow_share=0.6, samples=50, quiet_s=0.0, recent_slow=3, recent_samples=10)
    assert next_point(0, RATES, both, Policy(objective_ms=250, max_step=1)) == 4


def test_late_forwards_in_flight_count_as_misses_and_skip_the_interval():
    late = {"n": 0}
    ctl = AdaptiveExits(_curve(), POLICY, late=lambda: late["n"])
    ctl.decided(0.0, 100, 40)
    for k in range(20):
        ctl.resolved(k / 20, 100.0)  # in time
    assert not ctl.update(1.0) and ctl.point == 0
    late["n"] = 3  # three forwards in flight past the objective, no slow answer yet
    m = ctl.measured(1.2)
    assert (m.samples, m.recent_slow, m.recent_samples) == (23, 3, 6)  # late ones are the latest known by origin
    assert ctl.update(1.2) and ctl.point > 0  # 0.2 s after the last look: hard evidence does not wait
    first = ctl.point
    late["n"] = 10
    assert ctl.update(1.3) and ctl.point > first
    late["n"] = 0  # answered in time after all: moving back waits for the interval
    assert not ctl.update(1.5)


@pytest.mark.parametrize("one_way", [40, 100])
def test_a_fast_enough_upstream_never_adapts(one_way):
    run, applied = _simulate(lambda t: one_way, 40)
    assert applied == [] and all(p == 0 for p, _ in run)


def test_lost_forwards_and_a_backed_up_link_count_as_slow():
    ctl = AdaptiveExits(_curve(), POLICY)
    ctl.decided(0.0, 100, 20, backed_up=20)
    ctl.lost(0.1, 10)
    m = ctl.measured(0.5)
    assert m.samples == 30 and m.slow_share == 1.0 and m.forward_ratio == pytest.approx(1.0)
    assert ctl.update(0.5) and ctl.point > 0 and ctl.adapted
    assert ctl.measured(20.0).samples == 0  # outside the window


def _worker_parts(curve: ExitCurve | None, thresholds: list):
    from ml.bundle import BundleManifest, ManifestTier, TensorSpec
    from runtime import codec
    from runtime.metrics import WorkerMetrics
    from runtime.ownership import PendingForwards

    manifest = BundleManifest(model_name="m", architecture="x", input=TensorSpec(shape=[4]), class_names=["a", "b"],
                              num_exits=2, tiers=[
                                  ManifestTier(name="edge", exits=[0], file="e", input_shape=[4], output_shape=[2],
                                               thresholds=thresholds, curve=curve),
                                  ManifestTier(name="cloud", exits=[1], file="c", input_shape=[2], output_shape=None,
                                               thresholds=[None])])
    model = SimpleNamespace(name="edge", exit_ids=[0], thresholds=thresholds, manifest=manifest)
    inference = SimpleNamespace(thresholds=model.thresholds)
    clock = SimpleNamespace(now=lambda: 10_000)
    return (model, inference, codec.AnswerEncoder("edge", "1", "m", str), WorkerMetrics("edge", "1"),
            SimpleNamespace(on_resolved=None, pending=PendingForwards()), clock)


def test_attach_puts_the_calibrated_thresholds_in_force_and_the_controller_moves_them():
    from runtime.settings import AdaptiveSettings

    model, inference, encoder, metrics, answers, clock = _worker_parts(_curve(), [0.9])
    assert attach(AdaptiveSettings(), model, True, inference, encoder, metrics, answers, clock) is None  # off
    assert b'"threshold":0.9,"adapted":false' in encoder.body("r", 0, 0.95, 0, 1, 2, False)
    gauge = lambda name, **labels: metrics.registry.get_sample_value(name, {"tier": "edge", "version": "1", **labels})  # noqa: E731
    assert gauge("tierflow_threshold", exit="0") == 0.9 and gauge("tierflow_operating_point") == 0

    ctl = attach(AdaptiveSettings(objective_ms=250, interval_s=0.5), model, True, inference, encoder, metrics,
                 answers, clock)
    assert ctl is not None and answers.on_resolved is not None
    ctl.decided(time.monotonic(), 100, 40)
    for _ in range(20):  # forwards answered 1 s after their origin (clock.now() - origin_ts)
        answers.on_resolved(SimpleNamespace(origin_ts=9_000, received_ts=9_001))
    assert ctl.update(time.monotonic())
    assert inference.thresholds == ctl.thresholds and inference.thresholds is not model.thresholds
    assert gauge("tierflow_operating_point") == ctl.point > 0
    assert gauge("tierflow_threshold", exit="0") == ctl.thresholds[0] < 0.9
    # upper tiers never adapt: they forward nothing
    assert attach(AdaptiveSettings(objective_ms=250), model, False, inference, encoder, metrics, answers, clock) is None


@pytest.mark.parametrize(("curve", "thresholds"), [(None, [0.9]), (_curve(), [0.95])])
def test_attach_keeps_the_thresholds_without_a_matching_curve(curve, thresholds, caplog):
    from runtime.settings import AdaptiveSettings

    parts = _worker_parts(curve, thresholds)
    assert attach(AdaptiveSettings(objective_ms=250), parts[0], True, *parts[1:]) is None
    assert "stay in force" in caplog.text
