"""The commit ledger: offsets commit only for the acknowledged, resolved prefix of batches."""

from __future__ import annotations

import pytest

from runtime.ledger import BrokerRejected, CommitLedger


def test_offsets_wait_for_acks_and_for_forwarded_requests_to_be_answered():
    ledger = CommitLedger()
    first, second = ledger.open(2), ledger.open(1)
    first.consumed("in", 0, 4)
    first.consumed("in", 0, 5)
    second.consumed("in", 0, 6)
    for b in (first, second):
        b.outstanding, b.published = 1, True
    first.unresolved = 1
    assert ledger.take_done() == {} and ledger.unacknowledged() == 2
    first.delivered(None, None)
    second.delivered(None, None)
    assert ledger.take_done() == {}  # the first batch still has a forward nobody answered
    assert ledger.unacknowledged() == 0
    first.unresolved = 0
    assert ledger.take_done() == {("in", 0): 7}
    assert len(ledger) == 0


def test_a_rejected_output_keeps_its_batch_uncommitted():
    class Msg:
        def topic(self):
            return "out"

    ledger = CommitLedger()
    b = ledger.open(1)
    b.consumed("in", 1, 0)
    b.outstanding, b.published = 1, True
    b.delivered("MSG_SIZE_TOO_LARGE", Msg())
    with pytest.raises(BrokerRejected, match="out: MSG_SIZE_TOO_LARGE"):
        ledger.take_done()
    assert len(ledger) == 1


def test_the_in_flight_bound_counts_unacknowledged_batches_only_whatever_waits_for_forwards():
    ledger = CommitLedger()
    held = [ledger.open(1) for _ in range(500)]  # acknowledged, each waiting for a forward's answer
    for b in held:
        b.published, b.unresolved = True, 1
    late, early = ledger.open(1), ledger.open(1)
    late.outstanding = early.outstanding = 1
    late.published = early.published = True
    early.delivered(None, None)  # acknowledged out of order
    assert ledger.unacknowledged() == 1
    assert ledger.oldest_unacknowledged() is late
    late.delivered(None, None)
    assert ledger.unacknowledged() == 0 and ledger.oldest_unacknowledged() is None
    assert ledger.take_done() == {} and len(ledger) == 502  # nothing commits before the forwards are answered
