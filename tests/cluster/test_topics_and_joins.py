"""Topics and join notices across ``chat-broker --engine`` processes on one
real Redis, as in single-broker mode (docs/CLUSTER.md "Room topics",
docs/PROTOCOL.md "Room topics", §5.1)."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator

import pytest
import zmq

from broker.engine import EngineSettings, EngineUnavailable, Fenced, RedisEngine
from broker.engine.redis_topics import RedisTopics
from broker.topics import EngineTopics, RoomTopic
from tests.conformance.rawchat import Message, RawClient, announces_join, joined_to
from tests.conftest import BrokerProcess, spawn_broker
from tests.redis_server import RedisServer

pytestmark = pytest.mark.timeout(60)

#: How long "nothing more arrives" is watched for (a copy relayed through
#: Redis takes milliseconds).
QUIET = 1.0


@pytest.fixture
def brokers(redis_server: RedisServer) -> Iterator[Callable[[], BrokerProcess]]:
    """Start ``chat-broker --engine`` processes on ``redis_server``; all stopped at the end."""
    started: list[BrokerProcess] = []

    def start() -> BrokerProcess:
        handle = spawn_broker("--engine", redis_server.url, "--max-rate", "0")
        started.append(handle)
        return handle

    yield start
    for handle in started:
        handle.stop(signal.SIGKILL if handle.proc.poll() is None else signal.SIGTERM)


@pytest.fixture
def clients(
    zmq_ctx: zmq.Context[zmq.Socket[bytes]],
) -> Iterator[Callable[[BrokerProcess], RawClient]]:
    made: list[RawClient] = []

    def make(broker: BrokerProcess) -> RawClient:
        client = RawClient(zmq_ctx, broker.router, broker.pub)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def _joined(client: RawClient, nick: str, room: str) -> Message:
    """The handshake, returning the ``joined`` reply."""
    welcome = client.hello(nick, [room])
    assert welcome["type"] == "welcome", welcome
    client.subscribe_after_welcome(welcome, [room])
    joined = client.reply(joined_to(room))
    client.heartbeat = float(welcome["heartbeat"])
    return joined


def _topics(client: RawClient, text: str) -> int:
    """How many topic notices with ``text`` the client got, after a quiet spell."""
    client.watch(QUIET)
    return sum(m["type"] == "topic" and m["text"] == text for _, m in client.broadcasts)


def test_a_topic_lives_in_redis_every_broker_knows_it_and_it_survives_restarts(
    brokers: Callable[[], BrokerProcess], clients: Callable[[BrokerProcess], RawClient]
) -> None:
    a, b = brokers(), brokers()
    alice = clients(a)
    _joined(alice, "alice", "lobby")
    alice.send({"type": "topic", "room": "lobby", "text": "welcome all"})
    alice.broadcast(lambda m: m["type"] == "topic")
    # B never followed the room, so it never saw the notice: it reads Redis
    bob = clients(b)
    assert _joined(bob, "bob", "lobby")["topic"] == "welcome all"
    bob.send({"type": "topic", "room": "lobby"})
    reply = bob.reply_of("topic")
    assert (reply["text"], reply["nick"]) == ("welcome all", "alice")
    # a change on B reaches the members on both brokers, once each
    alice.broadcasts.clear()
    bob.broadcasts.clear()
    bob.send({"type": "topic", "room": "lobby", "text": "second"})
    assert _topics(alice, "second") == 1
    assert _topics(bob, "second") == 1
    alice.send({"type": "topic", "room": "lobby"})
    assert alice.reply_of("topic")["nick"] == "bob"
    # every broker gone (one killed, one stopped): a new one still knows it
    a.stop(signal.SIGKILL)
    b.stop()
    carol = clients(brokers())
    assert _joined(carol, "carol", "lobby")["topic"] == "second"
    # and a topic cleared on it is cleared for everyone
    carol.send({"type": "topic", "room": "lobby", "text": ""})
    carol.broadcast(lambda m: m["type"] == "topic" and m["text"] == "")
    dave = clients(brokers())
    assert _joined(dave, "dave", "lobby").get("topic", "") == ""


def test_the_first_member_of_a_room_on_a_broker_sees_its_own_join_once(
    brokers: Callable[[], BrokerProcess], clients: Callable[[BrokerProcess], RawClient]
) -> None:
    a, b = brokers(), brokers()
    alice = clients(a)
    _joined(alice, "alice", "lobby")  # the first in the whole cluster
    alice.broadcast(announces_join("alice"))
    bob = clients(b)
    _joined(bob, "bob", "lobby")  # the first on B
    bob.broadcast(announces_join("bob"))
    alice.broadcast(announces_join("bob"))
    # another room, its first member on B leaving and joining again at once:
    # the bus subscription may still be live, and the notice comes once
    for round_ in range(5):
        bob.join_room("dev")
        bob.send({"type": "part", "room": "dev"})
        bob.reply_of("parted")
        bob.join_room("dev")
        bob.watch(QUIET if round_ == 4 else 0.1)
        joins = [m for _, m in bob.broadcasts if m["room"] == "dev" and announces_join("bob")(m)]
        assert len(joins) == 2, bob.broadcasts
        bob.broadcasts.clear()
        bob.send({"type": "part", "room": "dev"})
        bob.reply_of("parted")
    # nobody saw their own or anyone's join twice in the lobby
    for client in (alice, bob):
        client.watch(QUIET)
        assert not [m for _, m in client.broadcasts if m["type"] == "join" and m["room"] == "lobby"]


def test_topic_records_are_fenced_and_unavailable_like_every_engine_write(
    redis_server: RedisServer,
) -> None:
    engine = RedisEngine.connect(redis_server.url, EngineSettings(timeout=1.0, broker_ttl=200))
    try:
        engine.register()
        topics = EngineTopics(RedisTopics.of(engine))
        assert topics.get("lobby").text == ""
        topics.set("lobby", RoomTopic(text="hi \x1b[31m", nick="alice", ts=12.5))
        assert topics.get("lobby") == RoomTopic(text="hi \x1b[31m", nick="alice", ts=12.5)
        other = RedisEngine.connect(redis_server.url, EngineSettings(prefix="other"))
        try:  # another chat on the same Redis (key prefix) does not see it
            assert EngineTopics(RedisTopics.of(other)).get("lobby").text == ""
        finally:
            other.close()
        # a broker whose lease ran out writes no topic (fencing)
        redis_server.client().zadd(engine.keys.brokers, {engine.broker_id: 0})
        with pytest.raises(Fenced):
            topics.set("lobby", RoomTopic(text="ghost", nick="alice", ts=13.0))
        assert topics.get("lobby").text == "hi \x1b[31m"
        redis_server.kill()
        with pytest.raises(EngineUnavailable):
            topics.get("lobby")
    finally:
        engine.close()


def test_a_session_resumed_on_a_broker_new_to_its_room_is_not_announced_even_there(
    redis_server: RedisServer, clients: Callable[[BrokerProcess], RawClient]
) -> None:
    def start() -> BrokerProcess:
        return spawn_broker("--engine", redis_server.url, "--engine-lease", "2")

    a, b = start(), start()
    try:
        alice = clients(a)
        welcome = alice.hello("alice", ["dev"])
        alice.subscribe_after_welcome(welcome, ["dev"])
        alice.reply(joined_to("dev"))
        a.stop(signal.SIGKILL)
        # B has nobody in dev: the resumed member is its first there, but
        # for the room it never left (docs/CLUSTER.md, sessions)
        moved = clients(b)
        answer = moved.hello("alice", ["dev"], resume=welcome["session"])
        assert answer["session"] == welcome["session"], answer
        moved.subscribe_after_welcome(answer, ["dev"])
        assert moved.reply(joined_to("dev"))["members"] == ["alice"]
        moved.watch(QUIET)
        assert not [m for _, m in moved.broadcasts if m["type"] == "join"], moved.broadcasts
    finally:
        for broker in (a, b):
            broker.stop(signal.SIGKILL if broker.proc.poll() is None else signal.SIGTERM)
