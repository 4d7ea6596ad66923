"""§5.1 the join handshake, §4 hello, §6 nickname rules, §9 versioning."""

from __future__ import annotations

from tests.conformance.conftest import ClientFactory, JoinFactory
from tests.conformance.rawchat import QUIET, announces_join, joined_to, unique_nick, unique_room

WELCOME_FIELDS = {"v", "nick", "session", "pub", "broker", "heartbeat", "timeout", "limits"}
LIMIT_FIELDS = {
    "text_bytes",
    "nick_length",
    "room_length",
    "rooms_per_client",
    "frame_bytes",
    "rate",
    "burst",
}


def test_welcome_has_every_field(raw: ClientFactory) -> None:
    nick = unique_nick("Welcomed")
    welcome = raw().hello(nick)
    assert welcome["type"] == "welcome", welcome
    assert set(welcome) >= WELCOME_FIELDS | {"type"}
    assert welcome["v"] == 1
    assert welcome["nick"] == nick  # the case given is kept
    assert isinstance(welcome["session"], str) and welcome["session"]
    assert "/" not in welcome["session"]
    assert welcome["pub"].startswith(("tcp://", "ipc://", "inproc://"))
    assert isinstance(welcome["broker"], str) and welcome["broker"]
    assert welcome["heartbeat"] > 0 and welcome["timeout"] > 0
    limits = welcome["limits"]
    assert set(limits) >= LIMIT_FIELDS
    assert limits["text_bytes"] >= 1 and limits["nick_length"] >= 1
    assert limits["frame_bytes"] > limits["text_bytes"]


def test_handshake_join_broadcast_and_joined(raw: ClientFactory, chat: JoinFactory) -> None:
    room = unique_room("hs")
    watcher = chat("watcher", [room])
    client = raw()
    nick = unique_nick("joiner")
    welcome = client.hello(nick, [room])
    assert welcome["type"] == "welcome"
    # Not joined until the SUB has subscribed the sync topic (§5.1 step 2).
    client.send({"type": "ping"})
    refused = client.error("syncing")
    assert refused["req"] == "ping"
    client.subscribe_after_welcome(welcome, [room])
    joined = client.reply(joined_to(room))
    assert joined["seq"] == 0
    assert joined["members"][-1] == nick
    assert set(joined["members"]) == {watcher.welcome["nick"], nick}  # type: ignore[index]
    topic, notice = watcher.broadcast(announces_join(nick))
    assert topic == f"room/{room}/".encode()
    assert notice["room"] == room and isinstance(notice["ts"], float | int)


def test_first_broadcast_after_joined_is_not_lost(chat: JoinFactory) -> None:
    room = unique_room("slow")
    speaker = chat("speaker", [room])
    for i in range(3):
        listener = chat(f"listener{i}", [room])
        text = f"first line for listener {i}"
        speaker.send({"type": "say", "room": room, "text": text})
        _, line = listener.broadcast(lambda m, t=text: m.get("text") == t)  # type: ignore[misc]
        assert line["nick"] == speaker.welcome["nick"]  # type: ignore[index]


def test_hello_with_several_rooms_joins_each(raw: ClientFactory) -> None:
    rooms = [unique_room("a"), unique_room("b")]
    client = raw()
    client.join(unique_nick("multi"), rooms)  # waits for one joined per room
    client.send({"type": "ping"})
    pong = client.reply_of("pong")
    assert set(pong["seqs"]) == set(rooms)


def test_bad_version_is_refused(raw: ClientFactory) -> None:
    reply = raw().hello(unique_nick("future"), v=2)
    assert (reply["type"], reply["code"], reply["req"]) == ("error", "bad_version", "hello")


def test_talking_before_hello_is_refused(raw: ClientFactory) -> None:
    client = raw()
    client.send({"type": "say", "room": "lobby", "text": "hi"})
    error = client.error()
    assert (error["code"], error["req"], error["room"]) == ("not_joined", "say", "lobby")


def test_second_hello_is_refused(chat: JoinFactory) -> None:
    client = chat("twice")
    reply = client.hello(unique_nick("again"))
    assert (reply["type"], reply["code"]) == ("error", "already_joined")


def test_invalid_nicknames_are_refused(raw: ClientFactory) -> None:
    client = raw()
    for nick in ["", "has space", "x" * 33, "-dash", "tab\there", "caf\u00e9", "a/b", "nul\x00"]:
        reply = client.hello(nick)
        assert (reply["type"], reply.get("code")) == ("error", "nick_invalid"), nick
        assert reply["message"]


def test_reserved_nicknames_are_refused(raw: ClientFactory) -> None:
    client = raw()
    for nick in ["server", "Server", "ADMIN", "system"]:
        reply = client.hello(nick)
        assert (reply["type"], reply.get("code")) == ("error", "nick_invalid"), nick


def test_longest_and_punctuated_nicknames_are_accepted(raw: ClientFactory) -> None:
    for nick in [unique_nick("x" * 23), "_" + unique_nick("a.b[c]{d}^e|f")[:31]]:
        assert len(nick) <= 32
        reply = raw().hello(nick)
        assert reply["type"] == "welcome", (nick, reply)


def test_nicknames_are_unique_case_insensitively(chat: JoinFactory, raw: ClientFactory) -> None:
    holder = chat("Holder")
    nick = holder.welcome["nick"]  # type: ignore[index]
    for variant in [nick, nick.upper(), nick.lower()]:
        reply = raw().hello(variant)
        assert (reply["type"], reply.get("code")) == ("error", "nick_taken"), variant


def test_a_refused_client_can_retry_with_another_nickname(
    chat: JoinFactory, raw: ClientFactory
) -> None:
    holder = chat("first")
    client = raw()
    assert client.hello(holder.welcome["nick"])["code"] == "nick_taken"  # type: ignore[index]
    client.join(unique_nick("second"))


def test_nickname_is_free_again_after_bye(chat: JoinFactory, raw: ClientFactory) -> None:
    leaver = chat("leaver")
    nick = leaver.welcome["nick"]  # type: ignore[index]
    assert leaver.bye() == {"type": "goodbye"}
    leaver.welcome = None  # nothing left to clean up
    raw().join(nick.upper())


def test_join_completes_whatever_arrives_first(chat: JoinFactory) -> None:
    """§4 join: the sync subscription may reach the broker before the request."""
    client = chat("order")
    room = unique_room("late")
    session = client.welcome["session"]  # type: ignore[index]
    client.sub.subscribe(f"room/{room}/".encode())
    client.sub.subscribe(f"sync/{session}/7/".encode())
    client.watch(QUIET)  # let the subscription arrive first
    client.send({"type": "join", "room": room, "sync": 7})
    joined = client.reply(joined_to(room))
    assert joined["members"] == [client.welcome["nick"]]  # type: ignore[index]


def test_join_waits_for_the_sync_subscription(chat: JoinFactory) -> None:
    client = chat("waiter")
    room = unique_room("wait")
    client.sub.subscribe(f"room/{room}/".encode())
    client.send({"type": "join", "room": room, "sync": 3})
    client.watch(QUIET)
    assert not [r for r in client.replies if r.get("type") == "joined"]
    client.sub.subscribe(f"sync/{client.welcome['session']}/3/".encode())  # type: ignore[index]
    client.reply(joined_to(room))
