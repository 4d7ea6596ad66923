"""The core's parts keep one contract in both modes (broker/rooms.py,
broker/ledger.py, broker/directory.py): the same checks run on the parts of
a SQLite-mode core and on those of a cluster core on a real Redis.

Where the two differ by design, the test says how: the engine numbers a line
when the shell settles the turn (the local ledger at once), and de-duplicates
keys itself (the local ledger through ``say_keys``, as the core reads it).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
import zmq

from broker.actions import Action, Send
from broker.core import BrokerConfig, BrokerCore
from broker.sessions import Session
from protocol import Ack, Joined, Say

pytestmark = pytest.mark.timeout(60)


@dataclass
class Parts:
    core: BrokerCore
    #: Runs a turn's actions as the loop would (the shell in cluster mode).
    settle: Callable[[list[Action]], list[Action]]


@pytest.fixture(params=["sqlite", "redis"])
def parts(request: pytest.FixtureRequest) -> Iterator[Parts]:
    if request.param == "sqlite":
        yield Parts(BrokerCore(BrokerConfig(max_rate=0)), lambda actions: actions)
        return
    from broker.cluster import ClusterShell
    from broker.engine import EngineSettings, RedisEngine

    redis_server = request.getfixturevalue("redis_server")
    ctx: zmq.Context[zmq.Socket[bytes]] = request.getfixturevalue("zmq_ctx")
    shell = ClusterShell(RedisEngine.connect(redis_server.url, EngineSettings(timeout=1.0)))
    core = shell.make_core(BrokerConfig(max_rate=0), ctx)
    try:
        yield Parts(core, shell.settle)
    finally:
        shell.close()


def _session(nick: str) -> Session:
    return Session(identity=nick.encode(), nick=nick, token=f"token-{nick}", last_seen=0.0)


def _joined(actions: list[Action], session: Session) -> Joined:
    [joined] = [
        a.message for a in actions if isinstance(a, Send) and a.identity == session.identity
    ]
    assert isinstance(joined, Joined), joined
    return joined


def test_rooms_membership_and_numbering(parts: Parts) -> None:
    rooms = parts.core.rooms
    alice, bob = _session("alice"), _session("bob")
    first = _joined(parts.settle(rooms.enter(alice, "lobby", 1.0)), alice)
    assert (first.room, first.members, first.seq) == ("lobby", ["alice"], 0)
    assert first.epoch and first.epoch == rooms.epoch("lobby")
    second = _joined(parts.settle(rooms.enter(bob, "lobby", 2.0)), bob)
    assert second.members == ["alice", "bob"]
    assert rooms.joined("lobby").members == ["alice", "bob"]
    assert rooms.who("lobby").members == ["alice", "bob"]
    assert [(r.room, r.members) for r in rooms.listing()] == [("lobby", 2)]
    assert alice.rooms == bob.rooms == {"lobby"}
    assert "lobby" in rooms.by_name
    parts.settle(rooms.leave(alice, "lobby", "part", 3.0))
    assert alice.rooms == set()
    assert rooms.who("lobby").members == ["bob"]
    parts.settle(rooms.leave(bob, "lobby", "exit", 4.0))
    assert rooms.listing() == [] and "lobby" not in rooms.by_name
    assert rooms.who("lobby").members == []


def test_ledger_numbers_stores_acks_and_never_records_a_key_twice(parts: Parts) -> None:
    core = parts.core
    alice = _session("alice")
    parts.settle(core.rooms.enter(alice, "lobby", 1.0))
    acks: list[Ack] = []

    def say(text: str, key: str) -> None:
        # as the core does: a key the ledger remembers is answered at once
        earlier = core.ledger.say_keys.get(key)
        request = Say(room="lobby", text=text, key=key)
        out = (
            [Send(alice.identity, earlier)]
            if earlier
            else core.ledger.record(alice, "lobby", request, 2.0)
        )
        acks.extend(
            a.message
            for a in parts.settle(out)
            if isinstance(a, Send) and isinstance(a.message, Ack)
        )

    for n in range(3):
        say(f"line {n}", f"k{n}")
    say("line 1", "k1")  # a resend
    assert [(a.key, a.seq) for a in acks] == [("k0", 1), ("k1", 2), ("k2", 3), ("k1", 2)]
    assert acks[3] == acks[1]  # the original ack: its id is the stored line's
    reply = core.ledger.fetch("lobby", 0, None, 10, False)
    assert [(m.seq, m.text, m.nick) for m in reply.messages] == [
        (1, "line 0", "alice"),
        (2, "line 1", "alice"),
        (3, "line 2", "alice"),
    ]
    assert reply.missed == 0 and reply.epoch == core.rooms.epoch("lobby")
    assert [m.seq for m in core.ledger.fetch("lobby", 0, None, 2, True).messages] == [1, 2]
    assert core.ledger.next_id() != core.ledger.next_id()


def test_directory_claims_and_forgets(parts: Parts) -> None:
    directory = parts.core.directory
    alice = _session("alice")
    assert directory.claim("alice", alice.token)
    directory.save(alice)
    assert directory.locate("nobody") is None
    directory.drop(alice)
    assert directory.claim("ALICE", "another-token")  # free again, case-insensitively


def test_one_request_path_for_both_modes(parts: Parts) -> None:
    """The core decides a ``say`` the same way in both modes: the refusals
    come from the one validation, before any part is asked."""
    core = parts.core
    [welcome] = core.handle(
        b"A",
        [json.dumps({"type": "hello", "v": 1, "nick": "alice", "rooms": ["lobby"]}).encode()],
        1.0,
    )
    token = welcome.message.session  # type: ignore[union-attr]
    parts.settle(core.subscribed(b"\x01sync/" + token.encode() + b"/0/", 1.0))
    for bad, code in (
        ({"room": "elsewhere", "text": "x"}, "not_in_room"),
        ({"room": "lobby", "text": "   "}, "text_empty"),
        ({"room": "lobby", "text": "x", "key": ""}, "key_invalid"),
    ):
        [error] = core.handle(b"A", [json.dumps({"type": "say", **bad}).encode()], 2.0)
        assert error.message.code == code, (bad, error)  # type: ignore[union-attr]
