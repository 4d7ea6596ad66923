"""The cluster across hosts: Redis, two brokers and the clients each on a
host of their own, made as network namespaces by the test (tests/netns.py).

    clients (10.231.3.2, 10.231.4.2)
      |  veth, tbf            |  veth, tbf
    host a (10.231.3.1)     host b (10.231.4.1)
      |  10.231.1.2           |  10.231.2.2
      |  veth, tbf            |  veth, tbf
    redis (10.231.1.1, 10.231.2.1)

Every link is shaped with tbf (this kernel has no netem). Faults: host a's
link to Redis taken down and up again (a partition: a keeps its clients,
loses the engine), and host a deleted with everything on it. The clients
are raw protocol clients (tests/conformance/rawchat.py) whose sockets live
in the clients' namespace (:func:`tests.netns.zmq_context_in`); what they
saw goes to the shared :class:`~tests.cluster.checker.Checker`. The test
reads Redis itself over a unix socket in a temporary directory, so it
never opens a connection to any address but the namespaces' own.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
import zmq

from broker.engine import RedisEngine
from tests.chaos.checker import check, line_text, missing
from tests.cluster.checker import Checker
from tests.cluster.test_brokers import Member, _resend_until_acked
from tests.conftest import BrokerProcess, spawn_broker
from tests.jsonclient import JsonClient, start_json_client
from tests.netns import Hosts, require_root, zmq_context_in
from tests.redis_server import SCALE, redis_server_binary

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(60)]

REDIS_PORT = 6379
#: 20 Mbit/s, 10 ms of queue: a shaped LAN link.
SHAPE = ("tbf", "rate", "20mbit", "burst", "32kb", "latency", "10ms")
LEASE = "2"
#: dave's lines, at FLOOD_RATE a second: they span the whole partition
FLOOD = 100
FLOOD_RATE = 20.0


@dataclass
class Cluster:
    """The hosts, Redis, the brokers and a context in the clients' host."""

    hosts: Hosts
    directory: Path
    ctx: zmq.Context[zmq.Socket[bytes]] | None = None
    redis: subprocess.Popen[bytes] | None = None
    brokers: dict[str, BrokerProcess] = field(default_factory=dict)
    checker: Checker = field(default_factory=Checker)
    members: list[Member] = field(default_factory=list)
    clients: list[JsonClient] = field(default_factory=list)

    @property
    def socket(self) -> Path:
        return self.directory / "redis.sock"

    def start_redis(self) -> None:
        """redis-server on the redis host, on both its links and a unix socket."""
        command = [
            *self.hosts.exec("redis"), redis_server_binary(),
            "--port", str(REDIS_PORT),
            "--bind", "10.231.1.1", "10.231.2.1",
            "--protected-mode", "no",
            "--unixsocket", str(self.socket),
            "--unixsocketperm", "700",
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--maxmemory-policy", "noeviction",
            "--logfile", str(self.directory / "redis.log"),
        ]  # fmt: skip
        self.redis = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10 * SCALE
        while True:
            assert self.redis.poll() is None, "redis-server exited"
            try:
                with redis.Redis(unix_socket_path=str(self.socket), socket_timeout=1) as probe:
                    if probe.ping():
                        return
            except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
                pass  # not listening yet
            assert time.monotonic() < deadline, "redis-server did not answer in 10 s"
            time.sleep(0.02)  # polling for a condition, with a deadline

    def start_broker(self, host: str, address: str, engine: str) -> BrokerProcess:
        broker = spawn_broker(
            "--engine", f"redis://{engine}:{REDIS_PORT}/0",
            "--engine-lease", LEASE,
            "--max-rate", "0",
            "--client-timeout", "6",
            router=f"tcp://{address}:5555",
            pub=f"tcp://{address}:5556",
            prefix=self.hosts.exec(host),
        )  # fmt: skip
        self.brokers[host] = broker
        return broker

    def member(self, host: str) -> Member:
        assert self.ctx is not None
        member = Member(self.ctx, self.brokers[host], self.checker)
        self.members.append(member)
        return member

    def json_client(self, host: str, nick: str, room: str) -> JsonClient:
        """``chat-client --json`` on the clients' host, given only ``host``'s broker."""
        client = start_json_client(
            self.brokers[host].router,
            nick,
            "--room", room,
            "--drain-timeout", "30",
            prefix=self.hosts.exec("clients"),
        )  # fmt: skip
        self.clients.append(client)
        client.expect("welcome", timeout=15)
        return client

    def verify(self, rooms: list[str]) -> None:
        engine = RedisEngine.connect(f"unix://{self.socket}")
        try:
            self.checker.verify(engine, rooms)
        finally:
            engine.close()

    def close(self) -> None:
        for client in self.clients:
            client.stop()
        for member in self.members:
            member.close()
        if self.ctx is not None:
            self.ctx.term()
        for broker in self.brokers.values():
            if broker.proc.poll() is None:
                broker.stop(9)
            else:
                broker.stop()
        if self.redis is not None:
            if self.redis.poll() is None:
                self.redis.kill()
            self.redis.wait(10)


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    """Four hosts wired as in the module's drawing, Redis and a broker on
    hosts a and b; everything killed and deleted afterwards."""
    require_root()
    redis_server_binary()
    hosts = Hosts()
    # short: a unix socket's path has a limit of 107 bytes
    made = Cluster(hosts, Path(tempfile.mkdtemp(prefix="chat-hosts-")))
    try:
        hosts.add("redis", "a", "b", "clients")
        hosts.wire(("redis", "r-a", "10.231.1.1"), ("a", "a-r", "10.231.1.2"), SHAPE)
        hosts.wire(("redis", "r-b", "10.231.2.1"), ("b", "b-r", "10.231.2.2"), SHAPE)
        hosts.wire(("a", "a-c", "10.231.3.1"), ("clients", "c-a", "10.231.3.2"), SHAPE)
        hosts.wire(("b", "b-c", "10.231.4.1"), ("clients", "c-b", "10.231.4.2"), SHAPE)
        made.start_redis()
        made.start_broker("a", "10.231.3.1", "10.231.1.1")
        made.start_broker("b", "10.231.4.1", "10.231.2.1")
        made.ctx = zmq_context_in(hosts.names["clients"])
        yield made
    finally:
        try:
            made.close()
        finally:
            hosts.close()
            shutil.rmtree(made.directory, ignore_errors=True)


def _leaves(member: Member) -> list[tuple[str, str]]:
    return [(n["nick"], n.get("reason", "")) for n in member.notices if n["type"] == "leave"]


def test_a_broker_cut_off_from_redis_refuses_is_reaped_and_comes_back_fenced(
    cluster: Cluster,
) -> None:
    alice, bob = cluster.member("a"), cluster.member("b")
    alice.join("alice", ["lobby"])
    bob.join("bob", ["lobby"])
    _resend_until_acked(alice, "lobby", "before", "k0")
    bob.until(lambda: [m["text"] for m in bob.lines] == ["before"])
    # and real clients: dave on a floods (through the partition), erin on b reads
    erin = cluster.json_client("b", "erin", "flood")
    dave = cluster.json_client("a", "dave", "flood")
    sent = {"dave": [line_text("dave", n) for n in range(FLOOD)]}
    feeder = threading.Thread(target=_feed, args=(dave, sent["dave"]), daemon=True)
    feeder.start()
    _eventually(lambda: _shown(erin) >= 10, 10, "erin shows dave's first lines")

    cluster.hosts.down("a", "a-r")  # the partition: a keeps its clients only
    cut = time.monotonic()
    alice.say("lobby", "during", key="k1")
    error = alice.raw.error("unavailable", timeout=10 * SCALE)
    assert (error["req"], error["key"]) == ("say", "k1")
    # b's reaper: a's lease lapsed, alice leaves (timeout), once
    bob.until(lambda: bool(_leaves(bob)), timeout=10 * SCALE)
    reaped = time.monotonic() - cut
    print(f"\npartitioned broker reaped after {reaped:.1f} s")
    assert reaped < 10 * SCALE
    assert _leaves(bob) == [("alice", "timeout")]
    # alice is still connected to a: her pings are answered
    alice.raw.send({"type": "ping"})
    assert alice.raw.reply_of("pong")["type"] == "pong"
    alice.say("lobby", "during", key="k1")
    assert alice.raw.error("unavailable", timeout=10 * SCALE)["key"] == "k1"

    cluster.hosts.up("a", "a-r")  # healed: a finds its lease gone, re-registers
    cluster.brokers["a"].wait_for_log("lease expired", timeout=15)
    codes = _resend_until_acked(alice, "lobby", "during", "k1")
    assert set(codes) <= {"unavailable"}, codes
    _resend_until_acked(alice, "lobby", "after", "k2")
    bob.until(lambda: [m["text"] for m in bob.lines] == ["before", "during", "after"])
    alice.until(lambda: [m["text"] for m in alice.lines][-2:] == ["during", "after"])
    # alice was won back through the fenced path: she is in again, left once
    assert any(n["type"] == "join" and n["nick"] == "alice" for n in bob.notices)
    bob.collect(1.0)
    assert _leaves(bob) == [("alice", "timeout")]
    bob.raw.send({"type": "who", "room": "lobby"})
    assert sorted(bob.raw.reply_of("who")["members"]) == ["alice", "bob"]
    # the real client rode it out: every line it had acknowledged, once
    _eventually(lambda: dave.proc.poll() is not None, 40, "dave sent everything and exited")
    assert dave.proc.returncode == 0, "".join(dave.errors)
    _eventually(lambda: missing(sent, {"dave": dave.log}, erin.log) == 0, 15, "erin has all")
    erin.end_input()
    erin.wait(15)
    figures = check(sent, {"dave": list(dave.log)}, {"erin": list(erin.log)})
    print(f"\nflood through the partition: {figures.summary()}")
    assert figures.acknowledged == FLOOD and figures.ok, figures.problems
    cluster.verify(["lobby", "flood"])  # no ghost line: each acknowledged line once


def _shown(client: JsonClient) -> int:
    return sum(1 for e in list(client.log) if e.get("type") == "message")


def _eventually(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout * SCALE
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.05)  # polling for a condition, with a deadline


def _feed(client: JsonClient, texts: list[str]) -> None:
    start = time.monotonic()
    try:
        for n, text in enumerate(texts):
            time.sleep(max(0.0, start + n / FLOOD_RATE - time.monotonic()))  # paced
            client.send(text)
        client.end_input()
    except (BrokenPipeError, ValueError):
        pass  # the client died: the checker counts what is missing


def test_a_broker_host_deleted_its_members_leave_once_and_nicks_are_free(
    cluster: Cluster,
) -> None:
    alice, carol, bob = cluster.member("a"), cluster.member("a"), cluster.member("b")
    alice.join("alice", ["lobby"])
    carol.join("carol", ["lobby"])
    bob.join("bob", ["lobby"])
    bob.raw.send({"type": "who", "room": "lobby"})
    assert sorted(bob.raw.reply_of("who")["members"]) == ["alice", "bob", "carol"]
    _resend_until_acked(alice, "lobby", "hello from a", "k0")

    cluster.hosts.remove("a")  # every process on it killed, its links gone
    gone = time.monotonic()
    bob.until(lambda: {nick for nick, _ in _leaves(bob)} == {"alice", "carol"}, timeout=10 * SCALE)
    reaped = time.monotonic() - gone
    print(f"\ndeleted host's members left after {reaped:.1f} s")
    assert reaped < 10 * SCALE
    bob.collect(1.5 * SCALE)  # another reaper round announces nobody twice
    assert sorted(_leaves(bob)) == [("alice", "timeout"), ("carol", "timeout")]
    again = cluster.member("b")
    assert again.join("ALICE", ["lobby"])["type"] == "welcome"
    bob.raw.send({"type": "who", "room": "lobby"})
    assert sorted(bob.raw.reply_of("who")["members"]) == ["ALICE", "bob"]
    cluster.verify(["lobby"])
