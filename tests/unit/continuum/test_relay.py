"""The delay relay on loopback: delay by arrival time under load, bandwidth at the delay, cut and heal."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from infra.continuum.relay import DelayRelay


async def _stamp_server(arrivals: list[float]) -> asyncio.base_events.Server:
    """Upstream that records when each newline-framed message arrives and echoes it back."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            arrivals.append(time.monotonic())
            writer.write(line)
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def _relay_to(server: asyncio.base_events.Server, delay_ms: float, jitter_ms: float = 0.0) -> DelayRelay:
    port = server.sockets[0].getsockname()[1]
    return await DelayRelay(("127.0.0.1", 0), ("127.0.0.1", port), {"127.0.0.1": delay_ms},
                            {"127.0.0.1": jitter_ms}).start()


def test_40ms_link_adds_40ms_not_more_under_1000_pipelined_messages() -> None:
    async def run() -> tuple[np.ndarray, np.ndarray]:
        arrivals: list[float] = []
        server = await _stamp_server(arrivals)
        relay = await _relay_to(server, 40.0)
        reader, writer = await asyncio.open_connection(*relay.listen)
        sent, echoed = [], []

        async def receive() -> None:
            for _ in range(1000):
                await reader.readline()
                echoed.append(time.monotonic())

        rx = asyncio.create_task(receive())
        for i in range(1000):  # one small message every 0.5 ms: ~80 in flight on the link at any time
            sent.append(time.monotonic())
            writer.write(b"%d\n" % i)
            if i % 10 == 9:
                await asyncio.sleep(0.005)
        await asyncio.wait_for(rx, 30)
        writer.close()
        await relay.stop()
        server.close()
        return np.array(arrivals) - np.array(sent), np.array(echoed) - np.array(sent)

    one_way, rtt = asyncio.run(run())
    one_way_ms, rtt_ms = one_way * 1000, rtt * 1000
    print(f"one-way p50 {np.percentile(one_way_ms, 50):.1f} p99 {np.percentile(one_way_ms, 99):.1f} rtt p50 {np.percentile(rtt_ms, 50):.1f}")
    assert np.percentile(one_way_ms, 50) >= 39.0
    assert np.percentile(one_way_ms, 50) < 40 + 10, f"added p50 {np.percentile(one_way_ms, 50):.1f} ms"
    assert np.percentile(one_way_ms, 99) < 40 + 25, f"added p99 {np.percentile(one_way_ms, 99):.1f} ms"
    assert np.percentile(rtt_ms, 50) < 80 + 15, f"round trip p50 {np.percentile(rtt_ms, 50):.1f} ms"


def test_jitter_keeps_order_and_mean() -> None:
    async def run() -> list[bytes]:
        arrivals: list[float] = []
        server = await _stamp_server(arrivals)
        relay = await _relay_to(server, 20.0, jitter_ms=10.0)
        reader, writer = await asyncio.open_connection(*relay.listen)
        for i in range(300):
            writer.write(b"%d\n" % i)
            await asyncio.sleep(0.0005)
        lines = [await asyncio.wait_for(reader.readline(), 10) for _ in range(300)]
        writer.close()
        await relay.stop()
        server.close()
        return lines

    assert asyncio.run(run()) == [b"%d\n" % i for i in range(300)]


def test_bandwidth_is_not_limited_by_the_delay() -> None:
    """32 MB through a 40 ms relay: a sleep-per-chunk relay would move ~1.6 MB/s (64 KB per 40 ms)."""

    async def run() -> float:
        async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            total = 0
            while chunk := await reader.read(1 << 16):
                total += len(chunk)
            writer.write(b"%d\n" % total)
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(sink, "127.0.0.1", 0)
        relay = await _relay_to(server, 40.0)
        reader, writer = await asyncio.open_connection(*relay.listen)
        block = b"x" * (1 << 20)
        start = time.monotonic()
        for _ in range(32):
            writer.write(block)
            await writer.drain()
        writer.write_eof()
        total = int(await asyncio.wait_for(reader.readline(), 30))
        elapsed = time.monotonic() - start
        writer.close()
        await relay.stop()
        server.close()
        assert total == 32 << 20
        return total * 8 / elapsed / 1e6

    mbit_s = asyncio.run(run())
    print(f"{mbit_s:.0f} Mbit/s")
    assert mbit_s > 150, f"{mbit_s:.0f} Mbit/s through the relay"


def test_cut_resets_connections_and_refuses_until_heal() -> None:
    async def run() -> None:
        arrivals: list[float] = []
        server = await _stamp_server(arrivals)
        relay = await _relay_to(server, 40.0)
        reader, writer = await asyncio.open_connection(*relay.listen)
        writer.write(b"a\n")
        assert await asyncio.wait_for(reader.readline(), 5) == b"a\n"
        start = time.monotonic()
        assert relay.cut(["127.0.0.1"]) == 1
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            writer.write(b"b\n")
            line = await asyncio.wait_for(reader.readline(), 5)
            if not line:
                raise asyncio.IncompleteReadError(b"", None)
        assert time.monotonic() - start < 0.030, "a cut drops at once; it is not a delay"
        r2, w2 = await asyncio.open_connection(*relay.listen)  # accepted by the kernel, then reset
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            w2.write(b"c\n")
            if not await asyncio.wait_for(r2.readline(), 5):
                raise asyncio.IncompleteReadError(b"", None)
        assert relay.stats["127.0.0.1"].refused >= 1
        relay.heal()
        r3, w3 = await asyncio.open_connection(*relay.listen)
        w3.write(b"d\n")
        assert await asyncio.wait_for(r3.readline(), 5) == b"d\n"
        w3.close()
        await relay.stop()
        server.close()

    asyncio.run(run())


def test_control_commands() -> None:
    relay = DelayRelay(("127.0.0.1", 0), ("127.0.0.1", 1), {"10.0.0.1": 5})
    assert relay.command({"op": "cut", "peers": ["10.0.0.2"]}) == {"ok": True, "dropped": 0}
    assert relay.command({"op": "stats"})["cut"] == ["10.0.0.2"]
    assert relay.command({"op": "heal"}) == {"ok": True}
    assert relay.command({"op": "set", "delays_ms": {"10.0.0.3": 7}})["ok"]
    assert relay.delays_ms == {"10.0.0.1": 5, "10.0.0.3": 7}
    assert not relay.command({"op": "nope"})["ok"]


def test_a_new_delay_applies_to_open_connections_and_keeps_order() -> None:
    async def run() -> tuple[list[float], list[bytes]]:
        arrivals: list[float] = []
        server = await _stamp_server(arrivals)
        relay = await _relay_to(server, 20)
        reader, writer = await asyncio.open_connection(*relay.listen)
        sent, echoed = [], []
        for i, delay in enumerate((20, 150, 20)):
            relay.set_delays({"127.0.0.1": delay})
            t0 = time.monotonic()
            writer.write(f"m{i}\n".encode())
            await writer.drain()
            echoed.append(await reader.readline())
            sent.append(time.monotonic() - t0)
        writer.close()
        await relay.stop()
        server.close()
        return sent, echoed

    rtt, echoed = asyncio.run(run())
    assert echoed == [b"m0\n", b"m1\n", b"m2\n"]
    assert 0.035 < rtt[0] < 0.1 and 0.29 < rtt[1] < 0.4 and 0.035 < rtt[2] < 0.1, rtt
