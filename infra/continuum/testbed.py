"""Lay out a scenario on one Linux machine: sites as network namespaces, links as shaped veth pairs,
one-way delay in a relay in front of each site's broker, compute per site through the cpu cgroup.

Addressing (only inside the namespaces created here, so two testbeds may reuse it): link ``i`` of the
chain is ``10.201.i.0/24``, ``.1`` on the site nearer the device, ``.2`` on the other; every site
forwards, so any site reaches any other across the links in between, and a packet crosses (and is
shaped by) every link of its path. A site's address is its address on the link towards the device.

A Prometheus on this machine cannot reach the workers' /metrics inside the namespaces. With an
``announce_home`` (the local stack's home) each worker gets a scrape bridge: a relay in this machine's
namespace on a free loopback port whose upstream connection opens inside the worker's site, announced
to that stack's Prometheus by file-based service discovery (`runtime.scrape_targets`, labels of the
worker plus ``site`` and ``scenario``). Scrapes cross no emulated link, so they cost no shaped bandwidth
and leave the link byte counts alone; the bridges' CPU is their own helper group.

A site with a broker runs tansu on ``127.0.0.1:9093`` inside its namespace and the delay relay on
``<site address>:9092`` (the advertised listener); the relay gives each other site its path's one-way
delay by source address and the site itself none. Bandwidth is the kernel's job: ``tbf`` on each
veth end's egress (``rate_up`` on the end nearer the device). Cutting a link resets and refuses, at
every relay, the connections whose path crosses it.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.continuum.launcher import SiteWorker
from infra.continuum.netns import (
    ContinuumError,
    CpuGroup,
    Ledger,
    in_netns,
    leftovers,
    require_root,
    sh,
    spawn,
    stop_pid,
)
from infra.continuum.relay import control_request
from infra.continuum.scenario import Link, Scenario
from runtime.localhost import port_open
from runtime.settings import KafkaSettings, Settings, WorkerSettings

BROKER_PORT = 9092  # relay (advertised listener)
TANSU_PORT = 9093  # the broker itself, on the site's loopback
RUN_DIR = Path("/run/tierflow-continuum")  # short paths: Unix control sockets are limited to 108 bytes
HTTP_PORT = 9100


@dataclass
class Site:
    name: str
    index: int
    netns: str
    ips: list[str]
    group: CpuGroup

    @property
    def address(self) -> str:
        return self.ips[0]


class Testbed:
    """One scenario laid out; ``with Testbed(...) as tb:`` tears everything down on any exit."""

    __test__ = False  # not a pytest class

    def __init__(self, scenario: Scenario, work_dir: Path, run_id: str | None = None,
                 announce_home: Path | None = None):
        self.scenario = scenario
        self.work_dir = Path(work_dir)
        self.run_id = run_id or uuid.uuid4().hex[:4]
        self.ledger = Ledger(self.run_id, state_path=self.work_dir / "state.json")
        self.sites: dict[str, Site] = {}
        self.link_devs: dict[str, tuple[str, str]] = {}  # link name -> (veth on a, veth on b)
        self.relays: dict[str, Path] = {}  # site -> control socket
        self.helpers: dict[str, CpuGroup] = {}
        self.workers: dict[str, SiteWorker] = {}
        self.cut_links: set[str] = set()
        self.announce_home = announce_home  # a local stack's home: its Prometheus scrapes the workers
        self.bridges: dict[str, tuple[int, str]] = {}  # tier -> (scrape bridge pid, target name)

    # ---- layout ------------------------------------------------------------------------------------

    def up(self) -> Testbed:
        require_root()
        try:
            self._sites()
            self._links()
            self._brokers()
        except BaseException:
            self.down()
            raise
        return self

    def _sites(self) -> None:
        prof = self.scenario.profile
        for i, name in enumerate(prof.sites):
            ns = f"tf{self.run_id}-{name}"
            ips = ([f"10.201.{i - 1}.2"] if i > 0 else []) + ([f"10.201.{i}.1"] if i < len(prof.links) else [])
            group = CpuGroup(f"{self.run_id}-{name}", self.scenario.cores(name))
            self.ledger.add_group(group)
            group.create(limit=False)  # the quota applies once its workers are ready (see start_workers)
            self.ledger.add_netns(ns)
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            self.sites[name] = Site(name, i, ns, ips, group)
        for kind in ("broker", "relay", "load", "scrape"):
            self.helpers[kind] = CpuGroup(f"{self.run_id}-{kind}")
            self.ledger.add_group(self.helpers[kind])
            self.helpers[kind].create()

    def _links(self) -> None:
        prof = self.scenario.profile
        for i, link in enumerate(prof.links):
            a, b = self.sites[link.a], self.sites[link.b]
            va, vb = f"tf{self.run_id}{i}a", f"tf{self.run_id}{i}b"
            sh("ip", "link", "add", "name", va, "netns", a.netns, "type", "veth", "peer", "name", vb, "netns", b.netns)
            self.link_devs[link.name] = (va, vb)
            for site, dev, addr, rate in ((a, va, f"10.201.{i}.1", link.up_mbit),
                                          (b, vb, f"10.201.{i}.2", link.down_mbit)):
                sh("ip", "-n", site.netns, "addr", "add", f"{addr}/24", "dev", dev)
                sh("ip", "-n", site.netns, "link", "set", dev, "up")
                burst = max(16_000, int(rate * 1e6 / 8 / 100))  # 10 ms of the rate, at least a few packets
                sh("tc", "-n", site.netns, "qdisc", "add", "dev", dev, "root", "tbf", "rate", f"{rate}mbit",
                   "burst", str(burst), "latency", "400ms")
        n = len(prof.links)
        for k, site in enumerate(self.sites.values()):
            for j in range(n):
                if j == k or j == k - 1:
                    continue  # directly attached
                via = f"10.201.{k}.2" if j > k else f"10.201.{k - 1}.1"
                sh("ip", "-n", site.netns, "route", "add", f"10.201.{j}.0/24", "via", via)

    def _brokers(self) -> None:
        from runtime.broker import tansu_binary

        RUN_DIR.mkdir(parents=True, exist_ok=True)
        prof = self.scenario.profile
        for name in self.scenario.brokers:
            site = self.sites[name]
            url = f"tcp://127.0.0.1:{TANSU_PORT}"
            adv = f"tcp://{site.address}:{BROKER_PORT}"
            proc = spawn(site.netns, self.helpers["broker"],
                         [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", adv,
                          "--storage-engine", "memory://tansu/"], self.work_dir / "logs" / f"broker-{name}.log",
                         env={"RUST_LOG": "warn", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
            self.ledger.add_pid(proc.pid)
            delays, jitters = {"127.0.0.1": 0.0}, {}
            for other in self.sites.values():
                for ip in other.ips:
                    delays[ip] = prof.delay_ms(other.name, name)
                    jitters[ip] = prof.jitter_ms(other.name, name)
            ctl = RUN_DIR / f"{self.run_id}-{name}.sock"
            cfg = self.work_dir / f"relay-{name}.json"
            cfg.write_text(json.dumps({"listen": f"{site.address}:{BROKER_PORT}", "upstream": f"127.0.0.1:{TANSU_PORT}",
                                       "control": str(ctl), "delays_ms": delays, "jitter_ms": jitters}))
            self.ledger.files.append(str(ctl))
            import sys

            relay = spawn(site.netns, self.helpers["relay"], [sys.executable, "-m", "infra.continuum.relay", str(cfg)],
                          self.work_dir / "logs" / f"relay-{name}.log", env=_child_env())
            self.ledger.add_pid(relay.pid)
            self.relays[name] = ctl
        for name in self.scenario.brokers:
            site = self.sites[name]
            self._wait(lambda s=site: in_netns(s.netns, port_open, "127.0.0.1", TANSU_PORT), f"broker at {name}")
            self._wait(lambda s=site: in_netns(s.netns, port_open, s.address, BROKER_PORT) and
                       Path(self.relays[s.name]).exists(), f"relay at {name}")

    def _wait(self, probe: Any, what: str, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if probe():
                return
            time.sleep(0.05)
        raise ContinuumError(f"{what} did not come up within {timeout_s:.0f}s (logs in {self.work_dir / 'logs'})")

    # ---- the application ---------------------------------------------------------------------------

    def bootstrap(self, site: str) -> str:
        if site not in self.scenario.brokers:
            raise ContinuumError(f"site {site!r} has no broker in scenario {self.scenario.name!r}")
        return f"{self.sites[site].address}:{BROKER_PORT}"

    def settings(self, app: str | None = None, **worker: Any) -> Settings:
        """Settings for an application on this layout: APP.results on the results site's broker, each
        tier consuming from its own site's broker. Clients reconnect within a second after a cut heals."""
        sc = self.scenario
        kafka = KafkaSettings(
            bootstrap=self.bootstrap(sc.results),
            tier_bootstrap={t: self.bootstrap(s) for t, s in sc.tiers.items()},
            extra={"reconnect.backoff.ms": "50", "reconnect.backoff.max.ms": "1000"})
        return Settings(app=app or f"cn{uuid.uuid4().hex[:8]}", home=self.work_dir, kafka=kafka,
                        worker=WorkerSettings(**worker))

    def start_workers(self, settings: Settings, bundle: str | Path, timeout_s: float = 180.0) -> dict[str, SiteWorker]:
        """One worker per tier in its site (downstream tiers first, as a rollout does); waits for /readyz."""
        env = _child_env()
        for tier in reversed(self.scenario.tier_names):
            site = self.sites[self.scenario.site_of(tier)]
            w = SiteWorker(settings, tier, str(bundle), self.work_dir / "logs", netns=site.netns, group=site.group,
                           http_port=HTTP_PORT + len(self.workers), env=env)
            w.start()
            self.ledger.add_pid(w.proc.pid)
            self.workers[tier] = w
            if self.announce_home is not None:
                self._bridge(w, site)
        for w in self.workers.values():
            w.wait_ready(timeout_s)
        self.limit_cpu()
        return self.workers

    def _bridge(self, w: SiteWorker, site: Site) -> None:
        """Put the worker's /metrics on a loopback port here and announce it (see the module docstring)."""
        import sys

        from runtime import scrape_targets
        from runtime.localhost import free_port

        port = free_port()
        ctl = RUN_DIR / f"{self.run_id}-scrape-{w.tier}.sock"
        cfg = self.work_dir / f"scrape-{w.tier}.json"
        cfg.write_text(json.dumps({"listen": f"127.0.0.1:{port}", "upstream": f"127.0.0.1:{w.http_port}",
                                   "upstream_netns": site.netns, "control": str(ctl)}))
        self.ledger.files.append(str(ctl))
        proc = spawn(None, self.helpers["scrape"], [sys.executable, "-m", "infra.continuum.relay", str(cfg)],
                     self.work_dir / "logs" / f"scrape-{w.tier}.log", env=_child_env())
        self.ledger.add_pid(proc.pid)
        self._wait(lambda: port_open("127.0.0.1", port), f"scrape bridge of the {w.tier} worker")
        name = f"{w.settings.app}-continuum-{self.run_id}-{w.tier}"
        path = scrape_targets.register(self.announce_home, name, f"127.0.0.1:{port}",
                                       {**w.target_labels, "site": site.name, "scenario": self.scenario.name})
        self.ledger.files.append(str(path))
        self.ledger.save()
        self.bridges[w.tier] = (proc.pid, name)

    def limit_cpu(self) -> None:
        """Apply each site's core quota. Workers start unlimited, because importing TensorFlow at a quarter
        core takes four times as long and tells nothing about serving."""
        for site in self.sites.values():
            site.group.limit()

    def stop_workers(self) -> None:
        for w in self.workers.values():
            w.signal(15)
        for w in self.workers.values():
            w.stop(30)
        from runtime import scrape_targets

        for pid, name in self.bridges.values():  # withdrawn with their workers, not left as targets down
            scrape_targets.unregister(self.announce_home, name)
            stop_pid(pid)
        self.bridges.clear()

    # ---- faults ------------------------------------------------------------------------------------

    def _crossing(self, link: Link, relay_site: str) -> list[str]:
        prof = self.scenario.profile
        return [ip for s in self.sites.values() if link in prof.path(s.name, relay_site) for ip in s.ips]

    def link(self, name: str) -> Link:
        for link in self.scenario.profile.links:
            if name in (link.name, f"{link.b}-{link.a}"):
                return link
        raise ContinuumError(f"no link {name!r}; links are {[x.name for x in self.scenario.profile.links]}")

    def cut(self, name: str) -> int:
        """Drop (reset) every connection across the link and refuse new ones; returns connections dropped."""
        link = self.link(name)
        self.cut_links.add(link.name)
        return sum(control_request(ctl, {"op": "cut", "peers": self._crossing(link, site)})["dropped"]
                   for site, ctl in self.relays.items())

    def heal(self, name: str) -> None:
        link = self.link(name)
        self.cut_links.discard(link.name)
        for site, ctl in self.relays.items():
            still_cut = {ip for other in self.cut_links for ip in self._crossing(self.link(other), site)}
            control_request(ctl, {"op": "heal", "peers": [ip for ip in self._crossing(link, site)
                                                          if ip not in still_cut]})

    def set_delay(self, name: str, delay_ms: float) -> None:
        """Change a link's one-way delay under load: every relay's delay for each peer whose path crosses it,
        on the open connections too."""
        link = self.link(name)
        link.delay_ms = float(delay_ms)
        link.jitter_ms = min(link.jitter_ms, link.delay_ms)
        prof = self.scenario.profile
        for site, ctl in self.relays.items():
            delays = {ip: prof.delay_ms(other.name, site) for other in self.sites.values() for ip in other.ips}
            control_request(ctl, {"op": "set", "delays_ms": delays})

    def set_cores(self, site: str, cores: float) -> None:
        """Change a site's core quota under load (e.g. halve the cloud's)."""
        self.sites[site].group.limit(cores)

    # ---- measurements ------------------------------------------------------------------------------

    def link_bytes(self) -> dict[str, dict[str, int]]:
        """Bytes on the wire of each link so far (IP packets incl. headers), up (towards the cloud) and down."""
        out = {}
        for link in self.scenario.profile.links:
            va, _ = self.link_devs[link.name]
            stats = json.loads(sh("ip", "-n", self.sites[link.a].netns, "-j", "-s", "link", "show", "dev", va))
            s64 = stats[0]["stats64"]
            out[link.name] = {"up": int(s64["tx"]["bytes"]), "down": int(s64["rx"]["bytes"])}
        return out

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds per site cgroup (tier workers) and per helper kind (brokers, relays, load)."""
        out = {name: site.group.usage_s() for name, site in self.sites.items()}
        out.update({f"({kind})": g.usage_s() for kind, g in self.helpers.items()})
        return out

    def throttled_seconds(self) -> dict[str, float]:
        return {name: site.group.throttled_s() for name, site in self.sites.items()}

    # ---- teardown ----------------------------------------------------------------------------------

    def down(self) -> list[str]:
        """Stop workers gracefully, then everything the ledger recorded. Returns what is left (empty)."""
        with contextlib.suppress(Exception):
            self.stop_workers()
        problems = self.ledger.teardown()
        left = leftovers(self.ledger) + [f"veth {va}" for va, _ in self.link_devs.values()
                                         if sh("ip", "link", "show", va, check=False)]
        return problems + left

    def __enter__(self) -> Testbed:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        left = self.down()
        if left:
            raise ContinuumError(f"teardown left: {left}")


def _child_env() -> dict[str, str]:
    import os

    root = str(Path(__file__).resolve().parents[2])
    return {**os.environ, "PYTHONPATH": root + (":" + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH")
                                                  else "")}


def down_all(home: Path) -> list[str]:
    """Tear down every testbed whose state file is under ``home`` (what `continuum up --detach` left)."""
    problems = []
    for state in sorted(home.glob("continuum/*/state.json")):
        ledger = Ledger.load(state)
        problems += ledger.teardown() + leftovers(ledger)
    return problems
