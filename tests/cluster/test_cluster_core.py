"""The cluster core and shell in-process, on a real Redis, with the time and
the order of events in the test's hands (broker/cluster.py).

No broker loop and no client sockets: the test calls what the loop calls
(``handle``, ``subscribed``, ``settle``, ``pump``, ``timers``) and looks at
the actions, so each fault lands at an exact point of a turn.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import zmq

from broker.cluster import Append, ClusterCore, ClusterShell
from broker.core import Action, BrokerConfig, Publish, Send
from broker.engine import EngineSettings, RedisEngine
from protocol import Ack, ChatMessage, Error, JoinNotice, PrivateMessage, Welcome
from tests.redis_server import SCALE, RedisServer

pytestmark = pytest.mark.timeout(60)

NOW = 1_000.0


@pytest.fixture
def shells(
    redis_server: RedisServer, zmq_ctx: zmq.Context[zmq.Socket[bytes]]
) -> Iterator[Callable[[], tuple[ClusterShell, ClusterCore]]]:
    made: list[ClusterShell] = []

    def make() -> tuple[ClusterShell, ClusterCore]:
        engine = RedisEngine.connect(redis_server.url, EngineSettings(timeout=1.0))
        shell = ClusterShell(engine)
        core = shell.make_core(BrokerConfig(max_rate=0), zmq_ctx)
        made.append(shell)
        return shell, core

    yield make
    for shell in made:
        shell.close()


def _frame(**message: Any) -> list[bytes]:
    return [json.dumps(message).encode()]


def _join(core: ClusterCore, identity: bytes, nick: str, room: str = "lobby") -> str:
    [welcome] = core.handle(identity, _frame(type="hello", v=1, nick=nick, rooms=[room]), NOW)
    assert isinstance(welcome, Send) and isinstance(welcome.message, Welcome), welcome
    token = welcome.message.session
    core.subscribed(b"\x01sync/" + token.encode() + b"/0/", NOW)
    return token


def _pump_until(
    shell: ClusterShell, done: Callable[[list[Action]], bool], timeout: float = 5.0
) -> list[Action]:
    seen: list[Action] = []
    deadline = time.monotonic() + timeout * SCALE
    while not done(seen):
        assert time.monotonic() < deadline, f"bus brought only {seen}"
        if shell.socket.poll(50):
            seen += shell.pump()
    return seen


def _lines(actions: list[Action]) -> list[ChatMessage]:
    return [a.message for a in actions if isinstance(a, Publish) and type(a.message) is ChatMessage]


def test_a_turns_lines_are_proposed_numbered_by_the_engine_and_acked_with_its_seqs(
    shells: Callable[[], tuple[ClusterShell, ClusterCore]],
) -> None:
    shell, core = shells()
    _join(core, b"A", "alice")
    proposals: list[Action] = []
    for n in range(3):
        proposals += core.handle(
            b"A", _frame(type="say", room="lobby", text=f"l{n}", key=f"k{n}"), NOW
        )
    assert all(isinstance(p, Append) for p in proposals)  # nothing numbered in the core
    assert [p.line.seq for p in proposals] == [0, 0, 0]  # type: ignore[attr-defined]
    acks = shell.settle(proposals)
    assert [a.message.seq for a in acks if isinstance(a.message, Ack)] == [1, 2, 3]  # type: ignore[union-attr]
    # the same key again (a resend) is acked with its first seq, not stored again
    again = shell.settle(
        core.handle(b"A", _frame(type="say", room="lobby", text="l1", key="k1"), NOW)
    )
    assert [a.message for a in again] == [
        Ack(key="k1", id=again[0].message.id, room="lobby", seq=2)
    ]  # type: ignore[union-attr]
    # the lines come back on the bus, in order, once
    lines = _lines(_pump_until(shell, lambda seen: len(_lines(seen)) >= 3))
    assert [(m.seq, m.text) for m in lines] == [(1, "l0"), (2, "l1"), (3, "l2")]


def test_with_redis_down_a_turns_lines_are_refused_with_their_keys_and_nothing_is_published(
    shells: Callable[[], tuple[ClusterShell, ClusterCore]],
    redis_server: RedisServer,
) -> None:
    shell, core = shells()
    _join(core, b"A", "alice")
    redis_server.kill()
    proposals = core.handle(b"A", _frame(type="say", room="lobby", text="x", key="k1"), NOW)
    proposals += core.handle(b"A", _frame(type="say", room="lobby", text="y"), NOW)
    out = shell.settle(proposals)
    errors = [a.message for a in out if isinstance(a.message, Error)]  # type: ignore[union-attr]
    assert [(e.code, e.key, e.req) for e in errors] == [
        ("unavailable", "k1", "say"),
        ("unavailable", None, "say"),
    ]
    assert not [a for a in out if isinstance(a, Publish)]
    # other requests that need the engine are refused the same way, the session stays
    [who] = core.handle(b"A", _frame(type="who", room="lobby"), NOW)
    assert who.message.code == "unavailable"  # type: ignore[union-attr]
    # only a line can have been "not stored": a query says what was not done
    assert "stored" in errors[0].message
    assert "'who'" in who.message.message and "stored" not in who.message.message  # type: ignore[union-attr]
    [pong] = core.handle(b"A", _frame(type="ping"), NOW)
    assert type(pong.message).__name__ == "Pong"


def test_a_fenced_broker_refuses_the_turns_lines_then_wins_its_sessions_back(
    shells: Callable[[], tuple[ClusterShell, ClusterCore]],
    redis_server: RedisServer,
) -> None:
    shell, core = shells()
    _join(core, b"A", "alice")
    old_id = shell.engine.broker_id
    # as if paused past the lease: another broker reaped us meanwhile
    other, _ = shells()
    redis_server.client().zadd("zc:brokers", {old_id: 0})  # our lease is long gone
    report = other.engine.reap(old_id)
    assert report is not None and [m.member.nick for m in report.members] == ["alice"]
    out = shell.settle(
        core.handle(b"A", _frame(type="say", room="lobby", text="ghost", key="g"), NOW)
    )
    assert [(a.message.code, a.message.key) for a in out] == [("unavailable", "g")]  # type: ignore[union-attr]
    shell.timers(NOW)  # registers again under a new id and claims everything back
    assert shell.engine.broker_id != old_id
    assert shell.engine.nick_holder("alice") == (
        shell.engine.broker_id,
        core.sessions.with_nick("alice").token,
    )  # type: ignore[union-attr]
    assert [m.nick for m in shell.engine.members("lobby")] == ["alice"]
    acked = shell.settle(
        core.handle(b"A", _frame(type="say", room="lobby", text="ghost", key="g"), NOW)
    )
    assert [type(a.message).__name__ for a in acked] == ["Ack"]
    history = shell.engine.fetch("lobby", 0, None, 10)
    assert len(history.lines) == 1  # the ghost's attempt was never stored


def test_a_stalled_redis_costs_one_timeout_then_requests_fail_fast_until_it_answers(
    shells: Callable[[], tuple[ClusterShell, ClusterCore]],
    redis_server: RedisServer,
) -> None:
    shell, core = shells()  # engine timeout 1 s
    _join(core, b"A", "alice")
    stall = redis_server.debug_sleep(3 * SCALE)
    try:
        started = time.monotonic()
        out = shell.settle(
            core.handle(b"A", _frame(type="say", room="lobby", text="x", key="k"), NOW)
        )
        assert [a.message.code for a in out] == ["unavailable"]  # type: ignore[union-attr]
        took = time.monotonic() - started
        started = time.monotonic()
        [who] = core.handle(b"A", _frame(type="who", room="lobby"), NOW)
        assert who.message.code == "unavailable"  # type: ignore[union-attr]
        [topic] = core.handle(b"A", _frame(type="topic", room="lobby"), NOW)  # topics too
        assert topic.message.code == "unavailable"  # type: ignore[union-attr]
        assert time.monotonic() - started < 0.2 * SCALE < took  # no second timeout
    finally:
        stall.join(10 * SCALE)
    deadline = time.monotonic() + 5 * SCALE
    while True:  # once the cooldown is over, the next request tries Redis again
        out = shell.settle(
            core.handle(b"A", _frame(type="say", room="lobby", text="x", key="k"), NOW)
        )
        if type(out[0].message).__name__ == "Ack":
            break
        assert time.monotonic() < deadline, out
        time.sleep(0.1)


def _synced(core: ClusterCore, identity: bytes, nick: str, room: str = "lobby") -> list[Action]:
    """A member's hello and sync: what the core does for its join."""
    [welcome] = core.handle(identity, _frame(type="hello", v=1, nick=nick, rooms=[room]), NOW)
    assert isinstance(welcome, Send) and isinstance(welcome.message, Welcome), welcome
    return core.subscribed(b"\x01sync/" + welcome.message.session.encode() + b"/0/", NOW)


def _joins(actions: list[Action]) -> list[str]:
    return [
        a.message.nick
        for a in actions
        if isinstance(a, Publish) and isinstance(a.message, JoinNotice)
    ]


def test_a_join_before_the_rooms_bus_is_live_is_published_here_once(
    shells: Callable[[], tuple[ClusterShell, ClusterCore]],
) -> None:
    shell, core = shells()
    # the first member: the bus subscription is made after its notice went out
    assert _joins(shell.settle(_synced(core, b"A", "alice"))) == ["alice"]
    _pump_until(shell, lambda seen: core.follower.live("lobby"))
    # live now: the next join comes back on the bus only, once
    assert _joins(shell.settle(_synced(core, b"B", "bob"))) == []
    assert _joins(_pump_until(shell, lambda seen: bool(_joins(seen)))) == ["bob"]
    # the loop has not read the confirmation yet, but Redis has subscribed us:
    # the notice is published here, and its copy from the bus dropped
    core.follower._live.discard("lobby")
    assert _joins(shell.settle(_synced(core, b"C", "carol"))) == ["carol"]
    core.follower.live = lambda room: True  # type: ignore[method-assign]
    assert _joins(shell.settle(_synced(core, b"D", "dave"))) == []
    assert _joins(_pump_until(shell, lambda seen: bool(_joins(seen)))) == ["dave"]


def _replies(actions: list[Action], identity: bytes) -> list[object]:
    return [a.message for a in actions if isinstance(a, Send) and a.identity == identity]


def test_a_private_line_to_another_broker_is_forwarded_by_the_shell_or_refused_with_its_key(
    shells: Callable[[], tuple[ClusterShell, ClusterCore]],
    redis_server: RedisServer,
) -> None:
    shell_a, core_a = shells()
    shell_b, core_b = shells()
    _join(core_a, b"A", "alice")
    _join(core_b, b"B", "bob")

    def msg(text: str, key: str) -> list[Action]:
        return core_a.handle(b"A", _frame(type="msg", to="Bob", text=text, key=key), NOW)

    # the core decides; the shell puts it into bob's broker's inbox
    out = shell_a.settle(msg("hi", "k1"))
    copy, ack = _replies(out, b"A")
    assert isinstance(copy, PrivateMessage) and copy.to == "Bob"
    assert ack == Ack(key="k1", id=copy.id)
    got = _pump_until(shell_b, lambda seen: bool(_replies(seen, b"B")))
    assert _replies(got, b"B") == [copy]
    # Redis gone between the decision and the shell: the sender gets
    # `unavailable` with its key instead of its copy and ack, and the key is
    # not remembered, so that the resend is sent (nothing acked that was not)
    decided = msg("are you there?", "k2")
    assert any(type(a).__name__ == "Forward" for a in decided)
    redis_server.kill()
    out = shell_a.settle(decided)
    [error] = _replies(out, b"A")
    assert isinstance(error, Error)
    assert (error.code, error.key, error.req) == ("unavailable", "k2", "msg")
    assert core_a.keys.get("k2") is None
