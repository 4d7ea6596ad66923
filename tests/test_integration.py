"""The broker and the client library through real sockets on 127.0.0.1:
concurrent joins, a race for one nickname, room and private delivery, leaving,
the slow-joiner guarantee, and bad input from raw ZeroMQ sockets."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import zmq

from broker import BrokerConfig
from client import AsyncClient, Client, ConnectionClosed, JoinRefused
from client import events as ev
from protocol import (
    Error,
    Hello,
    Ping,
    Pong,
    Reply,
    Say,
    Welcome,
    decode_reply,
    encode,
    sync_topic,
    unpack,
)
from tests.conftest import SCALE, InProcessBroker, start_broker, wait_for

Connect = Callable[..., Client]


@pytest.fixture
def zctx() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    """A context for raw sockets; each test closes its sockets, this terminates."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    ctx.linger = 0
    yield ctx
    ctx.destroy(linger=0)


def recv(sock: zmq.Socket[bytes], timeout: float = 5.0) -> list[bytes]:
    """One multipart message, or fail after ``timeout`` seconds."""
    if not sock.poll(int(timeout * SCALE * 1000)):
        raise AssertionError(f"nothing received within {timeout} s")
    return sock.recv_multipart()


def reply(dealer: zmq.Socket[bytes], timeout: float = 5.0) -> Reply:
    return decode_reply(recv(dealer, timeout))


async def gather_connect(clients: list[AsyncClient]) -> list[Any]:
    return await asyncio.gather(
        *(c.connect(timeout=10 * SCALE) for c in clients), return_exceptions=True
    )


async def close_all(clients: list[AsyncClient]) -> None:
    await asyncio.gather(*(c.close() for c in clients))


# --- joining --------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_many_clients_joining_at_once_all_get_in(broker: InProcessBroker) -> None:
    count = 30

    async def main() -> None:
        clients = [AsyncClient(broker.router, f"user{i}") for i in range(count)]
        try:
            results = await gather_connect(clients)
            assert all(isinstance(r, ev.Welcome) for r in results), results
            await clients[0].who("lobby")
            while True:
                event = await clients[0].next_event(5 * SCALE)
                if isinstance(event, ev.Who):
                    break
            assert sorted(event.members) == sorted(f"user{i}" for i in range(count))
        finally:
            await close_all(clients)

    asyncio.run(main())


@pytest.mark.timeout(30)
def test_a_race_for_one_nickname_has_exactly_one_winner(broker: InProcessBroker) -> None:
    async def main() -> None:
        nicks = ["Racer", "racer", "RACER", "rAcEr"] * 3
        clients = [AsyncClient(broker.router, nick) for nick in nicks]
        try:
            results = await gather_connect(clients)
            winners = [r for r in results if isinstance(r, ev.Welcome)]
            losers = [r for r in results if isinstance(r, JoinRefused)]
            assert len(winners) == 1, results
            assert len(losers) == len(nicks) - 1, results
            assert {r.code for r in losers} == {"nick_taken"}
            # A loser can try another nickname without reconnecting.
            loser = clients[results.index(losers[0])]
            assert (await loser.connect("second-try", timeout=5 * SCALE)).nick == "second-try"
        finally:
            await close_all(clients)

    asyncio.run(main())


def test_refused_nicknames_say_why(connect: Connect, broker: InProcessBroker) -> None:
    connect("Alice")
    for nick, code in [
        ("alice", "nick_taken"),
        ("server", "nick_invalid"),
        ("a b", "nick_invalid"),
    ]:
        client = Client(broker.router, "placeholder")
        try:
            with pytest.raises(JoinRefused) as caught:
                client.connect(nick, timeout=5 * SCALE)
            assert caught.value.code == code
        finally:
            client.close()


def test_one_client_can_retry_refused_nicknames_until_one_is_free(
    connect: Connect, broker: InProcessBroker
) -> None:
    connect("taken")
    client = Client(broker.router, "taken")
    try:
        for _ in range(5):  # each retry watches the handshake with a new monitor
            with pytest.raises(JoinRefused) as caught:
                client.connect("Taken", timeout=5 * SCALE)
            assert caught.value.code == "nick_taken"
        welcome = client.connect("free", timeout=5 * SCALE)
        assert welcome.nick == "free"
    finally:
        client.close()


def test_closing_while_the_join_is_pending_does_not_raise(broker: InProcessBroker) -> None:
    async def scenario() -> None:
        client = AsyncClient(broker.router, "hasty")
        joining = asyncio.ensure_future(client.connect(timeout=5 * SCALE))
        await asyncio.sleep(0)  # let connect send its hello, then give up at once
        await client.close()
        [outcome] = await asyncio.gather(joining, return_exceptions=True)
        assert isinstance(outcome, ConnectionClosed)

    asyncio.run(scenario())


# --- delivery ---------------------------------------------------------------------------


def test_broadcast_reaches_every_member_and_only_the_room(connect: Connect) -> None:
    alice = connect("alice", rooms=["lobby", "dev"])
    bob = connect("bob")
    carol = connect("carol")
    dave = connect("dave", room="dev")
    alice.say("for the lobby", room="lobby")
    for member in (alice, bob, carol):
        line = wait_for(member, ev.Message, lambda e: e.text == "for the lobby")
        assert (line.nick, line.room, line.seq) == ("alice", "lobby", 1)
        assert line.id and line.ts > 0
    alice.say("for dev", room="dev")
    # Sent after the lobby line on the same PUB socket: had dave been given the
    # lobby line, it would have come first.
    first = wait_for(dave, ev.Message)
    assert (first.room, first.text) == ("dev", "for dev")
    assert first.seq == 1  # sequence numbers are per room


@pytest.mark.timeout(30)
def test_private_messages_never_travel_over_pub(
    connect: Connect, broker: InProcessBroker, zctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    spy = zctx.socket(zmq.SUB)
    spy.connect(broker.pub)
    spy.subscribe(b"")  # everything, sync topics and all
    try:
        alice = connect("alice")
        bob = connect("bob")
        carol = connect("carol")
        seen: list[bytes] = []
        # The spy is live: it hears carol's join, published after it subscribed.
        while b'"carol"' not in b"".join(seen):
            seen += recv(spy)
        alice.private("BOB", "the secret is 42")
        got = wait_for(bob, ev.Private)
        assert (got.nick, got.to, got.text) == ("alice", "bob", "the secret is 42")
        mine = wait_for(alice, ev.Private)  # the sender's own copy
        assert mine.id == got.id
        alice.say("after the secret")
        while b"after the secret" not in b"".join(seen):
            seen += recv(spy)
        assert not any(b"secret is 42" in frame for frame in seen)
        # Nobody else got it either: carol's next line is the public one.
        assert wait_for(carol, ev.Message).text == "after the secret"
    finally:
        spy.close(linger=0)


def test_exit_sends_a_leave_notice_and_frees_the_nickname(connect: Connect) -> None:
    alice = connect("alice")
    bob = connect("bob")
    wait_for(alice, ev.Join, lambda e: e.nick == "bob")
    bob.close()
    leave = wait_for(alice, ev.Leave)
    assert (leave.nick, leave.room, leave.reason) == ("bob", "lobby", "exit")
    assert connect("Bob").nick == "Bob"


def test_the_first_line_after_a_welcome_arrives(connect: Connect, broker: InProcessBroker) -> None:
    alice = connect("alice")
    for i in range(8):
        newcomer = connect(f"new{i}")
        # No pause: the welcome promises the SUB is already live.
        alice.say(f"welcome new{i}")
        # Earlier lines come first as replayed history (the backlog); then this one, live.
        line = wait_for(newcomer, ev.Message, lambda e: not e.history)
        assert line.text == f"welcome new{i}"
        newcomer.close()


def test_rooms_join_part_and_rename_through_sockets(connect: Connect) -> None:
    alice = connect("alice")
    bob = connect("bob")
    bob.join("#Dev")
    assert wait_for(bob, ev.Joined).room == "dev"
    assert bob.room == "dev"
    bob.list_rooms()
    rooms = wait_for(bob, ev.Rooms)
    assert {(r.room, r.members) for r in rooms.rooms} == {("lobby", 2), ("dev", 1)}
    bob.rename("Robert")
    assert wait_for(alice, ev.Nick) == ev.Nick(old="bob", new="Robert")
    bob.part("lobby")
    leave = wait_for(alice, ev.Leave)
    assert (leave.nick, leave.reason) == ("Robert", "part")
    alice.who("dev")
    assert wait_for(alice, ev.Who).members == ["Robert"]


# --- dying clients and raw protocol ------------------------------------------------------------


def raw_join(
    zctx: zmq.Context[zmq.Socket[bytes]], broker: InProcessBroker, nick: str
) -> tuple[zmq.Socket[bytes], zmq.Socket[bytes]]:
    """Join with bare sockets, as a bot in another language would (PROTOCOL.md §5)."""
    dealer = zctx.socket(zmq.DEALER)
    sub = zctx.socket(zmq.SUB)
    dealer.connect(broker.router)
    dealer.send(encode(Hello(v=1, nick=nick)))
    welcome = reply(dealer)
    assert isinstance(welcome, Welcome)
    sub.connect(welcome.pub)
    sub.subscribe(b"room/lobby/")
    sub.subscribe(sync_topic(welcome.session, 0))
    assert json.loads(recv(dealer)[0])["type"] == "joined"
    return dealer, sub


@pytest.mark.timeout(30)
def test_a_client_that_dies_silently_times_out(zctx: zmq.Context[zmq.Socket[bytes]]) -> None:
    broker = start_broker(BrokerConfig(client_timeout=1.0, heartbeat=0.25))
    alice = Client(broker.router, "alice")
    try:
        alice.connect(timeout=5 * SCALE)
        dealer, sub = raw_join(zctx, broker, "ghost")
        wait_for(alice, ev.Join, lambda e: e.nick == "ghost")
        dealer.send(encode(Ping()))
        assert isinstance(reply(dealer), Pong)  # alive until now
        started = time.monotonic()
        dealer.close(linger=0)  # no bye: a pulled cable
        sub.close(linger=0)
        leave = wait_for(alice, ev.Leave, timeout=5)
        assert (leave.nick, leave.reason) == ("ghost", "timeout")
        assert time.monotonic() - started < 1.0 + 1.0 * SCALE  # timeout plus a tick or two
        ghost = Client(broker.router, "Ghost")
        try:
            assert ghost.connect(timeout=5 * SCALE).nick == "Ghost"
        finally:
            ghost.close()
    finally:
        alice.close()
        broker.stop()


def test_the_first_broadcast_after_joined_reaches_a_bare_sub(
    connect: Connect, broker: InProcessBroker, zctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    # Bare sockets do no gap repair, so a lost broadcast would stay lost: this
    # checks the broker's promise itself (joined only once the SUB is live).
    alice = connect("alice")
    for i in range(6):
        dealer, sub = raw_join(zctx, broker, f"bare{i}")
        try:
            alice.say(f"hello bare{i}")
            while True:
                body = json.loads(recv(sub, timeout=3)[1])
                if body["type"] == "message":
                    break
                assert (body["type"], body["nick"]) == ("join", f"bare{i}")
            assert (body["nick"], body["text"]) == ("alice", f"hello bare{i}")
        finally:
            dealer.close(linger=0)
            sub.close(linger=0)


def test_a_join_storm_announces_everyone_exactly_once(
    connect: Connect, broker: InProcessBroker, zctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    # Thirty clients complete their joins at once, so the broker reads several
    # sync subscriptions per turn and announces them together (`joins`).
    alice = connect("alice")
    watcher_dealer, watcher = raw_join(zctx, broker, "watcher")
    nicks = [f"storm{i}" for i in range(30)]
    dealers = [zctx.socket(zmq.DEALER) for _ in nicks]
    subs = [zctx.socket(zmq.SUB) for _ in nicks]
    try:
        for dealer, nick in zip(dealers, nicks, strict=True):
            dealer.connect(broker.router)
            dealer.send(encode(Hello(v=1, nick=nick)))
        welcomes = [reply(dealer) for dealer in dealers]
        for sub, welcome in zip(subs, welcomes, strict=True):
            assert isinstance(welcome, Welcome)
            sub.connect(welcome.pub)
            sub.subscribe(b"room/lobby/")
        for sub, welcome in zip(subs, welcomes, strict=True):
            assert isinstance(welcome, Welcome)
            sub.subscribe(sync_topic(welcome.session, 0))
        for dealer in dealers:
            assert json.loads(recv(dealer)[0])["type"] == "joined"
        # On the wire: every newcomer named once, in `join` or `joins` notices.
        announced: list[str] = []
        while len(announced) < len(nicks):
            for body in map(json.loads, unpack(recv(watcher)[1])):  # a batch, or one
                if body["type"] == "join" and body["nick"] != "watcher":  # its own
                    announced.append(body["nick"])
                elif body["type"] == "joins":
                    assert len(body["nicks"]) >= 2
                    announced += body["nicks"]
        assert sorted(announced) == sorted(nicks)
        # Through the client library: one Join event each, none twice.
        storm = set(nicks)
        seen = [wait_for(alice, ev.Join, lambda e: e.nick in storm).nick for _ in nicks]
        assert sorted(seen) == sorted(nicks)
    finally:
        for sock in [watcher_dealer, watcher, *dealers, *subs]:
            sock.close(linger=0)


BAD_FRAMES: list[tuple[list[bytes], str]] = [
    ([b"garbage"], "bad_frame"),
    ([b'{"type": "ping"}', b"extra"], "bad_frame"),
    ([b"\xff\xfe\xfd"], "bad_encoding"),
    ([b'{"type": "say", "room": "lobby", "text": "\\ud800"}'], "bad_encoding"),
    ([b'{"type": "fly"}'], "unknown_type"),
    ([b'{"type": "say", "room": "lobby", "text": ["x"]}'], "bad_message"),
    ([b'{"type": "hello", "v": 99, "nick": "x"}'], "bad_version"),
    ([encode(Say(room="lobby", text="before hello"))], "not_joined"),
    ([b"[" * 3000 + b"]" * 3000], "bad_frame"),
]


@pytest.mark.timeout(30)
def test_bad_input_from_a_raw_dealer_gets_errors_and_others_keep_talking(
    connect: Connect, broker: InProcessBroker, zctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    alice = connect("alice")
    bob = connect("bob")
    rogue = zctx.socket(zmq.DEALER)
    huge = zctx.socket(zmq.DEALER)
    try:
        rogue.connect(broker.router)
        for frames, code in BAD_FRAMES:
            rogue.send_multipart(frames)
            answer = reply(rogue)
            assert isinstance(answer, Error), answer
            assert answer.code == code, (frames[0][:40], answer)
        # Joined, and still refused for bad lines, with the sender kept in.
        rogue.send(encode(Hello(v=1, nick="rogue")))
        welcome = reply(rogue)
        assert isinstance(welcome, Welcome)
        rogue.send(encode(Hello(v=1, nick="rogue2")))
        answer = reply(rogue)
        assert isinstance(answer, Error) and answer.code == "already_joined"
        # Over ZMQ_MAXMSGSIZE: no reply is possible, the connection is dropped.
        huge.connect(broker.router)
        huge.send(b"x" * (welcome.limits.frame_bytes + 1))
        rogue.send(encode(Ping()))  # the broker still answers (rogue never synced)
        answer = reply(rogue)
        assert isinstance(answer, Error) and answer.code == "syncing"
        alice.say("still here")
        assert wait_for(bob, ev.Message).text == "still here"
        bob.say("x" * 4096)  # exactly the limit is fine
        assert len(wait_for(alice, ev.Message, lambda e: e.nick == "bob").text) == 4096
    finally:
        rogue.close(linger=0)
        huge.close(linger=0)
