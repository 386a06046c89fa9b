"""The answer-ownership rule: windows, decisions, the tier clock, the answer memory, pending forwards."""

from __future__ import annotations

import itertools

import pytest

from runtime.ownership import (
    Action,
    AnswerMemory,
    Pending,
    PendingForwards,
    TierClock,
    answer_timeout,
    decide,
    window_close,
)

D, G = 10_000, 250


def test_windows_close_one_grace_apart_from_the_top_down():
    assert [window_close(D, i, 3, G) for i in range(3)] == [D + 2 * G, D + G, D]
    assert window_close(D, 0, 1, G) == D  # cloud-only: the entry is the top tier


def _decide(now: int, index: int, confident: bool) -> Action:
    """`decide` for tier ``index`` of three, for a request with deadline D."""
    return decide(now, window_close(D, index, 3, G), G, entry=index == 0, top=index == 2, confident=confident)


@pytest.mark.parametrize(("now", "index", "confident", "action"), [
    (D - 100, 0, True, Action.ANSWER),
    (D - 100, 0, False, Action.FORWARD),
    (D + G - 1, 0, False, Action.FORWARD),  # the fog's window is still open
    (D + G, 0, False, Action.DEGRADE),  # the fog's window has closed: the edge answers itself now
    (D + 10 * G, 0, False, Action.DEGRADE),  # the entry tier answers whatever reaches it
    (D + 10 * G, 0, True, Action.ANSWER),
    (D - 1, 1, False, Action.FORWARD),
    (D, 1, False, Action.DEGRADE),  # the cloud's window has closed
    (D + G, 1, True, Action.EXPIRE),  # the fog's own window has closed: the edge owns it
    (D - 1, 2, False, Action.ANSWER),  # the top tier always answers inside its window
    (D, 2, True, Action.EXPIRE),
])
def test_decisions(now, index, confident, action):
    assert _decide(now, index, confident) is action


def test_at_any_time_at_most_one_tier_may_publish_for_a_request_it_holds():
    """Whatever each tier does at time t, the windows in which each publishes do not overlap across tiers
    except where a lower tier answers at once *instead of* forwarding (then no upper tier holds it)."""
    for now in range(D - 3 * G, D + 4 * G, 17):
        actions = [_decide(now, i, False) for i in range(3)]
        publishing_upper = [i for i in (1, 2) if actions[i] in (Action.ANSWER, Action.DEGRADE)]
        # An upper tier publishes only before the lower tier's fallback time (one grace of margin).
        for i in publishing_upper:
            assert now < window_close(D, i - 1, 3, G) - G + 1


def test_clock_corrects_forward_to_a_sender_ahead_and_ignores_senders_behind():
    clock = TierClock()
    local = clock.local()
    clock.observe(local + 500, local)  # the sender's clock is 500 ms ahead of ours
    assert clock.correction_ms == 500
    assert clock.now() >= clock.local() + 500
    clock.observe(local - 3000, local)  # a sender behind (or a slow link): no correction backwards
    assert clock.correction_ms == 500
    clock.observe(local + 10**9, local)  # a wild timestamp is capped out, not followed
    assert clock.correction_ms == 500


def test_clock_skew_is_fault_injection_of_the_local_clock():
    assert TierClock(skew_ms=-5000).local() < TierClock().local() - 4000


def test_answer_memory_remembers_entries_and_forgets_the_oldest():
    mem = AnswerMemory(capacity=3)
    for i in range(5):
        mem.add(f"r{i}", f"0/{i}")
    assert len(mem) == 3 and "r0" not in mem and mem.entry_of("r4") == "0/4"
    mem.add("r4", "")  # a later answer without an entry keeps the known entry
    assert mem.entry_of("r4") == "0/4"
    assert mem.entry_of("nope") is None


def test_pending_forwards_come_due_in_time_order_and_resolve_once():
    pf = PendingForwards()
    counter = itertools.count()
    for rid, close in (("a", 30), ("b", 10), ("c", 20)):
        pf.add(Pending(rid, close, 1, 0.5, 0, None, None, next(counter), "0/0", None))
    assert pf.next_close() == 10
    assert pf.resolve("c").request_id == "c" and pf.resolve("c") is None
    assert [p.request_id for p in pf.due(25)] == ["b"]
    assert pf.next_close() == 30 and pf.last_close() == 30 and len(pf) == 1


def test_an_upper_answer_gets_the_longest_timeout_that_lands_it_half_a_grace_before_the_tier_below_answers():
    timeouts = (31, 125, 500, 2000, 8000)
    close = 10_000  # the tier below may answer degraded at close + 250
    assert answer_timeout(close, close - 5000, 250, timeouts) == 2000  # 5125 ms left
    assert answer_timeout(close, close, 250, timeouts) == 125  # at its own close: 125 ms left
    assert answer_timeout(close, close + 90, 250, timeouts) == 31  # a degraded answer given a little late
    assert answer_timeout(close, close + 100, 250, timeouts) is None  # 25 ms left: not produced at all
    assert answer_timeout(close, close + 400, 250, timeouts) is None
