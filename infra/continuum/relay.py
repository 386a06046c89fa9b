"""A TCP relay that adds one-way delay (and jitter) to a link by scheduling, not by sleeping.

Why not a PyPI proxy: `sloww` 0.1.0 and `toxic-proxy` 0.1.0 both ``await asyncio.sleep(delay)`` before
each write of a connection's read loop, so each chunk waits for the previous one's delay: Kafka's many
small pipelined requests on one connection then pile up delays (n chunks in flight → n × delay), and
the link's throughput falls to one chunk per delay. Neither keeps a bandwidth at the delay. This relay
stamps each chunk with its arrival time and writes it at arrival + delay (+ jitter, never reordering:
a TCP stream keeps its order), so a 40 ms link adds 40 ms whatever the load; bandwidth is left to the
kernel (`tc` tbf/htb on the veth the traffic crosses).

The delay depends on who connects (peer IP → delay), so one relay in front of a site's broker gives each
other site its own path delay, and the site's own clients none. A *cut* drops every connection from
the cut peers (reset, not delay) and refuses new ones until *heal*: what a WAN cut does to a client,
which then reconnects with its back-off.

With ``upstream_netns`` the upstream connection is opened inside that network namespace: the testbed's
scrape bridges use this (no delay) to put each worker's /metrics, reachable only inside its site, on a
loopback port of this machine for a Prometheus here, without its traffic crossing the shaped links.

Run in a site's namespace: ``python -m infra.continuum.relay CONFIG.json`` where the JSON holds
``listen`` ("host:port"), ``upstream`` ("host:port"), optional ``upstream_netns``, ``delays_ms`` ({peer_ip: ms}), ``jitter_ms``
({peer_ip: ms}), ``control`` (a Unix socket path: JSON-line commands ``{"op": "cut"|"heal", "peers":
[ip...]}``, ``{"op": "stats"}``, ``{"op": "set", "delays_ms": {...}}``, which also applies to open
connections).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import random
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HIGH_WATER = 4 * 1024 * 1024  # bytes scheduled but not yet written before the source is paused
LOW_WATER = 1024 * 1024


@dataclass
class PeerStats:
    connections: int = 0
    refused: int = 0
    bytes_up: int = 0  # peer → upstream
    bytes_down: int = 0  # upstream → peer


class _Direction:
    """One direction of a relayed connection: a FIFO of (due time, chunk), one timer for its head."""

    def __init__(self, loop: asyncio.AbstractEventLoop, delay_s: float, jitter_s: float):
        self.loop, self.delay_s, self.jitter_s = loop, delay_s, jitter_s
        self.queue: collections.deque[tuple[float, bytes]] = collections.deque()
        self.queued = 0
        self.last_due = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.dst: asyncio.Transport | None = None
        self.src: asyncio.Transport | None = None
        self.eof = False
        self.paused = False
        self.closed = False

    def push(self, data: bytes) -> None:
        now = self.loop.time()
        jitter = random.uniform(-self.jitter_s, self.jitter_s) if self.jitter_s else 0.0
        due = max(now + max(self.delay_s + jitter, 0.0), self.last_due)
        self.last_due = due
        self.queue.append((due, data))
        self.queued += len(data)
        if self.queued > HIGH_WATER and self.src is not None and not self.paused:
            self.paused = True
            self.src.pause_reading()
        self._arm()

    def push_eof(self) -> None:
        self.eof = True
        if not self.queue:
            self._flush()
        # else: written after the last queued chunk

    def _arm(self) -> None:
        if self.timer is None and self.queue and self.dst is not None:
            self.timer = self.loop.call_at(self.queue[0][0], self._flush)

    def _flush(self) -> None:
        self.timer = None
        if self.closed or self.dst is None:
            return
        now = self.loop.time()
        while self.queue and self.queue[0][0] <= now:
            _, data = self.queue.popleft()
            self.queued -= len(data)
            self.dst.write(data)
        if self.paused and self.queued < LOW_WATER and self.src is not None:
            self.paused = False
            self.src.resume_reading()
        if self.queue:
            self._arm()
        elif self.eof and self.dst.can_write_eof():
            with contextlib.suppress(OSError, RuntimeError):
                self.dst.write_eof()

    def attach(self, dst: asyncio.Transport) -> None:
        self.dst = dst
        self._arm()

    def close(self) -> None:
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.queue.clear()


class _Side(asyncio.Protocol):
    """Protocol of one socket of a relayed pair; data it reads goes into its outgoing _Direction."""

    def __init__(self, conn: _Connection, out: _Direction, counter: str):
        self.conn, self.out, self.counter = conn, out, counter
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.out.src = self.transport

    def data_received(self, data: bytes) -> None:
        stats = self.conn.stats
        setattr(stats, self.counter, getattr(stats, self.counter) + len(data))
        self.out.push(data)

    def eof_received(self) -> bool:
        self.out.push_eof()
        return True  # keep the other half open until its queued data is written

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn.side_lost()


class _Connection:
    def __init__(self, relay: DelayRelay, peer: str, delay_s: float, jitter_s: float):
        loop = asyncio.get_running_loop()
        self.relay, self.peer, self.stats = relay, peer, relay.peer_stats(peer)
        self.up = _Direction(loop, delay_s, jitter_s)
        self.down = _Direction(loop, delay_s, jitter_s)
        self.client = _Side(self, self.up, "bytes_up")
        self.server: _Side | None = None
        self.closed = False

    async def open_upstream(self) -> None:
        loop = asyncio.get_running_loop()
        host, port = self.relay.upstream

        def protocol() -> _Side:
            return _Side(self, self.down, "bytes_down")

        try:
            if self.relay.upstream_netns is None:
                _, server = await loop.create_connection(protocol, host, port)
            else:  # a socket made on a thread inside that namespace lives there
                import socket

                from infra.continuum.netns import in_netns

                sock = in_netns(self.relay.upstream_netns, socket.socket, socket.AF_INET, socket.SOCK_STREAM)
                sock.setblocking(False)
                try:
                    await loop.sock_connect(sock, (host, port))
                except OSError:
                    sock.close()
                    raise
                _, server = await loop.create_connection(protocol, sock=sock)
        except OSError:
            self.close()
            return
        if self.closed:
            server.transport.abort()
            return
        self.server = server
        self.up.attach(server.transport)
        self.down.attach(self.client.transport)
        self.client.transport.resume_reading()

    def side_lost(self) -> None:
        """One socket closed: close the other once the data still delayed towards it is written."""
        loop = asyncio.get_running_loop()
        loop.call_at(max(self.up.last_due, self.down.last_due, loop.time()) + 0.001, self.close)

    def close(self, abort: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        self.relay.connections.discard(self)
        for d in (self.up, self.down):
            d.close()
        for side in (self.client, self.server):
            if side is not None and side.transport is not None:
                side.transport.abort() if abort else side.transport.close()


class DelayRelay:
    """Listen on ``listen``, relay to ``upstream`` with a per-peer one-way delay; cut/heal by peer IP."""

    def __init__(self, listen: tuple[str, int], upstream: tuple[str, int],
                 delays_ms: Mapping[str, float] | None = None, jitter_ms: Mapping[str, float] | None = None,
                 default_delay_ms: float = 0.0, upstream_netns: str | None = None):
        self.listen, self.upstream, self.upstream_netns = listen, upstream, upstream_netns
        self.delays_ms = dict(delays_ms or {})
        self.jitter_ms = dict(jitter_ms or {})
        self.default_delay_ms = default_delay_ms
        self.cut_peers: set[str] = set()
        self.connections: set[_Connection] = set()
        self.stats: dict[str, PeerStats] = {}
        self._server: asyncio.base_events.Server | None = None

    def peer_stats(self, peer: str) -> PeerStats:
        return self.stats.setdefault(peer, PeerStats())

    def _accept(self) -> asyncio.Protocol:
        relay = self

        class Accept(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                peer = transport.get_extra_info("peername")[0]
                if peer in relay.cut_peers:
                    relay.peer_stats(peer).refused += 1
                    transport.abort()  # reset: the link is down
                    self.inner = None
                    return
                conn = _Connection(relay, peer, relay.delays_ms.get(peer, relay.default_delay_ms) / 1000,
                                   relay.jitter_ms.get(peer, 0.0) / 1000)
                relay.connections.add(conn)
                relay.peer_stats(peer).connections += 1
                self.inner = conn.client
                conn.client.connection_made(transport)
                transport.pause_reading()  # until the upstream connection is open
                asyncio.get_running_loop().create_task(conn.open_upstream())

            def data_received(self, data: bytes) -> None:
                if self.inner is not None:
                    self.inner.data_received(data)

            def eof_received(self) -> bool:
                return self.inner.eof_received() if self.inner is not None else False

            def connection_lost(self, exc: Exception | None) -> None:
                if self.inner is not None:
                    self.inner.connection_lost(exc)

        return Accept()

    async def start(self) -> DelayRelay:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._accept, self.listen[0], self.listen[1], reuse_address=True)
        if self.listen[1] == 0:
            self.listen = (self.listen[0], self._server.sockets[0].getsockname()[1])
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.close(abort=True)
        if self._server is not None:
            await self._server.wait_closed()

    def cut(self, peers: list[str]) -> int:
        """Drop the peers' connections (reset) and refuse new ones; returns connections dropped."""
        self.cut_peers.update(peers)
        dropped = [c for c in self.connections if c.peer in self.cut_peers]
        for conn in dropped:
            conn.close(abort=True)
        return len(dropped)

    def heal(self, peers: list[str] | None = None) -> None:
        self.cut_peers.difference_update(self.cut_peers if peers is None else peers)

    def set_delays(self, delays_ms: Mapping[str, float], jitter_ms: Mapping[str, float] | None = None) -> None:
        """New delays for these peers, on their open connections too (a link that slows under its clients);
        a chunk is never written before the one ahead of it, so a shorter delay keeps the stream's order."""
        self.delays_ms.update(delays_ms)
        self.jitter_ms.update(jitter_ms or {})
        for conn in self.connections:
            for d in (conn.up, conn.down):
                if conn.peer in delays_ms:
                    d.delay_s = float(delays_ms[conn.peer]) / 1000
                if jitter_ms and conn.peer in jitter_ms:
                    d.jitter_s = float(jitter_ms[conn.peer]) / 1000

    def snapshot(self) -> dict[str, Any]:
        return {"listen": f"{self.listen[0]}:{self.listen[1]}", "cut": sorted(self.cut_peers),
                "connections": len(self.connections),
                "peers": {p: vars(s) for p, s in self.stats.items()}}

    def command(self, cmd: dict[str, Any]) -> dict[str, Any]:
        op = cmd.get("op")
        if op == "cut":
            return {"ok": True, "dropped": self.cut(list(cmd.get("peers", [])))}
        if op == "heal":
            self.heal(cmd.get("peers"))
            return {"ok": True}
        if op == "set":
            self.set_delays(cmd.get("delays_ms", {}), cmd.get("jitter_ms", {}))
            return {"ok": True}
        if op == "stats":
            return {"ok": True, **self.snapshot()}
        return {"ok": False, "error": f"unknown op {op!r}; use cut, heal, set or stats"}


@dataclass
class RelayConfig:
    listen: str
    upstream: str
    control: str
    delays_ms: dict[str, float] = field(default_factory=dict)
    jitter_ms: dict[str, float] = field(default_factory=dict)
    upstream_netns: str | None = None


def _hostport(text: str) -> tuple[str, int]:
    host, port = text.rsplit(":", 1)
    return host, int(port)


async def serve(cfg: RelayConfig, ready: asyncio.Event | None = None) -> None:
    """Run the relay and its control socket until SIGTERM/SIGINT."""
    relay = await DelayRelay(_hostport(cfg.listen), _hostport(cfg.upstream), cfg.delays_ms, cfg.jitter_ms,
                             upstream_netns=cfg.upstream_netns).start()

    async def control(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while line := await reader.readline():
                try:
                    reply = relay.command(json.loads(line))
                except (ValueError, TypeError) as exc:
                    reply = {"ok": False, "error": str(exc)}
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        writer.close()

    Path(cfg.control).unlink(missing_ok=True)
    ctl = await asyncio.start_unix_server(control, cfg.control)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"relay {cfg.listen} -> {cfg.upstream} ready", flush=True)
    if ready is not None:
        ready.set()
    await stop.wait()
    ctl.close()
    await relay.stop()
    Path(cfg.control).unlink(missing_ok=True)


def control_request(path: str | Path, cmd: dict[str, Any], timeout_s: float = 5.0) -> dict[str, Any]:
    """Send one JSON command to a relay's control socket and return its JSON reply."""
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        sock.connect(str(path))
        sock.sendall(json.dumps(cmd).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            buf += chunk
    return json.loads(buf)


def main(argv: list[str] | None = None) -> None:
    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 1:
        sys.exit("usage: python -m infra.continuum.relay CONFIG.json")
    cfg = RelayConfig(**json.loads(Path(args[0]).read_text()))
    asyncio.run(serve(cfg))


if __name__ == "__main__":
    main()
