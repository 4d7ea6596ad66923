"""BrokerCore with no sockets: frames and the time in, actions out.

Time is a parameter, so heartbeat expiry is tested without waiting, and XPUB
subscription notices are handed in by hand through ``core.subscribed``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest

from broker import BrokerConfig, BrokerCore, Publish, Send
from broker.core import Action
from broker.handshake import JOINS_PER_NOTICE
from broker.history import HistoryStore, MemoryHistory
from protocol import (
    Broadcast,
    Bye,
    ChatMessage,
    Error,
    ErrorCode,
    Goodbye,
    Hello,
    Join,
    Joined,
    JoinNotice,
    JoinsNotice,
    LeaveNotice,
    ListRooms,
    NickNotice,
    Part,
    Parted,
    Ping,
    Pong,
    PrivateMessage,
    Rename,
    Renamed,
    Reply,
    Request,
    RoomList,
    Say,
    SendPrivate,
    Shutdown,
    Welcome,
    Who,
    WhoReply,
    encode,
    room_topic,
    sync_topic,
)

TIMEOUT = 10.0
#: The epoch of make_core's history store.
EPOCH = "e0e0e0e0e0e0e0e0"


def make_core(history: HistoryStore | None = None, **options: Any) -> BrokerCore:
    """A core with flood control off (it has its own tests) and a 10 s timeout."""
    settings: dict[str, Any] = {"client_timeout": TIMEOUT, "heartbeat": 2.0, "max_rate": 0.0}
    settings.update(options)
    if history is None:
        history = MemoryHistory()
        history.epoch = EPOCH
    return BrokerCore(BrokerConfig(**settings), history, broker_id="b1")


def frames(request: Request) -> list[bytes]:
    return [encode(request)]


def sent(actions: list[Action], identity: bytes | None = None) -> list[Reply]:
    """The replies in ``actions`` (to ``identity`` only, if given)."""
    return [
        a.message
        for a in actions
        if isinstance(a, Send) and (identity is None or a.identity == identity)
    ]


def published(actions: list[Action]) -> list[Broadcast]:
    return [a.message for a in actions if isinstance(a, Publish)]


def only_error(actions: list[Action], identity: bytes) -> Error:
    """The single error reply ``actions`` must consist of."""
    assert len(actions) == 1, actions
    assert isinstance(actions[0], Send) and actions[0].identity == identity
    reply = actions[0].message
    assert isinstance(reply, Error), reply
    return reply


def hello(core: BrokerCore, identity: bytes, nick: str, now: float = 0.0, **kw: Any) -> Welcome:
    actions = core.handle(identity, frames(Hello(v=1, nick=nick, **kw)), now)
    assert published(actions) == [], "nobody is told before the SUB is live"
    (welcome,) = sent(actions, identity)
    assert isinstance(welcome, Welcome), welcome
    return welcome


def join(
    core: BrokerCore, identity: bytes, nick: str, now: float = 0.0, **kw: Any
) -> tuple[Welcome, list[Action]]:
    """Hello, then the XPUB notice of the client's sync subscription."""
    welcome = hello(core, identity, nick, now, **kw)
    actions = core.subscribed(b"\x01" + sync_topic(welcome.session, 0), now)
    return welcome, actions


def say(core: BrokerCore, identity: bytes, text: str, room: str = "lobby", now: float = 1.0) -> Any:
    return core.handle(identity, frames(Say(room=room, text=text)), now)


# --- joining ----------------------------------------------------------------------------


def test_join_handshake_waits_for_the_sync_subscription() -> None:
    core = make_core()
    welcome = hello(core, b"A", "Alice", now=5.0)
    assert (welcome.v, welcome.nick, welcome.broker, welcome.timeout) == (1, "Alice", "b1", TIMEOUT)
    assert welcome.limits.text_bytes == 4096
    assert welcome.epoch == EPOCH
    # Still syncing: talking is refused (with its own code, §7: not "no session"),
    # and notices of other topics change nothing.
    assert only_error(say(core, b"A", "hi"), b"A").code == ErrorCode.SYNCING
    assert only_error(core.handle(b"A", frames(Ping()), 5.0), b"A").code == ErrorCode.SYNCING
    assert core.subscribed(b"\x01" + room_topic("lobby"), 5.0) == []
    assert core.subscribed(b"\x00" + sync_topic(welcome.session, 0), 5.0) == []  # unsubscribe
    assert core.subscribed(b"\x01" + sync_topic("someone-else", 0), 5.0) == []
    assert core.subscribed(b"\x01sync/garbage", 5.0) == []
    actions = core.subscribed(b"\x01" + sync_topic(welcome.session, 0), 6.0)
    assert published(actions) == [JoinNotice(room="lobby", nick="Alice", ts=6.0)]
    assert sent(actions, b"A") == [Joined(room="lobby", seq=0, members=["Alice"], epoch=EPOCH)]
    assert [type(m) for m in published(say(core, b"A", "hi"))] == [ChatMessage]


def test_joins_in_one_turn_are_announced_once_per_room() -> None:
    core = make_core()
    join(core, b"A", "alice", rooms=["lobby", "dev"])
    welcomes = [
        hello(core, b"N%d" % i, f"n{i}", rooms=["lobby"]) for i in range(JOINS_PER_NOTICE + 1)
    ]
    welcomes.append(hello(core, b"D", "dora", rooms=["dev"]))
    notices = [b"\x01" + sync_topic(w.session, 0) for w in welcomes]
    notices.insert(3, b"\x01" + room_topic("lobby"))  # other notices change nothing
    actions = core.subscribed_all(notices, 7.0)
    nicks = [f"n{i}" for i in range(JOINS_PER_NOTICE + 1)]
    # In join order, at most JOINS_PER_NOTICE per notice; a lone joiner keeps `join`.
    assert published(actions) == [
        JoinsNotice(room="lobby", nicks=nicks[:JOINS_PER_NOTICE], ts=7.0),
        JoinNotice(room="lobby", nick=nicks[-1], ts=7.0),
        JoinNotice(room="dev", nick="dora", ts=7.0),
    ]
    # Everyone still gets their own joined reply, members as of their own join.
    assert sent(actions, b"N1") == [
        Joined(room="lobby", seq=0, members=["alice", "n0", "n1"], epoch=EPOCH),
    ]
    assert sent(actions, b"D") == [
        Joined(room="dev", seq=0, members=["alice", "dora"], epoch=EPOCH)
    ]
    # A turn with one join stays a plain join.
    last = hello(core, b"L", "lee", rooms=["lobby"])
    actions = core.subscribed_all([b"\x01" + sync_topic(last.session, 0)], 8.0)
    assert published(actions) == [JoinNotice(room="lobby", nick="lee", ts=8.0)]


def test_joined_lists_members_and_starts_in_the_hello_rooms() -> None:
    core = make_core()
    join(core, b"A", "alice")
    _, actions = join(core, b"B", "bob", rooms=["#Lobby", "dev"])
    assert published(actions) == [
        JoinNotice(room="lobby", nick="bob", ts=0.0),
        JoinNotice(room="dev", nick="bob", ts=0.0),
    ]
    assert sent(actions, b"B") == [
        Joined(room="lobby", seq=0, members=["alice", "bob"], epoch=EPOCH),
        Joined(room="dev", seq=0, members=["bob"], epoch=EPOCH),
    ]


@pytest.mark.parametrize("other", ["alice", "ALICE", "aLiCe"])
def test_nicknames_are_unique_case_insensitively(other: str) -> None:
    core = make_core()
    join(core, b"A", "Alice")
    error = only_error(core.handle(b"B", frames(Hello(v=1, nick=other)), 1.0), b"B")
    assert (error.code, error.req) == (ErrorCode.NICK_TAKEN, "hello")
    # The refused client may try another nickname on the same connection.
    assert hello(core, b"B", "Bob").nick == "Bob"


def test_a_race_for_one_nickname_has_exactly_one_winner() -> None:
    core = make_core()
    batch: list[Action] = []
    for i in range(50):  # one batch of the loop: all read before anything is sent
        batch += core.handle(b"id%d" % i, frames(Hello(v=1, nick="Zed" if i % 2 else "zed")), 0.0)
    replies = sent(batch)
    assert len(replies) == 50
    assert sum(isinstance(r, Welcome) for r in replies) == 1
    assert all(r.code == ErrorCode.NICK_TAKEN for r in replies if isinstance(r, Error))


@pytest.mark.parametrize("nick", ["server", "SERVER", "Admin", "system", "root"])
def test_reserved_names_are_refused(nick: str) -> None:
    core = make_core()
    error = only_error(core.handle(b"A", frames(Hello(v=1, nick=nick)), 0.0), b"A")
    assert error.code == ErrorCode.NICK_INVALID
    assert "reserved" in error.message


def test_too_many_clients() -> None:
    core = make_core(max_clients=2)
    join(core, b"A", "a")
    join(core, b"B", "b")
    error = only_error(core.handle(b"C", frames(Hello(v=1, nick="c")), 0.0), b"C")
    assert error.code == ErrorCode.TOO_MANY_CLIENTS


# --- talking ------------------------------------------------------------------------------


def test_lines_are_stamped_by_the_broker_with_per_room_sequence_numbers() -> None:
    core = make_core()
    join(core, b"A", "alice", rooms=["lobby", "dev"])
    lines = [
        published(say(core, b"A", f"line {i}", room, now=100.0 + i))[0]
        for i, room in enumerate(["lobby", "lobby", "dev", "lobby", "dev"])
    ]
    assert all(isinstance(m, ChatMessage) and m.nick == "alice" for m in lines)
    assert [(m.room, m.seq) for m in lines] == [  # type: ignore[union-attr]
        ("lobby", 1),
        ("lobby", 2),
        ("dev", 1),
        ("lobby", 3),
        ("dev", 2),
    ]
    assert [m.ts for m in lines] == [100.0, 101.0, 102.0, 103.0, 104.0]
    assert len({m.id for m in lines}) == 5  # type: ignore[union-attr]


def test_a_client_cannot_speak_as_another() -> None:
    core = make_core()
    join(core, b"A", "alice")
    join(core, b"B", "bob")
    # Fields a client adds to claim another name are ignored: the routing id decides.
    forged = json.dumps(
        {"type": "say", "room": "lobby", "text": "I am bob", "nick": "bob", "from": "bob"}
    )
    (line,) = published(core.handle(b"A", [forged.encode()], 1.0))
    assert isinstance(line, ChatMessage) and line.nick == "alice"
    forged = json.dumps({"type": "msg", "to": "bob", "text": "psst", "nick": "carol"})
    replies = sent(core.handle(b"A", [forged.encode()], 1.0))
    assert all(isinstance(r, PrivateMessage) and r.nick == "alice" for r in replies)


def test_private_messages_go_through_the_router_only() -> None:
    core = make_core()
    join(core, b"A", "alice")
    join(core, b"B", "Bob")
    actions = core.handle(b"A", frames(SendPrivate(to="BOB", text="secret", key="k1")), 3.0)
    assert published(actions) == []
    (to_bob,) = sent(actions, b"B")
    assert isinstance(to_bob, PrivateMessage)
    assert (to_bob.nick, to_bob.to, to_bob.text, to_bob.ts) == ("alice", "Bob", "secret", 3.0)
    mine = sent(actions, b"A")
    assert to_bob in mine  # the sender's copy, and the ack of its key
    error = only_error(core.handle(b"A", frames(SendPrivate(to="carol", text="x")), 3.0), b"A")
    assert error.code == ErrorCode.NO_SUCH_NICK


def test_a_client_only_talks_in_its_rooms() -> None:
    core = make_core()
    join(core, b"A", "alice")
    error = only_error(say(core, b"A", "hello", room="dev"), b"A")
    assert (error.code, error.room) == (ErrorCode.NOT_IN_ROOM, "dev")


# --- rooms and names ---------------------------------------------------------------------


def test_join_part_who_and_rooms() -> None:
    core = make_core()
    welcome, _ = join(core, b"A", "alice")
    join(core, b"B", "bob")
    # A join completes only once its own sync topic is subscribed.
    assert core.handle(b"A", frames(Join(room="#Dev", sync=1)), 1.0) == []
    actions = core.subscribed(b"\x01" + sync_topic(welcome.session, 1), 1.0)
    assert published(actions) == [JoinNotice(room="dev", nick="alice", ts=1.0)]
    assert sent(actions) == [Joined(room="dev", seq=0, members=["alice"], epoch=EPOCH)]
    # The subscription may overtake the request: it is remembered.
    assert core.subscribed(b"\x01" + sync_topic(welcome.session, 2), 2.0) == []
    actions = core.handle(b"A", frames(Join(room="ops", sync=2)), 2.0)
    assert sent(actions) == [Joined(room="ops", seq=0, members=["alice"], epoch=EPOCH)]

    assert sent(core.handle(b"B", frames(Who(room="lobby")), 3.0)) == [
        WhoReply(room="lobby", members=["alice", "bob"])
    ]
    (rooms,) = sent(core.handle(b"B", frames(ListRooms()), 3.0))
    assert isinstance(rooms, RoomList)
    assert [(r.room, r.members) for r in rooms.rooms] == [("dev", 1), ("lobby", 2), ("ops", 1)]

    actions = core.handle(b"A", frames(Part(room="dev")), 4.0)
    assert published(actions) == [LeaveNotice(room="dev", nick="alice", reason="part", ts=4.0)]
    assert sent(actions) == [Parted(room="dev")]
    error = only_error(core.handle(b"A", frames(Part(room="dev")), 4.0), b"A")
    assert error.code == ErrorCode.NOT_IN_ROOM
    (rooms,) = sent(core.handle(b"B", frames(ListRooms()), 5.0))
    assert [r.room for r in rooms.rooms] == ["lobby", "ops"]  # type: ignore[union-attr]


def test_a_joined_session_keeps_no_join_state() -> None:
    # Memory per idle client (docs/PERFORMANCE.md): once its joins are done a
    # session holds no table of pending syncs and no set of early ones.
    core = make_core()
    welcome, _ = join(core, b"A", "alice")
    core.subscribed(b"\x01" + sync_topic(welcome.session, 1), 1.0)  # overtakes its join
    core.handle(b"A", frames(Join(room="dev", sync=1)), 1.0)
    session = core._sessions[b"A"]
    assert session.rooms == {"lobby", "dev"}
    assert session.early_syncs == set()
    assert sys.getsizeof(session.pending) == sys.getsizeof({}), "an emptied dict keeps its table"
    _, _ = join(core, b"B", "bob")
    assert core._sessions[b"B"].early_syncs is None
    assert sys.getsizeof(core._sessions[b"B"].pending) == sys.getsizeof({})
    # Members share their room's name string instead of holding a copy each.
    (lobby,) = core._sessions[b"B"].rooms
    assert lobby is next(name for name in session.rooms if name == "lobby")


def test_too_many_rooms() -> None:
    core = make_core(rooms_per_client=2)
    join(core, b"A", "alice")
    assert core.handle(b"A", frames(Join(room="one", sync=1)), 1.0) == []
    error = only_error(core.handle(b"A", frames(Join(room="two", sync=2)), 1.0), b"A")
    assert error.code == ErrorCode.TOO_MANY_ROOMS


def test_rename_tells_each_shared_room_once_and_frees_the_old_name() -> None:
    core = make_core()
    join(core, b"A", "alice", rooms=["lobby", "dev"])
    join(core, b"B", "bob")
    error = only_error(core.handle(b"A", frames(Rename(nick="BOB")), 1.0), b"A")
    assert (error.code, error.req) == (ErrorCode.NICK_TAKEN, "nick")
    error = only_error(core.handle(b"A", frames(Rename(nick="has space")), 1.0), b"A")
    assert error.code == ErrorCode.NICK_INVALID
    actions = core.handle(b"A", frames(Rename(nick="Alicia")), 2.0)
    notices = published(actions)
    assert {n.room for n in notices} == {"dev", "lobby"}
    assert all(isinstance(n, NickNotice) and (n.old, n.new) == ("alice", "Alicia") for n in notices)
    assert len({n.id for n in notices}) == 1  # type: ignore[union-attr]
    assert sent(actions) == [Renamed(old="alice", new="Alicia")]
    (line,) = published(say(core, b"A", "hi"))
    assert line.nick == "Alicia"  # type: ignore[union-attr]
    assert hello(core, b"C", "alice").nick == "alice"  # the old name is free
    # Changing only the case of one's own name is allowed.
    assert sent(core.handle(b"A", frames(Rename(nick="ALICIA")), 3.0))[-1] == Renamed(
        old="Alicia", new="ALICIA"
    )


def test_member_lists_follow_joins_parts_renames_and_expiry() -> None:
    # The core keeps each room's nickname list instead of rebuilding it per
    # join; every change of membership or name must show in the next reply.
    core = make_core()
    join(core, b"A", "alice")
    join(core, b"B", "bob")
    _, actions = join(core, b"C", "carol")
    assert sent(actions, b"C") == [
        Joined(room="lobby", seq=0, members=["alice", "bob", "carol"], epoch=EPOCH)
    ]
    core.handle(b"B", frames(Rename(nick="bobby")), 1.0)
    _, actions = join(core, b"D", "dave", now=1.0)
    assert sent(actions, b"D") == [
        Joined(room="lobby", seq=0, members=["alice", "bobby", "carol", "dave"], epoch=EPOCH)
    ]
    core.handle(b"A", frames(Part(room="lobby")), 1.0)
    _, actions = join(core, b"E", "eve", now=2.0)
    assert sent(actions, b"E") == [
        Joined(room="lobby", seq=0, members=["bobby", "carol", "dave", "eve"], epoch=EPOCH)
    ]
    for identity in (b"C", b"D", b"E"):
        core.handle(identity, frames(Ping()), TIMEOUT)
    core.tick(TIMEOUT + 1.5)  # bob, silent since his rename at 1.0, times out
    assert sent(core.handle(b"C", frames(Who(room="lobby")), TIMEOUT + 2)) == [
        WhoReply(room="lobby", members=["carol", "dave", "eve"])
    ]


# --- leaving ---------------------------------------------------------------------------------


def test_silence_expires_a_client_with_reason_timeout() -> None:
    core = make_core()
    join(core, b"A", "alice", now=0.0)
    join(core, b"B", "bob", now=0.0)
    assert core.tick(TIMEOUT) == []  # exactly the timeout: not yet
    core.handle(b"B", frames(Ping()), TIMEOUT - 1)  # bob keeps talking
    actions = core.tick(TIMEOUT + 0.5)
    assert published(actions) == [
        LeaveNotice(room="lobby", nick="alice", reason="timeout", ts=TIMEOUT + 0.5)
    ]
    assert core.session_count == 1
    # The nickname is free again, and the dead connection is forgotten.
    assert only_error(say(core, b"A", "still here?"), b"A").code == ErrorCode.NOT_JOINED
    assert hello(core, b"A2", "Alice", now=11.0).nick == "Alice"


def test_pings_keep_a_client_alive_and_report_room_sequences() -> None:
    core = make_core()
    join(core, b"A", "alice")
    say(core, b"A", "one")
    for now in range(5, 60, 5):
        (pong,) = sent(core.handle(b"A", frames(Ping()), float(now)))
        assert pong == Pong(broker="b1", seqs={"lobby": 1}, epochs={"lobby": EPOCH})
        assert core.tick(float(now) + 1) == []


def test_a_join_whose_sync_never_comes_is_abandoned() -> None:
    core = make_core()
    hello(core, b"A", "alice")
    actions = core.tick(TIMEOUT + 1)
    error = only_error(actions, b"A")
    assert (error.code, error.req) == (ErrorCode.SYNC_TIMEOUT, "hello")
    assert core.session_count == 0
    assert hello(core, b"B", "alice", now=TIMEOUT + 1).nick == "alice"


def test_bye_leaves_with_reason_exit() -> None:
    core = make_core()
    join(core, b"A", "alice", rooms=["lobby", "dev"])
    join(core, b"B", "bob")
    actions = core.handle(b"A", frames(Bye()), 2.0)
    assert sorted(published(actions), key=lambda m: m.room) == [
        LeaveNotice(room="dev", nick="alice", reason="exit", ts=2.0),
        LeaveNotice(room="lobby", nick="alice", reason="exit", ts=2.0),
    ]
    assert sent(actions) == [Goodbye()]
    assert only_error(say(core, b"A", "hi"), b"A").code == ErrorCode.NOT_JOINED
    assert sent(core.handle(b"B", frames(Who(room="lobby")), 3.0)) == [
        WhoReply(room="lobby", members=["bob"])
    ]
    assert hello(core, b"C", "ALICE").nick == "ALICE"


def test_shutdown_tells_every_client() -> None:
    core = make_core()
    join(core, b"A", "alice")
    join(core, b"B", "bob")
    hello(core, b"C", "carol")  # still joining: told too
    actions = core.shutdown(9.0)
    assert published(actions) == []
    assert sorted(a.identity for a in actions if isinstance(a, Send)) == [b"A", b"B", b"C"]
    assert all(isinstance(m, Shutdown) for m in sent(actions))


# --- bad input ----------------------------------------------------------------------------

LONG = "x" * 4097

BAD_INPUT: list[tuple[str, list[bytes], ErrorCode, str | None]] = [
    ("no frames", [], ErrorCode.BAD_FRAME, None),
    ("two frames", [b'{"type": "ping"}', b""], ErrorCode.BAD_FRAME, None),
    ("not json", [b"hello there"], ErrorCode.BAD_FRAME, None),
    ("json not an object", [b"[1, 2, 3]"], ErrorCode.BAD_MESSAGE, None),
    ("invalid utf-8", [b'{"type": "say", "room": "lobby", "text": "\xff\xfe"}'],
     ErrorCode.BAD_ENCODING, None),  # undecodable: its type cannot be told
    ("lone surrogate", [b'{"type": "say", "room": "lobby", "text": "\\udc80"}'],
     ErrorCode.BAD_ENCODING, "say"),
    ("unknown type", [b'{"type": "teleport"}'], ErrorCode.UNKNOWN_TYPE, "teleport"),
    ("no type", [b'{"room": "lobby"}'], ErrorCode.UNKNOWN_TYPE, None),
    ("wrong field type", [b'{"type": "say", "room": "lobby", "text": 42}'],
     ErrorCode.BAD_MESSAGE, "say"),
    ("missing field", [b'{"type": "say", "room": "lobby"}'], ErrorCode.BAD_MESSAGE, "say"),
    ("empty text", [b'{"type": "say", "room": "lobby", "text": ""}'], ErrorCode.TEXT_EMPTY, "say"),
    ("blank text", [b'{"type": "say", "room": "lobby", "text": " \\t "}'],
     ErrorCode.TEXT_EMPTY, "say"),
    ("over-long text", [encode(Say(room="lobby", text=LONG))], ErrorCode.TEXT_TOO_LONG, "say"),
    ("over-long private", [encode(SendPrivate(to="alice", text=LONG))],
     ErrorCode.TEXT_TOO_LONG, "msg"),
    ("bad key", [encode(Say(room="lobby", text="x", key="no spaces"))],
     ErrorCode.KEY_INVALID, "say"),
    ("bad room", [encode(Join(room="no spaces", sync=1))], ErrorCode.ROOM_INVALID, "join"),
    ("second hello", [encode(Hello(v=1, nick="other"))], ErrorCode.ALREADY_JOINED, "hello"),
    ("deep nesting", [b"[" * 5000 + b"]" * 5000], ErrorCode.BAD_FRAME, None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("frames_in", "code", "req"),
    [case[1:] for case in BAD_INPUT],
    ids=[case[0] for case in BAD_INPUT],
)
def test_bad_input_gets_an_error_and_the_core_keeps_serving(
    frames_in: list[bytes], code: ErrorCode, req: str | None
) -> None:
    core = make_core()
    join(core, b"A", "alice")
    join(core, b"B", "bob")
    error = only_error(core.handle(b"B", frames_in, 1.0), b"B")
    assert (error.code, error.req) == (code, req)
    assert error.message
    # Everyone, the sender included, is still served.
    assert len(published(say(core, b"A", "still up"))) == 1
    assert len(published(say(core, b"B", "me too"))) == 1


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        (Hello(v=2, nick="alice"), ErrorCode.BAD_VERSION),
        (Hello(v=0, nick="alice"), ErrorCode.BAD_VERSION),
        (Say(room="lobby", text="hi"), ErrorCode.NOT_JOINED),
        (Ping(), ErrorCode.NOT_JOINED),
        (Bye(), ErrorCode.NOT_JOINED),
        (Hello(v=1, nick="has space"), ErrorCode.NICK_INVALID),
        (Hello(v=1, nick="x" * 33), ErrorCode.NICK_INVALID),
        (Hello(v=1, nick="alice", rooms=["bad room"]), ErrorCode.ROOM_INVALID),
    ],
)
def test_bad_input_before_joining(request_: Request, code: ErrorCode) -> None:
    core = make_core()
    error = only_error(core.handle(b"X", frames(request_), 0.0), b"X")
    assert error.code == code
    assert core.session_count == 0
    assert hello(core, b"X", "alice").nick == "alice"  # the same connection may try again


def test_the_error_reply_names_the_key_and_room_it_answers() -> None:
    core = make_core()
    join(core, b"A", "alice")
    error = only_error(core.handle(b"A", frames(Say(room="lobby", text="", key="k-9")), 1.0), b"A")
    assert (error.req, error.key, error.room) == ("say", "k-9", "lobby")
