"""Several ``chat-broker`` processes on one real Redis: one chat (docs/CLUSTER.md).

Every test starts its own redis-server and brokers (``--engine``), drives
raw protocol clients (tests/conformance/rawchat.py) and hands what they saw
to the one shared :class:`~tests.cluster.checker.Checker`.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator

import pytest
import zmq

from broker.engine import RedisEngine
from tests.cluster.checker import Checker
from tests.conformance.rawchat import WAIT, Message, RawClient
from tests.conftest import BrokerProcess, spawn_broker
from tests.redis_server import RedisServer

pytestmark = pytest.mark.timeout(60)


class Member:
    """A raw client of one broker whose observations go to the checker."""

    def __init__(
        self, ctx: zmq.Context[zmq.Socket[bytes]], broker: BrokerProcess, checker: Checker
    ) -> None:
        self.raw = RawClient(ctx, broker.router, broker.pub)
        self.checker = checker
        self.name = ""
        self.lines: list[Message] = []
        self.notices: list[Message] = []
        self._taken = 0

    def join(self, nick: str, rooms: list[str]) -> Message:
        self.name = nick
        welcome = self.raw.join(nick, rooms)
        return welcome

    def joined(self, room: str) -> None:
        raise NotImplementedError

    def collect(self, seconds: float = 0.0) -> None:
        """Move what arrived into lines/notices (and the checker)."""
        self.raw.watch(seconds) if seconds else self.raw._pump(0)
        for _, message in self.raw.broadcasts:
            if message["type"] == "message":
                self.lines.append(message)
                self.checker.line(self.name, message)
            else:
                self.notices.append(message)
        self.raw.broadcasts.clear()
        for message in self.raw.replies:
            if message.get("type") == "ack":
                self.checker.ack(message)
            elif message.get("type") == "joined":
                self.checker.joined(self.name, message)
        self.raw.replies = [m for m in self.raw.replies if m.get("type") not in {"ack", "joined"}]

    def until(self, done: Callable[[], bool], timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, f"{self.name}: timed out; {self.lines[-3:]}"
            self.collect(0.05)

    def say(self, room: str, text: str, key: str | None = None) -> None:
        message: Message = {"type": "say", "room": room, "text": text}
        if key is not None:
            message["key"] = key
        self.raw.send(message)

    def close(self) -> None:
        self.raw.close()


@pytest.fixture
def cluster(
    redis_server: RedisServer,
) -> Iterator[Callable[..., BrokerProcess]]:
    """Start ``chat-broker --engine`` processes on ``redis_server``; all stopped at the end."""
    started: list[BrokerProcess] = []

    def start(*args: str) -> BrokerProcess:
        handle = spawn_broker(
            "--engine", redis_server.url, "--max-rate", "0", "--client-timeout", "6", *args
        )
        started.append(handle)
        return handle

    yield start
    for handle in started:
        if handle.proc.poll() is None:
            handle.stop(signal.SIGKILL)
        else:
            handle.stop()


@pytest.fixture
def ctx() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    context.linger = 0
    yield context
    context.term()


@pytest.fixture
def members(ctx: zmq.Context[zmq.Socket[bytes]]) -> Iterator[Callable[..., Member]]:
    made: list[Member] = []
    checker = Checker()

    def make(broker: BrokerProcess) -> Member:
        member = Member(ctx, broker, checker)
        made.append(member)
        return member

    make.checker = checker  # type: ignore[attr-defined]
    yield make
    for member in made:
        member.close()


def test_clients_on_two_brokers_share_one_room_in_one_order(
    cluster: Callable[..., BrokerProcess],
    members: Callable[..., Member],
    redis_server: RedisServer,
) -> None:
    a, b = cluster(), cluster()
    alice, bob = members(a), members(b)
    alice.join("alice", ["lobby"])
    bob.join("bob", ["lobby"])
    alice.until(lambda: any(n.get("nick") == "bob" for n in alice.notices))
    for n in range(20):
        alice.say("lobby", f"a{n}", key=f"ka{n}")
        bob.say("lobby", f"b{n}", key=f"kb{n}")
    for member in (alice, bob):
        member.until(lambda m=member: len(m.lines) == 40)  # type: ignore[misc]
    assert [m["id"] for m in alice.lines] == [m["id"] for m in bob.lines]
    assert [m["seq"] for m in alice.lines] == list(range(1, 41))
    alice.until(lambda: len(alice.checker.acks) == 40)
    engine = RedisEngine.connect(redis_server.url)
    try:
        alice.checker.verify(engine, ["lobby"])
    finally:
        engine.close()
