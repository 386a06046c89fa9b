"""The testbed lays out sites and links, shapes them, and leaves nothing behind on any exit."""

from __future__ import annotations

import socket
import time

import pytest

from infra.continuum import testbed as testbed_mod
from infra.continuum.netns import ContinuumError, in_netns, leftovers
from infra.continuum.scenario import load_scenario
from infra.continuum.testbed import Testbed

pytestmark = pytest.mark.integration


def _round_trip_ms(host: str, port: int) -> float:
    """One byte to the broker's relay and back: a Kafka ApiVersions request would do the same."""
    with socket.create_connection((host, port), timeout=5) as sock:
        # ApiVersions v0, correlation id 1, client id "t": the broker answers, so the relay delays both ways
        body = b"\x00\x12\x00\x00\x00\x00\x00\x01\x00\x01t"
        start = time.perf_counter()
        sock.sendall(len(body).to_bytes(4, "big") + body)
        sock.recv(4)
        return (time.perf_counter() - start) * 1000


def test_layout_delays_and_clean_teardown(tmp_path) -> None:
    tb = Testbed(load_scenario("edge-fog-cloud"), tmp_path)
    with tb:
        device = tb.sites["device"].netns
        rtt = {b: in_netns(device, _round_trip_ms, tb.sites[b].address, 9092) for b in ("edge", "fog", "cloud")}
        # one-way 1, 1+5, 1+5+40 ms, both directions
        assert 2 <= rtt["edge"] < 2 + 15 and 12 <= rtt["fog"] < 12 + 15 and 92 <= rtt["cloud"] < 92 + 15, rtt
        local = in_netns(tb.sites["cloud"].netns, _round_trip_ms, tb.sites["cloud"].address, 9092)
        assert local < 10, "a site's own clients get no delay"
        assert tb.cut("fog-cloud") == 0
        with pytest.raises(OSError):
            in_netns(device, _round_trip_ms, tb.sites["cloud"].address, 9092)
        assert in_netns(device, _round_trip_ms, tb.sites["fog"].address, 9092) < 12 + 15, "other links still up"
        tb.heal("fog-cloud")
        assert in_netns(device, _round_trip_ms, tb.sites["cloud"].address, 9092) < 92 + 15
        assert set(tb.link_bytes()) == {"device-edge", "edge-fog", "fog-cloud"}
        assert tb.link_bytes()["fog-cloud"]["up"] > 0
    assert tb.down() == [] and leftovers(tb.ledger) == []


def test_failure_inside_and_during_layout_leaves_nothing(tmp_path, monkeypatch) -> None:
    tb = Testbed(load_scenario("cloud-only"), tmp_path / "a")
    with pytest.raises(RuntimeError, match="boom"), tb:
        assert tb.sites["cloud"].group.dirs()[0].exists()
        raise RuntimeError("boom")
    assert leftovers(tb.ledger) == []

    def broken() -> str:
        raise ContinuumError("no tansu here")

    import runtime.broker

    monkeypatch.setattr(runtime.broker, "tansu_binary", broken)
    tb2 = Testbed(load_scenario("edge-fog-cloud"), tmp_path / "b")
    with pytest.raises(ContinuumError, match="no tansu"):
        tb2.up()
    assert tb2.ledger.netns and leftovers(tb2.ledger) == []
    assert testbed_mod.RUN_DIR.exists()
